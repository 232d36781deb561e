"""git smart HTTP (protocol v0, stateless RPC), as Bitbucket serves it to ``git`` and to the
portal:

* ``GET /{workspace}/{slug}.git/info/refs?service=git-upload-pack``: the ref advertisement
  (what ``git ls-remote`` reads);
* ``POST /{workspace}/{slug}.git/git-upload-pack``: a fetch of advertised tips, shallow
  (``deepen N``) or whole, answered with shallow lines, ``NAK`` and a real packfile
  (``gitobjects.py``) over side-band-64k.

Credentials use the fixed user names ``x-token-auth`` / ``x-bitbucket-api-token-auth``;
each request counts against the separate git rate limit. Like Bitbucket Cloud, no
``filter`` capability (no partial clone) is offered.
"""

from __future__ import annotations

import gzip
import re

from bitbucket_sandbox.auth import Auth, rate_key
from bitbucket_sandbox.core import SandboxCore
from bitbucket_sandbox.data import Repo
from bitbucket_sandbox.gitobjects import Objects, build_commit, pack
from bitbucket_sandbox.http import ApiError, Request, Response

GIT_PATH = re.compile(r"^/(?P<ws>[^/]+)/(?P<slug>[^/]+?)(?:\.git)?/(?P<service>info/refs|git-upload-pack)$")
CHALLENGE = {"WWW-Authenticate": 'Basic realm="Bitbucket.org HTTP"'}
SIDEBAND_CHUNK = 65515  # side-band-64k: 65520 per pkt-line, less the length and the band byte


def pkt(data: bytes) -> bytes:
    """One pkt-line: four hex digits of length (themselves included), then the data."""
    return f"{len(data) + 4:04x}".encode() + data


def pkt_lines(body: bytes) -> list[bytes | None]:
    """The pkt-lines of a request; None for a flush."""
    lines: list[bytes | None] = []
    pos = 0
    while pos + 4 <= len(body):
        try:
            length = int(body[pos : pos + 4], 16)
        except ValueError as exc:
            raise ApiError(400, "Malformed pkt-line") from exc
        if length == 0:
            lines.append(None)
            pos += 4
            continue
        if length < 4 or pos + length > len(body):
            raise ApiError(400, "Malformed pkt-line")
        lines.append(body[pos + 4 : pos + length].rstrip(b"\n"))
        pos += length
    return lines


def _plain(status: int, text: str, headers: dict | None = None) -> Response:
    return Response(status, text.encode(), {"Content-Type": "text/plain", **(headers or {})})


class GitRoutes(SandboxCore):
    def _git(self, request: Request) -> tuple[Auth | None, Response]:
        match = GIT_PATH.match(request.path)
        if match is None:
            return None, _plain(404, "Not a git path")
        if match["service"] == "info/refs" and request.arg("service") != "git-upload-pack":
            return None, _plain(403, "Only git-upload-pack is served")
        if match["service"] == "git-upload-pack" and request.method != "POST":
            return None, _plain(405, "git-upload-pack takes POST")
        try:
            auth = self._authenticate(request, git=True)
        except ApiError as exc:
            return None, _plain(401, exc.message, CHALLENGE)
        credential = auth.credential
        ws = self.world.workspaces.get(match["ws"])
        repo = ws.repos.get(match["slug"]) if ws else None
        if repo is None or not self._can_reach(auth, ws.slug, repo.project_key, repo.slug, public=not repo.is_private):
            if credential is None:
                return auth, _plain(401, "Authentication required", CHALLENGE)
            return auth, _plain(404, "Repository not found")
        if credential is not None:
            scopes = set(credential.scopes)
            if not (
                {"repository", "read:repository:bitbucket"} & scopes or {"pullrequest", "repository:write"} & scopes
            ):
                return auth, _plain(403, "Your credentials lack the repository read scope")
        headers = self._rate(rate_key(auth), "git", self.git_rate_limit)
        if match["service"] == "git-upload-pack":
            return auth, self._upload_pack(request, repo, headers)
        return auth, self._advertise(repo, headers)

    def _advertise(self, repo: Repo, headers: dict[str, str]) -> Response:
        with self.lock:
            refs = [("HEAD", repo.branches[repo.mainbranch])]
            refs += [(f"refs/heads/{n}", h) for n, h in sorted(repo.branches.items())]
            refs += [(f"refs/tags/{n}", h) for n, h in sorted(repo.tags.items())]
        body = bytearray(pkt(b"# service=git-upload-pack\n") + b"0000")
        # What this server implements (no multi_ack, thin packs or tag following: a client
        # that asks nothing of them works the same), and no filter, as Bitbucket.
        caps = (
            f"side-band side-band-64k ofs-delta shallow no-progress "
            f"symref=HEAD:refs/heads/{repo.mainbranch} agent=git/bitbucket-sandbox"
        )
        for i, (name, head) in enumerate(refs):
            line = f"{head} {name}" + (f"\0{caps}" if i == 0 else "") + "\n"
            body += pkt(line.encode())
        body += b"0000"
        return Response(
            200,
            bytes(body),
            {"Content-Type": "application/x-git-upload-pack-advertisement", "Cache-Control": "no-cache", **headers},
        )

    def _upload_pack(self, request: Request, repo: Repo, headers: dict[str, str]) -> Response:
        """One stateless round of upload-pack: wants (tips, or commits reachable from them), an
        optional ``deepen N``, then ``done``; without ``done`` (haves: this server finds none
        in common) it answers the shallow lines and NAK and lets the client say done."""
        body = request.body
        if request.headers.get("content-encoding", "") == "gzip":
            body = gzip.decompress(body)
        lines = pkt_lines(body)
        wants, caps, depth, done = [], set(), 0, False
        for line in lines:
            if line is None:
                continue
            if line.startswith(b"want "):
                sha, *rest = line[5:].decode().split(" ")
                if not wants:
                    caps = set(rest)  # capabilities ride on the first want
                wants.append(sha)
            elif line.startswith(b"deepen "):
                depth = int(line[7:])
            elif line == b"done":
                done = True
        with self.lock:
            # Stateless RPC (smart HTTP): git serves a want that is a tip or reachable from one
            # (the client may have read an older advertisement); anything else is "not our ref".
            reachable, stack = set(), list(set(repo.branches.values()) | set(repo.tags.values()))
            while stack:
                sha = stack.pop()
                if sha not in reachable and sha in repo.commits:
                    reachable.add(sha)
                    stack += repo.commits[sha].parents
            unknown = [w for w in wants if w not in reachable]
            if not wants or unknown:
                message = f"upload-pack: not our ref {unknown[0]}" if unknown else "upload-pack: no wants"
                return Response(200, pkt(b"ERR " + message.encode()), self._pack_headers(headers))
            objects = self._objects(repo, wants, depth)
        out = bytearray()
        if depth:
            out += b"".join(pkt(f"shallow {w}\n".encode()) for w in wants) + b"0000"
        if not done and any(line is not None and line.startswith(b"have ") for line in lines):
            out += pkt(b"NAK\n")
        if done:
            out += pkt(b"NAK\n")
            data = pack(objects)
            if "side-band-64k" in caps or "side-band" in caps:
                size = SIDEBAND_CHUNK if "side-band-64k" in caps else 995
                for i in range(0, len(data), size):
                    out += pkt(b"\x01" + data[i : i + size])
                out += b"0000"
            else:
                out += data
        return Response(200, bytes(out), self._pack_headers(headers))

    @staticmethod
    def _pack_headers(headers: dict[str, str]) -> dict[str, str]:
        return {"Content-Type": "application/x-git-upload-pack-result", "Cache-Control": "no-cache", **headers}

    @staticmethod
    def _objects(repo: Repo, wants: list[str], depth: int) -> Objects:
        """Every object of the wanted commits and, to ``depth`` (0: all), their ancestors."""
        objects, queue, seen = Objects(), [(w, 1) for w in wants], set()
        while queue:
            sha, level = queue.pop()
            commit = repo.commits.get(sha)
            if commit is None or sha in seen:
                continue
            seen.add(sha)
            built = build_commit(commit.files, commit.message, commit.date, commit.parents)
            if built.commit.hex() != sha:
                raise ApiError(500, f"Commit {sha} of {repo.full_name} is not a git commit (an old saved world?)")
            objects.items.update(built.items)
            if not depth or level < depth:
                queue += [(p, level + 1) for p in commit.parents]
        return objects
