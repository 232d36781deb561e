"""Pull requests: their recorded state (kept from webhooks) and pull-request scans.

A PR scan compares the dependency inventory of the pull request's source commit with
its destination branch. It reads only what the pull request touches: one diffstat
(``source..destination``), then each changed manifest or lock file at both commits.
The policy (Edit Integration > Pull Request Settings) fails the scan when the pull
request adds or moves to a denied package version, or (if asked) changes a manifest's
dependencies without its lock file. The verdict goes back to Bitbucket as build
statuses on the source commit (INPROGRESS at start, then SUCCESSFUL or FAILED, under a
stable key) and, if asked, as one summary comment that later runs edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from advisories.models import SEVERITY_RANK
from common.packages import exact_version
from integrations.bitbucket import client as bb
from integrations.models import Integration, IntegrationStatus, Project, branch_matches
from integrations.queue import enqueue
from integrations.services import Actor, audit
from scanning.manifests import LOCKFILES, ManifestError, Package, parse_manifest, parser_for
from scanning.models import PullRequest, PullRequestScan, Trigger
from scanning.policy import denied_by, deny_rules, package_name_normal
from scanning.vulnerabilities import advisories_for
from synclogs.models import Level, Operation
from synclogs.services import sync_log_record

# The checks a PR scan makes (denied packages; lock files); with "one build status per
# check" each gets its own status, the lock-file one only while that rule is on.
CHECKS = ("dependencies", "lockfiles", "vulnerabilities")


# --- Recorded state ---------------------------------------------------------------------------------


def pull_request_record(*, project: Project, payload: dict, event: str) -> tuple[PullRequest | None, bool]:
    """Create or update the pull request from a ``pullrequest:*`` payload. Returns
    ``(pull request, applied)``: a delivery older than the recorded state (Bitbucket
    retries a failed delivery later, after newer ones) is not applied, so a merged pull
    request never goes back to open."""
    data = payload.get("pullrequest") or {}
    if not isinstance(data.get("id"), int) or not 0 < data["id"] < 2**31:
        return None, False
    source, destination = _dict(data.get("source")), _dict(data.get("destination"))
    updated_on = parse_datetime(str(data.get("updated_on") or ""))
    source_repo = str(_dict(source.get("repository")).get("full_name") or "")[:255]
    values = {
        "title": str(data.get("title", ""))[:500],
        "author": str(_dict(data.get("author")).get("display_name", ""))[:255],
        "state": data.get("state") if data.get("state") in PullRequest.State.values else PullRequest.State.OPEN,
        "source_branch": str(_dict(source.get("branch")).get("name", ""))[:255],
        "source_commit": str(_dict(source.get("commit")).get("hash", ""))[:64],
        "source_repository": "" if source_repo in ("", project.full_name) else source_repo,
        "destination_branch": str(_dict(destination.get("branch")).get("name", ""))[:255],
        "destination_commit": str(_dict(destination.get("commit")).get("hash", ""))[:64],
        "web_url": str(_dict(_dict(data.get("links")).get("html")).get("href", ""))[:500],
        "last_event": event[:64],
        "last_event_at": updated_on or timezone.now(),
    }
    if updated_on is not None:
        values["remote_updated_on"] = updated_on
    if isinstance(data.get("comment_count"), int) and 0 <= data["comment_count"] < 2**31:
        values["comment_count"] = data["comment_count"]
    with transaction.atomic():
        pr = PullRequest.objects.select_for_update().filter(project=project, remote_id=data["id"]).first()
        if pr is not None and updated_on is not None and pr.remote_updated_on and updated_on < pr.remote_updated_on:
            return pr, False
        pr, _ = PullRequest.objects.update_or_create(project=project, remote_id=data["id"], defaults=values)
        approver = str(_dict(_dict(payload.get("approval")).get("user")).get("display_name", ""))[:255]
        if approver and event in ("pullrequest:approved", "pullrequest:unapproved"):
            pr.approved_by = [a for a in pr.approved_by if a != approver] + (
                [approver] if event == "pullrequest:approved" else []
            )
            pr.save(update_fields=["approved_by", "updated_at"])
    return pr, True


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


# --- Starting a scan --------------------------------------------------------------------------------


class PrScanNotQueued(Exception):
    """Nothing to scan: PR scans are off, the pull request is closed or not aimed at a
    target branch, or these commits were already scanned. ``str()`` says which."""


def pr_scan_request(
    *, pull_request: PullRequest, trigger: str, actor: Actor, force: bool = False, event: str = ""
) -> PullRequestScan:
    """Queue a scan of the pull request's current source commit (``force`` re-runs a pair
    of commits already scanned). Raises :class:`PrScanNotQueued` saying why not, and
    ``ValidationError`` for an unknown trigger; audited like every other state change."""
    if trigger not in Trigger.values:
        raise ValidationError(f"Unknown trigger {trigger!r}.")
    integration = pull_request.project.integration
    if integration is None:
        raise PrScanNotQueued("the project has no integration")
    pr_settings = integration.pr_config
    if not pr_settings["enabled"]:
        raise PrScanNotQueued("pull-request scans are off")
    if pull_request.state != PullRequest.State.OPEN:
        raise PrScanNotQueued(f"the pull request is {pull_request.get_state_display().lower()}")
    patterns = pr_settings["target_branches"] or ["*"]
    if not branch_matches(pull_request.destination_branch, patterns):
        raise PrScanNotQueued(f"{pull_request.destination_branch} is not a target branch ({', '.join(patterns)})")
    if not pull_request.source_commit:
        raise PrScanNotQueued("the payload named no source commit")
    same = pull_request.scans.filter(
        source_commit=pull_request.source_commit, destination_commit=pull_request.destination_commit
    )
    if not force and same.exclude(status=PullRequestScan.Status.ERROR).exists():
        raise PrScanNotQueued("this source and destination were already scanned")
    with transaction.atomic():
        scan = PullRequestScan.objects.create(
            pull_request=pull_request,
            trigger=trigger,
            source_commit=pull_request.source_commit,
            destination_commit=pull_request.destination_commit,
        )
        audit(
            actor=actor,
            action="pull_request.scan",
            target=pull_request,
            tenant=integration.tenant,
            details={"scan": scan.pk, "trigger": trigger, "event": event[:64], "forced": force},
        )
        transaction.on_commit(lambda: enqueue("scanning.tasks.pr_scan_task", scan.pk))
    return scan


# --- Reviewing the change ---------------------------------------------------------------------------


@dataclass
class Review:
    added: list[dict] = field(default_factory=list)
    removed: list[dict] = field(default_factory=list)
    changed: list[dict] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)  # in a touched manifest, the same before and after
    violations: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def failing(self, check: str | None = None) -> list[dict]:
        return [v for v in self.violations if check is None or v["check"] == check]


def _inventory(found: list[tuple[str, Package]]) -> dict[tuple[str, str], dict]:
    inventory: dict[tuple[str, str], dict] = {}
    for path, package in found:
        entry = inventory.setdefault(
            (package.ecosystem, package_name_normal(package.name, package.ecosystem)),
            {"name": package.name, "versions": set(), "manifests": set()},
        )
        entry["versions"].add(package.version)
        entry["manifests"].add(path)
    for (ecosystem, _), entry in inventory.items():
        # A lock file's resolved version says more than the manifest's range (^4.17.20
        # resolved to 4.17.21 must not match a "<4.17.21" rule): keep exact ones if any.
        exact = {v for v in entry["versions"] if exact_version(ecosystem, v)}
        entry["versions"] = exact or entry["versions"]
    return inventory


def _read(client: bb.BitbucketClient, full_name: str, commit: str, path: str, review: Review) -> list[Package]:
    try:
        return parse_manifest(path, client.file_text(full_name, commit, path))
    except ManifestError as exc:
        review.warnings.append(f"{path} at {commit[:12]}: {exc}")
        return []


def review_change(
    *,
    client: bb.BitbucketClient,
    full_name: str,
    source: str,
    destination: str,
    policy: dict,
    source_full_name: str = "",
    pull_request_id: int | None = None,
) -> Review:
    """Compare the manifests a change touches, at ``source`` and ``destination``.

    From a fork (``source_full_name`` is another repository) the source commit does not
    exist in the destination repository: the pull request's own diffstat says what
    changed, and the source side of each file is read from the fork.
    """
    review = Review()
    forked = bool(source_full_name) and source_full_name != full_name and pull_request_id is not None
    source_repo = source_full_name if forked else full_name
    entries = list(
        client.pull_request_diffstat(full_name, pull_request_id)
        if forked
        else client.diffstat(full_name, source, destination)
    )
    touched = {(e.get(side) or {}).get("path") for e in entries for side in ("old", "new")} - {None}
    before_found: list[tuple[str, Package]] = []
    after_found: list[tuple[str, Package]] = []
    per_file: dict[str, tuple[set, set]] = {}
    for entry in entries:
        old_path, new_path = (entry.get("old") or {}).get("path"), (entry.get("new") or {}).get("path")
        path = new_path or old_path
        if not parser_for(path):
            continue
        before = _read(client, full_name, destination, old_path, review) if old_path else []
        after = _read(client, source_repo, source, new_path, review) if new_path else []
        before_found += [(old_path, p) for p in before]
        after_found += [(new_path, p) for p in after]
        per_file[path] = (
            {(p.ecosystem, p.name, p.version) for p in before},
            {(p.ecosystem, p.name, p.version) for p in after},
        )
    old, new = _inventory(before_found), _inventory(after_found)
    for key in sorted(set(old) | set(new)):
        was, now = old.get(key), new.get(key)
        row = {
            "ecosystem": key[0],
            "name": (now or was)["name"],
            "before": sorted(was["versions"]) if was else [],
            "after": sorted(now["versions"]) if now else [],
            "manifests": sorted((was or {}).get("manifests", set()) | (now or {}).get("manifests", set())),
        }
        if was is None:
            review.added.append(row)
        elif now is None:
            review.removed.append(row)
        elif was["versions"] != now["versions"]:
            review.changed.append(row)
        else:
            review.kept.append(row)
    _check_denied(review, policy.get("deny_packages") or [])
    _check_vulnerabilities(review, policy)
    if policy.get("require_lockfile_update"):
        _check_lockfiles(
            review,
            client=client,
            full_name=source_repo,
            source=source,
            entries=entries,
            touched=touched,
            per_file=per_file,
        )
    return review


def _check_denied(review: Review, denied: list[dict]) -> None:
    """A package version the change brings in (added, or changed to) that the deny list names."""
    rules = deny_rules(denied, review.warnings)
    for row in review.added + review.changed:
        for version in sorted(set(row["after"]) - set(row["before"])):
            hit = denied_by(rules, row["name"], row["ecosystem"], version)
            if hit is None:
                continue
            review.violations.append(
                {
                    "check": "dependencies",
                    "rule": "deny_list",
                    "package": row["name"],
                    "version": version,
                    "path": ", ".join(row["manifests"]),
                    "message": f"{row['name']} {version} {hit[1]}.",
                }
            )


def _check_vulnerabilities(review: Review, policy: dict) -> None:
    """Known vulnerabilities (the portal's OSV copy) at or above the policy's minimum
    severity, in a version the change brings in, or in one a manifest the change touches
    keeps although a published release fixes it: a violation when the policy says ``fail``,
    a warning when ``warn``; the advisory ids and fixed versions are in the message."""
    mode = policy.get("vulnerabilities", "warn")
    if mode == "off":
        return
    floor = SEVERITY_RANK.get(policy.get("vulnerability_min_severity", "high"), 3)
    candidates = [(r, v, False) for r in review.added + review.changed for v in set(r["after"]) - set(r["before"])]
    candidates += [(r, v, True) for r in review.kept for v in r["after"]]
    for row, version, kept in sorted(candidates, key=lambda c: (c[0]["name"], c[1])):
        found = [
            (a, fix)
            for a, fix in advisories_for(row["ecosystem"], row["name"], version)
            if SEVERITY_RANK[a.severity] >= floor and (fix or not kept)
        ]
        if not found:
            continue
        named = "; ".join(
            f"{a.osv_id}{' (' + ', '.join(a.aliases[:2]) + ')' if a.aliases else ''} {a.severity}"
            f", {'fixed in ' + fix if fix else 'no fix published'}"
            for a, fix in found
        )
        verb = "keeps" if kept else "brings in"
        message = f"The change {verb} {row['name']} {version}, which has known vulnerabilities: {named}."
        if mode != "fail":
            review.warnings.append(message)
            continue
        review.violations.append(
            {
                "check": "vulnerabilities",
                "rule": "known_vulnerability",
                "package": row["name"],
                "version": version,
                "path": ", ".join(row["manifests"]),
                "advisories": [a.osv_id for a, _ in found],
                "message": message,
            }
        )


def _check_lockfiles(
    review: Review, *, client, full_name: str, source: str, entries: list[dict], touched: set, per_file: dict
) -> None:
    """A manifest whose declared dependencies changed while none of its lock files did,
    in a directory that has a lock file (a project without one is not held to it)."""
    for entry in entries:
        path = (entry.get("new") or {}).get("path")
        if not path or PurePosixPath(path).name not in LOCKFILES:
            continue
        if path in per_file and per_file[path][0] == per_file[path][1]:
            continue  # the manifest changed, but not its dependencies (a version bump, a script...)
        folder = str(PurePosixPath(path).parent)
        folder = "" if folder == "." else folder
        locks = [f"{folder}/{lock}" if folder else lock for lock in LOCKFILES[PurePosixPath(path).name]]
        if any(lock in touched for lock in locks):
            continue
        listing = client.source_listing(full_name, source, folder)
        present = sorted({e.get("path") for e in listing} & set(locks))
        if present:
            review.violations.append(
                {
                    "check": "lockfiles",
                    "rule": "lockfile",
                    "path": path,
                    "package": "",
                    "version": "",
                    "message": f"{path} changed its dependencies but {present[0]} did not change.",
                }
            )


# --- Running a scan ---------------------------------------------------------------------------------


def status_key(integration: Integration, check: str | None = None) -> str:
    """Stable per integration (two portals or tenants on one repository do not collide)."""
    base = f"portal-{integration.uuid.hex[:8]}"
    return f"{base}-{check}" if check else base


def pr_scan_url(scan: PullRequestScan) -> str:
    if settings.PORTAL_BASE_URL:
        return settings.PORTAL_BASE_URL.rstrip("/") + reverse("portal:pr_scan_detail", args=[scan.pk])
    return scan.pull_request.web_url or scan.pull_request.project.web_url or "https://bitbucket.org/"


def _description(review: Review | None, *, check: str | None = None, error: str = "") -> str:
    if error:
        return f"The portal could not finish the scan: {error}"[:255]
    failing = review.failing(check)
    if failing:
        text = f"{len(failing)} policy violation(s): " + "; ".join(v["message"].rstrip(".") for v in failing)
    else:
        text = (
            f"No policy violations: {len(review.added)} added, {len(review.changed)} changed, "
            f"{len(review.removed)} removed package(s)"
        )
    return text if len(text) <= 255 else text[:254] + "…"


def _status_checks(policy: dict) -> list[str | None]:
    """One build status per check, or one for all (None)."""
    if not policy["status_per_scanner"]:
        return [None]
    return [
        c
        for c in CHECKS
        if (c != "lockfiles" or policy["require_lockfile_update"])
        and (c != "vulnerabilities" or policy.get("vulnerabilities") == "fail")
    ]


def _post_statuses(
    client, scan: PullRequestScan, integration: Integration, checks: list[str | None], state_for, describe
) -> list[str]:
    pr = scan.pull_request
    keys = []
    for check in checks:
        key = status_key(integration, check)
        client.create_build_status(
            pr.project.full_name,
            scan.source_commit,
            {
                "key": key,
                "state": state_for(check),
                "url": pr_scan_url(scan),
                "refname": pr.source_branch,
                "name": f"Portal: {check}" if check else "Portal: dependency scan",
                "description": describe(check),
            },
        )
        keys.append(key)
    return keys


_MARKDOWN = str.maketrans({c: f"\\{c}" for c in "\\`*_{}[]()<>#+!|~"})


def _md(text: str, limit: int = 200) -> str:
    """Text from a repository (package names, versions, paths) made inert in Markdown: a
    pull request must not put links or formatting into the portal's comment."""
    text = " ".join(str(text).split())
    return (text if len(text) <= limit else text[:limit] + "…").translate(_MARKDOWN)


def _comment(review: Review, scan: PullRequestScan) -> str:
    verdict = (
        f"**FAILED**: {len(review.violations)} policy violation(s)"
        if review.violations
        else "**PASSED**: no policy violations"
    )
    lines = [
        f"### Dependency scan: {verdict}",
        "",
        f"Source `{scan.source_commit[:12]}` against {_md(scan.pull_request.destination_branch)}"
        f"{' (' + scan.destination_commit[:12] + ')' if scan.destination_commit else ''}.",
        "",
    ]
    if review.violations:
        lines += ["**Policy violations**", ""] + [f"- {_md(v['message'], 400)}" for v in review.violations] + [""]
    rows = (
        [("added", r) for r in review.added]
        + [("changed", r) for r in review.changed]
        + [("removed", r) for r in review.removed]
    )
    if rows:
        lines += ["| Change | Package | Before | After |", "|---|---|---|---|"]
        for kind, row in rows[:50]:
            lines.append(
                f"| {kind} | {_md(row['ecosystem'] + ':' + row['name'])} | "
                f"{_md(', '.join(row['before'])) or '-'} | {_md(', '.join(row['after'])) or '-'} |"
            )
        if len(rows) > 50:
            lines.append(f"| … | {len(rows) - 50} more | | |")
    else:
        lines.append("No dependency changes.")
    if review.warnings:
        lines += ["", "**Warnings**", ""] + [f"- {_md(w, 400)}" for w in review.warnings[:10]]
    lines += ["", f"[Details in the portal]({pr_scan_url(scan)}). This comment is updated on every scan."]
    return "\n".join(lines)


def _upsert_comment(client, pr: PullRequest, raw: str) -> None:
    if pr.summary_comment_id:
        try:
            client.update_comment(pr.project.full_name, pr.remote_id, pr.summary_comment_id, raw)
            return
        except bb.NotFound:
            pass  # deleted by someone in Bitbucket: post a new one
    created = client.create_comment(pr.project.full_name, pr.remote_id, raw)
    PullRequest.objects.filter(pk=pr.pk).update(summary_comment_id=created["id"])
    pr.summary_comment_id = created["id"]


def pr_scan_execute(*, scan_id: int) -> PullRequestScan | None:
    """Run a queued PR scan (in the task queue). Bitbucket failures end the scan as
    ``error`` with a FAILED status saying so (a pull request is never left INPROGRESS)
    and a classified sync log entry."""
    claimed = PullRequestScan.objects.filter(pk=scan_id, status=PullRequestScan.Status.QUEUED).update(
        status=PullRequestScan.Status.RUNNING, started_at=timezone.now()
    )
    if not claimed:
        return None
    scan = PullRequestScan.objects.select_related("pull_request__project__integration").get(pk=scan_id)
    pr, project = scan.pull_request, scan.pull_request.project
    integration = project.integration
    if integration is None or integration.status == IntegrationStatus.DELETING:
        scan.status, scan.finished_at = PullRequestScan.Status.ERROR, timezone.now()
        scan.description = "The integration was removed before the scan ran."
        scan.save(update_fields=["status", "finished_at", "description"])
        return scan
    policy = integration.pr_config
    checks = _status_checks(policy)
    client = bb.client_for(integration)
    posting = policy["post_build_status"]
    review, error = None, ""
    try:
        if posting:
            scan.statuses_posted = _post_statuses(
                client, scan, integration, checks, lambda c: "INPROGRESS", lambda c: "Scanning the dependency changes…"
            )
        review = review_change(
            client=client,
            full_name=project.full_name,
            source=scan.source_commit,
            destination=scan.destination_commit or pr.destination_branch,
            policy=policy,
            source_full_name=pr.source_repository,
            pull_request_id=pr.remote_id,
        )
        if posting:
            _post_statuses(
                client,
                scan,
                integration,
                checks,
                lambda c: "FAILED" if review.failing(c) else "SUCCESSFUL",
                lambda c: _description(review, check=c),
            )
        if policy["post_summary_comment"]:
            _upsert_comment(client, pr, _comment(review, scan))
    except bb.BitbucketError as exc:
        error = str(exc)
        sync_log_record(
            integration=integration,
            operation=Operation.PR_SCAN,
            exc=exc,
            project=project,
            level=Level.WARNING,
            message=f"The scan of pull request #{pr.remote_id} in {project.full_name} could not finish: {exc}",
        )
        if posting and review is None:
            try:  # do not leave the pull request showing INPROGRESS
                _post_statuses(
                    client, scan, integration, checks, lambda c: "FAILED", lambda c: _description(None, error=error)
                )
            except bb.BitbucketError:
                pass
    review = review or Review()
    scan.added, scan.removed, scan.changed = review.added, review.removed, review.changed
    scan.violations, scan.warnings = review.violations, review.warnings
    scan.status = (
        PullRequestScan.Status.ERROR
        if error
        else PullRequestScan.Status.FAILED
        if review.violations
        else PullRequestScan.Status.PASSED
    )
    scan.description = _description(review, error=error)
    scan.rest_requests = client.stats.rest
    scan.finished_at = timezone.now()
    scan.save()
    return scan
