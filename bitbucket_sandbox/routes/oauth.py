"""OAuth 2.0 client credentials at ``/site/oauth2/access_token``: a consumer's key and
secret (Basic, or in the form) for a bearer token that expires after
``oauth_token_ttl`` seconds."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from urllib.parse import parse_qs

from bitbucket_sandbox.core import SandboxCore
from bitbucket_sandbox.http import ApiError, Request, Response


class OAuthRoutes(SandboxCore):
    def _oauth_token(self, request: Request) -> Response:
        if request.method != "POST":
            raise ApiError(405, "Method not allowed")
        header = request.headers.get("authorization", "")
        form = parse_qs(request.body.decode(errors="replace"))
        key = secret = ""
        if header.lower().startswith("basic "):
            try:
                key, _, secret = base64.b64decode(header[6:].strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                pass
        key = key or (form.get("client_id") or [""])[0]
        secret = secret or (form.get("client_secret") or [""])[0]
        if (form.get("grant_type") or [""])[0] != "client_credentials":
            return Response.of_json(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "Only client_credentials is supported by the sandbox",
                },
            )
        credential = next((c for c in self.world.credentials if c.kind == "oauth_consumer" and c.key == key), None)
        if credential is None or not hmac.compare_digest(credential.secret, secret) or credential.expired:
            return Response.of_json(
                400, {"error": "invalid_client", "error_description": "Invalid OAuth client credentials"}
            )
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.oauth_tokens[token] = (credential, time.time() + self.oauth_token_ttl)
        return Response.of_json(
            200,
            {
                "access_token": token,
                "scopes": " ".join(credential.scopes),
                "expires_in": self.oauth_token_ttl,
                "token_type": "bearer",
                "state": "client_credentials",
                "refresh_token": secrets.token_urlsafe(16),
            },
        )
