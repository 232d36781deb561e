"""Routes: repository and workspace webhooks (list, create, read, update, delete)."""

from __future__ import annotations

import uuid as uuidlib
from datetime import datetime, timezone

from bitbucket_sandbox.auth import WH_D, WH_R, WH_W, Auth
from bitbucket_sandbox.data import Hook, Workspace, iso
from bitbucket_sandbox.http import ApiError, Request, Response
from bitbucket_sandbox.routes import route
from bitbucket_sandbox.shapes import Shapes


class HookRoutes(Shapes):
    def _hook_create(self, request: Request, hooks: dict, subject_type: str, subject: dict) -> Response:
        body = request.json()
        errors = {}
        if not str(body.get("url", "")).startswith(("http://", "https://")):
            errors["url"] = "Enter a valid URL."
        events = body.get("events") or []
        if not events:
            errors["events"] = "Enter at least one event."
        if errors:
            raise ApiError(400, "Bad request", detail=errors)
        hook = Hook(
            uuid="{" + str(uuidlib.uuid4()) + "}",
            url=body["url"],
            description=body.get("description", ""),
            events=list(events),
            active=bool(body.get("active", True)),
            secret=body.get("secret") or None,
            created_at=iso(datetime.now(timezone.utc)),
        )
        hooks[hook.uuid] = hook
        self._changed()
        return self._json(request, 201, self._hook_json(hook, subject_type, subject))

    def _hook_update(self, request: Request, hook: Hook, subject_type: str, subject: dict) -> Response:
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

    @route(
        "GET", "/repositories/{workspace}/{slug}/hooks", legacy=("webhook",), granular=(WH_R,), bucket="repositories"
    )
    def repo_hooks(self, request: Request, auth: Auth, workspace: str, slug: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        subject = {"type": "repository", "full_name": repo.full_name, "uuid": repo.uuid}
        return self._page(request, [self._hook_json(h, "repository", subject) for h in repo.hooks.values()])

    @route(
        "POST",
        "/repositories/{workspace}/{slug}/hooks",
        legacy=("webhook",),
        granular=(WH_R, WH_W),
        bucket="repositories",
    )
    def repo_hook_create(self, request: Request, auth: Auth, workspace: str, slug: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        return self._hook_create(
            request, repo.hooks, "repository", {"type": "repository", "full_name": repo.full_name, "uuid": repo.uuid}
        )

    @route(
        "GET",
        "/repositories/{workspace}/{slug}/hooks/{uid}",
        legacy=("webhook",),
        granular=(WH_R,),
        bucket="repositories",
    )
    def repo_hook(self, request: Request, auth: Auth, workspace: str, slug: str, uid: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        subject = {"type": "repository", "full_name": repo.full_name, "uuid": repo.uuid}
        return self._json(request, 200, self._hook_json(self._hook_get(repo.hooks, uid), "repository", subject))

    @route(
        "PUT",
        "/repositories/{workspace}/{slug}/hooks/{uid}",
        legacy=("webhook",),
        granular=(WH_R, WH_W),
        bucket="repositories",
    )
    def repo_hook_update(self, request: Request, auth: Auth, workspace: str, slug: str, uid: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        subject = {"type": "repository", "full_name": repo.full_name, "uuid": repo.uuid}
        return self._hook_update(request, self._hook_get(repo.hooks, uid), "repository", subject)

    @route(
        "DELETE",
        "/repositories/{workspace}/{slug}/hooks/{uid}",
        legacy=("webhook",),
        granular=(WH_D,),
        bucket="repositories",
    )
    def repo_hook_delete(self, request: Request, auth: Auth, workspace: str, slug: str, uid: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        hook = self._hook_get(repo.hooks, uid)
        del repo.hooks[hook.uuid]
        self._changed()
        return Response(204)

    def _workspace_admin(self, auth: Auth, workspace: str) -> Workspace:
        ws = self._workspace(auth, workspace)
        credential = auth.credential
        if (
            credential is not None
            and credential.kind == "access_token"
            and (credential.project_key or credential.repo_slug)
        ):
            raise ApiError(403, "You do not have permission to manage webhooks for this workspace.")
        return ws

    @route("GET", "/workspaces/{workspace}/hooks", legacy=("webhook",), granular=(WH_R,))
    def ws_hooks(self, request: Request, auth: Auth, workspace: str) -> Response:
        ws = self._workspace_admin(auth, workspace)
        subject = {"type": "workspace", "slug": ws.slug, "uuid": ws.uuid}
        return self._page(request, [self._hook_json(h, "workspace", subject) for h in ws.hooks.values()])

    @route("POST", "/workspaces/{workspace}/hooks", legacy=("webhook",), granular=(WH_R, WH_W))
    def ws_hook_create(self, request: Request, auth: Auth, workspace: str) -> Response:
        ws = self._workspace_admin(auth, workspace)
        return self._hook_create(
            request, ws.hooks, "workspace", {"type": "workspace", "slug": ws.slug, "uuid": ws.uuid}
        )

    @route("GET", "/workspaces/{workspace}/hooks/{uid}", legacy=("webhook",), granular=(WH_R,))
    def ws_hook(self, request: Request, auth: Auth, workspace: str, uid: str) -> Response:
        ws = self._workspace_admin(auth, workspace)
        subject = {"type": "workspace", "slug": ws.slug, "uuid": ws.uuid}
        return self._json(request, 200, self._hook_json(self._hook_get(ws.hooks, uid), "workspace", subject))

    @route("PUT", "/workspaces/{workspace}/hooks/{uid}", legacy=("webhook",), granular=(WH_R, WH_W))
    def ws_hook_update(self, request: Request, auth: Auth, workspace: str, uid: str) -> Response:
        ws = self._workspace_admin(auth, workspace)
        subject = {"type": "workspace", "slug": ws.slug, "uuid": ws.uuid}
        return self._hook_update(request, self._hook_get(ws.hooks, uid), "workspace", subject)

    @route("DELETE", "/workspaces/{workspace}/hooks/{uid}", legacy=("webhook",), granular=(WH_D,))
    def ws_hook_delete(self, request: Request, auth: Auth, workspace: str, uid: str) -> Response:
        ws = self._workspace_admin(auth, workspace)
        hook = self._hook_get(ws.hooks, uid)
        del ws.hooks[hook.uuid]
        self._changed()
        return Response(204)
