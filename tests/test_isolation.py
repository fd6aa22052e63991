"""Guards ownership: a user can never read or change another user's calls, scheduled calls,
credits or budget; another user's call is a 404, indistinguishable from none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.api_harness import Harness


async def test_another_users_call_and_schedule_are_invisible(api: Harness) -> None:
    alice = await api.register("alice@example.com")
    bob = await api.register("bob@example.com")
    _, body, _ = await api.request(
        "POST",
        "/api/calls/trigger",
        token=alice,
        json={"persona_id": "brad", "phone_number": "+15557654321"},
        expect=201,
    )
    call_id = body["call"]["id"]
    status, b, _ = await api.request("GET", f"/api/calls/{call_id}", token=bob)
    assert status == 404 and b["error"]["message"] == "call not found"
    assert (await api.request("GET", "/api/calls/call_does_not_exist", token=bob))[0] == 404
    _, hist, _ = await api.request("GET", "/api/calls/history", token=bob, expect=200)
    assert hist == {"calls": [], "total": 0, "limit": 20, "offset": 0}

    when = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    _, sch, _ = await api.request(
        "POST",
        "/api/calls/schedule",
        token=alice,
        json={"persona_id": "alex", "phone_number": "+15557654321", "scheduled_time": when},
        expect=201,
    )
    sid = sch["scheduled_call"]["id"]
    assert (await api.request("DELETE", f"/api/calls/scheduled/{sid}", token=bob))[0] == 404
    _, listed, _ = await api.request("GET", "/api/calls/scheduled", token=bob, expect=200)
    assert listed["scheduled_calls"] == []
    _, credits, _ = await api.request("GET", "/api/credits", token=bob, expect=200)
    assert all(t.get("call_id") != call_id for t in credits["transactions"])
    await api.request(
        "PUT", "/api/budget", token=bob, json={"max_monthly_spend_cents": 5}, expect=200
    )
    _, budget, _ = await api.request("GET", "/api/budget", token=alice, expect=200)
    assert budget["budget"]["max_monthly_spend_cents"] == 10000


async def test_history_paginates_and_validates(api: Harness) -> None:
    token = await api.register("pages@example.com")
    uid = await api.user_id(token)
    for i in range(5):
        await api.db.execute(
            "INSERT INTO calls (user_id, persona_id, phone_number, status, created_at) "
            "VALUES ($1, 'sarah', '+1555', 'completed', now() - make_interval(mins => $2))",
            uid,
            i,
        )
    _, page, _ = await api.request(
        "GET", "/api/calls/history?limit=2&offset=1", token=token, expect=200
    )
    assert page["total"] == 5 and len(page["calls"]) == 2
    assert page["calls"][0]["persona_name"] == "Sarah"
    for bad in ("limit=0", "limit=1000", "limit=abc", "offset=-1"):
        status, body, _ = await api.request("GET", f"/api/calls/history?{bad}", token=token)
        assert status == 400, (bad, body)
