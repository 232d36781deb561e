"""The JSON shapes of Bitbucket's objects, as the published OpenAPI spec describes them
(with the live API's known deviations noted where the sandbox follows the live API).

Users, workspaces, projects, repositories, commits, branches, files, hooks, pull
requests, comments and build statuses; links point back at this sandbox's
``api_base`` and ``web_base``.
"""

from __future__ import annotations

from bitbucket_sandbox.core import SandboxCore
from bitbucket_sandbox.data import Comment, Commit, Hook, Project, PullRequest, Repo, Workspace
from bitbucket_sandbox.http import dumps


class Shapes(SandboxCore):
    """Serialisers; repository documents are cached until the world changes."""

    def warm(self) -> None:
        """Serialise every repository once, so the first listing is as fast as the rest."""
        with self.lock:
            for ws in self.world.workspaces.values():
                for repo in ws.repos.values():
                    self._encoded.setdefault(id(self._repo_doc(repo)), dumps(self._repo_doc(repo)))

    def _repo_doc(self, repo: Repo) -> dict:
        doc = self._repo_docs.get(repo.uuid)
        if doc is None:
            doc = self._repo_docs[repo.uuid] = self._repo_json(repo)
        return doc

    # --- Serializers (shapes from the OpenAPI spec) -----------------------------------------
    def _link(self, href: str) -> dict:
        return {"href": href}

    def _user_json(self, uuid: str) -> dict:
        user = self.world.users[uuid]
        return {
            "type": "user",
            "uuid": user.uuid,
            "account_id": user.account_id,
            "display_name": user.display_name,
            "nickname": user.nickname,
            "links": {
                "self": self._link(f"{self.api_base}/users/{user.uuid}"),
                "html": self._link(f"{self.web_base}/{user.uuid}/"),
                "avatar": self._link(f"{self.web_base}/account/{user.nickname}/avatar/"),
            },
        }

    def _workspace_json(self, ws: Workspace) -> dict:
        api = f"{self.api_base}/workspaces/{ws.slug}"
        return {
            "type": "workspace",
            "uuid": ws.uuid,
            "name": ws.name,
            "slug": ws.slug,
            "is_private": ws.is_private,
            "created_on": ws.created_on,
            "links": {
                "self": self._link(api),
                "html": self._link(f"{self.web_base}/{ws.slug}/"),
                "avatar": self._link(f"{self.web_base}/workspaces/{ws.slug}/avatar/"),
                "members": self._link(f"{api}/members"),
                "owners": self._link(f"{api}/members?q=permission%3D%22owner%22"),
                "projects": self._link(f"{api}/projects"),
                "repositories": self._link(f"{self.api_base}/repositories/{ws.slug}"),
                "snippets": self._link(f"{self.api_base}/snippets/{ws.slug}"),
            },
        }

    def _project_json(self, ws: Workspace, project: Project) -> dict:
        return {
            "type": "project",
            "uuid": project.uuid,
            "key": project.key,
            "name": project.name,
            "description": project.description,
            "is_private": project.is_private,
            "created_on": project.created_on,
            "updated_on": project.updated_on,
            "has_publicly_visible_repos": any(
                not r.is_private for r in ws.repos.values() if r.project_key == project.key
            ),
            "owner": {"type": "team", "uuid": ws.uuid, "display_name": ws.name, "username": ws.slug},
            # The live API includes links.self, which the spec's closed object omits.
            "links": {
                "self": self._link(f"{self.api_base}/workspaces/{ws.slug}/projects/{project.key}"),
                "html": self._link(f"{self.web_base}/{ws.slug}/workspace/projects/{project.key}"),
                "avatar": self._link(f"{self.web_base}/{ws.slug}/workspace/projects/{project.key}/avatar"),
            },
        }

    def _repo_json(self, repo: Repo) -> dict:
        ws = self.world.workspaces[repo.workspace]
        project = ws.projects.get(repo.project_key)
        api = f"{self.api_base}/repositories/{repo.full_name}"
        web = f"{self.web_base}/{repo.full_name}"
        doc = {
            "type": "repository",
            "uuid": repo.uuid,
            "full_name": repo.full_name,
            "name": repo.name,
            "slug": repo.slug,
            "description": repo.description,
            "is_private": repo.is_private,
            "scm": "git",
            "fork_policy": "no_public_forks" if repo.is_private else "allow_forks",
            "language": repo.language,
            "created_on": repo.created_on,
            "updated_on": repo.updated_on,
            "size": repo.size,
            "has_issues": False,
            "has_wiki": False,
            "mainbranch": {"type": "branch", "name": repo.mainbranch},
            "owner": {"type": "team", "uuid": ws.uuid, "display_name": ws.name, "username": ws.slug},
            "workspace": {
                "type": "workspace",
                "uuid": ws.uuid,
                "name": ws.name,
                "slug": ws.slug,
                "links": {"self": self._link(f"{self.api_base}/workspaces/{ws.slug}")},
            },
            "links": {
                "self": self._link(api),
                "html": self._link(web),
                "avatar": self._link(f"{web}/avatar/32/"),
                "pullrequests": self._link(f"{api}/pullrequests"),
                "commits": self._link(f"{api}/commits"),
                "forks": self._link(f"{api}/forks"),
                "watchers": self._link(f"{api}/watchers"),
                "downloads": self._link(f"{api}/downloads"),
                "hooks": self._link(f"{api}/hooks"),
                "clone": [
                    {"name": "https", "href": f"{web}.git"},
                    {"name": "ssh", "href": f"git@{self.web_base.split('://')[-1]}:{repo.full_name}.git"},
                ],
            },
        }
        if project:
            doc["project"] = {
                "type": "project",
                "key": project.key,
                "uuid": project.uuid,
                "name": project.name,
                "links": {
                    "self": self._link(f"{self.api_base}/workspaces/{ws.slug}/projects/{project.key}"),
                    "html": self._link(f"{self.web_base}/{ws.slug}/workspace/projects/{project.key}"),
                    "avatar": self._link(f"{self.web_base}/{ws.slug}/workspace/projects/{project.key}/avatar"),
                },
            }
        return doc

    def _commit_json(self, repo: Repo, commit: Commit, *, full: bool = False) -> dict:
        api = f"{self.api_base}/repositories/{repo.full_name}/commit/{commit.hash}"
        doc = {
            "type": "commit",
            "hash": commit.hash,
            "links": {
                "self": self._link(api),
                "html": self._link(f"{self.web_base}/{repo.full_name}/commits/{commit.hash}"),
            },
        }
        if full:
            doc.update(
                {
                    "date": commit.date,
                    "message": commit.message,
                    "parents": [{"type": "commit", "hash": p} for p in commit.parents],
                }
            )
        return doc

    def _branch_json(self, repo: Repo, name: str, head: str) -> dict:
        api = f"{self.api_base}/repositories/{repo.full_name}"
        return {
            "type": "branch",
            "name": name,
            "target": self._commit_json(repo, repo.commits[head], full=True),
            "merge_strategies": ["merge_commit", "squash", "fast_forward"],
            "default_merge_strategy": "merge_commit",
            "links": {
                "self": self._link(f"{api}/refs/branches/{name}"),
                "commits": self._link(f"{api}/commits/{name}"),
                "html": self._link(f"{self.web_base}/{repo.full_name}/branch/{name}"),
            },
        }

    def _hook_json(self, hook: Hook, subject_type: str, subject: dict) -> dict:
        return {
            "type": "webhook_subscription",
            "uuid": hook.uuid,
            "url": hook.url,
            "description": hook.description,
            "subject_type": subject_type,
            "subject": subject,
            "active": hook.active,
            "created_at": hook.created_at,
            "events": hook.events,
            "secret_set": bool(hook.secret),
        }

    def _pr_json(self, repo: Repo, pr: PullRequest) -> dict:
        api = f"{self.api_base}/repositories/{repo.full_name}/pullrequests/{pr.id}"
        condensed_repo = {
            "type": "repository",
            "full_name": repo.full_name,
            "name": repo.name,
            "uuid": repo.uuid,
            "links": {
                "self": self._link(f"{self.api_base}/repositories/{repo.full_name}"),
                "html": self._link(f"{self.web_base}/{repo.full_name}"),
            },
        }

        def endpoint(branch: str) -> dict:
            head = repo.branches.get(branch, "")
            return {
                "repository": condensed_repo,
                "branch": {"name": branch},
                "commit": {"hash": head[:12]} if head else {},
            }

        return {
            "type": "pullrequest",
            "id": pr.id,
            "title": pr.title,
            "state": pr.state,
            "author": self._user_json(pr.author),
            "source": endpoint(pr.source_branch),
            "destination": endpoint(pr.destination_branch),
            "comment_count": len(pr.comments),
            "task_count": 0,
            "close_source_branch": False,
            "created_on": pr.created_on,
            "updated_on": pr.updated_on,
            "reason": "",
            "draft": False,
            **({"merge_commit": {"hash": pr.merge_commit[:12]}} if pr.merge_commit else {}),
            "summary": {"raw": pr.title, "markup": "markdown", "html": f"<p>{pr.title}</p>"},
            "links": {
                "self": self._link(api),
                "html": self._link(f"{self.web_base}/{repo.full_name}/pull-requests/{pr.id}"),
                "commits": self._link(f"{api}/commits"),
                "diff": self._link(f"{api}/diff"),
                "diffstat": self._link(f"{api}/diffstat"),
                "comments": self._link(f"{api}/comments"),
                "activity": self._link(f"{api}/activity"),
                "approve": self._link(f"{api}/approve"),
                "merge": self._link(f"{api}/merge"),
                "decline": self._link(f"{api}/decline"),
            },
        }

    def _comment_json(self, repo: Repo, pr: PullRequest, comment: Comment) -> dict:
        api = f"{self.api_base}/repositories/{repo.full_name}/pullrequests/{pr.id}/comments/{comment.id}"
        return {
            "type": "pullrequest_comment",
            "id": comment.id,
            "created_on": comment.created_on,
            "updated_on": comment.updated_on,
            "deleted": False,
            "content": {"raw": comment.raw, "markup": "markdown", "html": comment.raw},
            "user": self._user_json(comment.author),
            "pullrequest": {
                "type": "pullrequest",
                "id": pr.id,
                "title": pr.title,
                "links": {"self": self._link(f"{self.api_base}/repositories/{repo.full_name}/pullrequests/{pr.id}")},
            },
            "links": {"self": self._link(api)},
        }

    def _file_entry(self, repo: Repo, commit: Commit, path: str) -> dict:
        api = f"{self.api_base}/repositories/{repo.full_name}/src/{commit.hash}/{path}"
        return {
            "type": "commit_file",
            "path": path,
            "escaped_path": path,
            "size": len(commit.files[path].encode()),
            "mimetype": None if not path.endswith(".json") else "application/json",
            # The live API sends a list; the spec says a single string.
            "attributes": [],
            "commit": self._commit_json(repo, commit),
            "links": {
                "self": self._link(api),
                "meta": self._link(f"{api}?format=meta"),
                "history": self._link(
                    f"{self.api_base}/repositories/{repo.full_name}/filehistory/{commit.hash}/{path}"
                ),
            },
        }

    def _status_json(self, repo: Repo, status: dict) -> dict:
        api = f"{self.api_base}/repositories/{repo.full_name}/commit/{status['commit']}"
        return {
            "type": "build",
            "key": status["key"],
            "state": status["state"],
            "name": status.get("name", ""),
            "description": status.get("description", ""),
            "url": status.get("url", ""),
            "refname": status.get("refname", ""),
            "created_on": status["created_on"],
            "updated_on": status["updated_on"],
            "links": {"self": self._link(f"{api}/statuses/build/{status['key']}"), "commit": self._link(api)},
        }
