"""API errors: every failure leaves as JSON ``{"error": {"code", "message"}}`` with its status."""

from __future__ import annotations

from typing import Any

from aiohttp import web


class ApiError(Exception):
    """Raise from a handler; the error middleware renders it."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details


def bad_request(message: str, details: Any = None) -> ApiError:
    return ApiError(400, "invalid_request", message, details=details)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, details: Any = None
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return web.json_response({"error": body}, status=status, headers=headers)
