"""``/health`` (the process is up), ``/ready`` (the database answers) and ``/metrics``."""

from __future__ import annotations

from aiohttp import web

from control_api.schema import api
from control_api.state import DB, METRICS
from voice_pipeline.db import healthcheck

routes = web.RouteTableDef()


@routes.get("/health")
@api("The process is up", auth="none", tag="meta")
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/ready")
@api("The database answers (503 otherwise)", auth="none", tag="meta")
async def ready(request: web.Request) -> web.Response:
    if await healthcheck(request.app[DB]):
        return web.json_response({"status": "ready", "database": "ok"})
    return web.json_response(
        {"error": {"code": "not_ready", "message": "database unreachable"}}, status=503
    )


@routes.get("/metrics")
@api("Prometheus metrics", auth="none", tag="meta")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].registry.render()
    return web.Response(
        text=body,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )
