"""OSV ranges as intervals, and whether a version falls in them, by the ecosystem's own
version rules (univers through common/packages.py). GIT ranges name commits, not versions:
they are left out (and counted by the import)."""

from __future__ import annotations

from common.packages import parse_version

# One interval: [lower or "0" (no lower bound), upper or None (no upper bound), upper included?]
Interval = list


def intervals(events: list[dict]) -> list[Interval]:
    """OSV ``events`` of one range, in order, as intervals."""
    found, start = [], None
    for event in events:
        if "introduced" in event:
            start = str(event["introduced"])
        elif "fixed" in event and start is not None:
            found.append([start, str(event["fixed"]), False])
            start = None
        elif "last_affected" in event and start is not None:
            found.append([start, str(event["last_affected"]), True])
            start = None
        elif "limit" in event and start is not None:
            found.append([start, str(event["limit"]), False])
            start = None
    if start is not None:
        found.append([start, None, False])
    return found


def affects(ecosystem: str, version: str, ranges: list[Interval], versions: list[str]) -> bool:
    """Does an advisory entry (its intervals and explicit versions) affect ``version``?
    A version its ecosystem cannot read is not matched (it is not a release)."""
    if version in versions:
        return True
    parsed = parse_version(ecosystem, version)
    if parsed is None:
        return False
    for lower, upper, inclusive in ranges:
        if lower not in ("0", "") and (low := parse_version(ecosystem, lower)) is not None and parsed < low:
            continue
        if upper is None:
            return True
        high = parse_version(ecosystem, upper)
        if high is None:
            continue
        if parsed < high or (inclusive and parsed == high):
            return True
    return False


def first_fix(ecosystem: str, version: str, fixed: list[str]) -> str:
    """The lowest fixed version above ``version`` ("" when none is published)."""
    parsed = parse_version(ecosystem, version)
    candidates = [(v, parse_version(ecosystem, v)) for v in fixed]
    above = [(p, v) for v, p in candidates if p is not None and (parsed is None or p > parsed)]
    return min(above)[1] if above else ""
