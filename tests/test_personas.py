"""Guards personas: system personas read-only, custom personas private to their owner,
soft deletion, and the per-user relationship (favourite, type, prompt, voice merge)."""

from __future__ import annotations

from tests.api_harness import Harness

NEW = {
    "name": "Coach Kim",
    "core_system_prompt": "You are Kim, a patient running coach on the phone.",
    "default_voice_settings": {"speed": 1.1},
    "greeting": "Hi, Kim here!",
}


async def test_anonymous_sees_system_personas_without_prompts(api: Harness) -> None:
    _, body, _ = await api.request("GET", "/api/personas", expect=200)
    assert sorted(p["id"] for p in body["personas"]) == ["alex", "brad", "sarah"]
    assert all("core_system_prompt" not in p for p in body["personas"])
    _, one, _ = await api.request("GET", "/api/personas/sarah", expect=200)
    assert one["persona"]["name"] == "Sarah" and one["persona"]["endpointing_ms"] == 400
    status, body, _ = await api.request("GET", "/api/personas/ghost")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_custom_personas_are_private_and_editable_by_their_owner(api: Harness) -> None:
    owner = await api.register("owner@example.com")
    other = await api.register("other@example.com")
    _, body, _ = await api.request("POST", "/api/personas", token=owner, json=NEW, expect=201)
    persona = body["persona"]
    assert persona["is_custom"] and not persona["is_system_persona"]
    assert persona["default_voice_settings"] == {
        "stability": 0.5,
        "similarity_boost": 0.75,
        "speed": 1.1,
        "style": 0.0,
    }
    pid = persona["id"]
    _, mine, _ = await api.request("GET", "/api/personas", token=owner, expect=200)
    assert pid in [p["id"] for p in mine["personas"]]
    _, theirs, _ = await api.request("GET", "/api/personas", token=other, expect=200)
    assert pid not in [p["id"] for p in theirs["personas"]]
    assert (await api.request("GET", f"/api/personas/{pid}", token=other))[0] == 404
    assert (await api.request("GET", f"/api/personas/{pid}"))[0] == 404
    assert (await api.request("PUT", f"/api/personas/{pid}", token=other, json={"name": "X"}))[
        0
    ] == 404
    assert (await api.request("DELETE", f"/api/personas/{pid}", token=other))[0] == 404
    # Others cannot place calls with it either.
    status, _, _ = await api.request(
        "POST",
        "/api/calls/trigger",
        token=other,
        json={"persona_id": pid, "phone_number": "+15551234567"},
    )
    assert status == 404

    _, upd, _ = await api.request(
        "PUT",
        f"/api/personas/{pid}",
        token=owner,
        json={"temperature": 1.2, "default_voice_settings": {"style": 0.3}},
        expect=200,
    )
    assert upd["persona"]["temperature"] == 1.2
    assert upd["persona"]["default_voice_settings"]["speed"] == 1.1  # merged, not replaced
    assert upd["persona"]["default_voice_settings"]["style"] == 0.3
    await api.request("DELETE", f"/api/personas/{pid}", token=owner, expect=204)
    assert (await api.request("GET", f"/api/personas/{pid}", token=owner))[0] == 404
    assert await api.db.fetchval("SELECT is_active FROM personas WHERE id = $1", pid) is False


async def test_system_personas_are_read_only_to_users(api: Harness) -> None:
    token = await api.register("ro@example.com")
    status, body, _ = await api.request(
        "PUT", "/api/personas/brad", token=token, json={"name": "Bob"}
    )
    assert status == 403 and body["error"]["code"] == "read_only_persona"
    assert (await api.request("DELETE", "/api/personas/brad", token=token))[0] == 403
    assert await api.db.fetchval("SELECT name FROM personas WHERE id = 'brad'") == "Brad"


async def test_invalid_persona_bodies_are_refused(api: Harness) -> None:
    token = await api.register("inv@example.com")
    for bad, field in (
        ({"name": "x"}, "core_system_prompt: is required"),
        ({**NEW, "temperature": 3}, "temperature: must be at most 2"),
        ({**NEW, "default_voice_settings": {"speed": 9}}, "speed: must be at most 2"),
        ({**NEW, "avatar_url": "javascript:alert(1)"}, "avatar_url: has an invalid format"),
    ):
        status, body, _ = await api.request("POST", "/api/personas", token=token, json=bad)
        assert status == 400 and field in body["error"]["message"], body


async def test_relationship_upsert_and_voice_merge(api: Harness) -> None:
    token = await api.register("rel@example.com")
    _, body, _ = await api.request(
        "GET", "/api/personas/brad/relationship", token=token, expect=200
    )
    assert (
        body["relationship"]["relationship_type"] == "friend"
        and not body["relationship"]["is_favorite"]
    )
    _, body, _ = await api.request(
        "PUT",
        "/api/personas/brad/relationship",
        token=token,
        json={
            "is_favorite": True,
            "relationship_type": "coach",
            "custom_system_prompt": "I am training for a marathon.",
            "voice_settings": {"speed": 1.2},
        },
        expect=200,
    )
    rel = body["relationship"]
    assert rel["is_favorite"] and rel["relationship_type"] == "coach"
    assert rel["voice_settings"] == {
        "stability": 0.5,
        "similarity_boost": 0.75,
        "speed": 1.2,
        "style": 0.0,
    }
    _, body, _ = await api.request(
        "PUT",
        "/api/personas/brad/relationship",
        token=token,
        json={"voice_settings": {"stability": 0.9}},
        expect=200,
    )
    assert body["relationship"]["voice_settings"]["speed"] == 1.2
    assert body["relationship"]["voice_settings"]["stability"] == 0.9
    assert body["relationship"]["relationship_type"] == "coach"
    _, listed, _ = await api.request("GET", "/api/personas", token=token, expect=200)
    brad = next(p for p in listed["personas"] if p["id"] == "brad")
    assert brad["is_favorite"] and brad["relationship_type"] == "coach"
    other = await api.register("rel2@example.com")
    _, body, _ = await api.request(
        "GET", "/api/personas/brad/relationship", token=other, expect=200
    )
    assert not body["relationship"]["is_favorite"]
