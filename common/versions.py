"""Versions and version ranges, as the deny list, the package search and pull-request
scans compare them."""

from __future__ import annotations

import re

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

_LEADING_RANGE = re.compile(r"^[\^~>=<v\s]*")


def comparable_version(text: str) -> Version | None:
    """A version to compare, from an exact version or the lower bound of a simple range
    (``^4.17.20`` -> 4.17.20). None when it cannot be read (``latest``, git URLs...)."""
    candidate = _LEADING_RANGE.sub("", (text or "").split(",")[0].split(" ")[0]).strip()
    try:
        return Version(candidate)
    except InvalidVersion:
        return None


def version_range(text: str) -> SpecifierSet | None:
    """A deny-list range as a ``packaging`` SpecifierSet: comparisons such as ``<4.17.21``
    or ``>=1.0,<2.0``; a bare version means exactly that version; empty means every
    version (None). Raises ``ValueError`` with a message a person can act on."""
    text = (text or "").strip()
    if not text:
        return None
    if text[0].isdigit():
        text = f"=={text}"
    try:
        return SpecifierSet(text.replace(" ", ""))
    except InvalidSpecifier:
        raise ValueError(
            f"'{text}' is not a version range; write comparisons such as <4.17.21 or >=1.0,<2.0 "
            "(npm's ^ and ~ are not accepted here)."
        ) from None
