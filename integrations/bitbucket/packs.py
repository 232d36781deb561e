"""Reading what git's upload-pack sends back: pkt-lines, side-band frames and the packfile,
bounded in bytes and time, into an in-memory object store (dulwich resolves the deltas).

The client (``client.py``) sends the request; this module only reads the answer, so a
repository's files are never written to disk and nothing of it outlives the scan.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from dulwich.object_store import MemoryObjectStore, iter_tree_contents
from dulwich.objects import Blob

from integrations.bitbucket.errors import UnexpectedResponse

FLUSH = None


class HeadMoved(Exception):
    """The commit asked for is no longer a branch or tag head (git answered "not our ref"):
    the branch moved since the scan read it, and the next scan reads the new head."""


class PackTooLarge(Exception):
    """The fetch passed ``SCANNER_GIT_MAX_MB`` or its time bound: the caller reads the
    repository another way (REST) and says so."""


class _Wire:
    """Bounded reads from a streaming response body."""

    def __init__(self, raw, max_bytes: int, deadline: float) -> None:
        self.raw, self.max_bytes, self.deadline, self.read_bytes = raw, max_bytes, deadline, 0

    def read(self, n: int) -> bytes:
        chunks, want = [], n
        while want > 0:
            if time.monotonic() > self.deadline:
                raise PackTooLarge("its git fetch took longer than its time bound")
            chunk = self.raw.read(want)
            if not chunk:
                break
            chunks.append(chunk)
            want -= len(chunk)
            self.read_bytes += len(chunk)
            if self.read_bytes > self.max_bytes:
                raise PackTooLarge(f"its git pack is larger than {self.max_bytes / 1048576:g} MB")
        data = b"".join(chunks)
        if len(data) < n:
            raise UnexpectedResponse("git's answer ended early.")
        return data

    def pkt(self) -> bytes | None:
        """One pkt-line's payload, or FLUSH."""
        head = self.read(4)
        try:
            length = int(head, 16)
        except ValueError as exc:
            raise UnexpectedResponse("git's answer is not made of pkt-lines.") from exc
        if length in (0, 1, 2):
            return FLUSH
        if length < 4:
            raise UnexpectedResponse("git's answer has a malformed pkt-line.")
        return self.read(length - 4)


class _Sideband:
    """The pack data of band 1, as dulwich's ``read_all``/``read_some`` want it."""

    def __init__(self, wire: _Wire) -> None:
        self.wire, self.buffer, self.ended = wire, bytearray(), False

    def _fill(self) -> None:
        while not self.buffer and not self.ended:
            payload = self.wire.pkt()
            if payload is FLUSH:
                self.ended = True
            elif payload[:1] == b"\x01":
                self.buffer += payload[1:]
            elif payload[:1] == b"\x03":
                raise UnexpectedResponse(f"git reported an error: {payload[1:200].decode('utf-8', 'replace')}")
            # band 2: progress text, ignored

    def read_some(self, n: int) -> bytes:
        self._fill()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def read_all(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.read_some(n - len(out))
            if not chunk:
                raise UnexpectedResponse("git's pack ended early.")
            out += chunk
        return bytes(out)


def read_fetch_response(raw, *, shallow: bool, max_bytes: int, timeout: float) -> tuple[MemoryObjectStore, int]:
    """Read an upload-pack answer (shallow lines, NAK, side-band-64k pack) into memory;
    returns the objects and the bytes read from the wire."""
    wire = _Wire(raw, max_bytes, time.monotonic() + timeout)
    line = wire.pkt()
    if shallow:
        while line is not FLUSH:
            if line.startswith(b"ERR "):
                raise UnexpectedResponse(f"git refused the fetch: {line[4:200].decode('utf-8', 'replace')}")
            if not line.startswith((b"shallow ", b"unshallow ")):
                raise UnexpectedResponse("git's answer has no shallow section.")
            line = wire.pkt()
        line = wire.pkt()
    if line is not FLUSH and line.startswith(b"ERR "):
        raise UnexpectedResponse(f"git refused the fetch: {line[4:200].decode('utf-8', 'replace')}")
    if line is FLUSH or line.rstrip(b"\n") != b"NAK":
        raise UnexpectedResponse("git's answer has no NAK before the pack.")
    store = MemoryObjectStore()
    band = _Sideband(wire)
    store.add_thin_pack(band.read_all, band.read_some)
    return store, wire.read_bytes


@dataclass(frozen=True)
class TreeFile:
    path: str
    size: int
    sha: bytes


class Snapshot:
    """One commit's files, fetched over git and held in memory for one scan."""

    def __init__(self, store: MemoryObjectStore, commit: str, fetched_bytes: int) -> None:
        self.store, self.commit, self.fetched_bytes = store, commit, fetched_bytes
        try:
            self.tree = store[commit.encode()].tree
        except KeyError as exc:
            raise UnexpectedResponse(f"git sent a pack without commit {commit[:12]}.") from exc

    def files(self, max_depth: int | None = None) -> Iterator[TreeFile]:
        """Every file (blob) of the commit, with its path and size (``max_depth``: folders deep)."""
        for entry in iter_tree_contents(self.store, self.tree):
            path = entry.path.decode("utf-8", "replace")
            if max_depth is not None and path.count("/") + 1 > max_depth:
                continue
            if entry.mode & 0o170000 != 0o100000:  # symlinks and submodules are not files to read
                continue
            obj = self.store[entry.sha]
            if isinstance(obj, Blob):
                yield TreeFile(path, obj.raw_length(), entry.sha)

    def text(self, file: TreeFile) -> str:
        return self.store[file.sha].data.decode("utf-8", "replace")
