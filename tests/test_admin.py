"""Guards the admin routes: the admin token (never a user JWT), hashed admin_users tokens,
credit adjustments with an audit row, system personas, and the analytics queries."""

from __future__ import annotations

import hashlib

from tests.api_harness import Harness


async def test_admin_routes_need_the_admin_token(api: Harness) -> None:
    user = await api.register("notadmin@example.com")
    assert (await api.request("GET", "/admin/users"))[0] == 401
    status, body, _ = await api.request("GET", "/admin/users", token=user)
    assert status == 403 and body["error"]["code"] == "forbidden"
    _, body, _ = await api.request(
        "GET", "/admin/users", token=api.settings.admin_token, expect=200
    )
    assert [u["email"] for u in body["users"]] == ["notadmin@example.com"]
    # A named admin authenticates with its own token; only its SHA-256 is stored.
    await api.db.execute(
        "INSERT INTO admin_users (email, token_sha256) VALUES ('ops@example.com', $1)",
        hashlib.sha256(b"ops-token-0123456789").hexdigest(),
    )
    await api.request("GET", "/admin/users?q=NOTADMIN", token="ops-token-0123456789", expect=200)
    await api.db.execute("UPDATE admin_users SET is_active = false")
    assert (await api.request("GET", "/admin/users", token="ops-token-0123456789"))[0] == 403


async def test_credit_adjustment_is_audited_and_bounded(api: Harness) -> None:
    admin = api.settings.admin_token
    token = await api.register("topup@example.com")
    uid = await api.user_id(token)
    _, body, _ = await api.request(
        "POST",
        f"/admin/users/{uid}/credits",
        token=admin,
        json={"amount": 25, "description": "goodwill"},
        expect=200,
    )
    assert (body["balance_before"], body["balance_after"]) == (10, 35)
    status, body, _ = await api.request(
        "POST",
        f"/admin/users/{uid}/credits",
        token=admin,
        json={"amount": -36, "description": "oops"},
    )
    assert status == 409
    txn = await api.db.fetchrow(
        "SELECT amount, balance_before, balance_after, description "
        "FROM credit_transactions WHERE type = 'admin_adjustment'"
    )
    assert tuple(txn)[:3] == (25, 10, 35) and "goodwill" in txn["description"]
    assert (
        await api.request(
            "POST",
            "/admin/users/usr_nobody/credits",
            token=admin,
            json={"amount": 1, "description": "x"},
        )
    )[0] == 404
    assert (await api.request("POST", "/admin/users/usr_nobody/ban", token=admin))[0] == 404


async def test_admin_manages_system_personas(api: Harness) -> None:
    admin = api.settings.admin_token
    _, body, _ = await api.request(
        "POST",
        "/admin/personas",
        token=admin,
        json={"name": "Dana", "core_system_prompt": "You are Dana, a cheerful language tutor."},
        expect=201,
    )
    pid = body["persona"]["id"]
    assert body["persona"]["is_system_persona"]
    _, public, _ = await api.request("GET", "/api/personas", expect=200)
    assert pid in [p["id"] for p in public["personas"]]
    await api.request(
        "PUT", f"/admin/personas/{pid}", token=admin, json={"is_active": False}, expect=200
    )
    _, public, _ = await api.request("GET", "/api/personas", expect=200)
    assert pid not in [p["id"] for p in public["personas"]]
    assert (await api.request("DELETE", "/admin/personas/ghost", token=admin))[0] == 404


async def test_analytics_read_the_cost_tables(api: Harness) -> None:
    admin = api.settings.admin_token
    token = await api.register("costly@example.com")
    uid = await api.user_id(token)
    call = await api.db.fetchval(
        "INSERT INTO calls (user_id, persona_id, phone_number, status, duration_seconds) "
        "VALUES ($1, 'alex', '+1555', 'completed', 120) RETURNING id",
        uid,
    )
    await api.db.execute(
        "INSERT INTO call_cost_breakdowns (call_id, twilio_cost_cents, deepgram_cost_cents, "
        "cerebras_cost_cents, elevenlabs_cost_cents, total_cost_cents) "
        "VALUES ($1, 2.6, 0.96, 0.5, 1.25, 5.31)",
        call,
    )
    _, mine, _ = await api.request(
        "GET", "/api/analytics/costs?group_by=provider", token=token, expect=200
    )
    by = {r["provider"]: r["cost_cents"] for r in mine["rows"]}
    assert by["twilio"] == "2.600000" and by["total"] == "5.310000"
    _, per_persona, _ = await api.request(
        "GET", "/api/analytics/costs?group_by=persona", token=token, expect=200
    )
    assert per_persona["rows"][0]["persona_name"] == "Alex"
    _, per_day, _ = await api.request("GET", "/api/analytics/costs", token=token, expect=200)
    assert per_day["rows"][0]["calls"] == 1 and per_day["rows"][0]["cost_cents"] == "5.310000"
    status, _, _ = await api.request("GET", "/api/analytics/costs?group_by=planet", token=token)
    assert status == 400
    other = await api.register("cheap@example.com")
    _, theirs, _ = await api.request(
        "GET", "/api/analytics/costs?group_by=provider", token=other, expect=200
    )
    assert {r["cost_cents"] for r in theirs["rows"]} == {"0"}
    _, everyone, _ = await api.request("GET", "/admin/analytics/costs", token=admin, expect=200)
    assert {r["provider"]: r["cost_cents"] for r in everyone["rows"]}["total"] == "5.310000"
    _, calls, _ = await api.request("GET", "/admin/analytics/calls", token=admin, expect=200)
    assert calls["top_personas"][0]["name"] == "Alex"
    await api.request("GET", "/admin/analytics/revenue", token=admin, expect=200)
