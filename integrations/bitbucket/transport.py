"""Below the named calls: retries, auth objects, the OAuth token cache, request counting
and the small parsers the client uses (safe error text, JSON bodies, git's ref
advertisement)."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
from django.conf import settings
from urllib3.exceptions import ProtocolError, ReadTimeoutError
from urllib3.util.retry import Retry

from integrations.bitbucket.credentials import Credentials
from integrations.bitbucket.errors import UnexpectedResponse


class TokenSource(Protocol):
    """What OAuth auth needs of the client (no import of it: no cycle)."""

    def oauth_access_token(self) -> str: ...


USER_AGENT = "bitbucket-portal/0.1 (+self-hosted)"


# --- Retry policy ------------------------------------------------------------------------------


class CappedRetry(Retry):
    """urllib3 ``Retry`` that will not sleep longer than ``max_retry_after``, and counts
    every retried request that reached Bitbucket.

    A 429 whose ``Retry-After`` exceeds the cap is not retried: the caller gets
    :class:`RateLimited` with the wait, and can pace itself instead of blocking. urllib3
    makes a new ``Retry`` per attempt (``new()``), so the cap and the counter are carried
    along there.
    """

    max_retry_after: float = 60.0
    stats: "CallStats | None" = None

    def new(self, **kw):
        retry = super().new(**kw)
        retry.max_retry_after, retry.stats = self.max_retry_after, self.stats
        return retry

    def sleep_for_retry(self, response=None) -> bool:
        retry_after = self.get_retry_after(response) if response is not None else None
        if retry_after is not None:
            time.sleep(min(retry_after, self.max_retry_after))
            return True
        return False

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if response is not None and response.status == 429:
            retry_after = self.get_retry_after(response)
            if retry_after is not None and retry_after > self.max_retry_after:
                # Too long to wait here: exhaust, so urllib3 hands the 429 back as is.
                return Retry.increment(self.new(total=0, status=0), method, url, response, error, _pool, _stacktrace)
        retry = super().increment(method, url, response, error, _pool, _stacktrace)  # raises when exhausted
        if self.stats is not None and (response is not None or _is_read_error(error)):
            # The failed attempt reached Bitbucket (an answer, or a read that failed after
            # sending) and is sent again: Bitbucket counts both, so the scan does too.
            kind = "git" if url and ".git/" in url else "rest"
            self.stats.add(kind)
            if self.stats.on_retry is not None:
                self.stats.on_retry(kind, url or "")
        return retry


def _is_read_error(error: BaseException | None) -> bool:
    return isinstance(error, (ReadTimeoutError, ProtocolError))


def build_retry(stats: "CallStats | None" = None) -> Retry:
    retry = CappedRetry(
        total=settings.BITBUCKET_RETRIES,
        connect=settings.BITBUCKET_RETRIES,
        read=settings.BITBUCKET_RETRIES,
        status=settings.BITBUCKET_RETRIES,
        other=0,  # other=0: TLS errors are never retried
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD", "PUT", "DELETE"}),
        backoff_factor=settings.BITBUCKET_BACKOFF_FACTOR,
        backoff_max=settings.BITBUCKET_BACKOFF_MAX,
        backoff_jitter=settings.BITBUCKET_BACKOFF_FACTOR,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    retry.max_retry_after, retry.stats = settings.BITBUCKET_MAX_RETRY_AFTER, stats
    return retry


# --- Auth --------------------------------------------------------------------------------------


class _OAuthTokenCache:
    """Client-credentials tokens, shared across clients in a process.

    Keyed by :func:`oauth_cache_key`: a digest of the *whole* credential (consumer key
    and secret), the web URL and the integration. A consumer key alone is public (API
    users see it as ``credential_identity``), so a key-only cache would hand tenant A's
    token to anyone who typed A's key with a wrong secret.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}

    def get(self, key: str) -> str | None:
        with self._lock:
            token = self._tokens.get(key)
        return token[0] if token and token[1] > time.time() else None

    def put(self, key: str, token: str, expires_in: float) -> None:
        # Refresh a minute early (or at half-life for very short tokens).
        margin = min(60.0, expires_in / 2)
        with self._lock:
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[key] = (token, time.time() + expires_in - margin)

    def forget(self, key: str) -> None:
        with self._lock:
            self._tokens.pop(key, None)


def oauth_cache_key(credentials: Credentials, web_url: str, scope: object = None) -> str:
    """A digest of everything that makes a token valid for this caller: never the
    consumer key alone."""
    material = "\0".join([credentials.method, credentials.identity, credentials.secret, web_url, str(scope)])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


oauth_tokens = _OAuthTokenCache()


class OAuthBearer(requests.auth.AuthBase):
    def __init__(self, client: TokenSource) -> None:
        self.client = client

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.client.oauth_access_token()}"
        return request


class Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


@dataclass
class CallStats:
    rest: int = 0
    git: int = 0
    oauth: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Told of every request urllib3 sent again (kind, URL): the client charges its budget.
    on_retry: Callable[[str, str], None] | None = field(default=None, repr=False)

    def add(self, kind: str) -> None:
        with self.lock:
            setattr(self, kind, getattr(self, kind) + 1)


def pkt_line(text: str) -> bytes:
    """One git pkt-line: four hex digits of length (themselves included), then the data."""
    data = text.encode("utf-8")
    return f"{len(data) + 4:04x}".encode() + data


def parse_ref_advertisement(body: bytes) -> dict[str, str]:
    """Parse pkt-lines into ``{ref name: sha}`` (``HEAD`` included; peeled tags skipped)."""
    refs: dict[str, str] = {}
    pos = 0
    while pos + 4 <= len(body):
        try:
            length = int(body[pos : pos + 4], 16)
        except ValueError as exc:
            raise UnexpectedResponse("The git ref advertisement is malformed.") from exc
        if length == 0:
            pos += 4
            continue
        line = body[pos + 4 : pos + length].rstrip(b"\n").split(b"\0", 1)[0].decode("utf-8", "replace")
        pos += length
        if line.startswith("#"):
            continue
        sha, _, name = line.partition(" ")
        if name and not name.endswith("^{}") and len(sha) >= 40:
            refs[name] = sha
    return refs


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _expect_json(response: requests.Response, method: str, path: str) -> Any:
    body = _json_or_none(response)
    if body is None:
        raise UnexpectedResponse(
            "Bitbucket answered with something that is not JSON; is BITBUCKET_API_URL the API address?",
            status=response.status_code,
            method=method,
            path=path,
        )
    return body


_QUERY = re.compile(r"\?[^\s'\")]*")


def _short(exc: Exception) -> str:
    """An exception's text, safe to store: no query string (which may carry a token or
    just noise such as ``fields=``), at most 300 characters."""
    text = _QUERY.sub("", str(exc))
    return text if len(text) < 300 else text[:297] + "..."


def _basic(user: str, password: str) -> requests.auth.HTTPBasicAuth:
    """HTTP Basic encoded as UTF-8 (requests would use Latin-1 and fail on other text)."""
    return requests.auth.HTTPBasicAuth(user.encode("utf-8"), password.encode("utf-8"))
