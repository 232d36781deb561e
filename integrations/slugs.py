"""Turning Bitbucket names into namespace and project slugs.

A slug uses only ``a-z 0-9 - _`` and has at most 64 characters. Conversion is
deterministic: the same name always gives the same base slug, and collisions are
resolved by a numeric suffix in the order the caller presents names (callers sort
by Bitbucket UUID so the assignment is stable between scans).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

MAX_LENGTH = 64
SLUG_PATTERN = r"^[a-z0-9_-]{1,64}$"
_slug_re = re.compile(SLUG_PATTERN)
_invalid_run = re.compile(r"[^a-z0-9_-]+")
_dash_run = re.compile(r"-{2,}")


def is_valid_slug(value: str) -> bool:
    return bool(_slug_re.match(value))


def slugify_name(name: str) -> str:
    """The base slug for a name: ASCII-folded, lower-case, punctuation to dashes.

    A name with no ASCII letters or digits at all (e.g. only CJK characters) gets a
    short stable hash, so two such names do not collapse into one slug.
    """
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = _invalid_run.sub("-", folded.lower())
    slug = _dash_run.sub("-", slug).strip("-_")
    if not slug:
        slug = "x-" + hashlib.sha256(name.encode()).hexdigest()[:10]
    return slug[:MAX_LENGTH].rstrip("-_") or slug[:MAX_LENGTH]


def unique_slug(name: str, taken: Iterable[str] | set[str]) -> str:
    """The base slug of ``name``, suffixed ``-2``, ``-3``... until not in ``taken``."""
    taken = taken if isinstance(taken, set) else set(taken)
    base = slugify_name(name)
    if base not in taken:
        return base
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = base[: MAX_LENGTH - len(suffix)].rstrip("-_") + suffix
        if candidate not in taken:
            return candidate
        n += 1


def assign_slugs(names: Iterable[tuple[str, str]], taken: Iterable[str] = ()) -> dict[str, str]:
    """Slugs for many ``(key, name)`` pairs at once, unique among themselves and ``taken``.

    Keys are processed in sorted order so the result does not depend on input order.
    """
    used = set(taken)
    result: dict[str, str] = {}
    for key, name in sorted(names):
        slug = unique_slug(name, used)
        used.add(slug)
        result[key] = slug
    return result
