"""Guards the API's surface: the OpenAPI document matches the routes exactly, JSON errors for
unknown routes and methods, CORS for configured origins only, /metrics, and per-IP limits."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from control_api.openapi import documented_routes
from control_api.ratelimit import RateLimiter
from control_api.state import Limits
from tests.api_harness import Harness, start_harness, stop_harness


async def test_openapi_documents_every_route_and_only_those(api: Harness) -> None:
    _, doc, _ = await api.request("GET", "/openapi.json", expect=200)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = set()
    for route in api.app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info()
        served.add((route.method, info.get("path") or info.get("formatter")))
    assert documented == served
    assert len(documented_routes(api.app)) == len(served)  # every handler carries @api
    trigger = doc["paths"]["/api/calls/trigger"]["post"]
    schema = trigger["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["persona_id", "phone_number"]
    assert doc["paths"]["/api/voice/status"]["post"]["security"] == [{"twilioSignature": []}]


async def test_unknown_routes_and_methods_answer_json(api: Harness) -> None:
    status, body, _ = await api.request("GET", "/api/nope")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body, r = await api.request("DELETE", "/api/auth/login")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert "POST" in r.headers["Allow"]


async def test_metrics_count_requests(api: Harness) -> None:
    await api.request("GET", "/health", expect=200)
    _, text, r = await api.request("GET", "/metrics", expect=200)
    assert r.content_type == "text/plain"
    assert 'callmeback_api_requests_total{route="/health",status="200"} 1' in text
    assert "callmeback_api_request_ms_bucket" in text


async def test_cors_only_for_configured_origins(
    tmp_path: Path, db: asyncpg.Pool, db_dsn: str
) -> None:
    h, parts = await start_harness(tmp_path, db, db_dsn, CORS_ORIGINS="https://app.example.com")
    try:
        pre = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
        status, _, r = await h.request("OPTIONS", "/api/calls/trigger", headers=pre)
        assert (
            status == 204 and r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        )
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        status, _, r = await h.request(
            "OPTIONS", "/api/calls/trigger", headers={**pre, "Origin": "https://evil.example"}
        )
        assert status == 403 and "Access-Control-Allow-Origin" not in r.headers
        _, _, r = await h.request(
            "GET", "/api/personas", headers={"Origin": "https://app.example.com"}
        )
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        _, _, r = await h.request(
            "GET", "/api/personas", headers={"Origin": "https://evil.example"}
        )
        assert "Access-Control-Allow-Origin" not in r.headers
    finally:
        await stop_harness(parts)


async def test_per_ip_and_per_user_limits_answer_429(
    tmp_path: Path, db: asyncpg.Pool, db_dsn: str
) -> None:
    limits = Limits(per_ip=RateLimiter(5, 60), per_user=RateLimiter(3, 60))
    h, parts = await start_harness(tmp_path, db, db_dsn, limits=limits)
    try:
        for _ in range(5):
            await h.request("GET", "/api/personas", expect=200)
        status, body, r = await h.request("GET", "/api/personas")
        assert status == 429 and body["error"]["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
        # Twilio's webhooks and health probes are not limited per IP.
        await h.request("GET", "/health", expect=200)
        assert (
            await h.twilio_post("/api/voice/status", {"CallSid": "CA1", "CallStatus": "ringing"})
        )[0] == 404
        limits.per_ip = RateLimiter(1000, 60)
        token = await h.register("busy-user@example.com")
        for _ in range(3):
            await h.request("GET", "/api/me", token=token, expect=200)
        assert (await h.request("GET", "/api/me", token=token))[0] == 429
    finally:
        await stop_harness(parts)


def test_token_bucket_refills_over_time() -> None:
    now = [0.0]
    rl = RateLimiter(2, 10, clock=lambda: now[0])
    assert rl.hit("k") == 0 and rl.hit("k") == 0
    assert rl.hit("k") == 5.0  # one token per 5 s
    now[0] = 5.0
    assert rl.hit("k") == 0 and rl.hit("k") > 0
    rl.reset("k")
    assert rl.hit("k") == 0
