"""Scanners: small classes that scan one reference of one project and return results.

An integration selects scanners (Edit Integration > Scanners). During a scan they run
for default references whose head commit moved since they last ran (``ScannerState``),
so a rescan of unchanged repositories runs nothing, and an interrupted scan resumes.
A scanner that fails on one repository records a sync log warning and the scan goes on.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.scanners import CATALOGUE, ScannerInfo
from integrations.bitbucket import client as bb
from integrations.bitbucket.budget import GIT, REST
from integrations.models import Integration, Project, Reference
from scanning.manifests import ManifestError, Package, parse_manifest, parser_for
from scanning.models import DependencyPackage, PostureFinding, PostureRule, ScannerState
from scanning.vulnerabilities import vulnerabilities_match_references
from synclogs.classify import Classified
from synclogs.models import Category, Level, Operation
from synclogs.services import sync_log_record


@dataclass
class Target:
    integration: Integration
    project: Project
    reference: Reference
    client: bb.BitbucketClient
    previous_via: str = ""  # how this scanner read the reference last time (ScannerState.via)


@dataclass
class Result:
    warnings: list[str] = field(default_factory=list)  # e.g. a malformed manifest, with its path
    counts: dict[str, int] = field(default_factory=dict)
    via: str = ""  # how the repository was read (ScannerState.via)


class Scanner:
    """A scanner implements one entry of the catalogue (``common/scanners.py``), which
    names it, describes it and lists the scopes it needs."""

    info: ScannerInfo

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def description(self) -> str:
        return self.info.description

    # Whether a new head commit makes the scanner due (what it reads lives in the commit).
    follows_head = True

    def max_age(self) -> timedelta | None:
        """Rescan after this long even if the head did not move (None: only when it moves)."""
        return None

    def requests_per_repository(self, integration: Integration) -> dict[str, float]:
        """What one repository costs this scanner, per rate-limited resource (for ETAs)."""
        return {}

    def scan(self, target: Target) -> Result:  # pragma: no cover - interface
        raise NotImplementedError


class DependenciesScanner(Scanner):
    """Manifests and lock files of the default branch's head: from a shallow git fetch of
    that commit (one git request, git's own hourly limit), or over REST (a source listing
    and one request per manifest) where git is refused, turned off, or the repository's
    pack is larger than ``SCANNER_GIT_MAX_MB``."""

    info = CATALOGUE["dependencies"]

    def requests_per_repository(self, integration: Integration) -> dict[str, float]:
        if settings.SCANNER_GIT_MANIFESTS:
            return {GIT: 1.0}
        # One source listing and ~1.5 file reads per repository (measured on the sandbox).
        return {REST: 2.5}

    def scan(self, target: Target) -> Result:
        result = Result()
        manifests: list[tuple[str, Callable[[], str]]] | None = None
        if self._git_allowed(target):
            manifests = self._over_git(target, result)
        if manifests is None:
            manifests = self._over_rest(target)
            result.via = result.via or "rest"
        found = []
        for path, read in manifests:
            try:
                found += [(path, p) for p in parse_manifest(path, read())]
            except ManifestError as exc:
                result.warnings.append(f"{path}: {exc}")
        result.counts["packages"] = _store_packages(target.reference, found)
        result.counts["manifests"] = len(manifests)
        return result

    @staticmethod
    def _git_allowed(target: Target) -> bool:
        if not settings.SCANNER_GIT_MANIFESTS:
            return False
        over = re.fullmatch(r"rest:over-(\d+)MB", target.previous_via)
        return over is None or int(over[1]) < settings.SCANNER_GIT_MAX_MB  # re-tried when the bound is raised

    def _over_git(self, target: Target, result: Result) -> list[tuple[str, Callable[[], str]]] | None:
        """The manifests from a shallow fetch, or None to read them over REST instead."""
        workspace, _, slug = target.project.full_name.partition("/")
        try:
            snapshot = target.client.git_fetch_commit(
                workspace,
                slug,
                target.reference.head_commit,
                max_bytes=settings.SCANNER_GIT_MAX_MB * 1024 * 1024,
                timeout=settings.SCANNER_GIT_TIMEOUT,
            )
        except bb.PackTooLarge as exc:
            result.via = f"rest:over-{settings.SCANNER_GIT_MAX_MB}MB"
            result.warnings.append(
                f"its manifests are read over REST from now on: {exc} (SCANNER_GIT_MAX_MB). This is said once."
            )
            return None
        except (bb.Unauthorized, bb.Forbidden, bb.FetchTooSlow):
            result.via = "rest"  # git refused for this repository, or slow this time: REST, git next time
            return None
        result.via = "git"
        result.counts["git_bytes"] = snapshot.fetched_bytes
        try:
            files = [f for f in snapshot.files(settings.SCANNER_MAX_DEPTH) if parser_for(f.path)]
        except KeyError as exc:  # a tree the pack did not carry
            raise bb.UnexpectedResponse(f"git's pack lacks an object of {target.project.full_name}.") from exc
        return [(f.path, lambda f=f: snapshot.text(f)) for f in files]

    @staticmethod
    def _over_rest(target: Target) -> list[tuple[str, Callable[[], str]]]:
        commit, name = target.reference.head_commit, target.project.full_name
        listing = target.client.source_listing(name, commit, max_depth=settings.SCANNER_MAX_DEPTH)
        paths = [e["path"] for e in listing if e.get("type") == "commit_file" and parser_for(e["path"])]
        return [(path, lambda path=path: target.client.file_text(name, commit, path)) for path in paths]


def _store_packages(reference: Reference, found: list[tuple[str, Package]]) -> int:
    rows = {(path, p.ecosystem, p.name, p.version): p for path, p in found}
    with transaction.atomic():
        DependencyPackage.objects.filter(reference=reference).delete()
        DependencyPackage.objects.bulk_create(
            [
                DependencyPackage(
                    reference=reference,
                    ecosystem=p.ecosystem,
                    name=p.name[:255],
                    version=p.version[:255],
                    manifest_path=path[:500],
                    direct=p.direct,
                    dev=p.dev,
                    requires=list(p.requires),
                )
                for (path, *_), p in rows.items()
            ]
        )
        vulnerabilities_match_references(reference_ids=[reference.pk])  # the new rows, at once
    return len(rows)


class PostureScanner(Scanner):
    """Branch restrictions, default reviewers and visibility: repository settings, not
    commit contents, so a push does not make it due. Read once, then again at most every
    ``POSTURE_MAX_AGE_HOURS`` (2 REST requests a repository, the scarce budget)."""

    info = CATALOGUE["posture"]
    follows_head = False

    def max_age(self) -> timedelta | None:
        return timedelta(hours=settings.POSTURE_MAX_AGE_HOURS)

    def requests_per_repository(self, integration: Integration) -> dict[str, float]:
        return {REST: 2.0}  # branch restrictions and default reviewers

    def scan(self, target: Target) -> Result:
        branch = target.project.main_branch or target.reference.name
        rules = [
            r
            for r in target.client.branch_restrictions(target.project.full_name)
            if r.get("branch_match_kind", "glob") == "glob" and fnmatch.fnmatchcase(branch, r.get("pattern", ""))
        ]
        kinds = {r["kind"]: r for r in rules}
        reviewers = target.client.default_reviewers_first(target.project.full_name)
        failing: dict[str, str] = {}
        if "force" not in kinds:
            failing[PostureRule.FORCE_PUSH] = f"No rule stops force pushes to {branch}."
        if "delete" not in kinds:
            failing[PostureRule.BRANCH_DELETABLE] = f"No rule stops {branch} from being deleted."
        approvals = int((kinds.get("require_approvals_to_merge") or {}).get("value") or 0)
        if approvals < settings.POSTURE_MIN_APPROVALS:
            failing[PostureRule.FEW_APPROVALS] = (
                f"Merges to {branch} need {approvals} approval(s); at least {settings.POSTURE_MIN_APPROVALS} required."
            )
        if "require_passing_builds_to_merge" not in kinds:
            failing[PostureRule.BUILDS_NOT_REQUIRED] = f"Merges to {branch} do not require passing builds."
        if not target.project.is_private:
            failing[PostureRule.PUBLIC] = "Anyone can read this repository."
        if not reviewers:
            failing[PostureRule.NO_DEFAULT_REVIEWERS] = "Pull requests get no default reviewers."
        opened, resolved = _store_findings(target.project, failing)
        return Result(counts={"findings_opened": opened, "findings_resolved": resolved})


def _store_findings(project: Project, failing: dict[str, str]) -> tuple[int, int]:
    with transaction.atomic():
        open_rules = set(
            PostureFinding.objects.filter(project=project, resolved_at__isnull=True).values_list("rule", flat=True)
        )
        new = [
            PostureFinding(project=project, rule=rule, details=text[:500])
            for rule, text in failing.items()
            if rule not in open_rules
        ]
        PostureFinding.objects.bulk_create(new)
        resolved = (
            PostureFinding.objects.filter(project=project, resolved_at__isnull=True)
            .exclude(rule__in=list(failing))
            .update(resolved_at=timezone.now())
        )
    return len(new), resolved


REGISTRY: dict[str, Scanner] = {s.name: s for s in (DependenciesScanner(), PostureScanner())}
# Every scanner in the catalogue is implemented, and nothing else.
assert set(REGISTRY) == set(CATALOGUE), f"catalogue {sorted(CATALOGUE)} != implemented {sorted(REGISTRY)}"


def selected_scanners(integration: Integration) -> list[Scanner]:
    return [REGISTRY[name] for name in integration.scanners if name in REGISTRY]


def due(refs: list[Reference], selected: list[Scanner], now=None) -> list[tuple[Reference, Scanner]]:
    """The (reference, scanner) pairs to run: never run there, the head moved since the
    scanner's last good run (scanners that follow the head), or that run is older than the
    scanner's ``max_age``. One query for all.

    In the order that matters when the request budget cannot cover them all: repositories
    the scanner has never read first, then the most recently pushed (Bitbucket's
    ``updated_on``); a budget-paused scan continues with the rest next time."""
    if not refs or not selected:
        return []
    now = now or timezone.now()
    states = {
        (ref_id, name): (commit, scanned_at)
        for ref_id, name, commit, scanned_at in ScannerState.objects.filter(reference__in=refs, ok=True).values_list(
            "reference_id", "scanner", "commit", "scanned_at"
        )
    }

    def is_due(ref: Reference, scanner: Scanner) -> bool:
        if (ref.pk, scanner.name) not in states:
            return True
        commit, scanned_at = states[(ref.pk, scanner.name)]
        max_age = scanner.max_age()
        return (scanner.follows_head and commit != ref.head_commit) or (
            max_age is not None and scanned_at is not None and scanned_at < now - max_age
        )

    pending = [(ref, scanner) for ref in refs for scanner in selected if is_due(ref, scanner)]

    def priority(pair: tuple[Reference, Scanner]) -> tuple[int, float]:
        ref, scanner = pair
        pushed = ref.project.remote_updated_on
        return ((ref.pk, scanner.name) in states, -(pushed.timestamp() if pushed else 0.0))

    return sorted(pending, key=priority)  # stable: ties keep the caller's order


def run_scanner(scanner: Scanner, target: Target) -> Result | None:
    """Run one scanner on one reference and record the outcome: warnings (a malformed
    manifest...) and failures (a missing scope...) become sync log warnings for the
    project; ``ScannerState`` remembers the commit so an unchanged head is not scanned
    again. Returns None on failure. ``RateLimited`` propagates: the caller paces."""
    integration, project, ref = target.integration, target.project, target.reference
    try:
        result = scanner.scan(target)
    except bb.RateLimited:
        raise
    except bb.HeadMoved:
        return None  # pushed since the scan read the head: the next scan reads the new one
    except bb.BitbucketError as exc:
        sync_log_record(
            integration=integration,
            operation=Operation.SYNC,
            exc=exc,
            project=project,
            level=Level.WARNING,
            message=f"The {scanner.name} scanner failed on {project.full_name}: {exc}",
        )
        ScannerState.objects.update_or_create(
            reference=ref, scanner=scanner.name, defaults={"commit": "", "ok": False, "message": str(exc)}
        )
        return None
    for warning in result.warnings:
        sync_log_record(
            integration=integration,
            operation=Operation.SYNC,
            project=project,
            level=Level.WARNING,
            classified=Classified(
                Category.UNEXPECTED,
                f"{project.full_name}: {warning}",
                "Fix the file in the repository; the scanner reads it again when the branch moves.",
            ),
        )
    ScannerState.objects.update_or_create(
        reference=ref,
        scanner=scanner.name,
        defaults={"commit": ref.head_commit, "ok": True, "message": "", "via": result.via},
    )
    return result


@dataclass
class Pass:
    """What one pass of scanners over some references did."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # {"dependencies scanner": {...}}
    deferred: int = 0  # (reference, scanner) runs left because the account's hour was spent
    paused: bb.RateLimited | None = None


def previous_vias(refs: list[Reference]) -> dict[tuple[int, str], str]:
    """{(reference id, scanner): how it was read last time}, in one query for a pass."""
    return {
        (ref_id, name): via
        for ref_id, name, via in ScannerState.objects.filter(reference__in=refs).values_list(
            "reference_id", "scanner", "via"
        )
    }


def scanners_pass(
    *, integration: Integration, pending: list[tuple[Reference, Scanner]], client: bb.BitbucketClient
) -> Pass:
    """Run the pending scanner work in order, as background work: it leaves
    ``BITBUCKET_REST_RESERVE`` of the account's hour to listings, webhooks and people. When a
    resource's hour is spent, the work that needs it waits for the next scan (state is per
    reference); work on other resources goes on."""
    done = Pass()
    vias = previous_vias([ref for ref, _ in pending])
    paused: set[str] = set()  # resources whose hour is spent: scanners needing them wait
    client.reserve = settings.BITBUCKET_REST_RESERVE
    try:
        for ref, scanner in pending:
            needs = set(scanner.requests_per_repository(integration)) or {REST, GIT}
            if needs & paused:
                done.deferred += 1
                continue
            try:
                target = Target(integration, ref.project, ref, client, vias.get((ref.pk, scanner.name), ""))
                result = run_scanner(scanner, target)
            except bb.RateLimited as exc:
                # Only what needs this resource waits: dependency scans over git go on when
                # posture has spent the REST hour.
                paused |= {exc.resource} if getattr(exc, "resource", None) else needs
                done.deferred += 1
                done.paused = done.paused or exc
                continue
            if result is None:
                continue
            bucket = done.counts.setdefault(f"{scanner.name} scanner", {"references": 0})
            bucket["references"] += 1
            for key, value in result.counts.items():
                bucket[key] = bucket.get(key, 0) + value
    finally:
        client.reserve = 0
    return done


def merge_counts(into: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    for kind, values in more.items():
        bucket = into.setdefault(kind, {})
        for key, value in values.items():
            bucket[key] = bucket.get(key, 0) + value
    return into


def scanners_paused_record(*, integration: Integration, remaining: int, reason: bb.RateLimited) -> float:
    """One sync log warning for scanner work paused by the account's budget; returns the
    seconds until there is room again."""
    resume_after = reason.retry_after or 3600.0
    resume_at = timezone.localtime(timezone.now() + timedelta(seconds=resume_after))
    sync_log_record(
        integration=integration,
        operation=Operation.SYNC,
        level=Level.WARNING,
        classified=Classified(
            Category.RATE_LIMITED,
            f"Scanners paused with {remaining} repository scan(s) left: {reason}",
            f"Nothing to do: they resume by themselves at about {resume_at:%H:%M}, when the Bitbucket "
            "account's hourly allowance has room again. An access token of a large paid workspace has a "
            "higher allowance; dependency scans over git (the default) spend no REST requests.",
        ),
    )
    return resume_after


def run_for_project(*, integration: Integration, project: Project, client: bb.BitbucketClient | None = None) -> str:
    """The integration's scanners that are due on one project's default branch (after a
    push, a merge or a repository change)."""
    ref = project.references.filter(is_default=True).exclude(head_commit="").first()
    selected = selected_scanners(integration)
    if ref is None or not selected:
        return "none selected" if not selected else "no default branch head"
    selected = [scanner for _, scanner in due([ref], selected)]
    if not selected:
        return "up to date"
    client = client or bb.client_for(integration)
    vias = previous_vias([ref])
    ran = []
    for scanner in selected:
        try:
            target = Target(integration, project, ref, client, vias.get((ref.pk, scanner.name), ""))
            if run_scanner(scanner, target) is not None:
                ran.append(scanner.name)
        except bb.RateLimited:
            ran.append(f"{scanner.name} (deferred: rate limited)")
    return ", ".join(ran) or "failed (see the sync log)"
