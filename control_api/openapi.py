"""``GET /openapi.json``: an OpenAPI 3.1 document generated from the routes themselves.

Every route handler carries its :func:`control_api.schema.api` declaration, so a route cannot
exist without being documented, and the request schemas shown are the ones enforced.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from control_api.schema import RouteDoc, api

routes = web.RouteTableDef()

ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
}
_SECURITY = {
    "user": [{"bearer": []}],
    "admin": [{"adminToken": []}],
    "optional": [{"bearer": []}, {}],
    "twilio": [{"twilioSignature": []}],
    "none": [],
}


def documented_routes(app: web.Application) -> list[tuple[str, str, RouteDoc]]:
    out = []
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS", "*"):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        doc = getattr(route.handler, "__api_doc__", None)
        if path and doc is not None:
            out.append((route.method, path, doc))
    return out


def build(app: web.Application) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, doc in documented_routes(app):
        op: dict[str, Any] = {
            "summary": doc.summary,
            "tags": list(doc.tags),
            "security": _SECURITY[doc.auth],
            "responses": {
                str(doc.status): {"description": "success"},
                "default": {
                    "description": "error",
                    "content": {"application/json": {"schema": ERROR}},
                },
            },
        }
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", path)
        ]
        if doc.query:
            params += [
                {"name": name, "in": "query", "required": False, "schema": schema}
                for name, schema in doc.query.get("properties", {}).items()
            ]
        if params:
            op["parameters"] = params
        if doc.body:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": doc.body}},
            }
        elif doc.form:
            op["requestBody"] = {
                "required": True,
                "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
            }
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "callmeback control API", "version": "0.1.0"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "adminToken": {"type": "http", "scheme": "bearer"},
                "twilioSignature": {"type": "apiKey", "in": "header", "name": "X-Twilio-Signature"},
            }
        },
    }


@routes.get("/openapi.json")
@api("This document", auth="none", tag="meta")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build(request.app))


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
