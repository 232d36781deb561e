"""API token authentication: knox's hashed tokens, throttled against guessing.

Tokens are stored as SHA-512 digests (django-rest-knox), so a database dump holds no
usable token. Every failed token from one address counts; past
``API_TOKEN_FAILURES_PER_MINUTE`` the address gets 429 for the rest of the minute,
before any token is even looked at.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import exceptions
from rest_framework.authentication import get_authorization_header

from integrations.api.throttles import AnonThrottle
from integrations.net import Window, client_ip

WINDOW = 60


class TokenAuthentication(KnoxTokenAuthentication):
    def authenticate(self, request):
        failures = Window("api-token-failures", client_ip(request), WINDOW)
        if failures.count() >= settings.API_TOKEN_FAILURES_PER_MINUTE:
            raise exceptions.Throttled(wait=WINDOW, detail="Too many invalid API tokens from this address.")
        if not get_authorization_header(request):
            self._throttle_anonymous(request)
            return None
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            failures.add()
            raise

    @staticmethod
    def _throttle_anonymous(request) -> None:
        """Anonymous calls are throttled here: DRF checks permissions (401) before its
        throttles, so a flood of unauthenticated requests would never reach them. A
        browser session (the API docs page) is not anonymous."""
        user = getattr(request._request, "user", None)
        if user is not None and user.is_authenticated:
            return
        throttle = AnonThrottle()
        if not throttle.allow_request(request, None):
            raise exceptions.Throttled(wait=throttle.wait())

    def authenticate_credentials(self, token: bytes):
        try:
            token.decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        return super().authenticate_credentials(token)


class TokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes the header: ``Authorization: Token <key>``."""

    target_class = "integrations.api.auth.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Token")
