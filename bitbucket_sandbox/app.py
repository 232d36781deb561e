"""The sandbox's request handling: Bitbucket Cloud REST 2.0 and git ref reads.

``Sandbox.handle(request) -> Response`` is independent of the HTTP server, so tests
can call it directly and the server stays a thin adapter. Behaviour follows the
published OpenAPI spec and Atlassian's API guide: paginated envelopes with opaque
``next`` links, ``pagelen`` limits, ``fields=``, ``q=``/``sort=``, Basic (email + API
token) and Bearer (access and OAuth tokens) auth with per-operation scopes, 403 bodies
that name the missing scopes, 404 for what a token cannot reach, rolling-window rate
limits with ``X-RateLimit-*`` headers, and 410 for removed endpoints.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid as uuidlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode

from bitbucket_sandbox.data import Comment, Commit, Credential, Hook, PullRequest, Repo, World, commit_hash, iso
from bitbucket_sandbox.query import QueryError, apply_fields, compile_query, sort_key

JSON = "application/json; charset=utf-8"
LEGACY_IMPLIES = {
    "repository:write": {"repository"}, "repository:admin": set(), "pullrequest": {"repository"},
    "pullrequest:write": {"pullrequest", "repository", "repository:write"}, "project:admin": {"project"},
    "webhook": set(), "account": set(),
}
GONE_DETAIL = ("This API is no longer supported.\n\nFor information about its removal, please refer to the "
               "deprecation notice at: https://developer.atlassian.com/cloud/bitbucket/deprecation-notice-v1-apis/")
RATE_LIMIT_MESSAGE = "Rate limit for this resource has been exceeded"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as exc:
            raise ApiError(400, "Invalid JSON in request body") from exc


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering (fault injection)
    delay: float = 0.0

    @classmethod
    def of_json(cls, status: int, payload: Any, headers: dict | None = None) -> "Response":
        return cls(status, _dumps(payload), {"Content-Type": JSON, **(headers or {})})


class ApiError(Exception):
    def __init__(self, status: int, message: str, detail: Any = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.detail, self.headers = status, message, detail, headers or {}

    def response(self) -> Response:
        error: dict[str, Any] = {"message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return Response.of_json(self.status, {"type": "error", "error": error}, self.headers)


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    credential: str  # the credential's label, never its secret
    kind: str  # "rest", "git", "oauth", "control"
    status: int
    at: float


@dataclass
class Faults:
    """Failures to inject. Each entry applies to requests whose path matches."""

    errors: list[dict] = field(default_factory=list)  # {"status", "count", "path"}
    delays: list[dict] = field(default_factory=list)  # {"seconds", "count", "path"}
    drops: list[dict] = field(default_factory=list)  # {"count", "path"}

    def take(self, bucket: list[dict], path: str) -> dict | None:
        for entry in bucket:
            if entry["count"] > 0 and re.search(entry.get("path") or "", path):
                entry["count"] -= 1
                return entry
        return None

    def clear(self) -> None:
        self.errors.clear(), self.delays.clear(), self.drops.clear()


@dataclass
class Auth:
    credential: Credential | None  # None: anonymous
    via: str  # "basic", "bearer", "oauth", "anonymous"

    @property
    def label(self) -> str:
        return self.credential.label if self.credential else "anonymous"


@dataclass
class Route:
    method: str
    pattern: re.Pattern
    handler: Callable
    legacy: tuple[str, ...]  # scopes for access tokens and OAuth
    granular: tuple[str, ...]  # scopes for API tokens
    rate_bucket: str = "other"


def _route(method: str, path: str, legacy: tuple = (), granular: tuple = (), bucket: str = "other"):
    regex = "^" + re.sub(r"\{(\w+)\}", lambda m: f"(?P<{m.group(1)}>{'.*' if m.group(1) == 'path' else '.+' if m.group(1) == 'branch' else '[^/]+'})",
                         path) + "/?$"

    def decorate(fn):
        fn._route = (method, re.compile(regex), legacy, granular, bucket)
        return fn
    return decorate


R, W = "read:repository:bitbucket", "write:repository:bitbucket"
RA = "admin:repository:bitbucket"
PR_R, PR_W = "read:pullrequest:bitbucket", "write:pullrequest:bitbucket"
WH_R, WH_W, WH_D = "read:webhook:bitbucket", "write:webhook:bitbucket", "delete:webhook:bitbucket"
WS_R, PJ_R, U_R = "read:workspace:bitbucket", "read:project:bitbucket", "read:user:bitbucket"


class Sandbox:
    """The whole sandbox state plus request handling. Thread-safe."""

    def __init__(self, world: World, *, api_base: str = "http://127.0.0.1:8111/2.0",
                 web_base: str = "http://127.0.0.1:8111", rate_limit: int = 1000, rate_window: float = 3600.0,
                 git_rate_limit: int = 60000, oauth_token_ttl: int = 7200, record_limit: int = 2_000_000):
        self.world = world
        self.api_base, self.web_base = api_base.rstrip("/"), web_base.rstrip("/")
        self.rate_limit, self.rate_window, self.git_rate_limit = rate_limit, rate_window, git_rate_limit
        self.oauth_token_ttl = oauth_token_ttl
        self.faults = Faults()
        self.lock = threading.RLock()
        self.requests: deque[Recorded] = deque(maxlen=record_limit)
        self.oauth_tokens: dict[str, tuple[Credential, float]] = {}
        self.unrouted: list[tuple[str, str]] = []  # REST calls no route serves (method, path)
        self._windows: dict[tuple[str, str], deque] = {}
        self._cache: dict[tuple, list] = {}
        self._encoded: dict[int, bytes] = {}  # id(cached document) -> its JSON
        self._repo_docs: dict[str, dict] = {}  # repo uuid -> its JSON document (any caller)
        self.version = 0  # bumped on every change; keys list caches
        self.deliveries: list[dict] = []
        self.status_posts: list[dict] = []  # every build status posted, in order (the API keeps the last)
        self.routes = [Route(m, p, getattr(self, name), lg, gr, b)
                       for name in dir(self) if hasattr(getattr(self, name), "_route")
                       for (m, p, lg, gr, b) in [getattr(self, name)._route]]
        # Most specific (longest literal) patterns first.
        self.routes.sort(key=lambda r: -len(r.pattern.pattern.replace("[^/]+", "")))

    # --- Entry point ----------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/_sandbox/"):
            return self._control(request)
        kind = "git" if path.endswith("/info/refs") else "oauth" if path == "/site/oauth2/access_token" else "rest"
        auth: Auth | None = None
        try:
            fault = self._fault(path)
            if fault is not None:
                self._record(request, None, kind, fault.status)
                return fault
            if kind == "git":
                auth, response = self._git_refs(request)
            elif kind == "oauth":
                response = self._oauth_token(request)
            else:
                auth, response = self._rest(request)
        except ApiError as exc:
            response = exc.response()
        self._record(request, auth, kind, response.status)
        return response

    def _fault(self, path: str) -> Response | None:
        with self.lock:
            drop = self.faults.take(self.faults.drops, path)
            delay = self.faults.take(self.faults.delays, path)
            error = self.faults.take(self.faults.errors, path)
        if drop:
            return Response(0, drop=True)
        if delay:
            time.sleep(float(delay.get("seconds", 1)))
        if error:
            status = int(error.get("status", 503))
            message = {500: "Something went wrong", 502: "Bad Gateway", 503: "Service Unavailable",
                       504: "Gateway Timeout"}.get(status, "Error")
            return ApiError(status, message).response()
        return None

    def _record(self, request: Request, auth: Auth | None, kind: str, status: int) -> None:
        query = urlencode([(k, v) for k, vs in request.query.items() for v in vs])
        self.requests.append(Recorded(request.method, request.path, query, auth.label if auth else "anonymous",
                                      kind, status, time.time()))

    # --- Auth ---------------------------------------------------------------------------
    def _authenticate(self, request: Request, *, git: bool = False) -> Auth:
        header = request.headers.get("authorization", "")
        if not header:
            return Auth(None, "anonymous")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            token = value.strip()
            with self.lock:
                issued = self.oauth_tokens.get(token)
            if issued is not None:
                credential, expires = issued
                if time.time() >= expires:
                    raise ApiError(401, "Access token expired.")
                return Auth(credential, "oauth")
            credential = self.world.find_credential(token)
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
                raise ApiError(401, "App passwords are no longer supported. Use an API token instead: "
                                    "https://support.atlassian.com/bitbucket-cloud/docs/api-tokens/")
            if git and user == "x-token-auth":
                with self.lock:
                    issued = self.oauth_tokens.get(password)
                if issued is not None and time.time() < issued[1]:
                    return Auth(issued[0], "oauth")
                credential = self.world.find_credential(password)
                if credential and credential.kind == "access_token" and not credential.expired:
                    return Auth(credential, "basic")
                raise ApiError(401, "Invalid credentials")
            credential = self.world.find_credential(password)
            expected_user = credential.email if credential else None
            if git and user == "x-bitbucket-api-token-auth" and credential and credential.kind == "api_token":
                expected_user = user
            if credential is None or credential.kind != "api_token" or not hmac.compare_digest(
                    (expected_user or "").lower(), user.lower()):
                raise ApiError(401, "Invalid credentials")
            if credential.expired:
                raise ApiError(401, "Your API token has expired. Create a new one in your Atlassian account settings.")
            return Auth(credential, "basic")
        raise ApiError(401, "Unsupported authorization scheme")

    def _check_scopes(self, auth: Auth, route: Route) -> None:
        credential = auth.credential
        if credential is None:
            return
        if credential.kind == "api_token":
            required, granted = list(route.granular), list(credential.scopes)
            have = set(granted)
        else:
            required, granted = list(route.legacy), list(credential.scopes)
            have = set(granted)
            for scope in granted:
                have |= LEGACY_IMPLIES.get(scope, set())
        if required and not set(required) <= have:
            raise ApiError(403, "Your credentials lack one or more required privilege scopes.",
                           detail={"required": required, "granted": granted})

    def _can_reach(self, auth: Auth, workspace: str, project_key: str | None = None, repo_slug: str | None = None,
                   *, public: bool = False) -> bool:
        credential = auth.credential
        if credential is None:
            return public
        if credential.kind in ("api_token", "oauth_consumer"):
            ws = self.world.workspaces.get(workspace)
            return bool(ws and (credential.user in ws.members or public))
        if credential.workspace != workspace:
            return False
        if credential.project_key and project_key is not None and credential.project_key != project_key:
            return False
        if credential.repo_slug and repo_slug is not None and credential.repo_slug != repo_slug:
            return False
        return True

    def _rate(self, key: str, bucket: str, limit: int) -> dict[str, str]:
        now = time.time()
        with self.lock:
            window = self._windows.setdefault((key, bucket), deque())
            while window and window[0] <= now - self.rate_window:
                window.popleft()
            if len(window) >= limit:
                retry = max(1, int(window[0] + self.rate_window - now) + 1)
                raise ApiError(429, RATE_LIMIT_MESSAGE, headers={
                    "Retry-After": str(retry), "X-RateLimit-Limit": str(limit),
                    "X-RateLimit-Resource": bucket, "X-RateLimit-NearLimit": "true"})
            window.append(now)
            remaining = limit - len(window)
        return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Resource": bucket,
                "X-RateLimit-NearLimit": "true" if remaining < limit * 0.2 else "false"}

    @staticmethod
    def _rate_key(auth: Auth) -> str:
        c = auth.credential
        if c is None:
            return "anonymous"
        # API tokens share their user's allowance; OAuth its consumer's; access tokens their own.
        return f"user:{c.user}" if c.kind == "api_token" else f"consumer:{c.key}" if c.kind == "oauth_consumer" \
            else f"token:{c.label}"

    # --- REST dispatch --------------------------------------------------------------------
    def _rest(self, request: Request) -> tuple[Auth | None, Response]:
        path = request.path
        if not path.startswith("/2.0/"):
            raise ApiError(404, f"Resource not found: {path}")
        sub = path[len("/2.0"):]
        for route in self.routes:
            if route.method != request.method:
                continue
            match = route.pattern.match(sub)
            if match:
                break
        else:
            self.unrouted.append((request.method, path))  # tests check the portal calls only what is served
            if any(r.pattern.match(sub) for r in self.routes):
                raise ApiError(405, f"Method {request.method} not allowed")
            raise ApiError(404, f"Resource not found: {path}")
        auth = self._authenticate(request)
        headers = {}
        if route.rate_bucket == "repositories":
            headers = self._rate(self._rate_key(auth), "api/repositories", self.rate_limit)
        self._check_scopes(auth, route)
        with self.lock:
            response = route.handler(request, auth, **match.groupdict())
        response.headers.update(headers)
        return auth, response

    # --- Helpers ------------------------------------------------------------------------
    def _changed(self) -> None:
        self.version += 1
        self._cache.clear()
        self._encoded.clear()
        self._repo_docs.clear()

    def warm(self) -> None:
        """Serialise every repository once, so the first listing is as fast as the rest."""
        with self.lock:
            for ws in self.world.workspaces.values():
                for repo in ws.repos.values():
                    self._encoded.setdefault(id(self._repo_doc(repo)), _dumps(self._repo_doc(repo)))

    def _repo_doc(self, repo: Repo) -> dict:
        doc = self._repo_docs.get(repo.uuid)
        if doc is None:
            doc = self._repo_docs[repo.uuid] = self._repo_json(repo)
        return doc

    def _workspace(self, auth: Auth, slug: str):
        ws = self.world.workspaces.get(slug)
        if ws is None or not self._can_reach(auth, slug):
            raise ApiError(404, f"No workspace with identifier '{slug}'.")
        return ws

    def _repo(self, auth: Auth, workspace: str, slug: str) -> Repo:
        ws = self.world.workspaces.get(workspace)
        repo = ws.repos.get(slug) if ws else None
        if repo is None and ws and slug.startswith("{"):  # Bitbucket takes the UUID in the slug's place
            repo = next((r for r in ws.repos.values() if r.uuid == slug), None)
        if repo is None or not self._can_reach(auth, workspace, repo.project_key, repo.slug, public=not repo.is_private):
            raise ApiError(404, f"Repository {workspace}/{slug} not found")
        return repo

    def _resolve_commit(self, repo: Repo, ref: str) -> Commit:
        commit_id = repo.branches.get(ref) or repo.tags.get(ref) or ref
        for h, commit in repo.commits.items():
            if h == commit_id or (len(commit_id) >= 7 and h.startswith(commit_id)):
                return commit
        raise ApiError(404, f"Commit not found: {ref}")

    def _page(self, request: Request, items: list[dict] | Callable[[], list[dict]], *, cache_key: tuple | None = None,
              max_pagelen: int = 100, default_pagelen: int = 10) -> Response:
        """The paginated envelope, with q=, sort= and fields= applied."""
        pagelen_text = request.arg("pagelen", str(default_pagelen))
        try:
            pagelen = int(pagelen_text)
        except ValueError:
            raise ApiError(400, f"Invalid pagelen: {pagelen_text!r} is not a number") from None
        if pagelen < 1 or pagelen > max_pagelen:
            raise ApiError(400, f"Invalid pagelen: {pagelen}. The maximum page length is {max_pagelen}.")
        try:
            page = int(request.arg("page", "1"))
        except ValueError:
            raise ApiError(400, "Invalid page") from None
        if page < 1:
            raise ApiError(400, "Invalid page")
        q, sort = request.arg("q"), request.arg("sort")
        key = (cache_key, q, sort) if cache_key else None
        selected = self._cache.get(key) if key else None
        if selected is None:
            selected = items() if callable(items) else items
            if q:
                try:
                    predicate = compile_query(q)
                except QueryError as exc:
                    raise ApiError(400, str(exc)) from None
                selected = [doc for doc in selected if predicate(doc)]
            if sort:
                selected = sorted(selected, key=sort_key(sort.lstrip("-")), reverse=sort.startswith("-"))
            if key:
                self._cache[key] = selected
        start = (page - 1) * pagelen
        values = selected[start:start + pagelen]
        envelope: dict[str, Any] = {"pagelen": pagelen, "size": len(selected), "page": page}
        base = self.api_base.rsplit("/2.0", 1)[0] + request.path
        others = [(k, v) for k, vs in request.query.items() if k != "page" for v in vs]
        if start + pagelen < len(selected):
            envelope["next"] = f"{base}?{urlencode(others + [('page', str(page + 1))])}"
        if page > 1:
            envelope["previous"] = f"{base}?{urlencode(others + [('page', str(page - 1))])}"
        if key is None or request.arg("fields"):
            return self._json(request, 200, {**envelope, "values": values})
        # Cached listings: splice each document's JSON, encoded once, into the envelope.
        encoded = [self._encoded.get(id(doc)) or self._encoded.setdefault(id(doc), _dumps(doc)) for doc in values]
        head = _dumps(envelope)[:-1]
        body = head + b',"values":[' + b",".join(encoded) + b"]}"
        return Response(200, body, {"Content-Type": JSON})

    def _json(self, request: Request, status: int, payload: dict) -> Response:
        fields = request.arg("fields")
        if fields:
            payload = apply_fields(payload, fields)
        return Response.of_json(status, payload)

    def _link(self, href: str) -> dict:
        return {"href": href}

    # --- Serializers (shapes from the OpenAPI spec) -----------------------------------------
    def _user_json(self, uuid: str) -> dict:
        user = self.world.users[uuid]
        return {"type": "user", "uuid": user.uuid, "account_id": user.account_id, "display_name": user.display_name,
                "nickname": user.nickname,
                "links": {"self": self._link(f"{self.api_base}/users/{user.uuid}"),
                          "html": self._link(f"{self.web_base}/{user.uuid}/"),
                          "avatar": self._link(f"{self.web_base}/account/{user.nickname}/avatar/")}}

    def _workspace_json(self, ws) -> dict:
        api = f"{self.api_base}/workspaces/{ws.slug}"
        return {"type": "workspace", "uuid": ws.uuid, "name": ws.name, "slug": ws.slug, "is_private": ws.is_private,
                "created_on": ws.created_on,
                "links": {"self": self._link(api), "html": self._link(f"{self.web_base}/{ws.slug}/"),
                          "avatar": self._link(f"{self.web_base}/workspaces/{ws.slug}/avatar/"),
                          "members": self._link(f"{api}/members"), "owners": self._link(f"{api}/members?q=permission%3D%22owner%22"),
                          "projects": self._link(f"{api}/projects"),
                          "repositories": self._link(f"{self.api_base}/repositories/{ws.slug}"),
                          "snippets": self._link(f"{self.api_base}/snippets/{ws.slug}")}}

    def _project_json(self, ws, project) -> dict:
        return {"type": "project", "uuid": project.uuid, "key": project.key, "name": project.name,
                "description": project.description, "is_private": project.is_private,
                "created_on": project.created_on, "updated_on": project.updated_on,
                "has_publicly_visible_repos": any(not r.is_private for r in ws.repos.values()
                                                  if r.project_key == project.key),
                "owner": {"type": "team", "uuid": ws.uuid, "display_name": ws.name, "username": ws.slug},
                # The live API includes links.self, which the spec's closed object omits.
                "links": {"self": self._link(f"{self.api_base}/workspaces/{ws.slug}/projects/{project.key}"),
                          "html": self._link(f"{self.web_base}/{ws.slug}/workspace/projects/{project.key}"),
                          "avatar": self._link(f"{self.web_base}/{ws.slug}/workspace/projects/{project.key}/avatar")}}

    def _repo_json(self, repo: Repo) -> dict:
        ws = self.world.workspaces[repo.workspace]
        project = ws.projects.get(repo.project_key)
        api = f"{self.api_base}/repositories/{repo.full_name}"
        web = f"{self.web_base}/{repo.full_name}"
        doc = {
            "type": "repository", "uuid": repo.uuid, "full_name": repo.full_name, "name": repo.name,
            "slug": repo.slug, "description": repo.description, "is_private": repo.is_private, "scm": "git",
            "fork_policy": "no_public_forks" if repo.is_private else "allow_forks", "language": repo.language,
            "created_on": repo.created_on, "updated_on": repo.updated_on, "size": repo.size,
            "has_issues": False, "has_wiki": False,
            "mainbranch": {"type": "branch", "name": repo.mainbranch},
            "owner": {"type": "team", "uuid": ws.uuid, "display_name": ws.name, "username": ws.slug},
            "workspace": {"type": "workspace", "uuid": ws.uuid, "name": ws.name, "slug": ws.slug,
                          "links": {"self": self._link(f"{self.api_base}/workspaces/{ws.slug}")}},
            "links": {
                "self": self._link(api), "html": self._link(web), "avatar": self._link(f"{web}/avatar/32/"),
                "pullrequests": self._link(f"{api}/pullrequests"), "commits": self._link(f"{api}/commits"),
                "forks": self._link(f"{api}/forks"), "watchers": self._link(f"{api}/watchers"),
                "downloads": self._link(f"{api}/downloads"), "hooks": self._link(f"{api}/hooks"),
                "clone": [{"name": "https", "href": f"{web}.git"},
                          {"name": "ssh", "href": f"git@{self.web_base.split('://')[-1]}:{repo.full_name}.git"}],
            },
        }
        if project:
            doc["project"] = {"type": "project", "key": project.key, "uuid": project.uuid, "name": project.name,
                              "links": {"self": self._link(f"{self.api_base}/workspaces/{ws.slug}/projects/{project.key}"),
                                        "html": self._link(f"{self.web_base}/{ws.slug}/workspace/projects/{project.key}"),
                                        "avatar": self._link(f"{self.web_base}/{ws.slug}/workspace/projects/{project.key}/avatar")}}
        return doc

    def _commit_json(self, repo: Repo, commit: Commit, *, full: bool = False) -> dict:
        api = f"{self.api_base}/repositories/{repo.full_name}/commit/{commit.hash}"
        doc = {"type": "commit", "hash": commit.hash,
               "links": {"self": self._link(api), "html": self._link(f"{self.web_base}/{repo.full_name}/commits/{commit.hash}")}}
        if full:
            doc.update({"date": commit.date, "message": commit.message,
                        "parents": [{"type": "commit", "hash": p} for p in commit.parents]})
        return doc

    def _branch_json(self, repo: Repo, name: str, head: str) -> dict:
        api = f"{self.api_base}/repositories/{repo.full_name}"
        return {"type": "branch", "name": name, "target": self._commit_json(repo, repo.commits[head], full=True),
                "merge_strategies": ["merge_commit", "squash", "fast_forward"], "default_merge_strategy": "merge_commit",
                "links": {"self": self._link(f"{api}/refs/branches/{name}"), "commits": self._link(f"{api}/commits/{name}"),
                          "html": self._link(f"{self.web_base}/{repo.full_name}/branch/{name}")}}

    def _hook_json(self, hook: Hook, subject_type: str, subject: dict) -> dict:
        return {"type": "webhook_subscription", "uuid": hook.uuid, "url": hook.url, "description": hook.description,
                "subject_type": subject_type, "subject": subject, "active": hook.active, "created_at": hook.created_at,
                "events": hook.events, "secret_set": bool(hook.secret)}

    def _pr_json(self, repo: Repo, pr: PullRequest) -> dict:
        api = f"{self.api_base}/repositories/{repo.full_name}/pullrequests/{pr.id}"
        condensed_repo = {"type": "repository", "full_name": repo.full_name, "name": repo.name, "uuid": repo.uuid,
                          "links": {"self": self._link(f"{self.api_base}/repositories/{repo.full_name}"),
                                    "html": self._link(f"{self.web_base}/{repo.full_name}")}}

        def endpoint(branch: str) -> dict:
            head = repo.branches.get(branch, "")
            return {"repository": condensed_repo, "branch": {"name": branch},
                    "commit": {"hash": head[:12]} if head else {}}

        return {"type": "pullrequest", "id": pr.id, "title": pr.title, "state": pr.state,
                "author": self._user_json(pr.author), "source": endpoint(pr.source_branch),
                "destination": endpoint(pr.destination_branch), "comment_count": len(pr.comments), "task_count": 0,
                "close_source_branch": False, "created_on": pr.created_on, "updated_on": pr.updated_on,
                "reason": "", "draft": False,
                **({"merge_commit": {"hash": pr.merge_commit[:12]}} if pr.merge_commit else {}),
                "summary": {"raw": pr.title, "markup": "markdown", "html": f"<p>{pr.title}</p>"},
                "links": {"self": self._link(api), "html": self._link(f"{self.web_base}/{repo.full_name}/pull-requests/{pr.id}"),
                          "commits": self._link(f"{api}/commits"), "diff": self._link(f"{api}/diff"),
                          "diffstat": self._link(f"{api}/diffstat"), "comments": self._link(f"{api}/comments"),
                          "activity": self._link(f"{api}/activity"), "approve": self._link(f"{api}/approve"),
                          "merge": self._link(f"{api}/merge"), "decline": self._link(f"{api}/decline")}}

    def _comment_json(self, repo: Repo, pr: PullRequest, comment: Comment) -> dict:
        api = f"{self.api_base}/repositories/{repo.full_name}/pullrequests/{pr.id}/comments/{comment.id}"
        return {"type": "pullrequest_comment", "id": comment.id, "created_on": comment.created_on,
                "updated_on": comment.updated_on, "deleted": False,
                "content": {"raw": comment.raw, "markup": "markdown", "html": comment.raw},
                "user": self._user_json(comment.author),
                "pullrequest": {"type": "pullrequest", "id": pr.id, "title": pr.title,
                                "links": {"self": self._link(f"{self.api_base}/repositories/{repo.full_name}/pullrequests/{pr.id}")}},
                "links": {"self": self._link(api)}}

    @staticmethod
    def _add_comment(pr: PullRequest, raw: str, author: str) -> Comment:
        """A new comment; ids are never reused, even after a deletion (as in Bitbucket)."""
        pr.comment_seq += 1
        while pr.id * 1000 + pr.comment_seq in pr.comments:  # a fixture written by hand
            pr.comment_seq += 1
        now = iso(datetime.now(timezone.utc))
        comment = Comment(id=pr.id * 1000 + pr.comment_seq, raw=raw, author=author, created_on=now, updated_on=now)
        pr.comments[comment.id] = comment
        return comment

    def _acting_user(self, auth: Auth) -> str:
        credential = auth.credential
        if credential is not None and credential.user in self.world.users:
            return credential.user
        return next(iter(self.world.users))

    # --- Endpoints: gone ------------------------------------------------------------------
    @_route("GET", "/repositories")
    def gone_repositories(self, request, auth):
        raise ApiError(410, "Resource removed", detail=GONE_DETAIL)

    @_route("GET", "/workspaces")
    def gone_workspaces(self, request, auth):
        raise ApiError(410, "Resource removed", detail=GONE_DETAIL)

    @_route("GET", "/user/permissions/{kind}")
    def gone_permissions(self, request, auth, kind):
        raise ApiError(410, "Resource removed", detail=GONE_DETAIL)

    # --- Endpoints: user and workspaces ---------------------------------------------------------
    @_route("GET", "/user", legacy=("account",), granular=(U_R,))
    def user(self, request, auth):
        if auth.credential is None:
            raise ApiError(401, "This API is only accessible with the following authentication types: session, password, apppassword, api_token")
        if auth.credential.kind == "access_token":
            bot = {"type": "user", "uuid": "{" + str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, auth.credential.label)) + "}",
                   "display_name": auth.credential.label, "nickname": "access-token-bot", "account_id": "bot",
                   "links": {"avatar": self._link(f"{self.web_base}/account/bot/avatar/")}}
            return self._json(request, 200, bot)
        return self._json(request, 200, self._user_json(auth.credential.user))

    @_route("GET", "/user/workspaces", legacy=("account",), granular=(WS_R,))
    def user_workspaces(self, request, auth):
        if auth.credential is None:
            raise ApiError(401, "Authentication required")
        values = [{"type": "workspace_access", "administrator": auth.credential.kind != "access_token",
                   "workspace": {"type": "workspace_base", "uuid": ws.uuid, "slug": ws.slug, "name": ws.name,
                                 "links": {"self": self._link(f"{self.api_base}/workspaces/{ws.slug}"),
                                           "avatar": self._link(f"{self.web_base}/workspaces/{ws.slug}/avatar/")}}}
                  for ws in self.world.workspaces.values() if self._can_reach(auth, ws.slug)]
        return self._page(request, values)

    @_route("GET", "/workspaces/{workspace}", legacy=(), granular=(WS_R,))
    def workspace(self, request, auth, workspace):
        return self._json(request, 200, self._workspace_json(self._workspace(auth, workspace)))

    @_route("GET", "/workspaces/{workspace}/members", legacy=("account",), granular=(WS_R,))
    def members(self, request, auth, workspace):
        ws = self._workspace(auth, workspace)
        values = [{"type": "workspace_membership", "user": self._user_json(uuid),
                   "workspace": {"type": "workspace", "uuid": ws.uuid, "slug": ws.slug, "name": ws.name},
                   "links": {"self": self._link(f"{self.api_base}/workspaces/{ws.slug}/members/{uuid}")}}
                  for uuid in ws.members]
        return self._page(request, values)

    @_route("GET", "/workspaces/{workspace}/projects", legacy=("project",), granular=(PJ_R,))
    def projects(self, request, auth, workspace):
        ws = self._workspace(auth, workspace)
        credential = auth.credential
        values = [self._project_json(ws, p) for p in ws.projects.values()
                  if not (credential and credential.project_key and credential.project_key != p.key)
                  and not (credential and credential.repo_slug)]
        return self._page(request, values, max_pagelen=100)

    @_route("GET", "/workspaces/{workspace}/projects/{key}", legacy=("project",), granular=(PJ_R,))
    def project(self, request, auth, workspace, key):
        ws = self._workspace(auth, workspace)
        project = ws.projects.get(key)
        if project is None or not self._can_reach(auth, workspace, key):
            raise ApiError(404, f"Project {key} not found in workspace {workspace}")
        return self._json(request, 200, self._project_json(ws, project))

    # --- Endpoints: repositories ----------------------------------------------------------------
    @_route("GET", "/repositories/{workspace}", legacy=("repository",), granular=(R,), bucket="repositories")
    def repositories(self, request, auth, workspace):
        ws = self.world.workspaces.get(workspace)
        if ws is None:
            raise ApiError(404, f"No workspace with identifier '{workspace}'.")
        label = auth.label

        def visible() -> list[dict]:
            return [self._repo_doc(r) for r in ws.repos.values()
                    if self._can_reach(auth, workspace, r.project_key, r.slug, public=not r.is_private)]
        return self._page(request, visible, cache_key=("repos", workspace, label, self.version))

    @_route("GET", "/repositories/{workspace}/{slug}", legacy=("repository",), granular=(R,), bucket="repositories")
    def repository(self, request, auth, workspace, slug):
        return self._json(request, 200, self._repo_json(self._repo(auth, workspace, slug)))

    @_route("GET", "/repositories/{workspace}/{slug}/refs/branches", legacy=("repository",), granular=(R,),
            bucket="repositories")
    def branches(self, request, auth, workspace, slug):
        repo = self._repo(auth, workspace, slug)
        return self._page(request, [self._branch_json(repo, n, h) for n, h in sorted(repo.branches.items())])

    @_route("GET", "/repositories/{workspace}/{slug}/refs/branches/{branch}", legacy=("repository",), granular=(R,),
            bucket="repositories")
    def branch(self, request, auth, workspace, slug, branch):
        """One branch (its name may hold slashes, sent as they are or as %2F)."""
        repo = self._repo(auth, workspace, slug)
        if branch not in repo.branches:
            raise ApiError(404, f"Branch \"{branch}\" not found.")
        return self._json(request, 200, self._branch_json(repo, branch, repo.branches[branch]))

    @_route("GET", "/repositories/{workspace}/{slug}/src", legacy=("repository",), granular=(R,), bucket="repositories")
    def src_root(self, request, auth, workspace, slug):
        """The root directory at the main branch's head."""
        repo = self._repo(auth, workspace, slug)
        return self.src(request, auth, workspace, slug, repo.branches[repo.mainbranch], "")

    @_route("GET", "/repositories/{workspace}/{slug}/src/{commit}/{path}", legacy=("repository",), granular=(R,),
            bucket="repositories")
    def src(self, request, auth, workspace, slug, commit, path):
        repo = self._repo(auth, workspace, slug)
        target = self._resolve_commit(repo, commit)
        path = path.strip("/")
        if path in target.files:
            if request.arg("format") == "meta":
                return self._json(request, 200, self._file_entry(repo, target, path))
            return Response(200, target.files[path].encode(), {"Content-Type": "text/plain; charset=utf-8"})
        prefix = f"{path}/" if path else ""
        if path and not any(p.startswith(prefix) for p in target.files):
            raise ApiError(404, f"No such file or directory: {path}")
        try:
            max_depth = max(1, int(request.arg("max_depth", "1")))
        except ValueError:
            raise ApiError(400, "Invalid max_depth") from None
        return self._page(request, lambda: self._tree(repo, target, prefix, max_depth),
                          cache_key=("src", repo.uuid, target.hash, prefix, max_depth, self.version))

    def _file_entry(self, repo: Repo, commit: Commit, path: str) -> dict:
        api = f"{self.api_base}/repositories/{repo.full_name}/src/{commit.hash}/{path}"
        return {"type": "commit_file", "path": path, "escaped_path": path, "size": len(commit.files[path].encode()),
                "mimetype": None if not path.endswith(".json") else "application/json",
                # The live API sends a list; the spec says a single string.
                "attributes": [],
                "commit": self._commit_json(repo, commit),
                "links": {"self": self._link(api), "meta": self._link(f"{api}?format=meta"),
                          "history": self._link(f"{self.api_base}/repositories/{repo.full_name}/filehistory/{commit.hash}/{path}")}}

    def _tree(self, repo: Repo, commit: Commit, prefix: str, max_depth: int) -> list[dict]:
        entries: dict[str, dict] = {}
        for path in sorted(commit.files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            for depth in range(1, min(len(parts), max_depth) + 1):
                sub = prefix + "/".join(parts[:depth])
                if depth == len(parts):
                    entries[sub] = self._file_entry(repo, commit, sub)
                elif sub not in entries:
                    api = f"{self.api_base}/repositories/{repo.full_name}/src/{commit.hash}/{sub}/"
                    entries[sub] = {"type": "commit_directory", "path": sub, "escaped_path": sub,
                                    "commit": self._commit_json(repo, commit),
                                    "links": {"self": self._link(api), "meta": self._link(f"{api}?format=meta")}}
        return list(entries.values())

    @_route("GET", "/repositories/{workspace}/{slug}/branch-restrictions", legacy=("repository:admin",),
            granular=(RA,), bucket="repositories")
    def branch_restrictions(self, request, auth, workspace, slug):
        repo = self._repo(auth, workspace, slug)
        api = f"{self.api_base}/repositories/{repo.full_name}/branch-restrictions"
        values = [{"type": "branchrestriction", "users": [], "groups": [],
                   "links": {"self": self._link(f"{api}/{r['id']}")}, **r} for r in repo.restrictions]
        return self._page(request, values)

    @_route("GET", "/repositories/{workspace}/{slug}/default-reviewers", legacy=("pullrequest",), granular=(PR_R,),
            bucket="repositories")
    def default_reviewers(self, request, auth, workspace, slug):
        repo = self._repo(auth, workspace, slug)
        return self._page(request, [self._user_json(u) for u in repo.default_reviewers])

    # --- Pull requests ------------------------------------------------------------------------------
    @_route("GET", "/repositories/{workspace}/{slug}/pullrequests", legacy=("pullrequest",), granular=(PR_R,),
            bucket="repositories")
    def pullrequests(self, request, auth, workspace, slug):
        repo = self._repo(auth, workspace, slug)
        states = set(request.query.get("state", ["OPEN"]))
        values = [self._pr_json(repo, pr) for pr in repo.pullrequests.values() if pr.state in states]
        return self._page(request, values, max_pagelen=50)

    def _pr(self, repo: Repo, pr_id: str) -> PullRequest:
        pr = repo.pullrequests.get(int(pr_id)) if pr_id.isdigit() else None
        if pr is None:
            raise ApiError(404, f"Pull request {pr_id} not found")
        return pr

    @staticmethod
    def _comment_raw(request: Request) -> str:
        raw = ((request.json().get("content") or {}).get("raw") or "").strip()
        if not raw:
            raise ApiError(400, "content.raw: This field is required.")
        return raw

    @staticmethod
    def _comment(pr: PullRequest, comment_id: str) -> Comment:
        comment = pr.comments.get(int(comment_id)) if comment_id.isdigit() else None
        if comment is None:
            raise ApiError(404, f"Comment {comment_id} not found")
        return comment

    @_route("GET", "/repositories/{workspace}/{slug}/pullrequests/{pr_id}", legacy=("pullrequest",), granular=(PR_R,),
            bucket="repositories")
    def pullrequest(self, request, auth, workspace, slug, pr_id):
        repo = self._repo(auth, workspace, slug)
        return self._json(request, 200, self._pr_json(repo, self._pr(repo, pr_id)))

    @_route("GET", "/repositories/{workspace}/{slug}/pullrequests/{pr_id}/diffstat", legacy=("pullrequest",),
            granular=(PR_R,), bucket="repositories")
    def pullrequest_diffstat(self, request, auth, workspace, slug, pr_id):
        repo = self._repo(auth, workspace, slug)
        pr = self._pr(repo, pr_id)
        spec = f"{repo.branches[pr.source_branch]}..{repo.branches[pr.destination_branch]}"
        return Response(302, b"", {"Location": f"{self.api_base}/repositories/{repo.full_name}/diffstat/{spec}"})

    @_route("GET", "/repositories/{workspace}/{slug}/diffstat/{spec}", legacy=("repository",), granular=(R,),
            bucket="repositories")
    def diffstat(self, request, auth, workspace, slug, spec):
        repo = self._repo(auth, workspace, slug)
        new_ref, _, old_ref = spec.partition("..")
        new, old = self._resolve_commit(repo, new_ref), self._resolve_commit(repo, old_ref or new_ref)
        values = []
        for path in sorted(set(new.files) | set(old.files)):
            before, after = old.files.get(path), new.files.get(path)
            if before == after:
                continue
            status = "added" if before is None else "removed" if after is None else "modified"
            entry = {"type": "diffstat", "status": status,
                     "lines_added": len((after or "").splitlines()) if status != "modified" else
                     len(set((after or "").splitlines()) - set((before or "").splitlines())),
                     "lines_removed": len((before or "").splitlines()) if status != "modified" else
                     len(set((before or "").splitlines()) - set((after or "").splitlines()))}
            if before is not None:
                entry["old"] = {"type": "commit_file", "path": path, "escaped_path": path}
            if after is not None:
                entry["new"] = {"type": "commit_file", "path": path, "escaped_path": path}
            values.append(entry)
        return self._page(request, values, max_pagelen=500)

    @_route("GET", "/repositories/{workspace}/{slug}/pullrequests/{pr_id}/comments", legacy=("pullrequest",),
            granular=(PR_R,), bucket="repositories")
    def comments(self, request, auth, workspace, slug, pr_id):
        repo = self._repo(auth, workspace, slug)
        pr = self._pr(repo, pr_id)
        return self._page(request, [self._comment_json(repo, pr, c) for c in pr.comments.values()])

    @_route("POST", "/repositories/{workspace}/{slug}/pullrequests/{pr_id}/comments", legacy=("pullrequest",),
            granular=(PR_R,), bucket="repositories")
    def comment_create(self, request, auth, workspace, slug, pr_id):
        repo = self._repo(auth, workspace, slug)
        pr = self._pr(repo, pr_id)
        raw = self._comment_raw(request)
        comment = self._add_comment(pr, raw, self._acting_user(auth))
        self._changed()
        return self._json(request, 201, self._comment_json(repo, pr, comment))

    @_route("GET", "/repositories/{workspace}/{slug}/pullrequests/{pr_id}/comments/{comment_id}",
            legacy=("pullrequest",), granular=(PR_R,), bucket="repositories")
    def comment(self, request, auth, workspace, slug, pr_id, comment_id):
        repo = self._repo(auth, workspace, slug)
        pr = self._pr(repo, pr_id)
        comment = self._comment(pr, comment_id)
        return self._json(request, 200, self._comment_json(repo, pr, comment))

    @_route("PUT", "/repositories/{workspace}/{slug}/pullrequests/{pr_id}/comments/{comment_id}",
            legacy=("pullrequest",), granular=(PR_R,), bucket="repositories")
    def comment_update(self, request, auth, workspace, slug, pr_id, comment_id):
        repo = self._repo(auth, workspace, slug)
        pr = self._pr(repo, pr_id)
        comment = self._comment(pr, comment_id)
        raw = self._comment_raw(request)
        comment.raw, comment.updated_on = raw, iso(datetime.now(timezone.utc))
        self._changed()
        return self._json(request, 200, self._comment_json(repo, pr, comment))

    # --- Build statuses --------------------------------------------------------------------------------
    def _status_json(self, repo: Repo, status: dict) -> dict:
        api = f"{self.api_base}/repositories/{repo.full_name}/commit/{status['commit']}"
        return {"type": "build", "key": status["key"], "state": status["state"], "name": status.get("name", ""),
                "description": status.get("description", ""), "url": status.get("url", ""),
                "refname": status.get("refname", ""), "created_on": status["created_on"],
                "updated_on": status["updated_on"],
                "links": {"self": self._link(f"{api}/statuses/build/{status['key']}"), "commit": self._link(api)}}

    @_route("POST", "/repositories/{workspace}/{slug}/commit/{commit}/statuses/build", legacy=("repository",),
            granular=(R,), bucket="repositories")
    def status_create(self, request, auth, workspace, slug, commit):
        repo = self._repo(auth, workspace, slug)
        target = self._resolve_commit(repo, commit)
        body = request.json()
        errors = {k: "This field is required." for k in ("key", "state", "url") if not body.get(k)}
        if body.get("state") and body["state"] not in ("INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"):
            errors["state"] = f"'{body['state']}' is not a valid state"
        if errors:
            raise ApiError(400, "Bad request", detail=errors)
        now = iso(datetime.now(timezone.utc))
        key = f"{target.hash}/{body['key']}"
        existing = repo.statuses.get(key)
        status = {"commit": target.hash, "key": body["key"], "state": body["state"], "name": body.get("name", ""),
                  "description": body.get("description", ""), "url": body["url"], "refname": body.get("refname", ""),
                  "created_on": existing["created_on"] if existing else now, "updated_on": now}
        repo.statuses[key] = status
        self.status_posts.append({"repository": repo.full_name, **status})
        self._changed()
        return self._json(request, 201, self._status_json(repo, status))

    @_route("GET", "/repositories/{workspace}/{slug}/commit/{commit}/statuses", legacy=("repository",),
            granular=(R,), bucket="repositories")
    def statuses(self, request, auth, workspace, slug, commit):
        repo = self._repo(auth, workspace, slug)
        target = self._resolve_commit(repo, commit)
        return self._page(request, [self._status_json(repo, s) for k, s in repo.statuses.items()
                                    if k.startswith(target.hash + "/")])

    @_route("GET", "/repositories/{workspace}/{slug}/commit/{commit}/statuses/build/{key}", legacy=("repository",),
            granular=(R,), bucket="repositories")
    def status(self, request, auth, workspace, slug, commit, key):
        repo = self._repo(auth, workspace, slug)
        target = self._resolve_commit(repo, commit)
        status = repo.statuses.get(f"{target.hash}/{key}")
        if status is None:
            raise ApiError(404, f"Build status {key} not found")
        return self._json(request, 200, self._status_json(repo, status))

    # --- Webhooks --------------------------------------------------------------------------------------
    def _hook_create(self, request, hooks: dict, subject_type: str, subject: dict) -> Response:
        body = request.json()
        errors = {}
        if not str(body.get("url", "")).startswith(("http://", "https://")):
            errors["url"] = "Enter a valid URL."
        events = body.get("events") or []
        if not events:
            errors["events"] = "Enter at least one event."
        if errors:
            raise ApiError(400, "Bad request", detail=errors)
        hook = Hook(uuid="{" + str(uuidlib.uuid4()) + "}", url=body["url"], description=body.get("description", ""),
                    events=list(events), active=bool(body.get("active", True)), secret=body.get("secret") or None,
                    created_at=iso(datetime.now(timezone.utc)))
        hooks[hook.uuid] = hook
        self._changed()
        return self._json(request, 201, self._hook_json(hook, subject_type, subject))

    def _hook_update(self, request, hook: Hook, subject_type: str, subject: dict) -> Response:
        """PUT: the fields given replace the hook's (url, description, events, active, secret)."""
        body = request.json()
        if "url" in body:
            if not str(body["url"]).startswith(("http://", "https://")):
                raise ApiError(400, "Bad request", detail={"url": "Enter a valid URL."})
            hook.url = body["url"]
        if "events" in body:
            if not body["events"]:
                raise ApiError(400, "Bad request", detail={"events": "Enter at least one event."})
            hook.events = list(body["events"])
        if "description" in body:
            hook.description = str(body["description"])
        if "active" in body:
            hook.active = bool(body["active"])
        if "secret" in body:
            hook.secret = body["secret"] or None
        self._changed()
        return self._json(request, 200, self._hook_json(hook, subject_type, subject))

    def _hook_get(self, hooks: dict, uid: str) -> Hook:
        hook = hooks.get(uid) or hooks.get("{" + uid.strip("{}") + "}")
        if hook is None:
            raise ApiError(404, f"Webhook {uid} not found")
        return hook

    @_route("GET", "/repositories/{workspace}/{slug}/hooks", legacy=("webhook",), granular=(WH_R,),
            bucket="repositories")
    def repo_hooks(self, request, auth, workspace, slug):
        repo = self._repo(auth, workspace, slug)
        subject = {"type": "repository", "full_name": repo.full_name, "uuid": repo.uuid}
        return self._page(request, [self._hook_json(h, "repository", subject) for h in repo.hooks.values()])

    @_route("POST", "/repositories/{workspace}/{slug}/hooks", legacy=("webhook",), granular=(WH_R, WH_W),
            bucket="repositories")
    def repo_hook_create(self, request, auth, workspace, slug):
        repo = self._repo(auth, workspace, slug)
        return self._hook_create(request, repo.hooks, "repository",
                                 {"type": "repository", "full_name": repo.full_name, "uuid": repo.uuid})

    @_route("GET", "/repositories/{workspace}/{slug}/hooks/{uid}", legacy=("webhook",), granular=(WH_R,),
            bucket="repositories")
    def repo_hook(self, request, auth, workspace, slug, uid):
        repo = self._repo(auth, workspace, slug)
        subject = {"type": "repository", "full_name": repo.full_name, "uuid": repo.uuid}
        return self._json(request, 200, self._hook_json(self._hook_get(repo.hooks, uid), "repository", subject))

    @_route("PUT", "/repositories/{workspace}/{slug}/hooks/{uid}", legacy=("webhook",), granular=(WH_R, WH_W),
            bucket="repositories")
    def repo_hook_update(self, request, auth, workspace, slug, uid):
        repo = self._repo(auth, workspace, slug)
        subject = {"type": "repository", "full_name": repo.full_name, "uuid": repo.uuid}
        return self._hook_update(request, self._hook_get(repo.hooks, uid), "repository", subject)

    @_route("DELETE", "/repositories/{workspace}/{slug}/hooks/{uid}", legacy=("webhook",), granular=(WH_D,),
            bucket="repositories")
    def repo_hook_delete(self, request, auth, workspace, slug, uid):
        repo = self._repo(auth, workspace, slug)
        hook = self._hook_get(repo.hooks, uid)
        del repo.hooks[hook.uuid]
        self._changed()
        return Response(204)

    def _workspace_admin(self, auth: Auth, workspace: str):
        ws = self._workspace(auth, workspace)
        credential = auth.credential
        if credential is not None and credential.kind == "access_token" and (credential.project_key or credential.repo_slug):
            raise ApiError(403, "You do not have permission to manage webhooks for this workspace.")
        return ws

    @_route("GET", "/workspaces/{workspace}/hooks", legacy=("webhook",), granular=(WH_R,))
    def ws_hooks(self, request, auth, workspace):
        ws = self._workspace_admin(auth, workspace)
        subject = {"type": "workspace", "slug": ws.slug, "uuid": ws.uuid}
        return self._page(request, [self._hook_json(h, "workspace", subject) for h in ws.hooks.values()])

    @_route("POST", "/workspaces/{workspace}/hooks", legacy=("webhook",), granular=(WH_R, WH_W))
    def ws_hook_create(self, request, auth, workspace):
        ws = self._workspace_admin(auth, workspace)
        return self._hook_create(request, ws.hooks, "workspace", {"type": "workspace", "slug": ws.slug, "uuid": ws.uuid})

    @_route("GET", "/workspaces/{workspace}/hooks/{uid}", legacy=("webhook",), granular=(WH_R,))
    def ws_hook(self, request, auth, workspace, uid):
        ws = self._workspace_admin(auth, workspace)
        subject = {"type": "workspace", "slug": ws.slug, "uuid": ws.uuid}
        return self._json(request, 200, self._hook_json(self._hook_get(ws.hooks, uid), "workspace", subject))

    @_route("PUT", "/workspaces/{workspace}/hooks/{uid}", legacy=("webhook",), granular=(WH_R, WH_W))
    def ws_hook_update(self, request, auth, workspace, uid):
        ws = self._workspace_admin(auth, workspace)
        subject = {"type": "workspace", "slug": ws.slug, "uuid": ws.uuid}
        return self._hook_update(request, self._hook_get(ws.hooks, uid), "workspace", subject)

    @_route("DELETE", "/workspaces/{workspace}/hooks/{uid}", legacy=("webhook",), granular=(WH_D,))
    def ws_hook_delete(self, request, auth, workspace, uid):
        ws = self._workspace_admin(auth, workspace)
        hook = self._hook_get(ws.hooks, uid)
        del ws.hooks[hook.uuid]
        self._changed()
        return Response(204)

    # --- OAuth client credentials ---------------------------------------------------------------------
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
            return Response.of_json(400, {"error": "unsupported_grant_type",
                                          "error_description": "Only client_credentials is supported by the sandbox"})
        credential = next((c for c in self.world.credentials if c.kind == "oauth_consumer" and c.key == key), None)
        if credential is None or not hmac.compare_digest(credential.secret, secret) or credential.expired:
            return Response.of_json(400, {"error": "invalid_client", "error_description": "Invalid OAuth client credentials"})
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.oauth_tokens[token] = (credential, time.time() + self.oauth_token_ttl)
        return Response.of_json(200, {"access_token": token, "scopes": " ".join(credential.scopes),
                                      "expires_in": self.oauth_token_ttl, "token_type": "bearer",
                                      "state": "client_credentials", "refresh_token": secrets.token_urlsafe(16)})

    # --- git smart HTTP ref advertisement --------------------------------------------------------------
    def _git_refs(self, request: Request) -> tuple[Auth | None, Response]:
        match = re.match(r"^/(?P<ws>[^/]+)/(?P<slug>[^/]+?)(?:\.git)?/info/refs$", request.path)
        if not match or request.arg("service") != "git-upload-pack":
            raise ApiError(403, "Only git-upload-pack ref advertisement is served")
        challenge = {"WWW-Authenticate": 'Basic realm="Bitbucket.org HTTP"'}
        try:
            auth = self._authenticate(request, git=True)
        except ApiError as exc:
            return None, Response(401, exc.message.encode(), {"Content-Type": "text/plain", **challenge})
        credential = auth.credential
        ws = self.world.workspaces.get(match["ws"])
        repo = ws.repos.get(match["slug"]) if ws else None
        if repo is None or not self._can_reach(auth, ws.slug, repo.project_key, repo.slug, public=not repo.is_private):
            if credential is None:
                return auth, Response(401, b"Authentication required", {"Content-Type": "text/plain", **challenge})
            return auth, Response(404, b"Repository not found", {"Content-Type": "text/plain"})
        if credential is not None:
            scopes = set(credential.scopes)
            if not ({"repository", "read:repository:bitbucket"} & scopes or {"pullrequest", "repository:write"} & scopes):
                return auth, Response(403, b"Your credentials lack the repository read scope",
                                      {"Content-Type": "text/plain"})
        headers = self._rate(self._rate_key(auth), "git", self.git_rate_limit)
        with self.lock:
            refs = [("HEAD", repo.branches[repo.mainbranch])]
            refs += [(f"refs/heads/{n}", h) for n, h in sorted(repo.branches.items())]
            refs += [(f"refs/tags/{n}", h) for n, h in sorted(repo.tags.items())]
        body = bytearray(_pkt(b"# service=git-upload-pack\n") + b"0000")
        caps = (f"multi_ack thin-pack side-band side-band-64k ofs-delta shallow no-progress include-tag "
                f"multi_ack_detailed symref=HEAD:refs/heads/{repo.mainbranch} agent=git/bitbucket-sandbox")
        for i, (name, head) in enumerate(refs):
            line = f"{head} {name}" + (f"\0{caps}" if i == 0 else "") + "\n"
            body += _pkt(line.encode())
        body += b"0000"
        return auth, Response(200, bytes(body), {"Content-Type": "application/x-git-upload-pack-advertisement",
                                                 "Cache-Control": "no-cache", **headers})

    # --- Mutations used by tests, demos and the control endpoint ---------------------------------------
    def push(self, workspace: str, slug: str, branch: str, *, files: dict[str, str] | None = None,
             delete: list[str] | None = None, message: str = "Sandbox push", fire: bool = True) -> str:
        """A new commit on ``branch`` (created if missing). Returns its hash."""
        with self.lock:
            repo = self.world.workspaces[workspace].repos[slug]
            parent = repo.branches.get(branch) or repo.branches[repo.mainbranch]
            tree = dict(repo.commits[parent].files)
            tree.update(files or {})
            for path in delete or []:
                tree.pop(path, None)
            now = iso(datetime.now(timezone.utc))
            new = commit_hash(repo.uuid, branch, parent, str(self.version), message)
            repo.commits[new] = Commit(hash=new, message=message, date=now, parents=[parent], files=tree)
            old = repo.branches.get(branch)
            repo.branches[branch] = new
            repo.updated_on = now
            self._changed()
        if fire:
            self.fire("repo:push", workspace, slug, {"push": {"changes": [{
                "new": {"type": "branch", "name": branch, "target": {"type": "commit", "hash": new}},
                "old": {"type": "branch", "name": branch, "target": {"type": "commit", "hash": old}} if old else None,
                "created": old is None, "closed": False, "forced": False}]}})
            # A push to a pull request's source branch updates the pull request.
            for pr in [p for p in repo.pullrequests.values() if p.state == "OPEN" and p.source_branch == branch]:
                self.fire("pullrequest:updated", workspace, slug, {}, pr_id=pr.id)
        return new

    def delete_repo(self, workspace: str, slug: str, *, fire: bool = True) -> None:
        with self.lock:
            repo = self.world.workspaces[workspace].repos.pop(slug)
            self._changed()
        if fire:
            self.fire("repo:deleted", workspace, slug, {}, repo=repo)

    def rename_repo(self, workspace: str, slug: str, *, name: str | None = None, new_slug: str | None = None,
                    project_key: str | None = None) -> Repo:
        with self.lock:
            ws = self.world.workspaces[workspace]
            repo = ws.repos.pop(slug)
            repo.name = name or repo.name
            repo.slug = new_slug or repo.slug
            if project_key is not None:
                if project_key not in ws.projects:
                    ws.repos[slug] = repo
                    raise ApiError(400, f"Unknown project {project_key}")
                repo.project_key = project_key
            repo.updated_on = iso(datetime.now(timezone.utc))
            ws.repos[repo.slug] = repo
            self._changed()
        self.fire("repo:updated", workspace, repo.slug, {"changes": {"name": {"new": repo.name}}})
        return repo

    def open_pullrequest(self, workspace: str, slug: str, *, source: str, destination: str | None = None,
                         title: str = "Sandbox change", author: str | None = None) -> int:
        with self.lock:
            repo = self.world.workspaces[workspace].repos[slug]
            pr_id = max([*repo.pullrequests, 0]) + 1
            now = iso(datetime.now(timezone.utc))
            repo.pullrequests[pr_id] = PullRequest(
                id=pr_id, title=title, author=author or self.world.workspaces[workspace].members[0],
                source_branch=source, destination_branch=destination or repo.mainbranch, created_on=now, updated_on=now)
            self._changed()
        self.fire("pullrequest:created", workspace, slug, {}, pr_id=pr_id)
        return pr_id

    def set_pullrequest_state(self, workspace: str, slug: str, pr_id: int, event: str, *, user: str | None = None,
                              comment: str = "") -> None:
        """``event``: approved, unapproved, fulfilled (merges the source branch into the
        destination, with its repo:push), rejected, updated, comment_created."""
        extra: dict = {}
        with self.lock:
            ws = self.world.workspaces[workspace]
            repo = ws.repos[slug]
            pr = repo.pullrequests[pr_id]
            user = user or ws.members[-1]
            now = iso(datetime.now(timezone.utc))
            pr.state = {"fulfilled": "MERGED", "rejected": "DECLINED"}.get(event, pr.state)
            pr.updated_on = now
            if event in ("approved", "unapproved"):
                pr.approvals = [u for u in pr.approvals if u != user] + ([user] if event == "approved" else [])
                extra["approval"] = {"date": now, "user": self._user_json(user)}
            if event == "comment_created":
                created = self._add_comment(pr, comment or "Looks good", user)
                extra["comment"] = self._comment_json(repo, pr, created)
            self._changed()
        if event == "fulfilled":
            source_tree = dict(repo.commits[repo.branches[pr.source_branch]].files)
            gone = [p for p in repo.commits[repo.branches[pr.destination_branch]].files if p not in source_tree]
            pr.merge_commit = self.push(workspace, slug, pr.destination_branch, files=source_tree, delete=gone,
                                        message=f"Merged in {pr.source_branch} (pull request #{pr.id})")
        self.fire(f"pullrequest:{event}", workspace, slug, extra, pr_id=pr_id)

    # --- Webhook deliveries -----------------------------------------------------------------------------
    def event_payload(self, event: str, workspace: str, slug: str, extra: dict, *, repo: Repo | None = None,
                      pr_id: int | None = None) -> dict:
        ws = self.world.workspaces[workspace]
        repo = repo or ws.repos[slug]
        payload = {"repository": self._repo_json(repo), "actor": self._user_json(ws.members[0]),
                   **({"workspace": self._workspace_json(ws)})}
        if pr_id is not None:
            payload["pullrequest"] = self._pr_json(repo, repo.pullrequests[pr_id])
        payload.update(extra)
        return payload

    def fire(self, event: str, workspace: str, slug: str, extra: dict, *, repo: Repo | None = None,
             pr_id: int | None = None, attempts: int = 3) -> list[dict]:
        """Deliver ``event`` to every active hook subscribed to it, as Bitbucket does:
        signed with the hook's secret, retried (same request UUID) after a 5xx."""
        import requests  # imported here: only deliveries need it

        with self.lock:
            ws = self.world.workspaces.get(workspace)
            if ws is None:
                return []
            target = repo or ws.repos.get(slug)
            hooks = [h for h in list(ws.hooks.values()) + list(target.hooks.values() if target else [])
                     if h.active and event in h.events]
            payload = self.event_payload(event, workspace, slug, extra, repo=target, pr_id=pr_id) if hooks else {}
        results = []
        body = json.dumps(payload).encode()
        for hook in hooks:
            request_uuid = str(uuidlib.uuid4())
            for attempt in range(1, attempts + 1):
                headers = {"Content-Type": "application/json", "User-Agent": "Bitbucket-Webhooks/2.0",
                           "X-Event-Key": event, "X-Hook-UUID": hook.uuid.strip("{}"),
                           "X-Request-UUID": request_uuid, "X-Attempt-Number": str(attempt)}
                if hook.secret:
                    digest = hmac.new(hook.secret.encode(), body, hashlib.sha256).hexdigest()
                    headers["X-Hub-Signature"] = f"sha256={digest}"
                try:
                    status = requests.post(hook.url, data=body, headers=headers, timeout=10).status_code
                except requests.RequestException as exc:
                    status = 0
                    error = type(exc).__name__
                else:
                    error = ""
                record = {"event": event, "hook": hook.uuid, "url": hook.url, "request_uuid": request_uuid,
                          "attempt": attempt, "status": status, "error": error}
                results.append(record)
                self.deliveries.append(record)
                if 200 <= status < 500 and status != 0:
                    break
        return results

    # --- Control endpoint (/_sandbox/...) ----------------------------------------------------------------
    def _control(self, request: Request) -> Response:
        """A small JSON control surface for demos and out-of-process tests.

        GET  /_sandbox/requests[?since=N]      recorded requests (no secrets)
        DELETE /_sandbox/requests               forget them
        GET  /_sandbox/credentials             the sandbox's test credentials
        POST /_sandbox/faults                   {"status": 503, "count": 2, "path": "regex"} |
                                                {"delay": 2.5, "count": 1} | {"drop": 1}
        DELETE /_sandbox/faults                 clear faults
        POST /_sandbox/credentials/expire       {"secret": "..."}
        POST /_sandbox/credentials/revoke-scope {"secret": "...", "scope": "..."}
        POST /_sandbox/repos/delete             {"workspace", "slug"}
        POST /_sandbox/repos/rename             {"workspace", "slug", "name"?, "new_slug"?, "project_key"?}
        POST /_sandbox/repos/push               {"workspace", "slug", "branch", "files"?, "delete"?}
        POST /_sandbox/pullrequests             {"workspace", "slug", "source", "destination"?, "title"?}
        POST /_sandbox/pullrequests/state       {"workspace", "slug", "id", "event", "user"?, "comment"?}
        POST /_sandbox/rate-limit               {"limit": 1000, "window": 3600}
        """
        action = request.path[len("/_sandbox/"):].strip("/")
        try:
            body = request.json() if request.method == "POST" else {}
            result = self._control_action(request.method, action, body, request)
        except ApiError as exc:
            return exc.response()
        except KeyError as exc:
            return ApiError(404, f"Not found: {exc}").response()
        return Response.of_json(200, result)

    def _control_action(self, method: str, action: str, body: dict, request: Request) -> Any:
        if action == "requests" and method == "GET":
            since = int(request.arg("since", "0"))
            return [vars(r) for r in list(self.requests)[since:]]
        if action == "requests" and method == "DELETE":
            self.requests.clear()
            return {"cleared": True}
        if action == "credentials" and method == "GET":
            return [{"label": c.label, "kind": c.kind, "email": c.email, "key": c.key, "secret": c.secret,
                     "scopes": c.scopes, "expired": c.expired} for c in self.world.credentials]
        if action == "faults" and method == "DELETE":
            with self.lock:
                self.faults.clear()
            return {"cleared": True}
        if action == "faults" and method == "POST":
            with self.lock:
                if "drop" in body:
                    self.faults.drops.append({"count": int(body["drop"]), "path": body.get("path", "")})
                elif "delay" in body:
                    self.faults.delays.append({"seconds": float(body["delay"]), "count": int(body.get("count", 1)),
                                               "path": body.get("path", "")})
                else:
                    self.faults.errors.append({"status": int(body.get("status", 503)),
                                               "count": int(body.get("count", 1)), "path": body.get("path", "")})
            return {"ok": True}
        if action.startswith("credentials/") and method == "POST":
            credential = self.world.find_credential(body.get("secret", ""))
            if credential is None:
                raise ApiError(404, "No such credential")
            with self.lock:
                if action == "credentials/expire":
                    credential.expired = True
                    for token, (c, _) in list(self.oauth_tokens.items()):
                        if c is credential:
                            del self.oauth_tokens[token]
                elif action == "credentials/restore":
                    credential.expired = False
                elif action == "credentials/revoke-scope":
                    credential.scopes = [s for s in credential.scopes if s != body.get("scope")]
                elif action == "credentials/grant-scope":
                    if body.get("scope") not in credential.scopes:
                        credential.scopes.append(body["scope"])
                else:
                    raise ApiError(404, f"Unknown action {action}")
            return {"label": credential.label, "scopes": credential.scopes, "expired": credential.expired}
        if action == "repos/delete" and method == "POST":
            self.delete_repo(body["workspace"], body["slug"])
            return {"deleted": f"{body['workspace']}/{body['slug']}"}
        if action == "repos/rename" and method == "POST":
            repo = self.rename_repo(body["workspace"], body["slug"], name=body.get("name"),
                                    new_slug=body.get("new_slug"), project_key=body.get("project_key"))
            return {"full_name": repo.full_name, "project_key": repo.project_key}
        if action == "repos/push" and method == "POST":
            return {"commit": self.push(body["workspace"], body["slug"], body["branch"], files=body.get("files"),
                                        delete=body.get("delete"), message=body.get("message", "Sandbox push"))}
        if action == "pullrequests" and method == "POST":
            return {"id": self.open_pullrequest(body["workspace"], body["slug"], source=body["source"],
                                                destination=body.get("destination"), title=body.get("title", "Change"))}
        if action == "pullrequests/state" and method == "POST":
            if body.get("event") not in ("approved", "unapproved", "fulfilled", "rejected", "updated", "comment_created"):
                raise ApiError(400, "event: one of approved, unapproved, fulfilled, rejected, updated, comment_created")
            self.set_pullrequest_state(body["workspace"], body["slug"], int(body["id"]), body["event"],
                                       user=body.get("user"), comment=body.get("comment", ""))
            return {"ok": True}
        if action == "rate-limit" and method == "POST":
            with self.lock:
                self.rate_limit = int(body.get("limit", self.rate_limit))
                self.rate_window = float(body.get("window", self.rate_window))
                self._windows.clear()
            return {"limit": self.rate_limit, "window": self.rate_window}
        if action == "deliveries" and method == "GET":
            return self.deliveries
        raise ApiError(404, f"Unknown sandbox control action: {method} {action}")


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _pkt(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode() + data
