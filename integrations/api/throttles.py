"""API throttles whose rates come from settings at request time (so an operator's
``API_THROTTLE_*`` and a test's override both apply). Counters live in the shared cache
(Redis on the production path), keyed by user for signed-in calls and by address
otherwise."""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


class AnonThrottle(AnonRateThrottle):
    def get_rate(self) -> str:
        return settings.API_THROTTLE_ANON


class UserThrottle(UserRateThrottle):
    def get_rate(self) -> str:
        return settings.API_THROTTLE_USER
