"""The client's typed failures. ``str()`` of each is safe to show and to log: no secrets,
no query strings. The one classifier (``synclogs/classify.py``) maps them to sync log
categories."""

from __future__ import annotations

from typing import Any


class BitbucketError(Exception):
    """A failed Bitbucket call. ``str()`` is safe to show and to log: no secrets."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str = "",
        path: str = "",
        remote_message: str = "",
        detail: Any = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.method, self.path = message, status, method, path
        self.remote_message, self.detail = remote_message, detail


class Unauthorized(BitbucketError):
    """401: the credential is invalid, expired or revoked."""


class AppPasswordRejected(Unauthorized):
    """401 whose body shows an app password was used (removed on 2026-07-28)."""


class Forbidden(BitbucketError):
    """403. ``missing_scopes`` names what the credential lacks, when Bitbucket says."""

    def __init__(
        self,
        message: str,
        *,
        missing_scopes: list[str] | None = None,
        granted_scopes: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.missing_scopes = missing_scopes or []
        self.granted_scopes = granted_scopes or []


class NotFound(BitbucketError):
    """404: missing, or private and out of the credential's reach."""


class RateLimited(BitbucketError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class CertificateError(BitbucketError):
    """TLS verification failed (self-signed, expired, wrong host, intercepting proxy)."""


class HostUnreachable(BitbucketError):
    """DNS failure, connection refused, or a URL that is not Bitbucket's API."""


class Timeout(BitbucketError):
    """No answer in time, after retries: transient."""


class ConnectionDropped(BitbucketError):
    """The connection was reset or closed mid-answer, after retries: transient."""


class ServerError(BitbucketError):
    """5xx after retries."""


class UnexpectedResponse(BitbucketError):
    """Anything else: an unexpected status or a body that is not what the API sends."""
