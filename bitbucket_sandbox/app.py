"""The sandbox's request handling: Bitbucket Cloud REST 2.0 and git ref reads.

``Sandbox.handle(request) -> Response`` is independent of the HTTP server, so tests
can call it directly and the server stays a thin adapter. Behaviour follows the
published OpenAPI spec and Atlassian's API guide: paginated envelopes with opaque
``next`` links, ``pagelen`` limits, ``fields=``, ``q=``/``sort=``, Basic (email + API
token) and Bearer (access and OAuth tokens) auth with per-operation scopes, 403 bodies
that name the missing scopes, 404 for what a token cannot reach, rolling-window rate
limits with ``X-RateLimit-*`` headers, and 410 for removed endpoints.

This module only wires the parts together and dispatches: the routes live in
``routes/`` (one mixin per resource family), auth in ``auth.py``, faults and the
request record in ``faults.py``, JSON shapes in ``shapes.py``, webhook events in
``events.py``, changes made by tests and demos in ``changes.py``, and the
``/_sandbox/`` control actions in ``control.py``.
"""

from __future__ import annotations

from typing import Any

from bitbucket_sandbox.auth import Auth, check_scopes, rate_key
from bitbucket_sandbox.changes import WorldChanges
from bitbucket_sandbox.control import control
from bitbucket_sandbox.data import World
from bitbucket_sandbox.faults import fault_response, record
from bitbucket_sandbox.http import ApiError, Request, Response
from bitbucket_sandbox.osv import default_archives
from bitbucket_sandbox.osv import etag as osv_etag
from bitbucket_sandbox.routes import Route
from bitbucket_sandbox.routes.git import GitRoutes
from bitbucket_sandbox.routes.hooks import HookRoutes
from bitbucket_sandbox.routes.oauth import OAuthRoutes
from bitbucket_sandbox.routes.pullrequests import PullRequestRoutes
from bitbucket_sandbox.routes.repositories import RepositoryRoutes
from bitbucket_sandbox.routes.workspaces import WorkspaceRoutes

__all__ = ["ApiError", "Request", "Response", "Sandbox"]


class Sandbox(WorkspaceRoutes, RepositoryRoutes, PullRequestRoutes, HookRoutes, GitRoutes, OAuthRoutes, WorldChanges):
    """The whole sandbox state plus request handling. Thread-safe.

    ``options`` are ``SandboxCore``'s: ``api_base``, ``web_base``, ``rate_limit``,
    ``rate_window``, ``git_rate_limit``, ``oauth_token_ttl``, ``record_limit``.
    """

    def __init__(self, world: World, **options: Any) -> None:
        super().__init__(world, **options)
        self.osv_archives: dict[str, bytes] = default_archives()  # OSV ecosystem name -> all.zip
        self.routes = [
            Route(m, p, getattr(self, name), lg, gr, b)
            for name in dir(self)
            if hasattr(getattr(self, name), "_route")
            for (m, p, lg, gr, b) in [getattr(self, name)._route]
        ]
        # Most specific (longest literal) patterns first.
        self.routes.sort(key=lambda r: -len(r.pattern.pattern.replace("[^/]+", "")))

    # --- Entry point ----------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/_sandbox/"):
            return self._control(request)
        if path.startswith("/_osv/"):
            return self._osv(request)
        kind = (
            "git"
            if path.endswith(("/info/refs", "/git-upload-pack"))
            else "oauth"
            if path == "/site/oauth2/access_token"
            else "rest"
        )
        auth: Auth | None = None
        try:
            fault = fault_response(self.faults, self.lock, path)
            if fault is not None:
                self._record(request, None, kind, fault.status)
                return fault
            if kind == "git":
                auth, response = self._git(request)
            elif kind == "oauth":
                response = self._oauth_token(request)
            else:
                auth, response = self._rest(request)
        except ApiError as exc:
            response = exc.response()
        self._record(request, auth, kind, response.status, len(response.body))
        return response

    def _osv(self, request: Request) -> Response:
        """``/_osv/{ecosystem}/all.zip``: the OSV archive of an ecosystem (osv.py), with an
        ETag, answering 304 to a matching If-None-Match."""
        parts = request.path.split("/")
        body = self.osv_archives.get(parts[2]) if len(parts) == 4 and parts[3] == "all.zip" else None
        if body is None:
            return Response(404, b"No such archive", {"Content-Type": "text/plain"})
        tag = osv_etag(body)
        if request.headers.get("if-none-match") == tag:
            return Response(304, b"", {"ETag": tag})
        return Response(200, body, {"Content-Type": "application/zip", "ETag": tag})

    def _record(self, request: Request, auth: Auth | None, kind: str, status: int, size: int = 0) -> None:
        record(self.requests, request, auth.label if auth else "anonymous", kind, status, size)

    # --- REST dispatch --------------------------------------------------------------------
    def _rest(self, request: Request) -> tuple[Auth | None, Response]:
        path = request.path
        if not path.startswith("/2.0/"):
            raise ApiError(404, f"Resource not found: {path}")
        sub = path[len("/2.0") :]
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
            headers = self._rate(rate_key(auth), "api/repositories", self.rate_limit)
        check_scopes(auth, route.legacy, route.granular)
        with self.lock:
            response = route.handler(request, auth, **match.groupdict())
        response.headers.update(headers)
        return auth, response

    # --- Control endpoint (/_sandbox/...; see control.py) ----------------------------------
    def _control(self, request: Request) -> Response:
        return control(self, request)
