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

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from integrations.bitbucket.budget import GIT, REST, budget_for
from integrations.bitbucket.credentials import Credentials
from integrations.bitbucket.errors import (  # noqa: F401 - the client's failures, as bb.NotFound etc.
    AppPasswordRejected,
    BitbucketError,
    CertificateError,
    ConnectionDropped,
    Forbidden,
    HostUnreachable,
    NotFound,
    RateLimited,
    ServerError,
    Timeout,
    Unauthorized,
    UnexpectedResponse,
)
from integrations.bitbucket.packs import (  # noqa: F401 - bb.PackTooLarge, bb.HeadMoved, bb.FetchTooSlow
    FetchTooSlow,
    HeadMoved,
    PackTooLarge,
    Snapshot,
    read_fetch_response,
)
from integrations.bitbucket.transport import (  # noqa: F401 - oauth_tokens: tests clear it
    USER_AGENT,
    Bearer,
    CallStats,
    OAuthBearer,
    _basic,
    _expect_json,
    _json_or_none,
    _short,
    build_retry,
    oauth_cache_key,
    oauth_tokens,
    parse_ref_advertisement,
    pkt_line,
)
from integrations.models import AuthMethod
from integrations.selectors import integration_get_credentials

# Partial responses (fields=): only what the portal reads.
REPOSITORY_FIELDS = (
    "uuid,slug,name,full_name,is_private,language,updated_on,mainbranch.name,project.uuid,project.key,links.html.href"
)
PROJECT_FIELDS = "uuid,key,name,description"
MEMBER_FIELDS = "user.uuid,user.account_id,user.display_name,user.nickname"
NO_COMMIT = "0" * 40
NO_HOOK = "{00000000-0000-4000-8000-000000000000}"


def _values(fields: str) -> str:
    return ",".join(f"values.{f}" for f in fields.split(","))


class BitbucketClient:
    def __init__(
        self,
        credentials: Credentials,
        *,
        api_url: str | None = None,
        web_url: str | None = None,
        timeout: tuple[float, float] | None = None,
        pool_size: int = 10,
        token_cache_scope: object = None,
        use_token_cache: bool = True,
    ) -> None:
        """``token_cache_scope`` (an integration id) keeps OAuth tokens per integration;
        ``use_token_cache=False`` (verification) always asks Bitbucket, so a cached token
        can never stand in for checking the credentials."""
        self.credentials = credentials
        self.use_token_cache = use_token_cache
        self._private_token: tuple[str, float] | None = None
        self.api_url = (api_url or settings.BITBUCKET_API_URL).rstrip("/")
        self.web_url = (web_url or settings.BITBUCKET_WEB_URL).rstrip("/")
        self.timeout = timeout or (settings.BITBUCKET_CONNECT_TIMEOUT, settings.BITBUCKET_READ_TIMEOUT)
        self.stats = CallStats(on_retry=self._retried)
        # The account's hourly allowance, shared with every worker (budget.py); background
        # work sets ``reserve`` to leave room for listings, webhooks and people.
        self.budget = budget_for(credentials, self.api_url)
        self.reserve = 0
        self._repositories_path = urlsplit(self.api_url).path.rstrip("/") + "/repositories"
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
            response = requests.post(
                url,
                data={"grant_type": "client_credentials"},
                timeout=self.timeout,
                auth=_basic(self.credentials.identity, self.credentials.secret),
                headers={"User-Agent": USER_AGENT},
            )
        except requests.RequestException as exc:
            raise self._transport_error(exc, "POST", url) from exc
        if response.status_code != 200:
            body = _json_or_none(response) or {}
            raise Unauthorized(
                "Bitbucket refused the OAuth consumer key and secret.",
                status=response.status_code,
                method="POST",
                path=urlsplit(url).path,
                remote_message=str(body.get("error_description") or body.get("error") or ""),
            )
        body = _json_or_none(response)
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise UnexpectedResponse(
                "Bitbucket's OAuth token answer has no access token.",
                status=200,
                method="POST",
                path=urlsplit(url).path,
            )
        expires_in = body.get("expires_in", 3600)
        expires_in = float(expires_in) if isinstance(expires_in, (int, float)) else 3600.0
        if self.use_token_cache:
            oauth_tokens.put(self._token_key, body["access_token"], expires_in)
        # Kept on this client too, so one verification run asks for one token, not one per call.
        self._private_token = (body["access_token"], time.time() + expires_in - min(60.0, expires_in / 2))
        return body["access_token"]

    # The one request path.
    def _request(
        self,
        method: str,
        url: str,
        *,
        params: dict | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        kind: str = "rest",
        auth: Any = None,
        allow_statuses: tuple[int, ...] = (),
    ) -> requests.Response:
        if not url.startswith(("http://", "https://")):
            url = f"{self.api_url}/{url.lstrip('/')}"
        path = urlsplit(url).path
        if self.before_request is not None:
            self.before_request()
        resource = self._resource(kind, path)
        if resource is not None:
            self.budget.take(resource, reserve=self.reserve if resource == REST else 0)
        self.stats.add(kind)
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                json=json,
                data=data,
                headers=headers,
                stream=stream,
                timeout=self.timeout,
                auth=auth,
                allow_redirects=True,
            )
        except requests.RequestException as exc:
            raise self._transport_error(exc, method, url) from exc
        if resource is not None:
            self.budget.observe(resource, response.status_code, response.headers)
        if response.status_code == 401 and self.credentials.method == AuthMethod.OAUTH and kind == "rest":
            # The cached token may have been revoked early: fetch a new one once.
            oauth_tokens.forget(self._token_key)
            self._private_token = None
            if resource is not None:
                self.budget.take(resource)
            try:
                response = self.session.request(
                    method, url, params=params, json=json, timeout=self.timeout, auth=auth, allow_redirects=True
                )
            except requests.RequestException as exc:
                raise self._transport_error(exc, method, url) from exc
        if response.status_code < 400 or response.status_code in allow_statuses:
            return response
        raise self._status_error(response, method, path)

    def _resource(self, kind: str, path: str) -> str | None:
        """The rate-limited resource a request counts against, if any."""
        if kind == "git":
            return GIT
        if path == self._repositories_path or path.startswith(self._repositories_path + "/"):
            return REST
        return None

    def _retried(self, kind: str, url: str) -> None:
        """urllib3 sent a request again: Bitbucket counts it, so the budget does."""
        resource = self._resource(kind, urlsplit(url).path)
        if resource is not None:
            self.budget.spend(resource)

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
            return CertificateError(
                f"The TLS certificate of {host} could not be verified.",
                method=method,
                path=path,
                remote_message=_short(exc),
            )
        refused = isinstance(reason, (NewConnectionError, NameResolutionError))  # a ConnectTimeoutError subclass
        if not refused and (
            isinstance(exc, requests.exceptions.Timeout) or isinstance(reason, (ReadTimeoutError, ConnectTimeoutError))
        ):
            return Timeout(
                f"{host} did not answer within {self.timeout[1]:.0f} seconds (after retries).", method=method, path=path
            )
        if isinstance(exc, requests.exceptions.RetryError):
            return ServerError(f"{host} kept failing after retries.", method=method, path=path)
        if isinstance(exc, requests.exceptions.ChunkedEncodingError) or (
            isinstance(reason, ProtocolError) or (isinstance(reason, OSError) and not refused)
        ):
            return ConnectionDropped(
                f"{host} dropped the connection (after retries).", method=method, path=path, remote_message=_short(exc)
            )
        if isinstance(
            exc,
            (
                requests.exceptions.ConnectionError,
                requests.exceptions.InvalidURL,
                requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema,
            ),
        ):
            return HostUnreachable(
                f"Could not connect to {host}.", method=method, path=path, remote_message=_short(exc)
            )
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
            return Forbidden(
                "The credentials lack permission for this call.",
                missing_scopes=missing,
                granted_scopes=granted,
                **common,
            )
        if status == 404:
            return NotFound("Bitbucket answered 404: not found, or not visible to these credentials.", **common)
        if status == 429:
            retry_after = response.headers.get("Retry-After")
            return RateLimited(
                "Bitbucket's rate limit was reached.",
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
                **common,
            )
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

    def paginate(
        self, path: str, *, fields: str | None = None, pagelen: int = 100, q: str | None = None, **params: Any
    ) -> Iterator[dict]:
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

    # --- The Bitbucket API: one named method per call, with its path and fields -------------
    # Paths are relative to BITBUCKET_API_URL; ``full_name`` is ``workspace/slug``.

    def project(self, workspace: str, key: str) -> dict:
        return self.get(f"workspaces/{workspace}/projects/{key}", fields=PROJECT_FIELDS)

    def projects(self, workspace: str) -> Iterator[dict]:
        return self.iterate(f"workspaces/{workspace}/projects", fields=_values(PROJECT_FIELDS))

    def projects_first_page(self, workspace: str) -> dict:
        """One page of one project: does the listing work, and how many are there?"""
        return next(self.paginate(f"workspaces/{workspace}/projects", pagelen=1, fields="values.key"))

    def repository_pages(self, workspace: str, project_key: str = "") -> Iterator[dict]:
        """The workspace's repositories (or one project's), 100 a page: the sync's listing."""
        return self.paginate(
            f"repositories/{workspace}",
            fields=_values(REPOSITORY_FIELDS),
            q=f'project.key="{project_key}"' if project_key else None,
        )

    def repositories_first_page(self, workspace: str, project_key: str = "") -> dict:
        return next(
            self.paginate(
                f"repositories/{workspace}",
                pagelen=1,
                fields="values.slug",
                q=f'project.key="{project_key}"' if project_key else None,
            )
        )

    def repository(self, full_name: str) -> dict:
        """One repository by ``workspace/slug``, or by ``workspace/{uuid}`` (what a rename
        cannot change)."""
        return self.get(f"repositories/{full_name}", fields=REPOSITORY_FIELDS)

    def branches(self, full_name: str) -> Iterator[dict]:
        """Branch names and heads over REST (where git is refused)."""
        return self.iterate(f"repositories/{full_name}/refs/branches", fields="values.name,values.target.hash")

    def members(self, workspace: str) -> Iterator[dict]:
        return self.iterate(f"workspaces/{workspace}/members", fields=_values(MEMBER_FIELDS))

    def members_first_page(self, workspace: str) -> dict:
        return next(self.paginate(f"workspaces/{workspace}/members", pagelen=1, fields="values.user.uuid"))

    def branch_restrictions(self, full_name: str) -> Iterator[dict]:
        return self.iterate(f"repositories/{full_name}/branch-restrictions")

    def branch_restrictions_first_page(self, full_name: str) -> dict:
        return next(self.paginate(f"repositories/{full_name}/branch-restrictions", pagelen=1))

    def default_reviewers_first(self, full_name: str) -> list[dict]:
        """At most one default reviewer: whether there are any."""
        return next(self.paginate(f"repositories/{full_name}/default-reviewers", pagelen=1, fields="values.uuid")).get(
            "values", []
        )

    def pull_requests_first_page(self, full_name: str) -> dict:
        return next(self.paginate(f"repositories/{full_name}/pullrequests", pagelen=1))

    def source_listing(
        self, full_name: str, commit: str, folder: str = "", *, max_depth: int | None = None
    ) -> Iterator[dict]:
        """Files and folders at ``commit`` under ``folder`` (paths and types)."""
        path = f"repositories/{full_name}/src/{commit}/{quote(folder) + '/' if folder else ''}"
        params = {"max_depth": max_depth} if max_depth is not None else {}
        return self.iterate(path, fields="values.path,values.type", **params)

    def file_text(self, full_name: str, commit: str, path: str) -> str:
        return self.get_text(f"repositories/{full_name}/src/{commit}/{quote(path)}")

    def diffstat(self, full_name: str, source: str, destination: str) -> Iterator[dict]:
        return self.iterate(f"repositories/{full_name}/diffstat/{source}..{destination}")

    def pull_request_diffstat(self, full_name: str, pull_request_id: int) -> Iterator[dict]:
        """What a pull request changes, from its own diffstat (a fork's commits are not in the
        destination repository)."""
        return self.iterate(f"repositories/{full_name}/pullrequests/{pull_request_id}/diffstat")

    def create_build_status(self, full_name: str, commit: str, status: dict) -> dict:
        return self.post(f"repositories/{full_name}/commit/{commit}/statuses/build", status)

    def create_comment(self, full_name: str, pull_request_id: int, raw: str) -> dict:
        return self.post(f"repositories/{full_name}/pullrequests/{pull_request_id}/comments", {"content": {"raw": raw}})

    def update_comment(self, full_name: str, pull_request_id: int, comment_id: int, raw: str) -> dict:
        return self.put(
            f"repositories/{full_name}/pullrequests/{pull_request_id}/comments/{comment_id}", {"content": {"raw": raw}}
        )

    def workspace_hook(self, workspace: str, uid: str) -> dict:
        return self.get(f"workspaces/{workspace}/hooks/{uid}", fields="uuid")

    def create_workspace_hook(self, workspace: str, hook: dict) -> dict:
        return self.post(f"workspaces/{workspace}/hooks", hook)

    def update_workspace_hook(self, workspace: str, uid: str, hook: dict) -> dict:
        return self.put(f"workspaces/{workspace}/hooks/{uid}", hook)

    def delete_workspace_hook(self, workspace: str, uid: str) -> None:
        self.delete(f"workspaces/{workspace}/hooks/{uid}")

    def create_repository_hook(self, full_name: str, hook: dict) -> dict:
        return self.post(f"repositories/{full_name}/hooks", hook)

    def update_repository_hook(self, full_name: str, uid: str, hook: dict) -> dict:
        return self.put(f"repositories/{full_name}/hooks/{uid}", hook)

    def delete_repository_hook(self, full_name: str, uid: str) -> None:
        self.delete(f"repositories/{full_name}/hooks/{uid}")

    # Write access, probed so nothing changes: a hook, a commit and a pull request that do
    # not exist. Bitbucket checks scopes first; a 404 or 400 after that means "allowed".
    def may_manage_hooks(self, full_name: str) -> int:
        return self.probe_write("PUT", f"repositories/{full_name}/hooks/{NO_HOOK}")

    def may_post_build_statuses(self, full_name: str) -> int:
        return self.probe_write("POST", f"repositories/{full_name}/commit/{NO_COMMIT}/statuses/build")

    def may_comment(self, full_name: str) -> int:
        return self.probe_write("POST", f"repositories/{full_name}/pullrequests/0/comments")

    def branch_head(self, full_name: str, branch: str) -> str:
        """The head commit of one branch (a merge's destination): one request."""
        body = self.get(f"repositories/{full_name}/refs/branches/{quote(branch, safe='')}", fields="target.hash")
        head = (body.get("target") or {}).get("hash") if isinstance(body, dict) else None
        if not isinstance(head, str) or not head:
            raise UnexpectedResponse(
                "Bitbucket's branch answer has no head commit.",
                status=200,
                method="GET",
                path=f"/repositories/{full_name}/refs/branches/…",
            )
        return head

    def git_refs(self, workspace: str, slug: str) -> dict[str, str]:
        """Branch and tag heads from git's smart-HTTP ref advertisement (what
        ``git ls-remote`` reads): one request, counted against git's own limit."""
        url = f"{self.web_url}/{workspace}/{slug}.git/info/refs"
        response = self._request(
            "GET", url, params={"service": "git-upload-pack"}, kind="git", auth=_basic(*self.git_auth())
        )
        return parse_ref_advertisement(response.content)

    def git_fetch_commit(self, workspace: str, slug: str, commit: str, *, max_bytes: int, timeout: float) -> Snapshot:
        """One commit's files over git: a shallow (depth 1) fetch of ``commit``, which must
        be a branch or tag head, in one stateless upload-pack request (git's own limit),
        read into memory with at most ``max_bytes`` on the wire and ``timeout`` seconds.
        Raises :class:`PackTooLarge` past either bound and :class:`HeadMoved` when the
        commit is no longer a head (the branch moved since the scan read it)."""
        url = f"{self.web_url}/{workspace}/{slug}.git/git-upload-pack"
        caps = "side-band-64k ofs-delta shallow no-progress agent=bitbucket-portal"
        body = pkt_line(f"want {commit} {caps}\n") + pkt_line("deepen 1\n") + b"0000" + pkt_line("done\n")
        response = self._request(
            "POST",
            url,
            data=body,
            kind="git",
            auth=_basic(*self.git_auth()),
            headers={
                "Content-Type": "application/x-git-upload-pack-request",
                "Accept": "application/x-git-upload-pack-result",
            },
            stream=True,
        )
        with response:
            response.raw.decode_content = True
            try:
                store, fetched = read_fetch_response(
                    response.raw, shallow=True, max_bytes=max_bytes, timeout=timeout, alive=self.before_request
                )
            except UnexpectedResponse as exc:
                if "not our ref" in str(exc):
                    raise HeadMoved(f"{commit[:12]} is no longer a head of {workspace}/{slug}.") from exc
                raise
            except (ProtocolError, ReadTimeoutError, SSLError, DecodeError) as exc:  # from the streaming read
                raise self._transport_error(requests.exceptions.ConnectionError(exc), "POST", url) from exc
        return Snapshot(store, commit, fetched)


def client_for(integration) -> BitbucketClient:
    """A client with the integration's (decrypted) credentials; its OAuth tokens are
    cached for this integration and these exact credentials only."""
    return BitbucketClient(
        integration_get_credentials(integration=integration),
        pool_size=max(10, settings.BITBUCKET_GIT_CONCURRENCY),
        token_cache_scope=integration.pk,
    )
