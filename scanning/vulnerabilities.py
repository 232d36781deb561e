"""Matching the inventory against the portal's copy of OSV: the one writer of
``PackageVulnerability``. Incremental both ways: a new inventory (a reference's packages
written again) is matched on its own rows; a changed advisory re-matches only the rows of
the packages it names; a full match walks one ecosystem at a time, streaming."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from django.db import transaction

from advisories.models import SEVERITY_RANK, Advisory, AffectedPackage
from advisories.osv import osv_refresh
from advisories.ranges import affects, first_fix
from common.db import statistics_refresh
from common.packages import OSV_ECOSYSTEMS, normalise_name
from scanning.models import DependencyPackage, PackageVulnerability
from scanning.policy import spelled_as

BATCH = 5000


def _by_ecosystem(keys: Iterable[tuple[str, str]], size: int) -> Iterator[tuple[str, set[str]]]:
    """(ecosystem, name) pairs as (ecosystem, up to ``size`` names) groups."""
    grouped: dict[str, set[str]] = defaultdict(set)
    for ecosystem, name in keys:
        grouped[ecosystem].add(name)
    for ecosystem, names in grouped.items():
        ordered = sorted(names)
        for i in range(0, len(ordered), size):
            yield ecosystem, set(ordered[i : i + size])


def _entries(keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[int, list, list, list]]]:
    """{(ecosystem, name): [(advisory id, ranges, versions, fixed)]} of live advisories."""
    found: dict = defaultdict(list)
    for ecosystem, names in _by_ecosystem(keys, 1000):
        rows = AffectedPackage.objects.filter(
            ecosystem=ecosystem, name__in=names, advisory__withdrawn__isnull=True
        ).values_list("ecosystem", "name", "advisory_id", "ranges", "versions", "fixed")
        for eco, name, advisory_id, ranges, versions, fixed in rows:
            found[(eco, name)].append((advisory_id, ranges, versions, fixed))
    return found


def _matches(packages: Iterable[DependencyPackage], entries: dict) -> list[PackageVulnerability]:
    rows = []
    for package in packages:
        key = (package.ecosystem, normalise_name(package.ecosystem, package.name))
        for advisory_id, ranges, versions, fixed in entries.get(key, ()):
            if affects(package.ecosystem, package.version, ranges, versions):
                rows.append(
                    PackageVulnerability(
                        package_id=package.pk,
                        advisory_id=advisory_id,
                        fixed_version=first_fix(package.ecosystem, package.version, fixed)[:255],
                    )
                )
    return rows


def _replace(package_ids: list[int], rows: list[PackageVulnerability]) -> int:
    with transaction.atomic():
        PackageVulnerability.objects.filter(package_id__in=package_ids).delete()
        PackageVulnerability.objects.bulk_create(rows, batch_size=2000)
    return len(rows)


def vulnerabilities_match_references(*, reference_ids: list[int]) -> int:
    """Match the packages of these references (just written by a scan). Returns matches."""
    packages = list(DependencyPackage.objects.filter(reference_id__in=reference_ids))
    if not packages:
        return 0
    entries = _entries({(p.ecosystem, normalise_name(p.ecosystem, p.name)) for p in packages})
    return _replace([p.pk for p in packages], _matches(packages, entries))


def vulnerabilities_match_names(*, names: set[tuple[str, str]]) -> int:
    """Match again the rows of these packages (their advisories changed)."""
    total = 0
    for ecosystem, part in _by_ecosystem(names, 200):
        spelling = spelled_as(part, separators=ecosystem == "pypi")
        named = DependencyPackage.objects.filter(spelling, ecosystem=ecosystem)
        packages = [p for p in named if normalise_name(ecosystem, p.name) in part]
        entries = _entries({(ecosystem, n) for n in part})
        total += _replace([p.pk for p in packages], _matches(packages, entries))
    return total


def vulnerabilities_match_all() -> int:
    """Every package row against every advisory, one ecosystem at a time, streaming."""
    total = 0
    for ecosystem in OSV_ECOSYSTEMS:
        names = set(AffectedPackage.objects.filter(ecosystem=ecosystem).values_list("name", flat=True).distinct())
        if not names:
            PackageVulnerability.objects.filter(package__ecosystem=ecosystem).delete()
            continue
        entries = _entries({(ecosystem, n) for n in names})
        batch: list[DependencyPackage] = []
        for package in (
            DependencyPackage.objects.filter(ecosystem=ecosystem)
            .only("pk", "ecosystem", "name", "version")
            .iterator(chunk_size=BATCH)
        ):
            batch.append(package)
            if len(batch) >= BATCH:
                total += _replace([p.pk for p in batch], _matches(batch, entries))
                batch = []
        total += _replace([p.pk for p in batch], _matches(batch, entries))
    statistics_refresh(PackageVulnerability, rows_written=total)
    return total


def ecosystems_seen() -> list[str]:
    """The ecosystems the inventory has packages of (only their archives are fetched)."""
    seen = set(DependencyPackage.objects.values_list("ecosystem", flat=True).distinct())
    return sorted(e for e in seen if e in OSV_ECOSYSTEMS)


def advisories_refresh(*, ecosystems: list[str] | None = None) -> dict:
    """Refresh the OSV copy of each ecosystem the inventory uses and match what changed."""
    report = {}
    for ecosystem in ecosystems or ecosystems_seen():
        result = osv_refresh(ecosystem=ecosystem)
        statistics_refresh(Advisory, AffectedPackage, rows_written=result.advisories if result.changed else 0)
        matched = vulnerabilities_match_names(names=result.names) if result.names else 0
        statistics_refresh(PackageVulnerability, rows_written=matched)
        report[ecosystem] = {
            "changed": result.changed,
            "advisories": result.advisories,
            "removed": result.removed,
            "git_ranges_ignored": result.git_ranges_ignored,
            "matched": matched,
            "error": result.error,
        }
    return report


def advisories_for(ecosystem: str, name: str, version: str) -> list[tuple[Advisory, str]]:
    """The live advisories affecting one package version, worst first, each with the lowest
    release that fixes it ("" when none is published). For pull-request scans: a version a
    change brings in, before it is in any inventory."""
    key = (ecosystem, normalise_name(ecosystem, name))
    hits = {
        advisory_id: first_fix(ecosystem, version, fixed)
        for advisory_id, ranges, versions, fixed in _entries([key]).get(key, ())
        if affects(ecosystem, version, ranges, versions)
    }
    advisories = Advisory.objects.filter(pk__in=hits)
    return sorted(((a, hits[a.pk]) for a in advisories), key=lambda x: (-SEVERITY_RANK[x[0].severity], x[0].osv_id))
