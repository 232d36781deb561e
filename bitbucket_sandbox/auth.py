"""Who is calling, what they may do, and how often.

Basic (Atlassian account email + API token with granular scopes), Bearer (access
tokens with the older scope names, and OAuth tokens issued by ``routes/oauth.py``),
the git variants of Basic (``x-token-auth``, ``x-bitbucket-api-token-auth``), 403
bodies that name ``required`` and ``granted`` scopes, what a credential can reach
(a repository outside it is a 404, as on Bitbucket), and rolling-window rate limits
with ``X-RateLimit-*`` headers.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
import time
from collections import deque
from dataclasses import dataclass

from bitbucket_sandbox.data import Credential, World
from bitbucket_sandbox.http import ApiError, Request

# Granular scopes of API tokens, as the routes name them.
R, W = "read:repository:bitbucket", "write:repository:bitbucket"
RA = "admin:repository:bitbucket"
PR_R, PR_W = "read:pullrequest:bitbucket", "write:pullrequest:bitbucket"
WH_R, WH_W, WH_D = "read:webhook:bitbucket", "write:webhook:bitbucket", "delete:webhook:bitbucket"
WS_R, PJ_R, U_R = "read:workspace:bitbucket", "read:project:bitbucket", "read:user:bitbucket"

# What each older scope name grants besides itself.
LEGACY_IMPLIES = {
    "repository:write": {"repository"},
    "repository:admin": set(),
    "pullrequest": {"repository"},
    "pullrequest:write": {"pullrequest", "repository", "repository:write"},
    "project:admin": {"project"},
    "webhook": set(),
    "account": set(),
}
RATE_LIMIT_MESSAGE = "Rate limit for this resource has been exceeded"
OAuthTokens = dict[str, tuple[Credential, float]]  # token -> (credential, expiry as a time.time())


@dataclass
class Auth:
    credential: Credential | None  # None: anonymous
    via: str  # "basic", "bearer", "oauth", "anonymous"

    @property
    def label(self) -> str:
        return self.credential.label if self.credential else "anonymous"


def authenticate(
    request: Request, world: World, oauth_tokens: OAuthTokens, lock: threading.RLock, *, git: bool = False
) -> Auth:
    header = request.headers.get("authorization", "")
    if not header:
        return Auth(None, "anonymous")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        token = value.strip()
        with lock:
            issued = oauth_tokens.get(token)
        if issued is not None:
            credential, expires = issued
            if time.time() >= expires:
                raise ApiError(401, "Access token expired.")
            return Auth(credential, "oauth")
        credential = world.find_credential(token)
        if credential is None or credential.kind != "access_token":
            raise ApiError(401, "Token is invalid, expired, or not supported for this endpoint.")
        if credential.expired:
            raise ApiError(401, "Token is invalid, expired, or not supported for this endpoint.")
        return Auth(credential, "bearer")
    if scheme == "basic":
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ApiError(401, "Invalid Authorization header.") from exc
        if password.startswith("ATBB"):
            raise ApiError(
                401,
                "App passwords are no longer supported. Use an API token instead: "
                "https://support.atlassian.com/bitbucket-cloud/docs/api-tokens/",
            )
        if git and user == "x-token-auth":
            with lock:
                issued = oauth_tokens.get(password)
            if issued is not None and time.time() < issued[1]:
                return Auth(issued[0], "oauth")
            credential = world.find_credential(password)
            if credential and credential.kind == "access_token" and not credential.expired:
                return Auth(credential, "basic")
            raise ApiError(401, "Invalid credentials")
        credential = world.find_credential(password)
        expected_user = credential.email if credential else None
        if git and user == "x-bitbucket-api-token-auth" and credential and credential.kind == "api_token":
            expected_user = user
        if (
            credential is None
            or credential.kind != "api_token"
            or not hmac.compare_digest((expected_user or "").lower(), user.lower())
        ):
            raise ApiError(401, "Invalid credentials")
        if credential.expired:
            raise ApiError(401, "Your API token has expired. Create a new one in your Atlassian account settings.")
        return Auth(credential, "basic")
    raise ApiError(401, "Unsupported authorization scheme")


def check_scopes(auth: Auth, legacy: tuple[str, ...], granular: tuple[str, ...]) -> None:
    """API tokens need the route's granular scopes; access and OAuth tokens its older
    ones (with their implications)."""
    credential = auth.credential
    if credential is None:
        return
    if credential.kind == "api_token":
        required, granted = list(granular), list(credential.scopes)
        have = set(granted)
    else:
        required, granted = list(legacy), list(credential.scopes)
        have = set(granted)
        for scope in granted:
            have |= LEGACY_IMPLIES.get(scope, set())
    if required and not set(required) <= have:
        raise ApiError(
            403,
            "Your credentials lack one or more required privilege scopes.",
            detail={"required": required, "granted": granted},
        )


def can_reach(
    world: World,
    auth: Auth,
    workspace: str,
    project_key: str | None = None,
    repo_slug: str | None = None,
    *,
    public: bool = False,
) -> bool:
    credential = auth.credential
    if credential is None:
        return public
    if credential.kind in ("api_token", "oauth_consumer"):
        ws = world.workspaces.get(workspace)
        return bool(ws and (credential.user in ws.members or public))
    if credential.workspace != workspace:
        return False
    if credential.project_key and project_key is not None and credential.project_key != project_key:
        return False
    if credential.repo_slug and repo_slug is not None and credential.repo_slug != repo_slug:
        return False
    return True


def rate_key(auth: Auth) -> str:
    c = auth.credential
    if c is None:
        return "anonymous"
    # API tokens share their user's allowance; OAuth its consumer's; access tokens their own.
    return (
        f"user:{c.user}"
        if c.kind == "api_token"
        else f"consumer:{c.key}"
        if c.kind == "oauth_consumer"
        else f"token:{c.label}"
    )


class RateWindows:
    """Request times per (rate key, bucket) over a rolling window."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self._windows: dict[tuple[str, str], deque[float]] = {}

    def take(self, key: str, bucket: str, limit: int, window_seconds: float) -> dict[str, str]:
        """Count one request, or raise the 429 Bitbucket gives past ``limit``. Returns the
        ``X-RateLimit-*`` headers of the answer."""
        now = time.time()
        with self.lock:
            window = self._windows.setdefault((key, bucket), deque())
            while window and window[0] <= now - window_seconds:
                window.popleft()
            if len(window) >= limit:
                retry = max(1, int(window[0] + window_seconds - now) + 1)
                raise ApiError(
                    429,
                    RATE_LIMIT_MESSAGE,
                    headers={
                        "Retry-After": str(retry),
                        "X-RateLimit-Limit": str(limit),
                        "X-RateLimit-Resource": bucket,
                        "X-RateLimit-NearLimit": "true",
                    },
                )
            window.append(now)
            remaining = limit - len(window)
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Resource": bucket,
            "X-RateLimit-NearLimit": "true" if remaining < limit * 0.2 else "false",
        }

    def clear(self) -> None:
        self._windows.clear()
