"""Guards the whole path of a call through the control API and the Twilio stand-in:
register → trigger (official SDK → stand-in REST) → signed TwiML fetch → signed status
callbacks → hang-up → credits deducted exactly once with balance before/after."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from control_api.state import TWILIO
from tests.api_harness import Harness, eventually
from voice_pipeline import stream_token


async def test_register_trigger_twiml_status_credits(api: Harness) -> None:
    token = await api.register("caller@example.com")
    _, me, _ = await api.request("GET", "/api/me", token=token, expect=200)
    assert me["credits"]["available"] == 10

    _, body, _ = await api.request(
        "POST",
        "/api/calls/trigger",
        token=token,
        json={"persona_id": "brad", "phone_number": "+15551230001"},
        expect=201,
    )
    call = body["call"]
    assert call["status"] == "calling" and call["twilio_call_sid"].startswith("CA")
    assert call["persona_name"] == "Brad"
    sim_call = api.sim.calls[call["twilio_call_sid"]]
    # What Twilio was asked for: our TwiML and status routes, all four events, TimeLimit from
    # the free tier's 300 s (10 credits would allow 600), machine detection on.
    assert sim_call.url == f"{api.settings.twiml_url}?call_id={call['id']}"
    assert sim_call.status_callback == f"{api.settings.status_callback_url}?call_id={call['id']}"
    assert sim_call.status_events == ["initiated", "ringing", "answered", "completed"]
    assert sim_call.time_limit == 300 and sim_call.machine_detection == "Enable"

    # The stand-in answers, fetches TwiML (signed) and reports in-progress.
    async def answered() -> bool:
        _, b, _ = await api.request("GET", f"/api/calls/{call['id']}", token=token)
        return b["call"]["status"] == "in_progress" and sim_call.twiml_fetched is not None

    await eventually(answered)
    root = ET.fromstring(sim_call.twiml_fetched or "")
    stream = root.find("Connect/Stream")
    assert stream is not None
    assert stream.get("url") == api.settings.voice_ws_url and "?" not in stream.get("url", "")
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params["call_id"] == call["id"]
    assert stream_token.verify(
        api.settings.jwt_secret, call["id"], sim_call.sid, params["stream_token"]
    )

    # Hang up through Twilio's REST API, as the voice server will.
    await api.app[TWILIO].end_call(sim_call.sid)
    await api.sim.wait_ended(sim_call.sid)
    assert ("completed", 204) in sim_call.callbacks
    assert all(code == 204 for _, code in sim_call.callbacks), sim_call.callbacks

    _, detail, _ = await api.request("GET", f"/api/calls/{call['id']}", token=token, expect=200)
    done = detail["call"]
    assert done["status"] == "completed" and done["is_live"] is False
    assert done["credits_used"] == 1 and done["duration_seconds"] == sim_call.duration

    _, credits, _ = await api.request("GET", "/api/credits", token=token, expect=200)
    assert credits["credits"]["available_credits"] == 9
    deduction = [t for t in credits["transactions"] if t["type"] == "call_deduction"]
    assert len(deduction) == 1
    assert (
        deduction[0]["amount"],
        deduction[0]["balance_before"],
        deduction[0]["balance_after"],
    ) == (
        -1,
        10,
        9,
    )
    assert deduction[0]["call_id"] == call["id"]

    _, hist, _ = await api.request("GET", "/api/calls/history", token=token, expect=200)
    assert hist["total"] == 1 and hist["calls"][0]["id"] == call["id"]
    log = await api.db.fetchrow(
        "SELECT status, duration_seconds FROM call_logs WHERE call_id = $1", call["id"]
    )
    assert log["status"] == "completed"
    rel = await api.db.fetchrow(
        "SELECT total_calls FROM user_persona_relationships WHERE persona_id = 'brad'"
    )
    assert rel["total_calls"] == 1


async def test_busy_and_unanswered_calls_cost_nothing(api: Harness) -> None:
    token = await api.register("busy@example.com")
    api.sim.outcomes["+15551230002"] = "busy"
    api.sim.outcomes["+15551230003"] = "no-answer"
    for number, expected in (("+15551230002", "busy"), ("+15551230003", "no_answer")):
        _, body, _ = await api.request(
            "POST",
            "/api/calls/trigger",
            token=token,
            json={"persona_id": "sarah", "phone_number": number},
            expect=201,
        )
        await api.sim.wait_ended(body["call"]["twilio_call_sid"])

        async def final(call_id: str = body["call"]["id"], want: str = expected) -> bool:
            _, b, _ = await api.request("GET", f"/api/calls/{call_id}", token=token)
            return b["call"]["status"] == want

        await eventually(final)
    _, me, _ = await api.request("GET", "/api/me", token=token, expect=200)
    assert me["credits"]["available"] == 10
