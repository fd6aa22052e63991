"""The browser softphone: a page that calls a persona through the local Twilio stand-in.

``GET /phone`` serves the page, ``/phone/app.js`` and ``/phone/worklet.js`` its code, and
``/phone/config`` where the stand-in's handset bridge listens. The page signs in and triggers
the call through this API like any frontend; the stand-in rings the page instead of a phone
and bridges its microphone into the Media Stream (sim/twilio_media.py, ``Handset``). With a
real Twilio account there is no bridge, and ``/phone/config`` says so (404).
"""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit

from aiohttp import web

from control_api.schema import api
from control_api.state import SETTINGS

routes = web.RouteTableDef()

_TYPES = {
    "phone.html": "text/html",
    "app.js": "text/javascript",
    "worklet.js": "text/javascript",
}


def _file(name: str) -> str:
    return resources.files("control_api").joinpath("static", name).read_text("utf-8")


def _bridge_url(request: web.Request) -> str | None:
    base = request.app[SETTINGS].twilio_api_base.rstrip("/")
    host = urlsplit(base).hostname or ""
    if host == "twilio.com" or host.endswith(".twilio.com"):  # real Twilio rings real phones
        return None
    return base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/_sim/phone"


def _static(name: str, request: web.Request) -> web.Response:
    bridge = _bridge_url(request) or ""
    origin = bridge.split("/_sim/")[0]
    return web.Response(
        text=_file(name),
        content_type=_TYPES[name],
        charset="utf-8",
        headers={
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": (
                f"default-src 'self'; connect-src 'self' {origin}; media-src 'self' blob:; "
                "img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
            ),
        },
    )


@routes.get("/phone")
@api("The browser softphone (local stand-in only)", auth="none", tag="softphone")
async def page(request: web.Request) -> web.Response:
    return _static("phone.html", request)


@routes.get("/phone/app.js")
@api("The softphone's script", auth="none", tag="softphone")
async def app_js(request: web.Request) -> web.Response:
    return _static("app.js", request)


@routes.get("/phone/worklet.js")
@api("The softphone's audio worklet (μ-law 8 kHz in and out)", auth="none", tag="softphone")
async def worklet_js(request: web.Request) -> web.Response:
    return _static("worklet.js", request)


@routes.get("/phone/config")
@api("Where the Twilio stand-in's handset bridge listens", auth="none", tag="softphone")
async def config(request: web.Request) -> web.Response:
    bridge = _bridge_url(request)
    if bridge is None:
        return web.json_response(
            {
                "error": {
                    "code": "softphone_unavailable",
                    "message": "the softphone needs the local Twilio stand-in "
                    "(real Twilio is configured)",
                }
            },
            status=404,
        )
    return web.json_response({"bridge": bridge})


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
