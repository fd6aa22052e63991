"""Guards the Twilio webhooks: signatures checked against the public URL (forged, missing,
wrong-URL signatures refused), TwiML that never puts data in the stream URL, and status
callbacks that are idempotent, order-independent and deduct credits exactly once."""

from __future__ import annotations

import asyncio

import asyncpg

from tests.api_harness import Harness

SID = "CA" + "f" * 32


async def _call(api: Harness, email: str = "w@example.com", credits: int = 10) -> tuple[str, str]:
    token = await api.register(email)
    uid = await api.user_id(token)
    await api.db.execute(
        "UPDATE user_credits SET available_credits = $2 WHERE user_id = $1", uid, credits
    )
    call_id = await api.db.fetchval(
        "INSERT INTO calls (user_id, persona_id, phone_number, status, max_duration_seconds) "
        "VALUES ($1, 'alex', '+15550001111', 'calling', 600) RETURNING id",
        uid,
    )
    return uid, call_id


def _status(call_sid: str, status: str, seq: int, duration: int | None = None) -> dict[str, str]:
    p = {
        "CallSid": call_sid,
        "AccountSid": "AC" + "1" * 32,
        "CallStatus": status,
        "SequenceNumber": str(seq),
        "Direction": "outbound-api",
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "To": "+15550001111",
        "CallbackSource": "call-progress-events",
    }
    if duration is not None:
        p["CallDuration"] = str(duration)
        p["Duration"] = str(-(-duration // 60))
    return p


async def test_forged_missing_and_wrong_url_signatures_are_refused(api: Harness) -> None:
    _, call_id = await _call(api)
    path = f"/api/voice/status?call_id={call_id}"
    params = _status(SID, "in-progress", 2)
    assert (await api.twilio_post(path, params, signature=""))[0] == 403
    assert (await api.twilio_post(path, params, signature="bm90IGEgc2lnbmF0dXJl"))[0] == 403
    # Signed over the internal address the proxy forwards to, not the public URL: refused.
    internal = api.sign(api.url(path).replace("127.0.0.1", "localhost"), params)
    assert (await api.twilio_post(path, params, signature=internal))[0] == 403
    # Signed with tampered params (a changed CallStatus): refused.
    good = api.sign(api.settings.public_base_url + path, params)
    assert (await api.twilio_post(path, {**params, "CallStatus": "completed"}, signature=good))[
        0
    ] == 403
    twiml = f"/api/voice/twiml?call_id={call_id}"
    status, body = await api.twilio_post(twiml, {"CallSid": SID}, signature="forged")
    assert status == 403 and "invalid_signature" in body
    row = await api.db.fetchrow("SELECT status, twilio_call_sid FROM calls WHERE id = $1", call_id)
    assert (row["status"], row["twilio_call_sid"]) == ("calling", None)
    # The trailing-slash variant Twilio's docs mention is accepted.
    slash = api.sign(api.settings.public_base_url + "/api/voice/status/?call_id=" + call_id, params)
    assert (await api.twilio_post(path, params, signature=slash))[0] == 204


async def test_twiml_hangs_up_unknown_finished_or_foreign_calls(api: Harness) -> None:
    _, call_id = await _call(api)
    status, body = await api.twilio_post("/api/voice/twiml?call_id=nope", {"CallSid": SID})
    assert status == 200 and "<Hangup/>" in body
    status, body = await api.twilio_post(f"/api/voice/twiml?call_id={call_id}", {"CallSid": SID})
    assert (
        status == 200
        and "<Connect><Stream" in body
        and "?call_id" not in body.split("url=")[1][:80]
    )
    # Another CallSid claiming the same call gets a hang-up, not a stream.
    status, body = await api.twilio_post(
        f"/api/voice/twiml?call_id={call_id}", {"CallSid": "CA" + "e" * 32}
    )
    assert status == 200 and "<Hangup/>" in body
    await api.twilio_post(f"/api/voice/status?call_id={call_id}", _status(SID, "completed", 3, 5))
    status, body = await api.twilio_post(f"/api/voice/twiml?call_id={call_id}", {"CallSid": SID})
    assert "<Hangup/>" in body


async def test_out_of_order_and_retried_callbacks_settle_once(api: Harness) -> None:
    uid, call_id = await _call(api, credits=10)
    path = f"/api/voice/status?call_id={call_id}"
    # completed (seq 3) arrives first, then a retry of it, then the older events.
    for params in (
        _status(SID, "completed", 3, 125),
        _status(SID, "completed", 3, 125),
        _status(SID, "in-progress", 2),
        _status(SID, "ringing", 1),
        _status(SID, "initiated", 0),
    ):
        status, _ = await api.twilio_post(path, params)
        assert status == 204
    row = await api.db.fetchrow(
        "SELECT status, duration_seconds, credits_used, twilio_status, twilio_sequence, "
        "finalized_at FROM calls WHERE id = $1",
        call_id,
    )
    assert row["status"] == "completed" and row["finalized_at"] is not None
    assert (row["duration_seconds"], row["credits_used"]) == (125, 3)  # ceil(125 / 60)
    assert (row["twilio_status"], row["twilio_sequence"]) == ("completed", 3)
    assert (
        await api.db.fetchval("SELECT available_credits FROM user_credits WHERE user_id = $1", uid)
        == 7
    )
    txns = await api.db.fetch(
        "SELECT amount, balance_before, balance_after FROM credit_transactions WHERE call_id = $1",
        call_id,
    )
    assert [tuple(t) for t in txns] == [(-3, 10, 7)]


async def test_concurrent_duplicate_final_callbacks_deduct_once(api: Harness) -> None:
    uid, call_id = await _call(api, email="dup@example.com", credits=10)
    path = f"/api/voice/status?call_id={call_id}"
    results = await asyncio.gather(
        *(api.twilio_post(path, _status(SID, "completed", 4, 61)) for _ in range(8))
    )
    assert {s for s, _ in results} == {204}
    assert (
        await api.db.fetchval("SELECT available_credits FROM user_credits WHERE user_id = $1", uid)
        == 8
    )
    assert (
        await api.db.fetchval(
            "SELECT count(*) FROM credit_transactions WHERE call_id = $1", call_id
        )
        == 1
    )


async def test_deduction_never_drives_the_balance_negative(api: Harness) -> None:
    uid, call_id = await _call(api, email="poor@example.com", credits=1)
    await api.twilio_post(f"/api/voice/status?call_id={call_id}", _status(SID, "completed", 3, 125))
    assert (
        await api.db.fetchval("SELECT available_credits FROM user_credits WHERE user_id = $1", uid)
        == 0
    )
    txn = await api.db.fetchrow(
        "SELECT amount, description FROM credit_transactions WHERE call_id = $1", call_id
    )
    assert txn["amount"] == -1  # 3 credits owed (125 s), only 1 left
    assert "2 not covered by the balance" in txn["description"]


async def test_bad_callbacks_get_clear_errors(api: Harness) -> None:
    _, call_id = await _call(api, email="bad@example.com")
    path = f"/api/voice/status?call_id={call_id}"
    status, body = await api.twilio_post(
        path, {**_status(SID, "completed", 1), "SequenceNumber": "x"}
    )
    assert status == 400 and "SequenceNumber" in body
    status, body = await api.twilio_post(path, _status(SID, "exploded", 1))
    assert status == 400 and "unknown CallStatus" in body
    status, _ = await api.twilio_post(
        "/api/voice/status?call_id=call_missing", _status(SID, "ringing", 1)
    )
    assert status == 404
    status, _ = await api.twilio_post("/api/voice/status", _status("CA" + "0" * 32, "ringing", 1))
    assert status == 404
    await api.twilio_post(path, _status(SID, "ringing", 1))
    status, body = await api.twilio_post(path, _status("CA" + "9" * 32, "completed", 2, 60))
    assert status == 409 and "call_sid_mismatch" in body
    assert await api.db.fetchval("SELECT status FROM calls WHERE id = $1", call_id) == "calling"


async def test_signature_is_checked_before_anything_touches_the_database(
    api: Harness, db: asyncpg.Pool
) -> None:
    before = await db.fetchval("SELECT count(*) FROM calls")
    status, _ = await api.twilio_post(
        "/api/voice/status", {"CallSid": SID, "CallStatus": "completed"}, signature="x"
    )
    assert status == 403
    assert await db.fetchval("SELECT count(*) FROM calls") == before
