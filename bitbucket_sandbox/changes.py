"""Changes to the world made outside the REST API, as a developer would make them on
Bitbucket: pushes, deleted, renamed or moved repositories, pull requests opened,
approved, merged, declined or commented. Each fires the webhook events Bitbucket would.

Used by tests and demos directly (``sandbox.push(...)``) and by the control endpoint.
"""

from __future__ import annotations

from datetime import datetime, timezone

from bitbucket_sandbox.data import Comment, Commit, PullRequest, Repo, iso
from bitbucket_sandbox.events import Events
from bitbucket_sandbox.gitobjects import commit_id
from bitbucket_sandbox.http import ApiError


def add_comment(pr: PullRequest, raw: str, author: str) -> Comment:
    """A new comment; ids are never reused, even after a deletion (as in Bitbucket)."""
    pr.comment_seq += 1
    while pr.id * 1000 + pr.comment_seq in pr.comments:  # a fixture written by hand
        pr.comment_seq += 1
    now = iso(datetime.now(timezone.utc))
    comment = Comment(id=pr.id * 1000 + pr.comment_seq, raw=raw, author=author, created_on=now, updated_on=now)
    pr.comments[comment.id] = comment
    return comment


class WorldChanges(Events):
    def push(
        self,
        workspace: str,
        slug: str,
        branch: str,
        *,
        files: dict[str, str] | None = None,
        delete: list[str] | None = None,
        message: str = "Sandbox push",
        fire: bool = True,
    ) -> str:
        """A new commit on ``branch`` (created if missing). Returns its hash."""
        with self.lock:
            repo = self.world.workspaces[workspace].repos[slug]
            parent = repo.branches.get(branch) or repo.branches[repo.mainbranch]
            tree = dict(repo.commits[parent].files)
            tree.update(files or {})
            for path in delete or []:
                tree.pop(path, None)
            now = iso(datetime.now(timezone.utc))
            new = commit_id(tree, message, now, [parent])  # a real git commit (gitobjects.py)
            repo.commits[new] = Commit(hash=new, message=message, date=now, parents=[parent], files=tree)
            old = repo.branches.get(branch)
            repo.branches[branch] = new
            repo.updated_on = now
            self._changed()
        if fire:
            self.fire(
                "repo:push",
                workspace,
                slug,
                {
                    "push": {
                        "changes": [
                            {
                                "new": {"type": "branch", "name": branch, "target": {"type": "commit", "hash": new}},
                                "old": {"type": "branch", "name": branch, "target": {"type": "commit", "hash": old}}
                                if old
                                else None,
                                "created": old is None,
                                "closed": False,
                                "forced": False,
                            }
                        ]
                    }
                },
            )
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

    def rename_repo(
        self,
        workspace: str,
        slug: str,
        *,
        name: str | None = None,
        new_slug: str | None = None,
        project_key: str | None = None,
    ) -> Repo:
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

    def open_pullrequest(
        self,
        workspace: str,
        slug: str,
        *,
        source: str,
        destination: str | None = None,
        title: str = "Sandbox change",
        author: str | None = None,
    ) -> int:
        with self.lock:
            repo = self.world.workspaces[workspace].repos[slug]
            pr_id = max([*repo.pullrequests, 0]) + 1
            now = iso(datetime.now(timezone.utc))
            repo.pullrequests[pr_id] = PullRequest(
                id=pr_id,
                title=title,
                author=author or self.world.workspaces[workspace].members[0],
                source_branch=source,
                destination_branch=destination or repo.mainbranch,
                created_on=now,
                updated_on=now,
            )
            self._changed()
        self.fire("pullrequest:created", workspace, slug, {}, pr_id=pr_id)
        return pr_id

    def set_pullrequest_state(
        self, workspace: str, slug: str, pr_id: int, event: str, *, user: str | None = None, comment: str = ""
    ) -> None:
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
                created = add_comment(pr, comment or "Looks good", user)
                extra["comment"] = self._comment_json(repo, pr, created)
            self._changed()
        if event == "fulfilled":
            source_tree = dict(repo.commits[repo.branches[pr.source_branch]].files)
            gone = [p for p in repo.commits[repo.branches[pr.destination_branch]].files if p not in source_tree]
            pr.merge_commit = self.push(
                workspace,
                slug,
                pr.destination_branch,
                files=source_tree,
                delete=gone,
                message=f"Merged in {pr.source_branch} (pull request #{pr.id})",
            )
        self.fire(f"pullrequest:{event}", workspace, slug, extra, pr_id=pr_id)
