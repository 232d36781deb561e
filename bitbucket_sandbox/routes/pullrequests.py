"""Routes: pull requests, their comments and diffstat, and commits' build statuses."""

from __future__ import annotations

from datetime import datetime, timezone

from bitbucket_sandbox.auth import PR_R, Auth, R
from bitbucket_sandbox.changes import add_comment
from bitbucket_sandbox.data import Comment, PullRequest, Repo, iso
from bitbucket_sandbox.http import ApiError, Request, Response
from bitbucket_sandbox.routes import route
from bitbucket_sandbox.shapes import Shapes


class PullRequestRoutes(Shapes):
    @route(
        "GET",
        "/repositories/{workspace}/{slug}/pullrequests",
        legacy=("pullrequest",),
        granular=(PR_R,),
        bucket="repositories",
    )
    def pullrequests(self, request: Request, auth: Auth, workspace: str, slug: str) -> Response:
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

    @route(
        "GET",
        "/repositories/{workspace}/{slug}/pullrequests/{pr_id}",
        legacy=("pullrequest",),
        granular=(PR_R,),
        bucket="repositories",
    )
    def pullrequest(self, request: Request, auth: Auth, workspace: str, slug: str, pr_id: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        return self._json(request, 200, self._pr_json(repo, self._pr(repo, pr_id)))

    @route(
        "GET",
        "/repositories/{workspace}/{slug}/pullrequests/{pr_id}/diffstat",
        legacy=("pullrequest",),
        granular=(PR_R,),
        bucket="repositories",
    )
    def pullrequest_diffstat(self, request: Request, auth: Auth, workspace: str, slug: str, pr_id: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        pr = self._pr(repo, pr_id)
        spec = f"{repo.branches[pr.source_branch]}..{repo.branches[pr.destination_branch]}"
        return Response(302, b"", {"Location": f"{self.api_base}/repositories/{repo.full_name}/diffstat/{spec}"})

    @route(
        "GET",
        "/repositories/{workspace}/{slug}/pullrequests/{pr_id}/comments",
        legacy=("pullrequest",),
        granular=(PR_R,),
        bucket="repositories",
    )
    def comments(self, request: Request, auth: Auth, workspace: str, slug: str, pr_id: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        pr = self._pr(repo, pr_id)
        return self._page(request, [self._comment_json(repo, pr, c) for c in pr.comments.values()])

    @route(
        "POST",
        "/repositories/{workspace}/{slug}/pullrequests/{pr_id}/comments",
        legacy=("pullrequest",),
        granular=(PR_R,),
        bucket="repositories",
    )
    def comment_create(self, request: Request, auth: Auth, workspace: str, slug: str, pr_id: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        pr = self._pr(repo, pr_id)
        raw = self._comment_raw(request)
        comment = add_comment(pr, raw, self._acting_user(auth))
        self._changed()
        return self._json(request, 201, self._comment_json(repo, pr, comment))

    @route(
        "GET",
        "/repositories/{workspace}/{slug}/pullrequests/{pr_id}/comments/{comment_id}",
        legacy=("pullrequest",),
        granular=(PR_R,),
        bucket="repositories",
    )
    def comment(self, request: Request, auth: Auth, workspace: str, slug: str, pr_id: str, comment_id: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        pr = self._pr(repo, pr_id)
        comment = self._comment(pr, comment_id)
        return self._json(request, 200, self._comment_json(repo, pr, comment))

    @route(
        "PUT",
        "/repositories/{workspace}/{slug}/pullrequests/{pr_id}/comments/{comment_id}",
        legacy=("pullrequest",),
        granular=(PR_R,),
        bucket="repositories",
    )
    def comment_update(
        self, request: Request, auth: Auth, workspace: str, slug: str, pr_id: str, comment_id: str
    ) -> Response:
        repo = self._repo(auth, workspace, slug)
        pr = self._pr(repo, pr_id)
        comment = self._comment(pr, comment_id)
        raw = self._comment_raw(request)
        comment.raw, comment.updated_on = raw, iso(datetime.now(timezone.utc))
        self._changed()
        return self._json(request, 200, self._comment_json(repo, pr, comment))

    # --- Build statuses --------------------------------------------------------------------------------
    @route(
        "POST",
        "/repositories/{workspace}/{slug}/commit/{commit}/statuses/build",
        legacy=("repository",),
        granular=(R,),
        bucket="repositories",
    )
    def status_create(self, request: Request, auth: Auth, workspace: str, slug: str, commit: str) -> Response:
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
        status = {
            "commit": target.hash,
            "key": body["key"],
            "state": body["state"],
            "name": body.get("name", ""),
            "description": body.get("description", ""),
            "url": body["url"],
            "refname": body.get("refname", ""),
            "created_on": existing["created_on"] if existing else now,
            "updated_on": now,
        }
        repo.statuses[key] = status
        self.status_posts.append({"repository": repo.full_name, **status})
        self._changed()
        return self._json(request, 201, self._status_json(repo, status))

    @route(
        "GET",
        "/repositories/{workspace}/{slug}/commit/{commit}/statuses",
        legacy=("repository",),
        granular=(R,),
        bucket="repositories",
    )
    def statuses(self, request: Request, auth: Auth, workspace: str, slug: str, commit: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        target = self._resolve_commit(repo, commit)
        return self._page(
            request, [self._status_json(repo, s) for k, s in repo.statuses.items() if k.startswith(target.hash + "/")]
        )

    @route(
        "GET",
        "/repositories/{workspace}/{slug}/commit/{commit}/statuses/build/{key}",
        legacy=("repository",),
        granular=(R,),
        bucket="repositories",
    )
    def status(self, request: Request, auth: Auth, workspace: str, slug: str, commit: str, key: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        target = self._resolve_commit(repo, commit)
        status = repo.statuses.get(f"{target.hash}/{key}")
        if status is None:
            raise ApiError(404, f"Build status {key} not found")
        return self._json(request, 200, self._status_json(repo, status))
