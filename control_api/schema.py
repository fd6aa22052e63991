"""Request validation and the OpenAPI description, from one declaration per route.

A handler is decorated with :func:`api` (summary, auth, body schema, query schema). The same
JSON-Schema subset validates the request (clear 400s naming the field) and is emitted into
``/openapi.json``, so the document cannot drift from the routes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aiohttp import web

from control_api.errors import ApiError, bad_request

Schema = dict[str, Any]
Auth = Literal["none", "optional", "user", "admin", "twilio"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

E164 = r"^\+[1-9][0-9]{6,14}$"


@dataclass
class RouteDoc:
    summary: str
    auth: Auth = "user"
    body: Schema | None = None
    query: Schema | None = None
    status: int = 200
    tags: tuple[str, ...] = ()
    form: bool = False  # application/x-www-form-urlencoded (Twilio)


def api(
    summary: str,
    *,
    auth: Auth = "user",
    body: Schema | None = None,
    query: Schema | None = None,
    status: int = 200,
    tag: str = "",
    form: bool = False,
) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        handler.__api_doc__ = RouteDoc(  # type: ignore[attr-defined]
            summary, auth, body, query, status, (tag,) if tag else (), form
        )
        return handler

    return wrap


def obj(
    properties: dict[str, Schema], required: tuple[str, ...] = (), *, extra: bool = False
) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": extra,
    }


def string(
    min_len: int = 0,
    max_len: int = 255,
    pattern: str | None = None,
    fmt: str | None = None,
    enum: list[str] | None = None,
    nullable: bool = False,
) -> Schema:
    s: Schema = {"type": ["string", "null"] if nullable else "string", "maxLength": max_len}
    if min_len:
        s["minLength"] = min_len
    if pattern:
        s["pattern"] = pattern
    if fmt:
        s["format"] = fmt
    if enum:
        s["enum"] = enum
    return s


def integer(
    minimum: int | None = None, maximum: int | None = None, nullable: bool = False
) -> Schema:
    s: Schema = {"type": ["integer", "null"] if nullable else "integer"}
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    return s


def number(minimum: float | None = None, maximum: float | None = None) -> Schema:
    s: Schema = {"type": "number"}
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    return s


BOOLEAN: Schema = {"type": "boolean"}


def validate(value: Any, schema: Schema, path: str = "body") -> list[str]:
    """Return the problems (empty when valid). Supports the subset this API uses."""
    problems: list[str] = []
    types = schema.get("type")
    allowed = types if isinstance(types, list) else [types] if types else []
    if value is None:
        if "null" not in allowed:
            problems.append(f"{path}: must not be null")
        return problems
    kind = _kind(value)
    if allowed and kind not in allowed and not (kind == "integer" and "number" in allowed):
        want = " or ".join(t for t in allowed if t != "null")
        return [f"{path}: must be {want}, not {kind}"]
    if kind == "object":
        props: dict[str, Schema] = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{path}.{name}: is required")
        for name, item in value.items():
            if name in props:
                problems.extend(validate(item, props[name], f"{path}.{name}"))
            elif not schema.get("additionalProperties", True):
                problems.append(f"{path}.{name}: is not a known field")
    elif kind == "string":
        if len(value) > schema.get("maxLength", 1 << 30):
            problems.append(f"{path}: must be at most {schema['maxLength']} characters")
        if len(value) < schema.get("minLength", 0):
            problems.append(f"{path}: must be at least {schema['minLength']} characters")
        if "pattern" in schema and not re.fullmatch(schema["pattern"].strip("^$"), value):
            problems.append(f"{path}: has an invalid format")
        if "enum" in schema and value not in schema["enum"]:
            problems.append(f"{path}: must be one of {', '.join(schema['enum'])}")
        if schema.get("format") == "date-time" and _parse_datetime(value) is None:
            problems.append(f"{path}: must be an ISO 8601 date-time with a time zone")
        if schema.get("format") == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            problems.append(f"{path}: must be an email address")
    elif kind in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: must be at most {schema['maximum']}")
    return problems


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _parse_datetime(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def parse_datetime(value: str) -> datetime:
    parsed = _parse_datetime(value)
    if parsed is None:  # validate() ran first; this is a programming error
        raise bad_request(f"{value!r} is not an ISO 8601 date-time with a time zone")
    return parsed


async def json_body(request: web.Request, schema: Schema) -> dict[str, Any]:
    """The request's JSON object, validated; 400/413/415 with a clear message otherwise."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as err:
        raise bad_request(f"malformed JSON: {err}") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    problems = validate(body, schema)
    if problems:
        raise bad_request(problems[0], details=problems)
    return body


def query_params(request: web.Request, schema: Schema) -> dict[str, Any]:
    """Query parameters coerced to the schema's integer/boolean types and validated."""
    props: dict[str, Schema] = schema.get("properties", {})
    out: dict[str, Any] = {}
    for name, raw in request.query.items():
        spec = props.get(name)
        if spec is None:
            continue  # unknown query parameters are ignored, as browsers and proxies add some
        kind = spec.get("type")
        if kind == "integer":
            try:
                out[name] = int(raw)
            except ValueError:
                raise bad_request(f"query.{name}: must be an integer") from None
        elif kind == "boolean":
            if raw not in ("true", "false"):
                raise bad_request(f"query.{name}: must be true or false")
            out[name] = raw == "true"
        else:
            out[name] = raw
    problems = validate(out, {**schema, "additionalProperties": True}, "query")
    if problems:
        raise bad_request(problems[0], details=problems)
    return out
