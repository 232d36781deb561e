"""Portal pages about scans: Rescan Org, the Sync Log page (with its scans-per-day chart),
and the progress feed the pages poll while a scan runs."""

from __future__ import annotations

import csv
from datetime import timedelta

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Max
from django.db.models.functions import TruncDate
from django.http import (
    Http404,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from advisories.models import OsvFeed, Severity
from integrations.api.filters import MAX_DAYS
from integrations.models import Member, Namespace, Project, Reference, Role
from integrations.net import client_ip
from integrations.portal import can, tenant_view
from integrations.selectors import integrations_with_health
from integrations.views import get_integration, tenant_integrations
from scanning import services
from scanning.charts import pass_rate_bars, scans_per_day_svg
from scanning.models import (
    ACTIVE_SCAN_STATUSES,
    POSTURE_CHECKS,
    DependencyPackage,
    PostureRule,
    PullRequest,
    ScanRun,
    ScanStatus,
    Trigger,
)
from scanning.pullrequests import PrScanNotQueued, pr_scan_request
from scanning.sbom import reference_sbom, tenant_sbom_stream
from scanning.selectors import (
    csv_rows,
    denied_on_default_branches,
    deny_marks,
    failing_pr_scans,
    inventory_status,
    package_search,
    posture_overview,
    pr_scans_visible,
    pull_requests_with_latest_scan,
    scan_phases,
    tenant_overview,
    vulnerabilities_visible,
    vulnerability_counts,
    vulnerability_csv_rows,
    vulnerability_marks,
)
from scanning.webhooks import MAX_BODY, Rejected, delivery_receive
from synclogs.models import Category, Operation
from synclogs.selectors import sync_log_list


def _back(request, default: str) -> HttpResponseRedirect:
    target = request.POST.get("next") or ""
    return HttpResponseRedirect(target if target.startswith("/") and not target.startswith("//") else default)


@tenant_view(Role.MEMBER)
@require_POST
def rescan(request, pk: int):
    integration = get_integration(request, pk)
    try:
        run = services.org_rescan_request(integration=integration, trigger=Trigger.MANUAL, actor=request.user)
        messages.success(request, f"Rescan of '{integration}' started (scan #{run.pk}).")
    except services.ScanAlreadyRunning as exc:
        messages.warning(request, f"'{integration}': {exc} Nothing changed.")
    return _back(request, reverse("portal:bitbucket_manage"))


@tenant_view(Role.MEMBER)
@require_POST
def rescan_all(request):
    started, running = 0, 0
    for integration in tenant_integrations(request).exclude(status="paused"):
        try:
            services.org_rescan_request(integration=integration, trigger=Trigger.MANUAL, actor=request.user)
            started += 1
        except services.ScanAlreadyRunning:
            running += 1
    messages.success(
        request, f"Rescan started for {started} integration(s)" + (f"; {running} already running." if running else ".")
    )
    return _back(request, reverse("portal:bitbucket_manage"))


def scans_per_day(integration, days: int = 30) -> list[dict]:
    """[{date, succeeded, partial, failed, total}] for the last ``days`` days, oldest first."""
    since = timezone.now() - timedelta(days=days - 1)
    rows = (
        ScanRun.objects.filter(
            integration=integration,
            queued_at__date__gte=since.date(),
            status__in=[ScanStatus.SUCCEEDED, ScanStatus.PARTIAL, ScanStatus.FAILED],
        )
        .annotate(day=TruncDate("queued_at"))
        .values("day", "status")
        .annotate(n=Count("id"))
    )
    by_day: dict = {}
    for row in rows:
        by_day.setdefault(row["day"], {})[row["status"]] = row["n"]
    result = []
    for offset in range(days):
        day = (since + timedelta(days=offset)).date()
        counts = by_day.get(day, {})
        entry = {"date": day, **{s: counts.get(s, 0) for s in ("succeeded", "partial", "failed")}}
        entry["total"] = entry["succeeded"] + entry["partial"] + entry["failed"]
        result.append(entry)
    peak = max([e["total"] for e in result] + [1])
    for e in result:  # bar heights in percent of the busiest day
        e["h_succeeded"], e["h_partial"], e["h_failed"] = (
            round(100 * e[k] / peak) for k in ("succeeded", "partial", "failed")
        )
    return result


def _inventory_for_page(integration) -> dict:
    """``inventory_status`` with datetimes and percentages for the template."""
    status = inventory_status(integration=integration)
    for standing in status["budget"].values():
        standing["resets_at"] = parse_datetime(standing["resets_at"]) if standing["resets_at"] else None
        standing["percent"] = min(100, round(100 * standing["used"] / max(1, standing["limit"])))
    for scanner in status["scanners"].values():
        scanner["percent"] = round(100 * scanner["covered"] / scanner["total"]) if scanner["total"] else 100
    status["eta"] = parse_datetime(status["eta"]) if status["eta"] else None
    return status


@tenant_view()
def sync_log(request, pk: int | None = None):
    """One integration's sync log (with its scan chart), or the whole tenant's."""
    integration = get_integration(request, pk) if pk is not None else None
    integration_ids = (
        [integration.pk] if integration else list(tenant_integrations(request).values_list("pk", flat=True))
    )
    category, operation = request.GET.get("category", ""), request.GET.get("operation", "")
    state, days = request.GET.get("state", ""), request.GET.get("days", "7") or "7"
    if not (days.isascii() and days.isdigit() and len(days) <= 4 and int(days) <= MAX_DAYS):
        return HttpResponseBadRequest(
            f"days must be a whole number of days from 0 (all) to {MAX_DAYS}.", content_type="text/plain"
        )
    window = int(days) or None
    entries = sync_log_list(
        integration_ids=integration_ids,
        category=category if category in Category.values else "",
        operation=operation if operation in Operation.values else "",
        state=state if state in ("open", "resolved") else "",
        days=window,
    )
    page = Paginator(entries.order_by("-created_at", "-id"), 50).get_page(request.GET.get("page"))
    for entry in page:
        entry.fix = fix_for(request, entry)
    return render(
        request,
        "portal/sync_log.html",
        {
            "integration": integration,
            "page": page,
            "chart": scans_per_day_svg(scans_per_day(integration)) if integration else None,
            "inventory": _inventory_for_page(integration) if integration else None,
            "categories": Category.choices,
            "operations": Operation.choices,
            "filters": {"category": category, "operation": operation, "state": state, "days": days},
            "recent_scans": ScanRun.objects.filter(integration=integration).order_by("-pk")[:10] if integration else [],
        },
    )


# What fixes each kind of sync log entry: (label, portal URL name, needs POST, minimum role).
FIXES = {
    Category.INVALID_CREDENTIALS: ("Update credentials", "portal:bitbucket_credentials", False, Role.ADMIN),
    Category.APP_PASSWORD: ("Update credentials", "portal:bitbucket_credentials", False, Role.ADMIN),
    Category.INSUFFICIENT_PERMISSIONS: ("Update credentials", "portal:bitbucket_credentials", False, Role.ADMIN),
    Category.NOT_FOUND: ("Test configuration", "portal:integration_test", True, Role.ADMIN),
    Category.INVALID_HOST: ("Test configuration", "portal:integration_test", True, Role.ADMIN),
    Category.CERTIFICATE: ("Test configuration", "portal:integration_test", True, Role.ADMIN),
    Category.RATE_LIMITED: ("Edit scan interval", "portal:bitbucket_edit", False, Role.ADMIN),
    Category.UNAVAILABLE: ("Rescan now", "portal:rescan", True, Role.MEMBER),
    Category.UNEXPECTED: ("Rescan now", "portal:rescan", True, Role.MEMBER),
}


def fix_for(request, entry) -> dict | None:
    """The one-click fix of an open sync log entry, if this person may use it."""
    fix = FIXES.get(entry.category)
    if entry.resolved_at is not None or fix is None or not can(request, fix[3]):
        return None
    label, name, post, _ = fix
    return {"label": label, "url": reverse(name, args=[entry.integration_id]), "post": post}


@tenant_view()
def integration_detail(request, pk: int, report=None):
    """The integration's page: health, live progress by phase, scan history, webhook,
    request budget, members and every action."""
    integration = integrations_with_health(tenant_integrations(request).filter(pk=pk)).first()
    if integration is None:
        raise Http404("No such integration.")
    runs = list(ScanRun.objects.filter(integration=integration).order_by("-pk")[:20])
    open_errors = list(
        sync_log_list(integration_ids=[integration.pk], state="open", days=None).order_by("-created_at", "-id")[:5]
    )
    for entry in open_errors:
        entry.fix = fix_for(request, entry)
    members = Member.objects.filter(integration=integration)
    inventory = _inventory_for_page(integration)
    return render(
        request,
        "portal/integration_detail.html",
        {
            "integration": integration,
            "runs": runs,
            "latest": runs[0] if runs else None,
            "phases": scan_phases(run=runs[0], coverage=inventory["scanners"]) if runs else [],
            "last_good": ScanRun.objects.filter(integration=integration, status=ScanStatus.SUCCEEDED)
            .order_by("-pk")
            .first(),
            "open_errors": open_errors,
            "inventory": inventory,
            "vulnerabilities": vulnerability_counts(tenant=request.tenant, integration=integration),
            "members": members[:100],
            "members_count": members.count(),
            "webhook_url": request.build_absolute_uri(reverse("bitbucket-webhook", args=[integration.uuid])),
            # Only for admins and owners (the template shows it to them alone).
            "webhook_secret": integration.webhook_secret.reveal()
            if can(request, Role.ADMIN) and integration.webhook_secret
            else "",
            "report": report,
        },
    )


@tenant_view(Role.ADMIN)
@require_POST
def integration_test(request, pk: int):
    """Test configuration: the stored credentials verified now; the report on the page."""
    integration = get_integration(request, pk)
    report = services.integration_test_configuration(integration=integration, actor=request.user)
    if report.ok:
        messages.success(request, "Test configuration: all required checks passed.")
    else:
        messages.error(request, "Test configuration: some required checks failed. See the report below.")
    return integration_detail(request, pk, report=report)


@tenant_view()
def scan_progress(request):
    """JSON for the pages' progress display: the tenant's active and latest scans."""
    integrations = tenant_integrations(request)
    ids = request.GET.getlist("integration")
    if ids:
        integrations = integrations.filter(pk__in=[i for i in ids if i.isdigit()])
    latest_ids = integrations.annotate(last=Max("scan_runs__id")).values_list("last", flat=True)
    latest = {run.integration_id: run for run in ScanRun.objects.filter(pk__in=[i for i in latest_ids if i])}
    return JsonResponse(
        {
            "scans": [
                {
                    "integration": run.integration_id,
                    "scan": run.pk,
                    "status": run.status,
                    "active": run.status in ACTIVE_SCAN_STATUSES,
                    "done": run.progress_done,
                    "total": run.progress_total,
                    "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                    "summary": run.summary,
                    # Phases count rows: only for a page about one integration, not every row of a list.
                    "phases": scan_phases(run=run) if ids and run.status in ACTIVE_SCAN_STATUSES else [],
                }
                for run in latest.values()
            ]
        }
    )


@tenant_view()
def scan_detail(request, pk: int):
    run = get_object_or_404(
        ScanRun.objects.select_related("integration"), pk=pk, integration__in=tenant_integrations(request)
    )
    return render(request, "portal/scan_detail.html", {"run": run})


@tenant_view()
def packages(request):
    """Tenant-wide package search: which repositories use NAME (below VERSION)? With
    ``denied=1``: the package versions the deny lists name, on default branches."""
    name, ecosystem, below = (request.GET.get(k, "").strip() for k in ("name", "ecosystem", "below"))
    denied_only = request.GET.get("denied") == "1"
    error, rows = "", []
    if denied_only:
        rows = [
            p
            for p in denied_on_default_branches(tenant=request.tenant)
            if (not name or p.name.lower() == name.lower()) and (not ecosystem or p.ecosystem == ecosystem)
        ]
    elif name or ecosystem or below:
        try:
            rows = package_search(tenant=request.tenant, name=name, ecosystem=ecosystem, below=below)
        except ValueError as exc:
            error = str(exc)
    if request.GET.get("format") == "csv" and not error:
        return _csv_response(rows, f"packages-{name or 'all'}.csv")
    affected = (
        len({p.reference.project_id for p in rows})
        if isinstance(rows, list)
        else rows.values("reference__project").distinct().count()
    )
    page = Paginator(rows, 100).get_page(request.GET.get("page"))
    if not denied_only:
        deny_marks(page.object_list, tenant=request.tenant)
    vulnerability_marks(page.object_list)
    ecosystems = (
        DependencyPackage.objects.filter(reference__project__namespace__tenant=request.tenant)
        .values_list("ecosystem", flat=True)
        .distinct()
        .order_by("ecosystem")
    )
    return render(
        request,
        "portal/packages.html",
        {
            "page": page,
            "groups": _grouped(page.object_list),
            "affected": affected,
            "error": error,
            "ecosystems": ecosystems,
            "filters": {"name": name, "ecosystem": ecosystem, "below": below, "denied": denied_only},
            "searched": bool(name or ecosystem or below or denied_only),
        },
    )


def _grouped(packages) -> list[dict]:
    """A repository's rows for one package (its manifest's range and its lock file's exact
    version) as one group, in the order they come."""
    groups: list[dict] = []
    for p in packages:
        key = (p.reference_id, p.ecosystem, p.name.lower())
        if not groups or groups[-1]["key"] != key:
            groups.append({"key": key, "first": p, "rows": [], "denied": None})
        groups[-1]["rows"].append(p)
        groups[-1]["denied"] = groups[-1]["denied"] or getattr(p, "denied", None)
    return groups


def _csv_response(rows, filename: str):
    return _stream_csv(csv_rows(rows), filename)


def _stream_csv(lines, filename: str):
    """CSV rows streamed as they are read (an export never builds in memory)."""

    class Echo:
        def write(self, value):
            return value

    writer = csv.writer(Echo())
    response = StreamingHttpResponse((writer.writerow(row) for row in lines), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@tenant_view()
def tenant_sbom_download(request):
    """The organisation's SBOM (every default branch, or ``?namespace=`` and below), streamed."""
    namespace = None
    namespace_id = request.GET.get("namespace", "")
    if namespace_id:
        if not (namespace_id.isdigit() and len(namespace_id) < 19):
            return HttpResponseBadRequest("namespace must be a namespace id.", content_type="text/plain")
        namespace = get_object_or_404(Namespace, tenant=request.tenant, pk=int(namespace_id))
    response = StreamingHttpResponse(
        tenant_sbom_stream(tenant=request.tenant, namespace=namespace), content_type="application/vnd.cyclonedx+json"
    )
    label = request.tenant.slug + (f"-{namespace.slug}" if namespace is not None else "")
    response["Content-Disposition"] = f'attachment; filename="sbom-{label}.cdx.json"'
    return response


@tenant_view()
def reference_sbom_download(request, pk: int):
    reference = get_object_or_404(
        Reference.objects.select_related("project"), pk=pk, project__namespace__tenant=request.tenant
    )
    response = JsonResponse(reference_sbom(reference=reference), json_dumps_params={"indent": 2})
    name = (reference.project.full_name or reference.project.name).replace("/", "_")
    response["Content-Disposition"] = f'attachment; filename="{name}-{reference.name.replace("/", "_")}.cdx.json"'
    return response


@tenant_view()
def posture(request):
    rule = request.GET.get("rule", "")
    rule = rule if rule in PostureRule.values else ""
    overview = posture_overview(tenant=request.tenant, rule=rule)
    page = Paginator(overview["worst"], 50).get_page(request.GET.get("page"))
    return render(
        request,
        "portal/posture.html",
        {"overview": overview, "page": page, "rule": rule, "rule_check": POSTURE_CHECKS.get(rule, "")},
    )


@tenant_view()
def overview(request):
    """The tenant at a glance: each figure links to the list it counts."""
    figures = tenant_overview(tenant=request.tenant)
    integrations = integrations_with_health(tenant_integrations(request)).order_by("name")
    return render(
        request,
        "portal/overview.html",
        {
            "integrations": integrations,
            "figures": figures,
            "pass_rates": pass_rate_bars(figures["posture"]["rules"], reverse("portal:posture")),
        },
    )


@tenant_view()
def vulnerabilities(request):
    """Known vulnerabilities of the tenant's default branches (OSV, matched here), worst
    first, by severity, package or repository; CSV with ``format=csv``."""
    severity = request.GET.get("severity", "")
    severity = severity if severity in Severity.values else ""
    package, repository = request.GET.get("package", "").strip(), request.GET.get("repository", "").strip()
    integration_id = request.GET.get("integration", "")
    rows = vulnerabilities_visible(
        tenant=request.tenant,
        severity=severity,
        package=package,
        repository=repository,
        integration_id=int(integration_id) if integration_id.isdigit() and len(integration_id) < 19 else None,
    )
    if request.GET.get("format") == "csv":
        return _stream_csv(vulnerability_csv_rows(rows), "vulnerabilities.csv")
    page = Paginator(rows, 100).get_page(request.GET.get("page"))
    return render(
        request,
        "portal/vulnerabilities.html",
        {
            "page": page,
            "counts": vulnerability_counts(tenant=request.tenant),
            "feeds": OsvFeed.objects.order_by("ecosystem"),
            "severities": Severity.choices,
            "filters": {"severity": severity, "package": package, "repository": repository},
        },
    )


@tenant_view()
def pull_request_scans(request):
    """Every pull request of the tenant with its latest scan; ``?status=failing`` for those
    whose latest scan failed or could not finish."""
    status = request.GET.get("status", "")
    if status == "failing":
        rows = failing_pr_scans(tenant=request.tenant)
    else:
        rows = pull_requests_with_latest_scan().filter(project__namespace__tenant=request.tenant)
    rows = rows.select_related("project__integration")
    page = Paginator(rows, 50).get_page(request.GET.get("page"))
    return render(request, "portal/pull_request_scans.html", {"page": page, "status": status})


@csrf_exempt
@require_POST
def bitbucket_webhook(request, integration_uuid):
    """Bitbucket's deliveries: verified, de-duplicated, queued, answered 202 at once."""
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length) > MAX_BODY:
        return JsonResponse({"error": {"code": "too_large", "message": "Payload larger than 256 KB."}}, status=413)
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        delivery, new = delivery_receive(
            integration_uuid=integration_uuid, body=request.body, headers=headers, source=client_ip(request)
        )
    except Rejected as exc:
        return JsonResponse({"error": {"code": "rejected", "message": exc.message}}, status=exc.status)
    return JsonResponse({"delivery": delivery.pk, "duplicate": not new}, status=202)


@tenant_view()
def pr_scan_detail(request, pk: int):
    scan = get_object_or_404(pr_scans_visible(tenant=request.tenant), pk=pk)
    history = scan.pull_request.scans.order_by("-queued_at", "-id")[:20]
    return render(request, "portal/pr_scan_detail.html", {"scan": scan, "pr": scan.pull_request, "history": history})


@tenant_view(Role.MEMBER)
@require_POST
def pr_rescan(request, pk: int):
    """Scan the pull request's current source commit again (after fixing a credential...)."""
    pr = get_object_or_404(
        PullRequest.objects.select_related("project__integration"), pk=pk, project__namespace__tenant=request.tenant
    )
    try:
        scan = pr_scan_request(pull_request=pr, trigger=Trigger.MANUAL, actor=request.user, force=True)
    except PrScanNotQueued as exc:
        messages.warning(request, f"Not scanned: {exc}.")
        return _back(request, reverse("portal:project_detail", args=[pr.project_id]))
    messages.success(request, f"Scan of pull request #{pr.remote_id} queued.")
    return HttpResponseRedirect(reverse("portal:pr_scan_detail", args=[scan.pk]))


@tenant_view()
def project_detail(request, pk: int):
    project = get_object_or_404(
        Project.objects.select_related("namespace", "integration"), namespace__tenant=request.tenant, pk=pk
    )
    default = project.references.filter(is_default=True).first()
    packages = (
        list(default.packages.select_related("reference__project").order_by("ecosystem", "name")[:500])
        if default
        else []
    )
    deny_marks(packages, tenant=request.tenant)
    vulnerability_marks(packages)
    return render(
        request,
        "portal/project_detail.html",
        {
            "pull_requests": pull_requests_with_latest_scan(project=project)[:100],
            "project": project,
            "references": project.references.order_by("-is_default", "name"),
            "packages": packages,
            "findings": project.posture_findings.filter(resolved_at__isnull=True),
            "sync_logs": project.sync_logs.order_by("-created_at")[:20],
        },
    )
