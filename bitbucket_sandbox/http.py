"""Requests, responses and API errors, independent of any HTTP server.

``Sandbox.handle(Request) -> Response`` works on these plain objects, so tests can call
it directly and ``server.py`` stays a thin adapter. An ``ApiError`` raised anywhere
in a handler becomes Bitbucket's error envelope (``{"type": "error", "error": {...}}``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON = "application/json; charset=utf-8"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as exc:
            raise ApiError(400, "Invalid JSON in request body") from exc


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering (fault injection)
    delay: float = 0.0

    @classmethod
    def of_json(cls, status: int, payload: Any, headers: dict | None = None) -> "Response":
        return cls(status, dumps(payload), {"Content-Type": JSON, **(headers or {})})


class ApiError(Exception):
    def __init__(self, status: int, message: str, detail: Any = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.detail, self.headers = status, message, detail, headers or {}

    def response(self) -> Response:
        error: dict[str, Any] = {"message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return Response.of_json(self.status, {"type": "error", "error": error}, self.headers)


def dumps(payload: Any) -> bytes:
    """Compact JSON, as Bitbucket sends it."""
    return json.dumps(payload, separators=(",", ":")).encode()
