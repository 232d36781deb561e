"""Routes: the current user, workspaces, members and projects; and the endpoints
Bitbucket removed (410 with its deprecation notice)."""

from __future__ import annotations

import uuid as uuidlib

from bitbucket_sandbox.auth import PJ_R, U_R, WS_R, Auth
from bitbucket_sandbox.http import ApiError, Request, Response
from bitbucket_sandbox.routes import route
from bitbucket_sandbox.shapes import Shapes

GONE_DETAIL = (
    "This API is no longer supported.\n\nFor information about its removal, please refer to the "
    "deprecation notice at: https://developer.atlassian.com/cloud/bitbucket/deprecation-notice-v1-apis/"
)


class WorkspaceRoutes(Shapes):
    # --- Endpoints: gone ------------------------------------------------------------------
    @route("GET", "/repositories")
    def gone_repositories(self, request: Request, auth: Auth) -> Response:
        raise ApiError(410, "Resource removed", detail=GONE_DETAIL)

    @route("GET", "/workspaces")
    def gone_workspaces(self, request: Request, auth: Auth) -> Response:
        raise ApiError(410, "Resource removed", detail=GONE_DETAIL)

    @route("GET", "/user/permissions/{kind}")
    def gone_permissions(self, request: Request, auth: Auth, kind: str) -> Response:
        raise ApiError(410, "Resource removed", detail=GONE_DETAIL)

    # --- Endpoints: user and workspaces ---------------------------------------------------------
    @route("GET", "/user", legacy=("account",), granular=(U_R,))
    def user(self, request: Request, auth: Auth) -> Response:
        if auth.credential is None:
            raise ApiError(
                401,
                "This API is only accessible with the following authentication types: "
                "session, password, apppassword, api_token",
            )
        if auth.credential.kind == "access_token":
            bot = {
                "type": "user",
                "uuid": "{" + str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, auth.credential.label)) + "}",
                "display_name": auth.credential.label,
                "nickname": "access-token-bot",
                "account_id": "bot",
                "links": {"avatar": self._link(f"{self.web_base}/account/bot/avatar/")},
            }
            return self._json(request, 200, bot)
        return self._json(request, 200, self._user_json(auth.credential.user))

    @route("GET", "/user/workspaces", legacy=("account",), granular=(WS_R,))
    def user_workspaces(self, request: Request, auth: Auth) -> Response:
        if auth.credential is None:
            raise ApiError(401, "Authentication required")
        values = [
            {
                "type": "workspace_access",
                "administrator": auth.credential.kind != "access_token",
                "workspace": {
                    "type": "workspace_base",
                    "uuid": ws.uuid,
                    "slug": ws.slug,
                    "name": ws.name,
                    "links": {
                        "self": self._link(f"{self.api_base}/workspaces/{ws.slug}"),
                        "avatar": self._link(f"{self.web_base}/workspaces/{ws.slug}/avatar/"),
                    },
                },
            }
            for ws in self.world.workspaces.values()
            if self._can_reach(auth, ws.slug)
        ]
        return self._page(request, values)

    @route("GET", "/workspaces/{workspace}", legacy=(), granular=(WS_R,))
    def workspace(self, request: Request, auth: Auth, workspace: str) -> Response:
        return self._json(request, 200, self._workspace_json(self._workspace(auth, workspace)))

    @route("GET", "/workspaces/{workspace}/members", legacy=("account",), granular=(WS_R,))
    def members(self, request: Request, auth: Auth, workspace: str) -> Response:
        ws = self._workspace(auth, workspace)
        values = [
            {
                "type": "workspace_membership",
                "user": self._user_json(uuid),
                "workspace": {"type": "workspace", "uuid": ws.uuid, "slug": ws.slug, "name": ws.name},
                "links": {"self": self._link(f"{self.api_base}/workspaces/{ws.slug}/members/{uuid}")},
            }
            for uuid in ws.members
        ]
        return self._page(request, values)

    @route("GET", "/workspaces/{workspace}/projects", legacy=("project",), granular=(PJ_R,))
    def projects(self, request: Request, auth: Auth, workspace: str) -> Response:
        ws = self._workspace(auth, workspace)
        credential = auth.credential
        values = [
            self._project_json(ws, p)
            for p in ws.projects.values()
            if not (credential and credential.project_key and credential.project_key != p.key)
            and not (credential and credential.repo_slug)
        ]
        return self._page(request, values, max_pagelen=100)

    @route("GET", "/workspaces/{workspace}/projects/{key}", legacy=("project",), granular=(PJ_R,))
    def project(self, request: Request, auth: Auth, workspace: str, key: str) -> Response:
        ws = self._workspace(auth, workspace)
        project = ws.projects.get(key)
        if project is None or not self._can_reach(auth, workspace, key):
            raise ApiError(404, f"Project {key} not found in workspace {workspace}")
        return self._json(request, 200, self._project_json(ws, project))
