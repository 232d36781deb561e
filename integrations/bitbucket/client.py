"""The one Bitbucket Cloud client.

* base URLs from settings (``BITBUCKET_API_URL``, ``BITBUCKET_WEB_URL``), never per
  integration;
* a timeout on every request;
* auth in one place (:func:`auth_for`): Basic email + API token, Bearer access token,
  or an OAuth consumer's client-credentials token, cached and refreshed before expiry;
* one ``_request`` that turns every failure into a typed :class:`BitbucketError`,
  raised ``from`` its cause, with the method and path (never the query or a secret);
* retries from urllib3's ``Retry`` (429, 5xx, connection resets; honouring
  ``Retry-After`` up to a cap, else capped exponential backoff with jitter), never for
  401, 403, 404 or TLS errors;
* one pagination iterator that follows ``next`` exactly as given.

Docs: https://developer.atlassian.com/cloud/bitbucket/rest/intro/ and the spec in
../shared/bitbucket/.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from integrations.bitbucket.credentials import Credentials
from integrations.models import AuthMethod
from integrations.selectors import integration_get_credentials

USER_AGENT = "bitbucket-portal/0.1 (+self-hosted)"


# --- Typed failures ---------------------------------------------------------------------------

class BitbucketError(Exception):
    """A failed Bitbucket call. ``str()`` is safe to show and to log: no secrets."""

    def __init__(self, message: str, *, status: int | None = None, method: str = "", path: str = "",
                 remote_message: str = "", detail: Any = None) -> None:
        super().__init__(message)
        self.message, self.status, self.method, self.path = message, status, method, path
        self.remote_message, self.detail = remote_message, detail


class Unauthorized(BitbucketError):
    """401: the credential is invalid, expired or revoked."""


class AppPasswordRejected(Unauthorized):
    """401 whose body shows an app password was used (removed on 2026-07-28)."""


class Forbidden(BitbucketError):
    """403. ``missing_scopes`` names what the credential lacks, when Bitbucket says."""

    def __init__(self, message: str, *, missing_scopes: list[str] | None = None,
                 granted_scopes: list[str] | None = None, **kwargs: Any) -> None:
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
                return Retry.increment(self.new(total=0, status=0), method, url, response, error, _pool,
                                       _stacktrace)
        retry = super().increment(method, url, response, error, _pool, _stacktrace)  # raises when exhausted
        if self.stats is not None and (response is not None or _is_read_error(error)):
            # The failed attempt reached Bitbucket (an answer, or a read that failed after
            # sending) and is sent again: Bitbucket counts both, so the scan does too.
            self.stats.add("git" if url and ".git/" in url else "rest")
        return retry


def _is_read_error(error: BaseException | None) -> bool:
    return isinstance(error, (ReadTimeoutError, ProtocolError))


def build_retry(stats: "CallStats | None" = None) -> Retry:
    retry = CappedRetry(
        total=settings.BITBUCKET_RETRIES, connect=settings.BITBUCKET_RETRIES, read=settings.BITBUCKET_RETRIES,
        status=settings.BITBUCKET_RETRIES, other=0,  # other=0: TLS errors are never retried
        status_forcelist=(429, 500, 502, 503, 504), allowed_methods=frozenset({"GET", "HEAD", "PUT", "DELETE"}),
        backoff_factor=settings.BITBUCKET_BACKOFF_FACTOR, backoff_max=settings.BITBUCKET_BACKOFF_MAX,
        backoff_jitter=settings.BITBUCKET_BACKOFF_FACTOR, respect_retry_after_header=True, raise_on_status=False,
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
    def __init__(self, client: "BitbucketClient") -> None:
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


# --- The client --------------------------------------------------------------------------------

@dataclass
class CallStats:
    rest: int = 0
    git: int = 0
    oauth: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str) -> None:
        with self.lock:
            setattr(self, kind, getattr(self, kind) + 1)


class BitbucketClient:
    def __init__(self, credentials: Credentials, *, api_url: str | None = None, web_url: str | None = None,
                 timeout: tuple[float, float] | None = None, pool_size: int = 10,
                 token_cache_scope: object = None, use_token_cache: bool = True) -> None:
        """``token_cache_scope`` (an integration id) keeps OAuth tokens per integration;
        ``use_token_cache=False`` (verification) always asks Bitbucket, so a cached token
        can never stand in for checking the credentials."""
        self.credentials = credentials
        self.use_token_cache = use_token_cache
        self._private_token: tuple[str, float] | None = None
        self.api_url = (api_url or settings.BITBUCKET_API_URL).rstrip("/")
        self.web_url = (web_url or settings.BITBUCKET_WEB_URL).rstrip("/")
        self.timeout = timeout or (settings.BITBUCKET_CONNECT_TIMEOUT, settings.BITBUCKET_READ_TIMEOUT)
        self.stats = CallStats()
        # Called before every request (a running scan's heartbeat); may raise to stop the work.
        self.before_request: Callable[[], None] | None = None
        self._token_key = oauth_cache_key(credentials, self.web_url, token_cache_scope)
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=build_retry(self.stats), pool_connections=4, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        self.session.auth = self._auth()

    # Auth in one place.
    def _auth(self) -> requests.auth.AuthBase | tuple[str, str]:
        method = self.credentials.method
        if method == AuthMethod.API_TOKEN:
            return _basic(self.credentials.identity, self.credentials.secret)
        if method == AuthMethod.ACCESS_TOKEN:
            return Bearer(self.credentials.secret)
        if method == AuthMethod.OAUTH:
            return OAuthBearer(self)
        raise ValueError(f"Unsupported auth method {method!r}")

    def git_auth(self) -> tuple[str, str]:
        """HTTP Basic for git over HTTPS: API tokens and access/OAuth tokens use
        different fixed usernames."""
        method = self.credentials.method
        if method == AuthMethod.API_TOKEN:
            return ("x-bitbucket-api-token-auth", self.credentials.secret)
        if method == AuthMethod.OAUTH:
            return ("x-token-auth", self.oauth_access_token())
        return ("x-token-auth", self.credentials.secret)

    def oauth_access_token(self) -> str:
        token = oauth_tokens.get(self._token_key) if self.use_token_cache else None
        if token is None and self._private_token and self._private_token[1] > time.time():
            token = self._private_token[0]
        if token:
            return token
        url = f"{self.web_url}/site/oauth2/access_token"
        self.stats.add("oauth")
        try:
            response = requests.post(url, data={"grant_type": "client_credentials"}, timeout=self.timeout,
                                     auth=_basic(self.credentials.identity, self.credentials.secret),
                                     headers={"User-Agent": USER_AGENT})
        except requests.RequestException as exc:
            raise self._transport_error(exc, "POST", url) from exc
        if response.status_code != 200:
            body = _json_or_none(response) or {}
            raise Unauthorized(
                "Bitbucket refused the OAuth consumer key and secret.", status=response.status_code, method="POST",
                path=urlsplit(url).path, remote_message=str(body.get("error_description") or body.get("error") or ""))
        body = _json_or_none(response)
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise UnexpectedResponse("Bitbucket's OAuth token answer has no access token.", status=200,
                                     method="POST", path=urlsplit(url).path)
        expires_in = body.get("expires_in", 3600)
        expires_in = float(expires_in) if isinstance(expires_in, (int, float)) else 3600.0
        if self.use_token_cache:
            oauth_tokens.put(self._token_key, body["access_token"], expires_in)
        # Kept on this client too, so one verification run asks for one token, not one per call.
        self._private_token = (body["access_token"], time.time() + expires_in - min(60.0, expires_in / 2))
        return body["access_token"]

    # The one request path.
    def _request(self, method: str, url: str, *, params: dict | None = None, json: Any = None,
                 kind: str = "rest", auth: Any = None, allow_statuses: tuple[int, ...] = ()) -> requests.Response:
        if not url.startswith(("http://", "https://")):
            url = f"{self.api_url}/{url.lstrip('/')}"
        path = urlsplit(url).path
        if self.before_request is not None:
            self.before_request()
        self.stats.add(kind)
        try:
            response = self.session.request(method, url, params=params, json=json, timeout=self.timeout,
                                            auth=auth, allow_redirects=True)
        except requests.RequestException as exc:
            raise self._transport_error(exc, method, url) from exc
        if response.status_code == 401 and self.credentials.method == AuthMethod.OAUTH and kind == "rest":
            # The cached token may have been revoked early: fetch a new one once.
            oauth_tokens.forget(self._token_key)
            self._private_token = None
            try:
                response = self.session.request(method, url, params=params, json=json, timeout=self.timeout,
                                                auth=auth, allow_redirects=True)
            except requests.RequestException as exc:
                raise self._transport_error(exc, method, url) from exc
        if response.status_code < 400 or response.status_code in allow_statuses:
            return response
        raise self._status_error(response, method, path)

    def _transport_error(self, exc: requests.RequestException, method: str, url: str) -> BitbucketError:
        """Map a failure below HTTP to its type. urllib3 wraps timeouts and dropped
        connections that outlived their retries in a ``MaxRetryError`` inside a
        ``ConnectionError``, so the *reason* decides: a timeout or a dropped connection is
        Bitbucket being unavailable (transient), only DNS and refused connections point
        at a wrong host."""

        path, host = urlsplit(url).path, urlsplit(url).netloc
        reason: BaseException | None = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        if isinstance(exc, requests.exceptions.SSLError):
            return CertificateError(f"The TLS certificate of {host} could not be verified.", method=method, path=path,
                                    remote_message=_short(exc))
        refused = isinstance(reason, (NewConnectionError, NameResolutionError))  # a ConnectTimeoutError subclass
        if not refused and (isinstance(exc, requests.exceptions.Timeout)
                            or isinstance(reason, (ReadTimeoutError, ConnectTimeoutError))):
            return Timeout(f"{host} did not answer within {self.timeout[1]:.0f} seconds (after retries).",
                           method=method, path=path)
        if isinstance(exc, requests.exceptions.RetryError):
            return ServerError(f"{host} kept failing after retries.", method=method, path=path)
        if isinstance(exc, requests.exceptions.ChunkedEncodingError) or (
                isinstance(reason, ProtocolError) or (isinstance(reason, OSError) and not refused)):
            return ConnectionDropped(f"{host} dropped the connection (after retries).", method=method, path=path,
                                     remote_message=_short(exc))
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.InvalidURL,
                            requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)):
            return HostUnreachable(f"Could not connect to {host}.", method=method, path=path, remote_message=_short(exc))
        return UnexpectedResponse(f"Request to {host} failed: {type(exc).__name__}.", method=method, path=path)

    def _status_error(self, response: requests.Response, method: str, path: str) -> BitbucketError:
        status = response.status_code
        body = _json_or_none(response)
        error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
        remote = str(error.get("message") or (response.text[:200] if body is None else ""))
        detail = error.get("detail")
        common = {"status": status, "method": method, "path": path, "remote_message": remote, "detail": detail}
        if status == 401:
            if "app password" in remote.lower():
                return AppPasswordRejected("Bitbucket rejected an app password.", **common)
            return Unauthorized("Bitbucket rejected the credentials (invalid, expired or revoked).", **common)
        if status == 403:
            required = detail.get("required", []) if isinstance(detail, dict) else []
            granted = detail.get("granted", []) if isinstance(detail, dict) else []
            missing = [s for s in required if s not in granted]
            return Forbidden("The credentials lack permission for this call.", missing_scopes=missing,
                             granted_scopes=granted, **common)
        if status == 404:
            return NotFound("Bitbucket answered 404: not found, or not visible to these credentials.", **common)
        if status == 429:
            retry_after = response.headers.get("Retry-After")
            return RateLimited("Bitbucket's rate limit was reached.", retry_after=float(retry_after)
                               if retry_after and retry_after.isdigit() else None, **common)
        if status >= 500:
            return ServerError(f"Bitbucket answered {status} after retries.", **common)
        return UnexpectedResponse(f"Bitbucket answered {status}.", **common)

    # --- Reading ------------------------------------------------------------------------------
    def get(self, path: str, **params: Any) -> dict:
        return _expect_json(self._request("GET", path, params=params or None), "GET", path)

    def post(self, path: str, body: dict) -> dict:
        return _expect_json(self._request("POST", path, json=body), "POST", path)

    def put(self, path: str, body: dict) -> dict:
        return _expect_json(self._request("PUT", path, json=body), "PUT", path)

    def delete(self, path: str) -> None:
        """DELETE; an already-gone resource (404) counts as done."""
        self._request("DELETE", path, allow_statuses=(404,))

    def probe_write(self, method: str, path: str) -> int:
        """Whether the credential may write at ``path``, without writing: the request names
        something that does not exist, so a permitted call ends in 404 or 400 (returned),
        and a refused one raises ``Forbidden`` naming the missing scopes."""
        return self._request(method, path, json={}, allow_statuses=(400, 404, 405, 409, 422)).status_code

    def get_text(self, path: str, **params: Any) -> str:
        """A raw file body (``src/{commit}/{path}``)."""
        return self._request("GET", path, params=params or None).text

    def paginate(self, path: str, *, fields: str | None = None, pagelen: int = 100, q: str | None = None,
                 **params: Any) -> Iterator[dict]:
        """Yield pages (the envelope) of a collection, following ``next`` verbatim."""
        first = {"pagelen": pagelen, **params}
        if fields:
            first["fields"] = fields if "next" in fields.split(",") else f"next,size,{fields}"
        if q:
            first["q"] = q
        url: str | None = f"{self.api_url}/{path.lstrip('/')}"
        query: dict | None = first
        while url:
            page = _expect_json(self._request("GET", url, params=query), "GET", urlsplit(url).path)
            yield page
            url, query = page.get("next"), None

    def iterate(self, path: str, **kwargs: Any) -> Iterator[dict]:
        for page in self.paginate(path, **kwargs):
            yield from page.get("values", [])

    def branch_head(self, full_name: str, branch: str) -> str:
        """The head commit of one branch (a merge's destination): one request."""
        body = self.get(f"repositories/{full_name}/refs/branches/{quote(branch, safe='')}", fields="target.hash")
        head = (body.get("target") or {}).get("hash") if isinstance(body, dict) else None
        if not isinstance(head, str) or not head:
            raise UnexpectedResponse("Bitbucket's branch answer has no head commit.", status=200, method="GET",
                                     path=f"/repositories/{full_name}/refs/branches/…")
        return head

    def git_refs(self, workspace: str, slug: str) -> dict[str, str]:
        """Branch and tag heads from git's smart-HTTP ref advertisement (what
        ``git ls-remote`` reads): one request, counted against git's own limit."""
        url = f"{self.web_url}/{workspace}/{slug}.git/info/refs"
        response = self._request("GET", url, params={"service": "git-upload-pack"}, kind="git",
                                 auth=_basic(*self.git_auth()))
        return parse_ref_advertisement(response.content)


def parse_ref_advertisement(body: bytes) -> dict[str, str]:
    """Parse pkt-lines into ``{ref name: sha}`` (``HEAD`` included; peeled tags skipped)."""
    refs: dict[str, str] = {}
    pos = 0
    while pos + 4 <= len(body):
        try:
            length = int(body[pos:pos + 4], 16)
        except ValueError as exc:
            raise UnexpectedResponse("The git ref advertisement is malformed.") from exc
        if length == 0:
            pos += 4
            continue
        line = body[pos + 4:pos + length].rstrip(b"\n").split(b"\0", 1)[0].decode("utf-8", "replace")
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
            status=response.status_code, method=method, path=path)
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


def client_for(integration) -> BitbucketClient:
    """A client with the integration's (decrypted) credentials; its OAuth tokens are
    cached for this integration and these exact credentials only."""
    return BitbucketClient(integration_get_credentials(integration=integration),
                           pool_size=max(10, settings.BITBUCKET_GIT_CONCURRENCY), token_cache_scope=integration.pk)
