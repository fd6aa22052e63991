"""Twilio's webhooks: ``POST /api/voice/twiml`` and ``POST /api/voice/status``.

Both answer 403 unless ``X-Twilio-Signature`` is valid (protocols.md §1.6). The URL we validate
against is the *public* one Twilio called — ``PUBLIC_BASE_URL`` + path + query — not the URL
this process sees behind the proxy (http://127.0.0.1:8080/…), which never matches. The SDK's
validator also tries the URL with and without a default port; we add the trailing-slash variant
Twilio's docs mention.

The TwiML puts the call id (and a stream token) in ``<Parameter>``s, never in the stream URL's
query string, which Twilio does not support (protocols.md §1.1).
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from aiohttp import web
from twilio.request_validator import RequestValidator

from control_api.errors import ApiError, bad_request, not_found
from control_api.schema import api
from control_api.state import DB, METRICS, SETTINGS
from voice_pipeline import stream_token
from voice_pipeline.db.calls import CallSidMismatch, UnknownCall, apply_twilio_status
from voice_pipeline.logs import get_logger

log = get_logger("control_api.voice")
routes = web.RouteTableDef()

HANGUP = '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Hangup/></Response>'


async def verified_form(request: web.Request) -> dict[str, str]:
    """The webhook's parameters, if Twilio signed them; 403 otherwise."""
    settings = request.app[SETTINGS]
    signature = request.headers.get("X-Twilio-Signature", "")
    url = settings.public_base_url + request.path_qs
    validator = RequestValidator(settings.twilio_auth_token)
    if "bodySHA256" in request.query:  # JSON body variant
        body: object = (await request.read()).decode("utf-8", errors="replace")
    else:
        body = await request.post()
    candidates = [url]
    path, sep, query = url.partition("?")
    candidates.append((path[:-1] if path.endswith("/") else path + "/") + sep + query)
    if not signature or not any(validator.validate(u, body, signature) for u in candidates):
        log.warning("twilio_signature_invalid", path=request.path, has_signature=bool(signature))
        raise ApiError(403, "invalid_signature", "X-Twilio-Signature does not match")
    if isinstance(body, str):
        raise bad_request("JSON webhooks are not used by this route")
    return {k: str(v) for k, v in body.items()}


def _twiml(stream_url: str, params: dict[str, str]) -> str:
    inner = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in params.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Connect><Stream url={quoteattr(stream_url)}>{inner}</Stream></Connect>"
        "</Response>"
    )


@routes.post("/api/voice/twiml")
@api(
    "TwiML that connects the answered call to the voice server's media stream",
    auth="twilio",
    form=True,
    tag="voice",
)
async def twiml(request: web.Request) -> web.Response:
    form = await verified_form(request)
    settings = request.app[SETTINGS]
    call_id = request.query.get("call_id", "")
    call_sid = form.get("CallSid", "")
    if not call_sid:
        raise bad_request("CallSid is required")
    row = await request.app[DB].fetchrow(
        "SELECT id, status, twilio_call_sid, finalized_at FROM calls WHERE id = $1", call_id
    )
    if row is None or row["finalized_at"] is not None:
        log.warning("twiml_for_unknown_or_finished_call", call_id=call_id, call_sid=call_sid)
        return web.Response(text=HANGUP, content_type="text/xml")
    if row["twilio_call_sid"] not in (None, call_sid):
        log.warning("twiml_call_sid_mismatch", call_id=call_id, call_sid=call_sid)
        return web.Response(text=HANGUP, content_type="text/xml")
    await request.app[DB].execute(
        "UPDATE calls SET twilio_call_sid = COALESCE(twilio_call_sid, $2) WHERE id = $1",
        call_id,
        call_sid,
    )
    params = {
        "call_id": call_id,
        "stream_token": stream_token.mint(settings.jwt_secret, call_id, call_sid),
    }
    log.info("twiml_served", call_id=call_id, call_sid=call_sid)
    return web.Response(text=_twiml(settings.voice_ws_url, params), content_type="text/xml")


@routes.post("/api/voice/status")
@api(
    "Twilio call status callback (idempotent, order-independent)",
    auth="twilio",
    form=True,
    tag="voice",
    status=204,
)
async def status(request: web.Request) -> web.Response:
    form = await verified_form(request)
    call_status = form.get("CallStatus", "")
    call_sid = form.get("CallSid", "")
    if not call_sid or not call_status:
        raise bad_request("CallSid and CallStatus are required")
    request.app[METRICS].twilio_callbacks.inc(call_status)
    pool = request.app[DB]
    call_id = request.query.get("call_id") or await pool.fetchval(
        "SELECT id FROM calls WHERE twilio_call_sid = $1", call_sid
    )
    if not call_id:
        raise not_found("call")
    try:
        sequence = int(form["SequenceNumber"]) if form.get("SequenceNumber") else None
        duration = int(form["CallDuration"]) if form.get("CallDuration") else None
    except ValueError:
        raise bad_request("SequenceNumber and CallDuration must be integers") from None
    if duration is not None and duration < 0:
        raise bad_request("CallDuration must not be negative")
    async with pool.acquire() as conn:
        try:
            result = await apply_twilio_status(
                conn,
                call_id,
                call_sid=call_sid,
                twilio_status=call_status,
                sequence=sequence,
                duration_seconds=duration,
                rates=request.app[SETTINGS].rates,
            )
        except UnknownCall:
            raise not_found("call") from None
        except CallSidMismatch:
            raise ApiError(409, "call_sid_mismatch", "this call has another CallSid") from None
        except ValueError as err:
            raise bad_request(str(err)) from None
    log.info(
        "call_status",
        call_id=call_id,
        call_sid=call_sid,
        twilio_status=call_status,
        status=result.status,
        changed=result.changed,
        finalized=result.finalized,
    )
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
