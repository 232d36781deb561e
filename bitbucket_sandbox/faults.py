"""Injected failures, and the record of every request the sandbox answered.

Faults (N x 5xx, slow answers, dropped connections) are set through
``POST /_sandbox/faults`` or by appending to ``Sandbox.faults`` in a test. The record
keeps which credential called (its label, never its secret), so tests and benchmarks
count the portal's calls (``GET /_sandbox/requests``).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlencode

from bitbucket_sandbox.http import ApiError, Request, Response

ERROR_MESSAGES = {500: "Something went wrong", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    credential: str  # the credential's label, never its secret
    kind: str  # "rest", "git", "oauth", "control"
    status: int
    at: float
    size: int = 0  # bytes of the answer's body


@dataclass
class Faults:
    """Failures to inject. Each entry applies to requests whose path matches."""

    errors: list[dict] = field(default_factory=list)  # {"status", "count", "path"}
    delays: list[dict] = field(default_factory=list)  # {"seconds", "count", "path"}
    drops: list[dict] = field(default_factory=list)  # {"count", "path"}

    def take(self, bucket: list[dict], path: str) -> dict | None:
        for entry in bucket:
            if entry["count"] > 0 and re.search(entry.get("path") or "", path):
                entry["count"] -= 1
                return entry
        return None

    def clear(self) -> None:
        self.errors.clear(), self.delays.clear(), self.drops.clear()


def fault_response(faults: Faults, lock: threading.RLock, path: str) -> Response | None:
    """The injected answer for a request to ``path``, if any (a delay alone answers None
    after sleeping, and the request is served)."""
    with lock:
        drop = faults.take(faults.drops, path)
        delay = faults.take(faults.delays, path)
        error = faults.take(faults.errors, path)
    if drop:
        return Response(0, drop=True)
    if delay:
        time.sleep(float(delay.get("seconds", 1)))
    if error:
        status = int(error.get("status", 503))
        return ApiError(status, ERROR_MESSAGES.get(status, "Error")).response()
    return None


def record(
    requests: deque[Recorded], request: Request, credential_label: str, kind: str, status: int, size: int = 0
) -> None:
    query = urlencode([(k, v) for k, vs in request.query.items() for v in vs])
    requests.append(Recorded(request.method, request.path, query, credential_label, kind, status, time.time(), size))
