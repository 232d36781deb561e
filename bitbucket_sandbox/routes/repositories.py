"""Routes: repositories, branches, ``src`` (files and listings), branch restrictions,
default reviewers and diffstat."""

from __future__ import annotations

from bitbucket_sandbox.auth import PR_R, RA, Auth, R
from bitbucket_sandbox.data import Commit, Repo
from bitbucket_sandbox.http import ApiError, Request, Response
from bitbucket_sandbox.routes import route
from bitbucket_sandbox.shapes import Shapes


class RepositoryRoutes(Shapes):
    @route("GET", "/repositories/{workspace}", legacy=("repository",), granular=(R,), bucket="repositories")
    def repositories(self, request: Request, auth: Auth, workspace: str) -> Response:
        ws = self.world.workspaces.get(workspace)
        if ws is None:
            raise ApiError(404, f"No workspace with identifier '{workspace}'.")
        label = auth.label

        def visible() -> list[dict]:
            return [
                self._repo_doc(r)
                for r in ws.repos.values()
                if self._can_reach(auth, workspace, r.project_key, r.slug, public=not r.is_private)
            ]

        return self._page(request, visible, cache_key=("repos", workspace, label, self.version))

    @route("GET", "/repositories/{workspace}/{slug}", legacy=("repository",), granular=(R,), bucket="repositories")
    def repository(self, request: Request, auth: Auth, workspace: str, slug: str) -> Response:
        return self._json(request, 200, self._repo_json(self._repo(auth, workspace, slug)))

    @route(
        "GET",
        "/repositories/{workspace}/{slug}/refs/branches",
        legacy=("repository",),
        granular=(R,),
        bucket="repositories",
    )
    def branches(self, request: Request, auth: Auth, workspace: str, slug: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        return self._page(request, [self._branch_json(repo, n, h) for n, h in sorted(repo.branches.items())])

    @route(
        "GET",
        "/repositories/{workspace}/{slug}/refs/branches/{branch}",
        legacy=("repository",),
        granular=(R,),
        bucket="repositories",
    )
    def branch(self, request: Request, auth: Auth, workspace: str, slug: str, branch: str) -> Response:
        """One branch (its name may hold slashes, sent as they are or as %2F)."""
        repo = self._repo(auth, workspace, slug)
        if branch not in repo.branches:
            raise ApiError(404, f'Branch "{branch}" not found.')
        return self._json(request, 200, self._branch_json(repo, branch, repo.branches[branch]))

    @route("GET", "/repositories/{workspace}/{slug}/src", legacy=("repository",), granular=(R,), bucket="repositories")
    def src_root(self, request: Request, auth: Auth, workspace: str, slug: str) -> Response:
        """The root directory at the main branch's head."""
        repo = self._repo(auth, workspace, slug)
        return self.src(request, auth, workspace, slug, repo.branches[repo.mainbranch], "")

    @route(
        "GET",
        "/repositories/{workspace}/{slug}/src/{commit}/{path}",
        legacy=("repository",),
        granular=(R,),
        bucket="repositories",
    )
    def src(self, request: Request, auth: Auth, workspace: str, slug: str, commit: str, path: str) -> Response:
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
        return self._page(
            request,
            lambda: self._tree(repo, target, prefix, max_depth),
            cache_key=("src", repo.uuid, target.hash, prefix, max_depth, self.version),
        )

    def _tree(self, repo: Repo, commit: Commit, prefix: str, max_depth: int) -> list[dict]:
        entries: dict[str, dict] = {}
        for path in sorted(commit.files):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, min(len(parts), max_depth) + 1):
                sub = prefix + "/".join(parts[:depth])
                if depth == len(parts):
                    entries[sub] = self._file_entry(repo, commit, sub)
                elif sub not in entries:
                    api = f"{self.api_base}/repositories/{repo.full_name}/src/{commit.hash}/{sub}/"
                    entries[sub] = {
                        "type": "commit_directory",
                        "path": sub,
                        "escaped_path": sub,
                        "commit": self._commit_json(repo, commit),
                        "links": {"self": self._link(api), "meta": self._link(f"{api}?format=meta")},
                    }
        return list(entries.values())

    @route(
        "GET",
        "/repositories/{workspace}/{slug}/branch-restrictions",
        legacy=("repository:admin",),
        granular=(RA,),
        bucket="repositories",
    )
    def branch_restrictions(self, request: Request, auth: Auth, workspace: str, slug: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        api = f"{self.api_base}/repositories/{repo.full_name}/branch-restrictions"
        values = [
            {
                "type": "branchrestriction",
                "users": [],
                "groups": [],
                "links": {"self": self._link(f"{api}/{r['id']}")},
                **r,
            }
            for r in repo.restrictions
        ]
        return self._page(request, values)

    @route(
        "GET",
        "/repositories/{workspace}/{slug}/default-reviewers",
        legacy=("pullrequest",),
        granular=(PR_R,),
        bucket="repositories",
    )
    def default_reviewers(self, request: Request, auth: Auth, workspace: str, slug: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        return self._page(request, [self._user_json(u) for u in repo.default_reviewers])

    @route(
        "GET",
        "/repositories/{workspace}/{slug}/diffstat/{spec}",
        legacy=("repository",),
        granular=(R,),
        bucket="repositories",
    )
    def diffstat(self, request: Request, auth: Auth, workspace: str, slug: str, spec: str) -> Response:
        repo = self._repo(auth, workspace, slug)
        new_ref, _, old_ref = spec.partition("..")
        new, old = self._resolve_commit(repo, new_ref), self._resolve_commit(repo, old_ref or new_ref)
        values = []
        for path in sorted(set(new.files) | set(old.files)):
            before, after = old.files.get(path), new.files.get(path)
            if before == after:
                continue
            status = "added" if before is None else "removed" if after is None else "modified"
            entry = {
                "type": "diffstat",
                "status": status,
                "lines_added": len((after or "").splitlines())
                if status != "modified"
                else len(set((after or "").splitlines()) - set((before or "").splitlines())),
                "lines_removed": len((before or "").splitlines())
                if status != "modified"
                else len(set((before or "").splitlines()) - set((after or "").splitlines())),
            }
            if before is not None:
                entry["old"] = {"type": "commit_file", "path": path, "escaped_path": path}
            if after is not None:
                entry["new"] = {"type": "commit_file", "path": path, "escaped_path": path}
            values.append(entry)
        return self._page(request, values, max_pagelen=500)
