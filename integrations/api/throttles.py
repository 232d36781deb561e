"""API throttles whose rates come from settings at request time (so an operator's
``API_THROTTLE_*`` and a test's override both apply). Counters live in the shared cache
(Redis on the production path), keyed by user for signed-in calls and by address
otherwise."""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle

from integrations.net import client_ip


class AnonThrottle(SimpleRateThrottle):
    """Per address. Applied while authenticating (``integrations/api/auth.py``), so it
    must not ask for ``request.user``, which would authenticate again."""

    scope = "anon"

    def get_rate(self) -> str:
        return settings.API_THROTTLE_ANON

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": client_ip(request)}


class UserThrottle(UserRateThrottle):
    def get_rate(self) -> str:
        return settings.API_THROTTLE_USER
