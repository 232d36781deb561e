"""The client's address, the one way: ``REMOTE_ADDR``, or the proxy's
``X-Forwarded-For`` only when the portal is configured to sit behind one
(``BEHIND_TLS_PROXY``). Throttles, lockouts and webhook rate limits key on it."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    if settings.BEHIND_TLS_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            # The proxy appends the address it saw: the last entry is the one it vouches for.
            return forwarded.split(",")[-1].strip()[:64]
    return (request.META.get("REMOTE_ADDR") or "unknown")[:64]
