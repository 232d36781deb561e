"""Real git objects for the sandbox's commits: blob, tree and commit ids as git computes
them, and packfiles (version 2, undeltified) holding one commit's tree.

So the portal's git path (a shallow fetch of a head commit) runs against the sandbox
exactly as against Bitbucket: the commit hashes the REST API shows are the ids of real
commit objects whose trees hold the repository's files.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from datetime import datetime

AUTHOR = "Sandbox Bot <sandbox@example.com>"
OBJ_COMMIT, OBJ_TREE, OBJ_BLOB = 1, 2, 3
TYPE_NAMES = {OBJ_COMMIT: b"commit", OBJ_TREE: b"tree", OBJ_BLOB: b"blob"}


def object_id(kind: int, body: bytes) -> bytes:
    return hashlib.sha1(TYPE_NAMES[kind] + b" %d\0" % len(body) + body).digest()


@dataclass
class Objects:
    """The objects of one commit (its tree, sub-trees and blobs), by binary id."""

    commit: bytes = b""
    items: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)

    def add(self, kind: int, body: bytes) -> bytes:
        oid = object_id(kind, body)
        self.items.setdefault(oid, (kind, body))
        return oid


def _tree(objects: Objects, files: dict[str, str]) -> bytes:
    """Write the tree of ``files`` (path -> text), nested folders included; returns its id."""
    here: dict[str, bytes] = {}
    folders: dict[str, dict[str, str]] = {}
    for path, text in files.items():
        head, _, rest = path.partition("/")
        if rest:
            folders.setdefault(head, {})[rest] = text
        else:
            here[head] = objects.add(OBJ_BLOB, text.encode("utf-8"))
    entries = [(name, b"100644", oid) for name, oid in here.items()]
    entries += [(name, b"40000", _tree(objects, sub)) for name, sub in folders.items()]
    # git orders entries by name, a folder's name as if it ended in "/".
    entries.sort(key=lambda e: e[0].encode("utf-8") + (b"/" if e[1] == b"40000" else b""))
    body = b"".join(mode + b" " + name.encode("utf-8") + b"\0" + oid for name, mode, oid in entries)
    return objects.add(OBJ_TREE, body)


def build_commit(files: dict[str, str], message: str, date: str, parents: list[str]) -> Objects:
    """The objects of a commit of ``files``; ``objects.commit`` is its id. ``date`` is ISO 8601."""
    objects = Objects()
    tree = _tree(objects, files)
    when = int(datetime.fromisoformat(date.replace("Z", "+00:00")).timestamp())
    lines = [b"tree " + tree.hex().encode()]
    lines += [b"parent " + p.encode() for p in parents]
    stamp = f"{AUTHOR} {when} +0000".encode()
    lines += [b"author " + stamp, b"committer " + stamp]
    body = b"\n".join(lines) + b"\n\n" + message.encode("utf-8") + b"\n"
    objects.commit = objects.add(OBJ_COMMIT, body)
    return objects


def commit_id(files: dict[str, str], message: str, date: str, parents: list[str]) -> str:
    return build_commit(files, message, date, parents).commit.hex()


def pack(objects: Objects) -> bytes:
    """A version 2 packfile of every object, none deltified."""
    out = bytearray(b"PACK" + struct.pack(">II", 2, len(objects.items)))
    for kind, body in objects.items.values():
        size = len(body)
        byte = (kind << 4) | (size & 0x0F)
        size >>= 4
        header = bytearray()
        while size:
            header.append(byte | 0x80)
            byte, size = size & 0x7F, size >> 7
        header.append(byte)
        out += header + zlib.compress(body)
    out += hashlib.sha1(out).digest()
    return bytes(out)
