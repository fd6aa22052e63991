"""Guards the Twilio stand-in's REST side against protocols.md §1.6–1.9 with the official
twilio SDK: Calls.json create/fetch/update shapes, Basic auth and error bodies (20003, 21211,
20404), and status callbacks that are signed (RequestValidator), sequenced from 0, carry
RFC 2822 timestamps and are retried when the receiving server fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from voice_pipeline.sim.twilio import TwilioSim

SID, TOKEN = "AC" + "2" * 32, "rest-token"


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[dict[str, Any]]:
    sim = TwilioSim(SID, TOKEN, ring_delay=0.05, callback_backoff=0.02)
    sim_server = TestServer(sim.app, host="127.0.0.1", port=0)
    await sim_server.start_server()
    hooks: list[tuple[str, dict[str, str], str]] = []
    fail_first = {"n": 0}

    async def status(request: web.Request) -> web.Response:
        form = dict(await request.post())
        hooks.append(
            (
                str(request.url),
                {k: str(v) for k, v in form.items()},
                request.headers.get("X-Twilio-Signature", ""),
            )
        )
        if fail_first["n"] > 0:
            fail_first["n"] -= 1
            return web.Response(status=503)
        return web.Response(status=204)

    async def twiml(request: web.Request) -> web.Response:
        return web.Response(
            text='<Response><Connect><Stream url="wss://voice.example/stream">'
            '<Parameter name="call_id" value="c1"/></Stream></Connect>'
            "</Response>",
            content_type="text/xml",
        )

    app = web.Application()
    app.router.add_post("/status", status)
    app.router.add_post("/twiml", twiml)
    hook_server = TestServer(app, host="127.0.0.1", port=0)
    await hook_server.start_server()
    http = AsyncTwilioHttpClient()
    client = Client(SID, TOKEN, http_client=http, environment={"X": "1"})
    client.api.base_url = str(sim_server.make_url("")).rstrip("/")
    yield {
        "sim": sim,
        "client": client,
        "hooks": hooks,
        "fail_first": fail_first,
        "hook_base": str(hook_server.make_url("")).rstrip("/"),
    }
    await http.close()
    await hook_server.close()
    await sim_server.close()


async def test_create_fetch_update_and_signed_sequenced_callbacks(rig: dict[str, Any]) -> None:
    sim, client, base = rig["sim"], rig["client"], rig["hook_base"]
    rig["fail_first"]["n"] = 2  # the first two deliveries fail (503) and are retried
    call = await client.calls.create_async(
        to="+15551234567",
        from_="+15005550006",
        url=f"{base}/twiml",
        status_callback=f"{base}/status",
        status_callback_event=["initiated", "ringing", "answered", "completed"],
        time_limit=30,
    )
    assert (
        call.status == "queued" and call.direction == "outbound-api" and call.sid.startswith("CA")
    )
    assert call.duration is None and call.price_unit == "USD"
    await asyncio.sleep(0.3)
    fetched = await client.calls(call.sid).fetch_async()
    assert fetched.status == "in-progress" and fetched.start_time is not None
    sim_call = sim.calls[call.sid]
    assert sim_call.stream is not None and sim_call.stream.parameters == {"call_id": "c1"}
    updated = await client.calls(call.sid).update_async(status="completed")
    assert updated.status == "completed"
    await sim.wait_ended(call.sid)
    hooks = rig["hooks"]
    statuses = [h[1]["CallStatus"] for h in hooks]
    assert len(hooks) == 4 + 2  # two retries
    assert list(dict.fromkeys(statuses)) == ["initiated", "ringing", "in-progress", "completed"]
    assert sorted(sim_call.callbacks) == sorted(
        [("initiated", 204), ("ringing", 204), ("in-progress", 204), ("completed", 204)]
    )
    validator = RequestValidator(TOKEN)
    for url, params, signature in hooks:
        assert validator.validate(url, params, signature)
        assert params["CallbackSource"] == "call-progress-events" and params["AccountSid"] == SID
        parsedate_to_datetime(params["Timestamp"])  # RFC 2822
    seqs = {h[1]["CallStatus"]: int(h[1]["SequenceNumber"]) for h in hooks}
    assert seqs == {"initiated": 0, "ringing": 1, "in-progress": 2, "completed": 3}
    final = next(h[1] for h in hooks if h[1]["CallStatus"] == "completed")
    assert final["CallDuration"] == str(sim_call.duration) and final["Duration"] == "1"
    assert sim_call.callbacks[-1] == ("completed", 204)


async def test_errors_have_twilio_shapes(rig: dict[str, Any]) -> None:
    client, base = rig["client"], rig["hook_base"]
    with pytest.raises(TwilioRestException) as bad_number:
        await client.calls.create_async(to="555-1234", from_="+15005550006", url=f"{base}/twiml")
    assert (bad_number.value.status, bad_number.value.code) == (400, 21211)
    with pytest.raises(TwilioRestException) as missing:
        await client.calls.create_async(to="+15551234567", from_="+15005550006")
    assert missing.value.code == 21205
    with pytest.raises(TwilioRestException) as unknown:
        await client.calls("CA" + "0" * 32).fetch_async()
    assert (unknown.value.status, unknown.value.code) == (404, 20404)
    wrong = Client(SID, "wrong-token", http_client=client.http_client, environment={"X": "1"})
    wrong.api.base_url = client.api.base_url
    with pytest.raises(TwilioRestException) as auth:
        await wrong.calls.create_async(to="+15551234567", from_="+15005550006", url=f"{base}/twiml")
    assert (auth.value.status, auth.value.code) == (401, 20003)


async def test_busy_number_and_cancel_while_ringing(rig: dict[str, Any]) -> None:
    sim, client, base = rig["sim"], rig["client"], rig["hook_base"]
    sim.outcomes["+15550000001"] = "busy"
    call = await client.calls.create_async(
        to="+15550000001",
        from_="+15005550006",
        url=f"{base}/twiml",
        status_callback=f"{base}/status",
    )
    ended = await sim.wait_ended(call.sid)
    assert ended.status == "busy" and ended.callbacks == [("busy", 204)]  # default: completed only
    sim.ring_delay = 5
    call = await client.calls.create_async(
        to="+15550000002", from_="+15005550006", url=f"{base}/twiml"
    )
    await client.calls(call.sid).update_async(status="canceled")
    assert (await sim.wait_ended(call.sid)).status == "canceled"
