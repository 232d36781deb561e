"""The client's address, the one way: ``REMOTE_ADDR``, or the proxy's
``X-Forwarded-For`` only when the portal is configured to sit behind one
(``BEHIND_TLS_PROXY``). Throttles, lockouts and webhook rate limits key on it.

Always a valid IP address (``0.0.0.0`` when there is none, as for a request made in
code), since the sign-in lockout stores it in an address column."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.core.cache import cache

UNKNOWN = "0.0.0.0"


def client_ip(request) -> str:
    meta = getattr(request, "META", None) or {}
    candidates = []
    if settings.BEHIND_TLS_PROXY and meta.get("HTTP_X_FORWARDED_FOR"):
        # The proxy appends the address it saw: the last entry is the one it vouches for.
        candidates.append(meta["HTTP_X_FORWARDED_FOR"].split(",")[-1].strip())
    candidates.append(meta.get("REMOTE_ADDR") or "")
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate[:64]))
        except ValueError:
            continue
    return UNKNOWN


class Window:
    """A per-address count in a fixed window, in the shared cache (Redis on the production
    path): how many failures (invalid tokens, refused webhook deliveries) one address sent
    in the last ``seconds``."""

    def __init__(self, name: str, address: str, seconds: int = 60) -> None:
        self.key, self.seconds = f"{name}:{address}", seconds

    def count(self) -> int:
        return cache.get(self.key) or 0

    def add(self) -> None:
        if cache.add(self.key, 1, self.seconds) is False:
            try:
                cache.incr(self.key)
            except ValueError:  # expired in between
                cache.add(self.key, 1, self.seconds)
