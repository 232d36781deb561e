"""End-to-end: connect, verify, sync, rescan, fail and recover, against the sandbox."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from bitbucket_sandbox import SandboxServer, generate
from bitbucket_sandbox.data import (
    SANDBOX_API_TOKEN,
    SANDBOX_API_TOKEN_NO_ADMIN,
    SANDBOX_EMAIL,
    SANDBOX_PROJECT_TOKEN,
    SANDBOX_READONLY_WORKSPACE_TOKEN,
    SANDBOX_WORKSPACE_TOKEN,
)
from integrations import services
from integrations.models import Integration, IntegrationStatus, Member, Namespace, Project, Reference
from scanning import services as scans
from scanning.models import ScanRun, ScanStatus
from synclogs.models import Category, SyncLog
from tests import helpers
from tests.factories import NamespaceFactory, TenantFactory, UserFactory


@pytest.fixture
def sandbox_world():
    return generate(seed=11, workspaces=1, projects=4, repos=150, branches=3)


@pytest.fixture
def actor(db):
    return UserFactory(username="ops")


def connect(tenant=None, *, auth_method="access_token", project_key="", scanners=(), verify=True, **extra):
    return helpers.connect(
        tenant=tenant,
        name=extra.pop("name", f"Demo {auth_method} {project_key}"),
        auth_method=auth_method,
        project_key=project_key,
        scanners=scanners,
        verify=verify,
        **extra,
    )


scan = helpers.scan
QUERIES_FIRST_SYNC_150 = (
    75  # 62 measured for 2 pages (the request budget counted in the database); one per repository would be 150+
)


def rest_calls(sandbox, since=0):
    return [r for r in list(sandbox.sandbox.requests)[since:] if r.kind == "rest"]


def test_first_sync_builds_the_managed_tree(bitbucket, django_assert_max_num_queries):
    integration = connect(tracked_branches=["release/*"])
    # A constant number of statements per page of 100 repositories, never one per repository.
    with django_assert_max_num_queries(QUERIES_FIRST_SYNC_150):
        run = scan(integration)
    assert run.status == ScanStatus.SUCCEEDED, run.summary
    ws = bitbucket.sandbox.world.workspaces["demo"]
    root = integration.root_namespace
    children = Namespace.objects.filter(parent=root)
    assert {ns.remote_key for ns in children} == set(ws.projects)
    assert all(ns.managed and ns.integration == integration for ns in children)
    assert all(ns.slug == ns.slug.lower() and len(ns.slug) <= 64 for ns in children)
    projects = Project.objects.filter(integration=integration)
    assert projects.count() == 150
    api = projects.get(remote_uuid=ws.repos["api"].uuid)
    assert api.namespace.remote_key == ws.repos["api"].project_key
    assert api.main_branch == ws.repos["api"].mainbranch
    default = Reference.objects.get(project=api, is_default=True)
    assert default.name == ws.repos["api"].mainbranch
    assert default.head_commit == ws.repos["api"].branches[default.name]
    tracked = set(Reference.objects.filter(project=api, is_default=False).values_list("name", flat=True))
    assert tracked == {b for b in ws.repos["api"].branches if b.startswith("release/")}
    assert Member.objects.filter(integration=integration).count() == len(ws.members)
    # Budget: the pagination minimum (projects, 2 repository pages, members) plus verification.
    assert run.rest_requests == 4
    assert run.git_requests == 150
    assert run.progress_done == run.progress_total == 150
    assert run.counts["projects"]["created"] == 150
    integration.refresh_from_db()
    assert integration.last_scan_at
    assert integration.next_scan_at > integration.last_scan_at


def test_unchanged_rescan_costs_the_pagination_minimum_and_writes_nothing(bitbucket, count_writes):
    integration = connect()
    scan(integration)
    before = len(bitbucket.sandbox.requests)
    with count_writes() as writes:
        run = scan(integration)
    assert run.status == ScanStatus.SUCCEEDED
    assert writes.rows == 0, writes.statements
    calls = rest_calls(bitbucket, before)
    assert [c.path for c in calls] == [
        "/2.0/workspaces/demo/projects",
        "/2.0/repositories/demo",
        "/2.0/repositories/demo",
        "/2.0/workspaces/demo/members",
    ]
    assert run.git_requests == 0
    assert run.counts == {}


def test_push_rename_move_and_delete_between_scans(bitbucket):
    integration = connect()
    scan(integration)
    sb, ws = bitbucket.sandbox, bitbucket.sandbox.world.workspaces["demo"]
    api, web = ws.repos["api"], ws.repos["web"]
    api_row = Project.objects.get(remote_uuid=api.uuid)
    web_id = Project.objects.get(remote_uuid=web.uuid).pk
    new_head = sb.push("demo", "api", api.mainbranch, files={"CHANGELOG.md": "1.1"}, fire=False)
    other_key = next(k for k in ws.projects if k != web.project_key)
    sb.rename_repo("demo", "web", name="Web Portal", new_slug="web-portal", project_key=other_key)
    gone = ws.repos["gateway"].uuid
    sb.delete_repo("demo", "gateway", fire=False)
    before = len(sb.requests)
    run = scan(integration)
    assert run.status == ScanStatus.SUCCEEDED
    assert Reference.objects.get(project=api_row, is_default=True).head_commit == new_head
    moved = Project.objects.get(remote_uuid=web.uuid)
    assert moved.pk == web_id, "moves keep their history (same row)"
    assert moved.name == "Web Portal"
    assert moved.slug == "web-portal"
    assert moved.namespace.remote_key == other_key
    assert not Project.objects.filter(remote_uuid=gone).exists()
    assert run.counts["projects"] == {"created": 0, "updated": 2, "removed": 1}
    # Per-repository calls only for the two that changed (git reads, no REST).
    assert run.git_requests == 2
    assert len(rest_calls(bitbucket, before)) == 4


def test_project_scoped_integration_sees_only_its_project(bitbucket):
    ws = bitbucket.sandbox.world.workspaces["demo"]
    key = next(iter(ws.projects))
    integration = connect(project_key=key)
    assert integration.scope == "project"
    run = scan(integration)
    assert run.status == ScanStatus.SUCCEEDED
    assert list(Namespace.objects.filter(parent=integration.root_namespace).values_list("remote_key", flat=True)) == [
        key
    ]
    assert Project.objects.filter(integration=integration).count() == sum(
        1 for r in ws.repos.values() if r.project_key == key
    )


def test_project_access_token_on_its_project(bitbucket):
    key = next(iter(bitbucket.sandbox.world.workspaces["demo"].projects))
    integration = connect(project_key=key, credentials={"token": SANDBOX_PROJECT_TOKEN})
    run = scan(integration)
    # A project token may not list workspace members: one warning, the scan goes on.
    assert run.status == ScanStatus.SUCCEEDED
    warning = SyncLog.objects.get(integration=integration, level="warning")
    assert warning.category == Category.INSUFFICIENT_PERMISSIONS
    assert "members" in warning.message
    # ...and it is not asked again: the next scans skip the call, and the warning resolves.
    before = len(bitbucket.sandbox.requests)
    assert scan(integration).status == ScanStatus.SUCCEEDED
    assert "/2.0/workspaces/demo/members" not in {r.path for r in rest_calls(bitbucket, before)}
    warning.refresh_from_db()
    assert warning.resolved_at is not None
    # New credentials may read them: asked again.
    services.credentials_update(
        integration=integration, auth_method="access_token", credentials={"token": SANDBOX_WORKSPACE_TOKEN}, actor=None
    )
    before = len(bitbucket.sandbox.requests)
    scan(Integration.objects.get(pk=integration.pk))
    assert "/2.0/workspaces/demo/members" in {r.path for r in rest_calls(bitbucket, before)}


@pytest.mark.parametrize("auth_method", ["access_token", "api_token", "oauth"])
def test_each_auth_method_syncs(bitbucket, auth_method):
    integration = connect(auth_method=auth_method)
    run = scan(integration)
    assert run.status == ScanStatus.SUCCEEDED, run.summary
    assert Project.objects.filter(integration=integration).count() == 150
    credentials = {r.credential for r in bitbucket.sandbox.requests}
    assert any(
        {
            "access_token": "Workspace access token",
            "api_token": "API token with every scope",
            "oauth": "OAuth consumer",
        }[auth_method]
        in c
        for c in credentials
    )


def test_verification_refuses_and_saves_nothing(bitbucket):
    with pytest.raises(services.VerificationFailed) as excinfo:
        connect(
            auth_method="api_token",
            scanners=["posture"],
            credentials={"email": SANDBOX_EMAIL, "token": SANDBOX_API_TOKEN_NO_ADMIN},
        )
    report = excinfo.value.report
    assert not report.ok
    assert "admin:repository:bitbucket" in report.missing_scopes
    assert [c.missing_scopes for c in report.failures()] == [["admin:repository:bitbucket"]]
    assert "API token" in report.failures()[0].message
    with pytest.raises(services.VerificationFailed) as excinfo:
        connect(credentials={"token": "ATCTT3xNotARealToken0000"})
    assert "invalid, expired or revoked" in excinfo.value.report.failures()[0].message
    assert Integration.objects.count() == 0
    assert Namespace.objects.filter(managed=True).count() == 0
    with pytest.raises(ValidationError):
        services.integration_create(
            tenant=TenantFactory(),
            parent=None,
            name="x",
            workspace="nope-ws",
            auth_method="access_token",
            credentials=helpers.CREDENTIALS["access_token"],
            actor=None,
        )


def test_verification_reports_unknown_workspace(bitbucket):
    tenant = TenantFactory()
    with pytest.raises(services.VerificationFailed) as excinfo:
        services.integration_create(
            tenant=tenant,
            parent=NamespaceFactory(tenant=tenant),
            name="x",
            workspace="no-such-ws",
            auth_method="access_token",
            credentials=helpers.CREDENTIALS["access_token"],
            actor=None,
        )
    assert "no workspace no-such-ws" in excinfo.value.report.summary_lines()[0]


# --- Failure categories, resolution, overlap, partial failure -----------------------------------


def test_expired_token_is_classified_and_resolved_by_the_next_good_scan(bitbucket):
    integration = connect()
    scan(integration)
    credential = bitbucket.sandbox.world.find_credential(SANDBOX_WORKSPACE_TOKEN)
    credential.expired = True
    run = scan(integration)
    assert run.status == ScanStatus.FAILED
    entry = SyncLog.objects.get(integration=integration)
    assert entry.category == Category.INVALID_CREDENTIALS
    assert entry.status_code == 401
    assert entry.path == "/2.0/workspaces/demo/projects"
    assert entry.method == "GET"
    assert "access token" in entry.hint
    assert SANDBOX_WORKSPACE_TOKEN not in entry.message + entry.hint + entry.path
    integration.refresh_from_db()
    assert integration.status == IntegrationStatus.ERROR
    assert Project.objects.filter(integration=integration).count() == 150, "a failed scan deletes nothing"
    credential.expired = False
    good = scan(integration)
    entry.refresh_from_db()
    assert entry.resolved_at is not None
    assert entry.resolved_by_scan_id == good.pk
    integration.refresh_from_db()
    assert integration.status == IntegrationStatus.ACTIVE


def test_missing_scope_is_named(bitbucket):
    integration = connect(credentials={"token": SANDBOX_READONLY_WORKSPACE_TOKEN}, verify=False)
    bitbucket.sandbox.world.find_credential(SANDBOX_READONLY_WORKSPACE_TOKEN).scopes = ["repository"]
    run = scan(integration)
    assert run.status == ScanStatus.FAILED
    entry = SyncLog.objects.get(integration=integration)
    assert entry.category == Category.INSUFFICIENT_PERMISSIONS
    assert "project" in entry.message
    assert entry.status_code == 403
    assert "Access tokens" in entry.hint


def test_self_signed_tls_is_a_certificate_error(settings, db):
    with SandboxServer(generate(repos=3), tls=True) as server:
        settings.BITBUCKET_API_URL, settings.BITBUCKET_WEB_URL = server.api_url, server.web_url
        integration = connect(verify=False)
        run = scan(integration)
    assert run.status == ScanStatus.FAILED
    entry = SyncLog.objects.get(integration=integration)
    assert entry.category == Category.CERTIFICATE
    assert "REQUESTS_CA_BUNDLE" in entry.hint
    assert SyncLog.objects.count() == 1, "TLS errors are not retried"


def test_unreachable_host_is_an_invalid_host(settings, db):
    settings.BITBUCKET_API_URL, settings.BITBUCKET_WEB_URL = "http://127.0.0.1:9/2.0", "http://127.0.0.1:9"
    settings.BITBUCKET_RETRIES, settings.BITBUCKET_BACKOFF_FACTOR = 1, 0.01
    integration = connect(verify=False)
    run = scan(integration)
    assert run.status == ScanStatus.FAILED
    entry = SyncLog.objects.get(integration=integration)
    assert entry.category == Category.INVALID_HOST
    assert "BITBUCKET_API_URL" in entry.hint


def test_429_storm_is_rate_limited_and_deletes_nothing(bitbucket):
    integration = connect()
    scan(integration)
    bitbucket.sandbox.rate_limit, bitbucket.sandbox.rate_window = 1, 600  # Retry-After far beyond the cap
    run = scan(integration)
    # Paused, not failed: nothing was removed, and the scan resumes when the hour has room.
    assert run.status == ScanStatus.PARTIAL
    entry = SyncLog.objects.get(integration=integration)
    assert entry.category == Category.RATE_LIMITED
    assert entry.status_code == 429
    assert "wait" in entry.message
    assert Project.objects.filter(integration=integration).count() == 150
    integration.refresh_from_db()
    assert integration.status == IntegrationStatus.ACTIVE
    assert integration.next_scan_at <= timezone.now() + timezone.timedelta(seconds=601)
    # The 429 taught the shared budget: the next client of this account asks no more.
    from integrations.bitbucket import client as bb

    before = len(bitbucket.sandbox.requests)
    with pytest.raises(bb.RateLimited):
        next(bb.client_for(integration).repository_pages("demo"))
    assert len(bitbucket.sandbox.requests) == before


def test_5xx_then_recovery_is_retried_transparently(bitbucket):
    integration = connect()
    bitbucket.sandbox.faults.errors.append({"status": 503, "count": 2, "path": "/repositories/demo$"})
    before = len(bitbucket.sandbox.requests)
    run = scan(integration)
    assert run.status == ScanStatus.SUCCEEDED
    assert not SyncLog.objects.exists()
    listing = [r.status for r in list(bitbucket.sandbox.requests)[before:] if r.path == "/2.0/repositories/demo"]
    assert listing[:3] == [503, 503, 200]
    # Every request that reached Bitbucket counts against its hour, retries included.
    sent = [r for r in list(bitbucket.sandbox.requests)[before:] if r.kind == "rest"]
    assert run.rest_requests == len(sent)


def test_a_storm_of_5xx_counts_every_request_sent(bitbucket):
    integration = connect()
    bitbucket.sandbox.faults.errors.append({"status": 503, "count": 100, "path": "/workspaces/demo/projects"})
    before = len(bitbucket.sandbox.requests)
    run = scan(integration)
    sent = [r for r in list(bitbucket.sandbox.requests)[before:] if r.kind == "rest"]
    assert run.status == ScanStatus.FAILED
    assert run.rest_requests == len(sent) == 3


def test_5xx_storm_is_unavailable_and_retried_in_minutes_with_backoff(bitbucket, settings):
    """A passing failure is not left for the whole scan interval (24 hours): the next scan
    comes in SCAN_RETRY_SECONDS, doubling while failures go on, capped; a scan that works
    returns to the interval."""
    settings.SCAN_RETRY_SECONDS, settings.SCAN_RETRY_MAX_SECONDS = 120, 400
    integration = connect()
    bitbucket.sandbox.faults.errors.append({"status": 502, "count": 1000, "path": "/repositories/"})
    waits = []
    for _ in range(4):
        run = scan(Integration.objects.get(pk=integration.pk))
        assert run.status == ScanStatus.FAILED
        assert "Retrying at" in run.summary
        integration.refresh_from_db()
        waits.append(round((integration.next_scan_at - run.finished_at).total_seconds()))
    assert waits == [120, 240, 400, 400]
    assert SyncLog.objects.filter(integration=integration).first().category == Category.UNAVAILABLE
    assert "retried within minutes" in SyncLog.objects.filter(integration=integration).first().hint
    assert integration.status == "error"
    bitbucket.sandbox.faults.errors.clear()
    run = scan(Integration.objects.get(pk=integration.pk))
    assert run.status == ScanStatus.SUCCEEDED
    integration.refresh_from_db()
    assert integration.status == "active"
    assert integration.next_scan_at - run.finished_at > timedelta(hours=20)


def test_a_permanent_failure_waits_for_the_interval(bitbucket):
    integration = connect(credentials={"token": "ATCTT3xNotATokenBitbucketKnows000"}, verify=False)
    run = scan(integration)
    assert run.status == ScanStatus.FAILED
    assert "Retrying" not in run.summary
    integration.refresh_from_db()
    assert integration.next_scan_at - run.finished_at > timedelta(hours=20)


def test_listing_failing_part_way_deletes_nothing(bitbucket):
    integration = connect()
    scan(integration)
    bitbucket.sandbox.delete_repo("demo", "api", fire=False)
    bitbucket.sandbox.faults.errors.append({"status": 500, "count": 100, "path": "/repositories/demo$"})
    # The first page succeeds (faults apply from the second request to the listing on).
    bitbucket.sandbox.faults.errors[0]["count"] = 100
    original = bitbucket.sandbox.faults.take
    calls = {"n": 0}

    def second_page_fails(bucket, path):
        if path == "/2.0/repositories/demo":
            calls["n"] += 1
            if calls["n"] == 1:
                return None
        return original(bucket, path)

    bitbucket.sandbox.faults.take = second_page_fails
    run = scan(integration)
    assert run.status == ScanStatus.FAILED
    assert "nothing was removed" in run.summary
    assert Project.objects.filter(integration=integration).count() == 150


def test_git_refused_falls_back_to_rest_and_says_so(bitbucket):
    integration = connect(credentials={"token": SANDBOX_READONLY_WORKSPACE_TOKEN}, verify=False)
    credential = bitbucket.sandbox.world.find_credential(SANDBOX_READONLY_WORKSPACE_TOKEN)
    credential.scopes = ["project", "repository:write"]  # REST reads via implication; git refuses
    original = bitbucket.sandbox._git

    def refuse(request):
        auth, response = original(request)
        response.status, response.body = 403, b"git access denied"
        return auth, response

    bitbucket.sandbox._git = refuse
    run = scan(integration)
    assert run.status == ScanStatus.SUCCEEDED
    assert (
        Reference.objects.filter(project__integration=integration, is_default=True).exclude(head_commit="").count()
        == 150
    )
    warning = SyncLog.objects.get(
        integration=integration,
        level="warning",
        category=Category.INSUFFICIENT_PERMISSIONS,
        message__startswith="git access",
    )
    assert "150 repositories" in warning.message
    assert run.rest_requests >= 150


def test_a_second_scan_while_one_runs_is_refused(bitbucket):
    integration = connect()
    first = scans.org_rescan_request(integration=integration, trigger="manual", actor=None)
    with pytest.raises(scans.ScanAlreadyRunning, match="already queued"):
        scans.org_rescan_request(integration=integration, trigger="api", actor=None)
    assert ScanRun.objects.filter(integration=integration).count() == 1
    scans.scan_run_execute(scan_run_id=first.pk)
    assert scans.scan_run_execute(scan_run_id=first.pk).status == ScanStatus.SUCCEEDED  # claimed once only
    scans.org_rescan_request(integration=integration, trigger="api", actor=None)


# --- Scheduling, commands, pruning --------------------------------------------------------------


def test_dispatcher_queues_due_integrations_skips_paused_and_fails_stale(bitbucket, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    due, paused, later = connect(name="due"), connect(name="paused"), connect(name="later")
    Integration.objects.filter(pk=paused.pk).update(status=IntegrationStatus.PAUSED)
    Integration.objects.filter(pk=later.pk).update(next_scan_at=timezone.now() + timedelta(hours=3))
    stale = ScanRun.objects.create(integration=later, trigger="schedule", status="running")
    ScanRun.objects.filter(pk=stale.pk).update(started_at=timezone.now() - timedelta(days=1))
    from scanning.models import PullRequest, PullRequestScan

    project = Project.objects.create(
        namespace=later.root_namespace, integration=later, name="r", slug="r", full_name="demo/r", remote_uuid="{r}"
    )
    pr = PullRequest.objects.create(project=project, remote_id=1, source_branch="f", destination_branch="main")
    stuck = PullRequestScan.objects.create(
        pull_request=pr,
        trigger="pullrequest:created",
        source_commit="a" * 12,
        status="running",
        started_at=timezone.now() - timedelta(days=1),
    )
    result = scans.scans_dispatch_due()
    assert result == {
        "queued": 1,
        "skipped": 0,
        "stale_failed": 2,
        "resumed": 1,
        "requeued": 0,
        "chunks_requeued": 0,
        "chunks_failed": 0,
        "chunk_runners_handed_out": 0,
        "chunked_scans_finished": 0,
    }
    stale.refresh_from_db()
    assert stale.status == "failed"
    assert "picks up where it stopped" in stale.summary
    assert ScanRun.objects.filter(integration=later, status="queued").count() == 1, "a new scan resumes the work"
    stuck.refresh_from_db()
    assert stuck.status == "error"
    assert "worker stopped" in stuck.description
    assert ScanRun.objects.get(integration=due).trigger == "schedule"
    assert not ScanRun.objects.filter(integration=paused).exists()
    due.refresh_from_db()
    assert due.next_scan_at > timezone.now() + timedelta(hours=23)


def test_next_scans_are_spread_out(db):
    import uuid
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    integrations = [connect(name=f"i{i}", verify=False) for i in range(5)]
    for i, integration in enumerate(integrations):  # fixed UUIDs: the test must not depend on chance
        integration.uuid = uuid.UUID(int=(i + 1) * 0x9E3779B97F4A7C15)
    times = {scans.next_scan_time(i, now) for i in integrations}
    assert len(times) == 5
    assert all(now + timedelta(hours=23) <= t <= now + timedelta(hours=24) for t in times)


def test_rescan_org_command_waits_prints_and_fails_properly(bitbucket, capsys):
    integration = connect(name="Demo WS")
    call_command("rescan_org", "Demo WS", "--wait")
    out = capsys.readouterr().out
    assert "succeeded" in out
    assert "REST requests" in out
    assert "150 created" in out
    call_command("rescan_org", str(integration.pk))
    assert "queued scan" in capsys.readouterr().out
    with pytest.raises(CommandError, match="did not succeed"):
        call_command("rescan_org", "--all", "--wait")
    assert "already queued" in capsys.readouterr().err
    with pytest.raises(CommandError, match="No integration"):
        call_command("rescan_org", "nope")
    with pytest.raises(CommandError, match="Name one integration"):
        call_command("rescan_org")
    ScanRun.objects.filter(status="queued").update(status="failed")
    bitbucket.sandbox.world.find_credential(SANDBOX_WORKSPACE_TOKEN).expired = True
    with pytest.raises(CommandError) as excinfo:
        call_command("rescan_org", "Demo WS", "--wait", "--tenant", integration.tenant.slug)
    assert excinfo.value.returncode == 1
    assert "failed" in capsys.readouterr().out


def test_old_sync_logs_are_pruned(db):
    from datetime import timedelta

    from django.utils import timezone

    from synclogs.services import sync_logs_prune

    integration = connect(verify=False)
    old = SyncLog.objects.create(integration=integration, category="unexpected", operation="sync", message="old")
    SyncLog.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=91))
    SyncLog.objects.create(integration=integration, category="unexpected", operation="sync", message="new")
    assert sync_logs_prune() == 1
    assert list(SyncLog.objects.values_list("message", flat=True)) == ["new"]


def test_schedules_exist_after_migrations(db):
    from django_q.models import Schedule

    assert set(Schedule.objects.values_list("name", "func")) >= {
        ("dispatch-due-scans", "scanning.tasks.dispatch_due_scans_task"),
        ("prune-sync-logs", "scanning.tasks.prune_sync_logs_task"),
    }


def test_a_changed_dispatch_interval_takes_effect_when_the_cluster_starts(db, settings):
    from unittest import mock

    from django_q.models import Schedule

    settings.SCAN_DISPATCH_MINUTES = 3
    with mock.patch("scanning.management.commands.qcluster.Cluster") as cluster:
        call_command("qcluster")  # the portal's: fixes the schedules, then starts django-q2's cluster
    assert cluster.return_value.start.called
    assert Schedule.objects.get(name="dispatch-due-scans").minutes == 3
    settings.SCAN_DISPATCH_MINUTES = 1
    call_command("migrate", verbosity=0)  # and after every migrate
    assert Schedule.objects.get(name="dispatch-due-scans").minutes == 1


def test_first_scan_starts_when_the_integration_is_created(bitbucket, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        integration = connect()
    run = ScanRun.objects.get(integration=integration)
    # Q_CLUSTER sync mode in tests: queued, then run by the task at commit.
    assert run.status == ScanStatus.SUCCEEDED
    assert Project.objects.filter(integration=integration).count() == 150


def test_test_configuration_records_verify_entries(bitbucket):
    integration = connect(scanners=["posture"], auth_method="api_token")
    bitbucket.sandbox.world.find_credential(SANDBOX_API_TOKEN).scopes.remove("admin:repository:bitbucket")
    report = scans.integration_test_configuration(integration=integration, actor=None)
    assert not report.ok
    entry = SyncLog.objects.get(integration=integration, operation="verify")
    assert entry.category == Category.INSUFFICIENT_PERMISSIONS
    assert "admin:repository:bitbucket" in entry.hint
