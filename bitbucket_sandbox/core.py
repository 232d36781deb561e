"""The sandbox's state, and what every route shares: lookups that answer 404 as
Bitbucket does, and the paginated envelope with ``q=``, ``sort=`` and ``fields=``.

``SandboxCore`` is the base of the route families (``routes/``), ``shapes.py``,
``events.py`` and ``changes.py``; ``app.Sandbox`` combines them.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable
from urllib.parse import urlencode

from bitbucket_sandbox.auth import Auth, OAuthTokens, RateWindows, authenticate, can_reach
from bitbucket_sandbox.data import Commit, Repo, Workspace, World
from bitbucket_sandbox.faults import Faults, Recorded
from bitbucket_sandbox.http import JSON, ApiError, Request, Response, dumps
from bitbucket_sandbox.query import QueryError, apply_fields, compile_query, sort_key


class SandboxCore:
    """The whole sandbox state. Thread-safe: handlers and changes hold ``lock``."""

    def __init__(
        self,
        world: World,
        *,
        api_base: str = "http://127.0.0.1:8111/2.0",
        web_base: str = "http://127.0.0.1:8111",
        rate_limit: int = 1000,
        rate_window: float = 3600.0,
        git_rate_limit: int = 60000,
        oauth_token_ttl: int = 7200,
        record_limit: int = 2_000_000,
    ):
        self.world = world
        self.api_base, self.web_base = api_base.rstrip("/"), web_base.rstrip("/")
        self.rate_limit, self.rate_window, self.git_rate_limit = rate_limit, rate_window, git_rate_limit
        self.oauth_token_ttl = oauth_token_ttl
        self.faults = Faults()
        self.lock = threading.RLock()
        self.requests: deque[Recorded] = deque(maxlen=record_limit)
        self.oauth_tokens: OAuthTokens = {}
        self.unrouted: list[tuple[str, str]] = []  # REST calls no route serves (method, path)
        self.rate_windows = RateWindows(self.lock)
        self._cache: dict[tuple, list] = {}
        self._encoded: dict[int, bytes] = {}  # id(cached document) -> its JSON
        self._repo_docs: dict[str, dict] = {}  # repo uuid -> its JSON document (any caller)
        self.version = 0  # bumped on every change; keys list caches
        self.deliveries: list[dict] = []
        self.status_posts: list[dict] = []  # every build status posted, in order (the API keeps the last)

    def _changed(self) -> None:
        self.version += 1
        self._cache.clear()
        self._encoded.clear()
        self._repo_docs.clear()

    # --- Auth, with this sandbox's state -----------------------------------------------
    def _authenticate(self, request: Request, *, git: bool = False) -> Auth:
        return authenticate(request, self.world, self.oauth_tokens, self.lock, git=git)

    def _can_reach(
        self,
        auth: Auth,
        workspace: str,
        project_key: str | None = None,
        repo_slug: str | None = None,
        *,
        public: bool = False,
    ) -> bool:
        return can_reach(self.world, auth, workspace, project_key, repo_slug, public=public)

    def _rate(self, key: str, bucket: str, limit: int) -> dict[str, str]:
        return self.rate_windows.take(key, bucket, limit, self.rate_window)

    # --- Lookups ---------------------------------------------------------------------------
    def _workspace(self, auth: Auth, slug: str) -> Workspace:
        ws = self.world.workspaces.get(slug)
        if ws is None or not self._can_reach(auth, slug):
            raise ApiError(404, f"No workspace with identifier '{slug}'.")
        return ws

    def _repo(self, auth: Auth, workspace: str, slug: str) -> Repo:
        ws = self.world.workspaces.get(workspace)
        repo = ws.repos.get(slug) if ws else None
        if repo is None and ws and slug.startswith("{"):  # Bitbucket takes the UUID in the slug's place
            repo = next((r for r in ws.repos.values() if r.uuid == slug), None)
        if repo is None or not self._can_reach(
            auth, workspace, repo.project_key, repo.slug, public=not repo.is_private
        ):
            raise ApiError(404, f"Repository {workspace}/{slug} not found")
        return repo

    def _resolve_commit(self, repo: Repo, ref: str) -> Commit:
        commit_id = repo.branches.get(ref) or repo.tags.get(ref) or ref
        for h, commit in repo.commits.items():
            if h == commit_id or (len(commit_id) >= 7 and h.startswith(commit_id)):
                return commit
        raise ApiError(404, f"Commit not found: {ref}")

    def _acting_user(self, auth: Auth) -> str:
        credential = auth.credential
        if credential is not None and credential.user in self.world.users:
            return credential.user
        return next(iter(self.world.users))

    # --- Answers -----------------------------------------------------------------------------
    def _page(
        self,
        request: Request,
        items: list[dict] | Callable[[], list[dict]],
        *,
        cache_key: tuple | None = None,
        max_pagelen: int = 100,
        default_pagelen: int = 10,
    ) -> Response:
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
        values = selected[start : start + pagelen]
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
        encoded = [self._encoded.get(id(doc)) or self._encoded.setdefault(id(doc), dumps(doc)) for doc in values]
        head = dumps(envelope)[:-1]
        body = head + b',"values":[' + b",".join(encoded) + b"]}"
        return Response(200, body, {"Content-Type": JSON})

    def _json(self, request: Request, status: int, payload: dict) -> Response:
        fields = request.arg("fields")
        if fields:
            payload = apply_fields(payload, fields)
        return Response.of_json(status, payload)
