"""Reading what git's upload-pack sends back: pkt-lines, side-band frames and the packfile,
bounded in bytes and time, into an in-memory object store (dulwich resolves the deltas).

The client (``client.py``) sends the request; this module only reads the answer, so a
repository's files are never written to disk and nothing of it outlives the scan.
"""

from __future__ import annotations

import io
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dulwich.object_store import MemoryObjectStore, iter_tree_contents
from dulwich.objects import Blob

from integrations.bitbucket.errors import UnexpectedResponse

FLUSH = None


class HeadMoved(Exception):
    """The commit asked for is no longer a branch or tag head (git answered "not our ref"):
    the branch moved since the scan read it, and the next scan reads the new head."""


class PackTooLarge(Exception):
    """The pack passed ``SCANNER_GIT_MAX_MB``, on the wire or inflated: the caller reads
    the repository another way (REST) from now on and says so."""


class FetchTooSlow(Exception):
    """The fetch passed its time bound: read over REST this time, over git again next time."""


class _Wire:
    """Bounded reads from a streaming response body."""

    def __init__(self, raw, max_bytes: int, deadline: float, alive: Callable[[], None] | None = None) -> None:
        self.raw, self.max_bytes, self.deadline, self.read_bytes = raw, max_bytes, deadline, 0
        self.alive = alive  # the running scan's heartbeat, so a long fetch is not taken for a dead worker

    def read(self, n: int) -> bytes:
        chunks, want = [], n
        while want > 0:
            if time.monotonic() > self.deadline:
                raise FetchTooSlow("its git fetch took longer than SCANNER_GIT_TIMEOUT")
            if self.alive is not None:
                self.alive()
            chunk = self.raw.read(min(want, 65536))
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


def _pack_data(wire: _Wire) -> bytearray:
    """The pack: the data of side-band 1 up to the flush (progress on band 2 is dropped, an
    error on band 3 raised)."""
    data = bytearray()
    while (payload := wire.pkt()) is not FLUSH:
        if payload[:1] == b"\x01":
            data += payload[1:]
        elif payload[:1] == b"\x03":
            raise UnexpectedResponse(f"git reported an error: {payload[1:200].decode('utf-8', 'replace')}")
    return data


def read_fetch_response(
    raw, *, shallow: bool, max_bytes: int, timeout: float, alive: Callable[[], None] | None = None
) -> tuple[MemoryObjectStore, int]:
    """Read an upload-pack answer (shallow lines, NAK, side-band-64k pack) into memory;
    returns the objects and the bytes read from the wire. At most ``max_bytes`` are read,
    and the pack may not inflate to more than ``max_bytes`` either (a small pack of highly
    compressible data would otherwise fill the worker's memory): checked before dulwich
    resolves it."""
    wire = _Wire(raw, max_bytes, time.monotonic() + timeout, alive)
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
    data = _pack_data(wire)
    try:
        _check_inflated_size(data, max_bytes)
    except (zlib.error, IndexError) as exc:
        raise UnexpectedResponse(f"git's pack could not be read ({type(exc).__name__}).") from exc
    store = MemoryObjectStore()
    stream = io.BytesIO(data)
    try:
        store.add_thin_pack(stream.read, stream.read)
    except Exception as exc:  # noqa: BLE001 - dulwich's many failures (checksum, zlib, delta): one typed error
        raise UnexpectedResponse(f"git's pack could not be read ({type(exc).__name__}).") from exc
    return store, wire.read_bytes


def _check_inflated_size(pack: bytes | bytearray, limit: int) -> None:
    """Walk the pack's entries, inflating each in bounded steps and discarding the output,
    and raise :class:`PackTooLarge` once the total passes ``limit``."""
    if len(pack) < 12 or pack[:4] != b"PACK":
        raise UnexpectedResponse("git's answer has no pack.")
    count, pos, total = int.from_bytes(pack[8:12], "big"), 12, 0
    for _ in range(count):
        byte = pack[pos]
        kind, pos = (byte >> 4) & 7, pos + 1
        while byte & 0x80:
            byte, pos = pack[pos], pos + 1
        if kind == 6:  # OFS_DELTA: a variable-length offset follows
            while pack[pos] & 0x80:
                pos += 1
            pos += 1
        elif kind == 7:  # REF_DELTA: the base's id follows
            pos += 20
        inflater, fed, tail = zlib.decompressobj(), pos, b""
        while not inflater.eof:
            if not tail:
                tail = bytes(pack[fed : fed + 65536])
                fed += len(tail)
                if not tail:
                    raise UnexpectedResponse("git's pack ended early.")
            total += len(inflater.decompress(tail, 1 << 20))
            if total > limit:
                raise PackTooLarge(f"its git pack inflates to more than {limit / 1048576:g} MB")
            tail = inflater.unconsumed_tail
        pos = fed - len(inflater.unused_data)


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
