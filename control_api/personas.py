"""Personas and the user's relationship with each.

System personas (Brad, Sarah, Alex) are read-only to users; users create, change and delete
their own custom personas (deletion deactivates, because past calls keep referring to them).
A custom persona is invisible to everyone but its owner.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp import web

from control_api.auth import current_user, require_user
from control_api.errors import ApiError, not_found
from control_api.schema import BOOLEAN, api, integer, json_body, number, obj, string
from control_api.state import DB

routes = web.RouteTableDef()

VOICE_SETTINGS = obj(
    {
        "stability": number(0, 1),
        "similarity_boost": number(0, 1),
        "speed": number(0.5, 2),
        "style": number(0, 1),
    }
)

PERSONA_FIELDS = (
    "id, name, description, core_system_prompt, default_voice_id, default_voice_settings, "
    "avatar_url, category, is_active, is_system_persona, owner_user_id, greeting, temperature, "
    "max_tokens, endpointing_ms, created_at, updated_at"
)

VISIBLE = "is_active AND (is_system_persona OR owner_user_id = $1)"


def persona_json(row: asyncpg.Record, *, with_prompt: bool = True) -> dict[str, Any]:
    out = {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "default_voice_id": row["default_voice_id"],
        "default_voice_settings": row["default_voice_settings"],
        "avatar_url": row["avatar_url"],
        "category": row["category"],
        "is_active": row["is_active"],
        "is_system_persona": row["is_system_persona"],
        "is_custom": row["owner_user_id"] is not None,
        "greeting": row["greeting"],
        "temperature": float(row["temperature"]),
        "max_tokens": row["max_tokens"],
        "endpointing_ms": row["endpointing_ms"],
        "created_at": row["created_at"].isoformat(),
    }
    if with_prompt:
        out["core_system_prompt"] = row["core_system_prompt"]
    return out


PERSONA_BODY = {
    "name": string(min_len=1, max_len=255),
    "description": string(max_len=2000, nullable=True),
    "core_system_prompt": string(min_len=10, max_len=8000),
    "default_voice_id": string(max_len=100, nullable=True),
    "default_voice_settings": VOICE_SETTINGS,
    "avatar_url": string(max_len=2000, pattern=r"^https?://.+", nullable=True),
    "category": string(max_len=100, nullable=True),
    "greeting": string(max_len=500, nullable=True),
    "temperature": number(0, 2),
    "max_tokens": integer(1, 4096),
    "endpointing_ms": integer(10, 5000),
}
CREATE_PERSONA = obj(PERSONA_BODY, ("name", "core_system_prompt"))
UPDATE_PERSONA = obj(PERSONA_BODY)
_DEFAULT_VOICE = {"stability": 0.5, "similarity_boost": 0.75, "speed": 1.0, "style": 0.0}


def _slug(name: str) -> str:
    base = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:40] or "persona"
    return "-".join(p for p in base.split("-") if p)


async def insert_persona(
    conn: asyncpg.Connection | asyncpg.Pool,
    body: dict[str, Any],
    *,
    owner: str | None,
    system: bool = False,
) -> asyncpg.Record:
    import secrets

    persona_id = f"{_slug(body['name'])}-{secrets.token_hex(4)}"
    return await conn.fetchrow(
        f"INSERT INTO personas (id, name, description, core_system_prompt, default_voice_id, "
        f"  default_voice_settings, avatar_url, category, greeting, temperature, max_tokens, "
        f"  endpointing_ms, owner_user_id, is_system_persona) "
        f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
        f"RETURNING {PERSONA_FIELDS}",
        persona_id,
        body["name"],
        body.get("description"),
        body["core_system_prompt"],
        body.get("default_voice_id"),
        {**_DEFAULT_VOICE, **body.get("default_voice_settings", {})},
        body.get("avatar_url"),
        body.get("category") or ("custom" if owner else None),
        body.get("greeting"),
        body.get("temperature", 0.7),
        body.get("max_tokens", 150),
        body.get("endpointing_ms", 300),
        owner,
        system,
    )


async def update_persona_row(
    conn: asyncpg.Connection | asyncpg.Pool,
    persona_id: str,
    body: dict[str, Any],
    where: str,
    *args: Any,
) -> asyncpg.Record | None:
    """Apply the given fields; ``default_voice_settings`` is merged, not replaced."""
    sets, values = [], [persona_id, *args]
    for key, value in body.items():
        values.append(value)  # dicts go to jsonb through the pool's codec
        if key == "default_voice_settings":
            sets.append(f"{key} = {key} || ${len(values)}::jsonb")
        else:
            sets.append(f"{key} = ${len(values)}")  # keys come from the schema, never the user
    if not sets:
        return await conn.fetchrow(
            f"SELECT {PERSONA_FIELDS} FROM personas WHERE id = $1 AND {where}", persona_id, *args
        )
    return await conn.fetchrow(
        f"UPDATE personas SET {', '.join(sets)} WHERE id = $1 AND {where} "
        f"RETURNING {PERSONA_FIELDS}",
        *values,
    )


@routes.get("/api/personas")
@api(
    "Active personas: the system ones, plus your own and your favourites when signed in",
    auth="optional",
    tag="personas",
)
async def list_personas(request: web.Request) -> web.Response:
    user = await current_user(request, optional=True)
    uid = user.id if user else None
    rows = await request.app[DB].fetch(
        f"SELECT {', '.join('p.' + f.strip() for f in PERSONA_FIELDS.split(','))}, "
        "  r.is_favorite, r.relationship_type, r.total_calls, r.last_call_at "
        "FROM personas p LEFT JOIN user_persona_relationships r "
        "  ON r.persona_id = p.id AND r.user_id = $1 "
        "WHERE p.is_active AND (p.is_system_persona OR p.owner_user_id = $1) "
        "ORDER BY p.is_system_persona DESC, p.created_at, p.id",
        uid,
    )
    out = []
    for r in rows:
        item = persona_json(r, with_prompt=r["owner_user_id"] is not None)
        item["is_favorite"] = bool(r["is_favorite"])
        item["relationship_type"] = r["relationship_type"]
        item["total_calls"] = r["total_calls"] or 0
        out.append(item)
    return web.json_response({"personas": out})


@routes.get(r"/api/personas/{persona_id}")
@api("One persona", auth="optional", tag="personas")
async def get_persona(request: web.Request) -> web.Response:
    user = await current_user(request, optional=True)
    row = await request.app[DB].fetchrow(
        f"SELECT {PERSONA_FIELDS} FROM personas WHERE id = $2 AND {VISIBLE}",
        user.id if user else None,
        request.match_info["persona_id"],
    )
    if row is None:
        raise not_found("persona")
    return web.json_response({"persona": persona_json(row)})


@routes.post("/api/personas")
@api("Create a custom persona", body=CREATE_PERSONA, status=201, tag="personas")
async def create_persona(request: web.Request) -> web.Response:
    user = await require_user(request)
    body = await json_body(request, CREATE_PERSONA)
    count = await request.app[DB].fetchval(
        "SELECT count(*) FROM personas WHERE owner_user_id = $1 AND is_active", user.id
    )
    if count >= 50:
        raise ApiError(409, "too_many_personas", "you can have at most 50 custom personas")
    row = await insert_persona(request.app[DB], body, owner=user.id)
    return web.json_response({"persona": persona_json(row)}, status=201)


async def _own_or_error(request: web.Request, user_id: str, persona_id: str) -> None:
    row = await request.app[DB].fetchrow(
        "SELECT is_system_persona, owner_user_id FROM personas WHERE id = $1 AND is_active",
        persona_id,
    )
    if row is None or (not row["is_system_persona"] and row["owner_user_id"] != user_id):
        raise not_found("persona")
    if row["owner_user_id"] != user_id:
        raise ApiError(403, "read_only_persona", "system personas cannot be changed")


@routes.put(r"/api/personas/{persona_id}")
@api("Change one of your custom personas", body=UPDATE_PERSONA, tag="personas")
async def update_persona(request: web.Request) -> web.Response:
    user = await require_user(request)
    persona_id = request.match_info["persona_id"]
    await _own_or_error(request, user.id, persona_id)
    body = await json_body(request, UPDATE_PERSONA)
    row = await update_persona_row(request.app[DB], persona_id, body, "owner_user_id = $2", user.id)
    if row is None:
        raise not_found("persona")
    return web.json_response({"persona": persona_json(row)})


@routes.delete(r"/api/personas/{persona_id}")
@api("Delete one of your custom personas", tag="personas", status=204)
async def delete_persona(request: web.Request) -> web.Response:
    user = await require_user(request)
    persona_id = request.match_info["persona_id"]
    await _own_or_error(request, user.id, persona_id)
    await request.app[DB].execute(
        "UPDATE personas SET is_active = false WHERE id = $1 AND owner_user_id = $2",
        persona_id,
        user.id,
    )
    return web.Response(status=204)


RELATIONSHIP = obj(
    {
        "relationship_type": string(min_len=1, max_len=100),
        "custom_system_prompt": string(max_len=4000, nullable=True),
        "voice_id": string(max_len=100, nullable=True),
        "voice_settings": VOICE_SETTINGS,
        "is_favorite": BOOLEAN,
        "is_archived": BOOLEAN,
    }
)
REL_FIELDS = (
    "persona_id, relationship_type, custom_system_prompt, voice_id, voice_settings, total_calls, "
    "total_duration_seconds, last_call_at, is_favorite, is_archived"
)


def _relationship(row: asyncpg.Record | None, persona_id: str) -> dict[str, Any]:
    if row is None:
        return {
            "persona_id": persona_id,
            "relationship_type": "friend",
            "custom_system_prompt": None,
            "voice_id": None,
            "voice_settings": _DEFAULT_VOICE,
            "total_calls": 0,
            "total_duration_seconds": 0,
            "last_call_at": None,
            "is_favorite": False,
            "is_archived": False,
        }
    out = dict(row)
    out["last_call_at"] = row["last_call_at"].isoformat() if row["last_call_at"] else None
    return out


async def _visible_or_404(request: web.Request, user_id: str, persona_id: str) -> None:
    if (
        await request.app[DB].fetchval(
            f"SELECT 1 FROM personas WHERE id = $2 AND {VISIBLE}", user_id, persona_id
        )
        is None
    ):
        raise not_found("persona")


@routes.get(r"/api/personas/{persona_id}/relationship")
@api("Your relationship with a persona (favourite, type, custom prompt, voice)", tag="personas")
async def get_relationship(request: web.Request) -> web.Response:
    user = await require_user(request)
    persona_id = request.match_info["persona_id"]
    await _visible_or_404(request, user.id, persona_id)
    row = await request.app[DB].fetchrow(
        f"SELECT {REL_FIELDS} FROM user_persona_relationships "
        "WHERE user_id = $1 AND persona_id = $2",
        user.id,
        persona_id,
    )
    return web.json_response({"relationship": _relationship(row, persona_id)})


@routes.put(r"/api/personas/{persona_id}/relationship")
@api("Create or change your relationship with a persona", body=RELATIONSHIP, tag="personas")
async def put_relationship(request: web.Request) -> web.Response:
    user = await require_user(request)
    persona_id = request.match_info["persona_id"]
    await _visible_or_404(request, user.id, persona_id)
    body = await json_body(request, RELATIONSHIP)
    columns = list(body)
    values = [body[c] for c in columns]
    default_voice = json.dumps(_DEFAULT_VOICE)
    placeholders = [
        f"'{default_voice}'::jsonb || ${i + 3}::jsonb" if c == "voice_settings" else f"${i + 3}"
        for i, c in enumerate(columns)
    ]
    updates = [
        # Merge only what was sent (EXCLUDED holds the defaults-filled insert value).
        f"{c} = user_persona_relationships.{c} || ${i + 3}::jsonb"
        if c == "voice_settings"
        else f"{c} = EXCLUDED.{c}"
        for i, c in enumerate(columns)
    ] or ["updated_at = now()"]
    row = await request.app[DB].fetchrow(
        f"INSERT INTO user_persona_relationships (user_id, persona_id"
        f"{''.join(', ' + c for c in columns)}) "
        f"VALUES ($1, $2{''.join(', ' + p for p in placeholders)}) "
        f"ON CONFLICT (user_id, persona_id) DO UPDATE SET {', '.join(updates)} "
        f"RETURNING {REL_FIELDS}",
        user.id,
        persona_id,
        *values,
    )
    return web.json_response({"relationship": _relationship(row, persona_id)})


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
