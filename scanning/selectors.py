"""Reads over scanner results: package search, SBOMs, posture overview."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Case, Count, F, OuterRef, Q, QuerySet, Subquery, Value, When
from django.utils import timezone

from advisories.models import SEVERITY_RANK
from common.packages import comparable, package_url
from integrations.bitbucket.budget import RESOURCES, REST, budget_for
from integrations.models import Integration, IntegrationStatus, Project, Reference
from integrations.selectors import integration_get_credentials
from scanning.models import (
    ACTIVE_SCAN_STATUSES,
    POSTURE_CHECKS,
    DependencyPackage,
    PackageVulnerability,
    PostureFinding,
    PostureRule,
    PullRequest,
    PullRequestScan,
    ScanChunk,
    ScannerState,
)
from scanning.policy import denied_by, deny_rules, spelled_as
from scanning.scanners import REGISTRY, selected_scanners
from synclogs.models import SyncLog

CHUNK_ACTIVE = (ScanChunk.Status.QUEUED, ScanChunk.Status.RUNNING)


def package_search(*, tenant, name: str = "", ecosystem: str = "", below: str = "") -> QuerySet | list:
    """Packages in the tenant's default branches. ``below`` keeps versions lower than it
    (those whose version cannot be read are kept too, flagged, since they may be affected)."""
    qs = (
        DependencyPackage.objects.filter(reference__project__namespace__tenant=tenant, reference__is_default=True)
        .exclude(reference__project__integration__status=IntegrationStatus.DELETING)
        .select_related("reference__project__integration")
        .order_by("name", "reference__project__full_name", "manifest_path")
    )
    if name:
        qs = qs.filter(name__iexact=name.strip())
    if ecosystem:
        qs = qs.filter(ecosystem=ecosystem)
    if not below:
        return qs
    # Compared by each row's ecosystem's rules (npm semver, PEP 440, Maven, Go, RubyGems...).
    if not any(c.isdigit() for c in below) or all(comparable(e, below) is None for e in ("npm", "pypi", "go", "gem")):
        raise ValueError(f"'{below}' is not a version to compare with (expected something like 4.17.21).")
    rows = []
    for package in qs.iterator(chunk_size=1000):
        limit = comparable(package.ecosystem, below)
        version = comparable(package.ecosystem, package.version)
        package.unknown_version = version is None or limit is None
        if package.unknown_version or version < limit:
            rows.append(package)
    return rows


def purl(package: DependencyPackage) -> str:
    """The package URL of a package row (common/packages.py: one definition everywhere)."""
    return package_url(package.ecosystem, package.name, package.version)


def posture_overview(*, tenant, rule: str = "") -> dict:
    """Pass rate per rule over the projects the posture scanner has read, worst projects
    first (only those failing ``rule``, when given)."""
    evaluated = Project.objects.filter(
        namespace__tenant=tenant,
        references__is_default=True,
        references__scanner_states__scanner="posture",
        references__scanner_states__ok=True,
    ).distinct()
    total = evaluated.count()
    failing = dict(
        PostureFinding.objects.filter(project__in=evaluated, resolved_at__isnull=True)
        .values_list("rule")
        .annotate(n=Count("id"))
    )
    rules = [
        {
            "rule": value,
            "label": label,
            "check": POSTURE_CHECKS[value],
            "failing": failing.get(value, 0),
            "passing": total - failing.get(value, 0),
            "pass_rate": round(100 * (total - failing.get(value, 0)) / total) if total else None,
        }
        for value, label in PostureRule.choices
    ]
    worst = (
        evaluated.annotate(
            open_findings=Count("posture_findings", filter=Q(posture_findings__resolved_at__isnull=True))
        )
        .filter(open_findings__gt=0)
        .select_related("integration")
        .order_by("-open_findings", "full_name")
    )
    if rule:
        worst = worst.filter(posture_findings__rule=rule, posture_findings__resolved_at__isnull=True)
    return {"evaluated": total, "rules": rules, "worst": worst}


def csv_rows(packages) -> Iterator[list[str]]:
    yield ["repository", "branch", "ecosystem", "package", "version", "direct", "dev", "manifest"]
    for p in packages:
        yield [
            csv_safe(v)
            for v in (
                p.reference.project.full_name,
                p.reference.name,
                p.ecosystem,
                p.name,
                p.version,
                "yes" if p.direct else "no",
                "yes" if p.dev else "no",
                p.manifest_path,
            )
        ]


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: str) -> str:
    """A cell a spreadsheet will not run: text from repositories (package names such as
    ``=HYPERLINK(...)``) that begins like a formula gets a leading apostrophe, as OWASP's
    CSV injection advice says."""
    return "'" + value if value.startswith(FORMULA_START) else value


def pull_requests_with_latest_scan(*, project: Project | None = None) -> QuerySet:
    """Pull requests (of one project, if given), newest activity first, each with
    ``latest_scan_id``, ``latest_status`` and ``latest_description`` of its most recent
    PR scan, in one query."""

    latest = PullRequestScan.objects.filter(pull_request=OuterRef("pk")).order_by("-queued_at", "-id")
    qs = PullRequest.objects.all() if project is None else PullRequest.objects.filter(project=project)
    return qs.annotate(
        latest_scan_id=Subquery(latest.values("id")[:1]),
        latest_status=Subquery(latest.values("status")[:1]),
        latest_description=Subquery(latest.values("description")[:1]),
    ).order_by("-last_event_at", "-id")


def deny_rules_by_integration(*, tenant) -> dict[int, list]:
    """{integration id: its deny list as rules} for the tenant's integrations that have one."""
    rules = {}
    for pk, pr_settings in (
        Integration.objects.filter(tenant=tenant)
        .exclude(status=IntegrationStatus.DELETING)
        .values_list("pk", "pr_settings")
    ):
        found = deny_rules((pr_settings or {}).get("deny_packages", []))
        if found:
            rules[pk] = found
    return rules


def deny_marks(packages, *, tenant) -> None:
    """Mark each package row whose version its integration's deny list names (``denied``:
    why, or None): wherever a package appears, a hit is visible."""
    rules = deny_rules_by_integration(tenant=tenant)
    for package in packages:
        found = rules.get(package.reference.project.integration_id)
        hit = denied_by(found, package.name, package.ecosystem, package.version) if found else None
        package.denied = hit[1] if hit else None


def denied_on_default_branches(*, tenant) -> list[DependencyPackage]:
    """Package rows on default branches that their integration's deny list names, each with
    ``denied`` (why); in repository order."""
    rows = []
    for integration_id, rules in deny_rules_by_integration(tenant=tenant).items():
        candidates = (
            DependencyPackage.objects.filter(
                spelled_as(rule.name for rule in rules), reference__project__integration_id=integration_id
            )
            .filter(reference__is_default=True)
            .select_related("reference__project__integration")
        )
        for package in candidates:
            hit = denied_by(rules, package.name, package.ecosystem, package.version)
            if hit:
                package.denied = hit[1]
                rows.append(package)
    rows.sort(key=lambda p: (p.reference.project.full_name, p.name.lower(), p.manifest_path))
    return rows


def vulnerabilities_live() -> QuerySet:
    """Matches of live advisories on default branches (any tenant: callers scope them)."""
    return PackageVulnerability.objects.filter(package__reference__is_default=True, advisory__withdrawn__isnull=True)


def worst_first(matches: QuerySet) -> QuerySet:
    """Matches ordered by severity (critical first), then repository, package and advisory."""
    rank = Case(*[When(advisory__severity=s, then=Value(r)) for s, r in SEVERITY_RANK.items()], default=Value(0))
    return matches.annotate(rank=rank).order_by(
        "-rank", "package__reference__project__full_name", "package__name", "advisory__osv_id", "pk"
    )


def _tenant_vulnerabilities(tenant, integration_id: int | None = None) -> QuerySet:
    """The tenant's live matches (``vulnerabilities_live``), asked as "rows of these default
    branches": PostgreSQL then hash-joins the matches with the few thousand references
    instead of walking every package row of the tenant (at 200,000 rows and 116,000
    matches, a count took 628 ms that way and takes 171 ms this way)."""
    deleting = Integration.objects.filter(tenant=tenant, status=IntegrationStatus.DELETING).values("pk")
    references = Reference.objects.filter(is_default=True, project__namespace__tenant=tenant).exclude(
        project__integration_id__in=deleting
    )
    if integration_id is not None:
        references = references.filter(project__integration_id=integration_id)
    return PackageVulnerability.objects.filter(
        package__reference_id__in=references.values("pk"), advisory__withdrawn__isnull=True
    )


def vulnerabilities_visible(
    *, tenant, severity: str = "", package: str = "", repository: str = "", integration_id: int | None = None
) -> QuerySet:
    """Known vulnerabilities of the tenant's default branches, worst first: each row a
    package row of a repository and an advisory affecting its version."""
    qs = _tenant_vulnerabilities(tenant, integration_id).select_related(
        "advisory", "package__reference__project__integration"
    )
    if severity:
        qs = qs.filter(advisory__severity=severity)
    if package:
        qs = qs.filter(package__name__iexact=package.strip())
    if repository:
        qs = qs.filter(package__reference__project__full_name__icontains=repository.strip())
    return worst_first(qs)


def vulnerability_counts(*, tenant, integration=None) -> dict:
    """{"total", "repositories", "by_severity": {severity: n}} for the overview and the
    integration page (one integration's, when given)."""
    qs = _tenant_vulnerabilities(tenant, integration.pk if integration is not None else None)
    counts = qs.aggregate(
        total=Count("pk"),
        repositories=Count("package__reference__project", distinct=True),
        **{f"severity_{s}": Count("pk", filter=Q(advisory__severity=s)) for s in SEVERITY_RANK},
    )  # one pass over the matches
    return {
        "total": counts["total"],
        "repositories": counts["repositories"],
        "by_severity": {s: counts[f"severity_{s}"] for s in SEVERITY_RANK},
    }


def vulnerability_csv_rows(matches) -> Iterator[list[str]]:
    """The Vulnerabilities page's CSV export, row by row."""
    yield ["severity", "advisory", "aliases", "package", "ecosystem", "version", "fixed in", "repository", "manifest"]
    for m in matches.iterator(chunk_size=1000):
        p = m.package
        yield [
            csv_safe(str(v))
            for v in (
                m.advisory.severity,
                m.advisory.osv_id,
                " ".join(m.advisory.aliases),
                p.name,
                p.ecosystem,
                p.version,
                m.fixed_version,
                p.reference.project.full_name,
                p.manifest_path,
            )
        ]


def vulnerability_marks(packages) -> None:
    """``vulns`` on each package row: its live advisories, worst first."""
    ids = [p.pk for p in packages]
    found: dict[int, list] = {}
    for match in (
        PackageVulnerability.objects.filter(package_id__in=ids, advisory__withdrawn__isnull=True)
        .select_related("advisory")
        .order_by("package_id")
    ):
        found.setdefault(match.package_id, []).append(match)
    for package in packages:
        package.vulns = sorted(found.get(package.pk, []), key=lambda m: -SEVERITY_RANK.get(m.advisory.severity, 0))


def failing_pr_scans(*, tenant) -> QuerySet:
    """Pull requests whose latest scan failed (policy) or could not finish."""
    return pull_requests_with_latest_scan().filter(
        project__namespace__tenant=tenant,
        latest_status__in=[PullRequestScan.Status.FAILED, PullRequestScan.Status.ERROR],
    )


def tenant_overview(*, tenant) -> dict:
    """What the overview page shows, each figure equal to the list it links to."""
    projects = Project.objects.filter(namespace__tenant=tenant).exclude(integration__status=IntegrationStatus.DELETING)
    posture = posture_overview(tenant=tenant)
    denied = denied_on_default_branches(tenant=tenant)
    return {
        "repositories": projects.count(),
        "branches": Reference.objects.filter(project__in=projects).count(),
        "posture": posture,
        "denied": denied,
        "denied_repositories": len({p.reference.project_id for p in denied}),
        "failing_pull_requests": failing_pr_scans(tenant=tenant).count(),
        "vulnerabilities": vulnerability_counts(tenant=tenant),
        "open_errors": SyncLog.objects.filter(integration__tenant=tenant, resolved_at__isnull=True)
        .exclude(integration__status=IntegrationStatus.DELETING)
        .count(),
    }


def pr_scans_visible(*, tenant) -> QuerySet:
    """PR scans of the tenant's projects."""
    return PullRequestScan.objects.filter(pull_request__project__namespace__tenant=tenant).select_related(
        "pull_request__project__integration"
    )


def scanner_coverage(*, integration) -> dict[str, dict]:
    """Per selected scanner, the default branches it has read at their current head
    (posture: within ``POSTURE_MAX_AGE_HOURS``): ``{name: {"covered", "total"}}``."""
    refs = Reference.objects.filter(project__integration=integration, is_default=True).exclude(head_commit="")
    total = refs.count()
    now = timezone.now()
    coverage = {}
    for scanner in selected_scanners(integration):
        current = ScannerState.objects.filter(reference__in=refs, scanner=scanner.name, ok=True)
        if scanner.follows_head:
            current = current.filter(commit=F("reference__head_commit"))
        if scanner.max_age() is not None:
            current = current.filter(scanned_at__gte=now - scanner.max_age())
        coverage[scanner.name] = {"covered": current.count(), "total": total}
    return coverage


def scan_phases(*, run, coverage: dict | None = None) -> list[dict]:
    """Where a scan stands, phase by phase: the listing (repositories and their branch heads,
    page by page), the scanner chunks when its scanners were handed out, and each selected
    scanner's coverage. ``[{"name", "done", "total", "state"}]`` with state
    ``done``/``running``/``waiting``."""
    finished = run.status not in ACTIVE_SCAN_STATUSES
    listed = bool(run.progress_total) and run.progress_done >= run.progress_total
    phases = [
        {
            "name": "Listing repositories and branch heads",
            "done": run.progress_done,
            "total": run.progress_total,
            "state": "done" if finished or listed else ("running" if run.status == "running" else "waiting"),
        }
    ]
    chunks = ScanChunk.objects.filter(scan_run=run).aggregate(
        total=Count("pk"), ended=Count("pk", filter=~Q(status__in=CHUNK_ACTIVE))
    )
    if chunks["total"]:
        phases.append(
            {
                "name": "Scanner chunks",
                "done": chunks["ended"],
                "total": chunks["total"],
                "state": "done" if finished or chunks["ended"] >= chunks["total"] else "running",
            }
        )
    # ``coverage``: the scanners' coverage when the caller has it already (not counted twice).
    scanners = coverage if coverage is not None else scanner_coverage(integration=run.integration)
    for name, covered in scanners.items():
        if not (listed or finished):
            state = "waiting"  # the listing decides what there is to scan
        elif covered["covered"] >= covered["total"]:
            state = "done"
        else:
            state = "waiting" if finished else "running"  # (a finished scan left the rest for the next)
        phases.append(
            {
                "name": f"{name.capitalize()} scanner",
                "done": covered["covered"],
                "total": covered["total"],
                "state": state,
            }
        )
    return phases


def inventory_status(*, integration) -> dict:
    """Where an integration's inventory stands and what Bitbucket still allows this hour:

    * ``budget``: the account's shared allowance per resource (used, left, resets at);
    * ``scanners``: per selected scanner, the default branches it has read at their current
      head (posture: within ``POSTURE_MAX_AGE_HOURS``), ``covered`` of ``total``, what one
      repository costs it, and an honest ETA: the requests still needed, spread over what
      the account's hour allows (a first inventory of a large workspace is bound by
      Bitbucket's limits, not by the portal's workers).
    """
    budget = budget_for(integration_get_credentials(integration=integration), settings.BITBUCKET_API_URL)
    standings = {resource: budget.standing(resource) for resource in RESOURCES}
    now = timezone.now()
    scanners, need = scanner_coverage(integration=integration), dict.fromkeys(RESOURCES, 0.0)
    for name, coverage in scanners.items():
        cost = REGISTRY[name].requests_per_repository(integration)
        for resource, n in cost.items():
            need[resource] += (coverage["total"] - coverage["covered"]) * n
        coverage["requests_per_repository"] = cost
    hours = 0.0
    for resource, standing in standings.items():
        per_hour = max(1, standing.limit - (settings.BITBUCKET_REST_RESERVE if resource == REST else 0))
        beyond_this_hour = max(0.0, need[resource] - max(0, standing.left))
        hours = max(hours, beyond_this_hour / per_hour)
    complete = all(s["covered"] >= s["total"] for s in scanners.values())
    return {
        "budget": {resource: standing.as_dict() for resource, standing in standings.items()},
        "scanners": scanners,
        "requests_needed": {resource: round(n) for resource, n in need.items()},
        "complete": complete,
        # Within this hour when what is left covers it (then the workers' pace decides).
        "eta": None if complete else (now + timedelta(hours=hours)).isoformat(),
        "eta_bitbucket_hours": None if complete else round(hours, 1),
    }
