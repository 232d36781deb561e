"""git smart HTTP: the ref advertisement of ``GET /{workspace}/{slug}.git/info/refs?service=git-upload-pack``
(what ``git ls-remote`` reads), with ``x-token-auth`` or ``x-bitbucket-api-token-auth``,
counted against the separate git rate limit."""

from __future__ import annotations

import re

from bitbucket_sandbox.auth import Auth, rate_key
from bitbucket_sandbox.core import SandboxCore
from bitbucket_sandbox.http import ApiError, Request, Response


def pkt(data: bytes) -> bytes:
    """One pkt-line: four hex digits of length (themselves included), then the data."""
    return f"{len(data) + 4:04x}".encode() + data


class GitRoutes(SandboxCore):
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
            if not (
                {"repository", "read:repository:bitbucket"} & scopes or {"pullrequest", "repository:write"} & scopes
            ):
                return auth, Response(
                    403, b"Your credentials lack the repository read scope", {"Content-Type": "text/plain"}
                )
        headers = self._rate(rate_key(auth), "git", self.git_rate_limit)
        with self.lock:
            refs = [("HEAD", repo.branches[repo.mainbranch])]
            refs += [(f"refs/heads/{n}", h) for n, h in sorted(repo.branches.items())]
            refs += [(f"refs/tags/{n}", h) for n, h in sorted(repo.tags.items())]
        body = bytearray(pkt(b"# service=git-upload-pack\n") + b"0000")
        caps = (
            f"multi_ack thin-pack side-band side-band-64k ofs-delta shallow no-progress include-tag "
            f"multi_ack_detailed symref=HEAD:refs/heads/{repo.mainbranch} agent=git/bitbucket-sandbox"
        )
        for i, (name, head) in enumerate(refs):
            line = f"{head} {name}" + (f"\0{caps}" if i == 0 else "") + "\n"
            body += pkt(line.encode())
        body += b"0000"
        return auth, Response(
            200,
            bytes(body),
            {"Content-Type": "application/x-git-upload-pack-advertisement", "Cache-Control": "no-cache", **headers},
        )
