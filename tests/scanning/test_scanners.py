"""Scanners end to end against the sandbox: inventory, posture, incremental runs, failures, pacing."""

from __future__ import annotations

import pytest
from django.test import Client

from bitbucket_sandbox import generate
from bitbucket_sandbox.data import SANDBOX_API_TOKEN, SANDBOX_EMAIL
from integrations import services
from integrations.models import Project, Reference
from scanning.models import DependencyPackage, PostureFinding, PostureRule, ScannerState, ScanStatus
from synclogs.models import Category, SyncLog
from tests import helpers


@pytest.fixture
def sandbox_world():
    return generate(seed=5, workspaces=1, projects=2, repos=8, branches=2)


def connect(scanners, **credentials):
    return helpers.connect(
        name="Scanned",
        auth_method="api_token" if "email" in credentials else "access_token",
        credentials=credentials or None,
        scanners=scanners,
    )


scan = helpers.scan


def expected_manifests(repo):
    from scanning.manifests import parser_for

    head = repo.commits[repo.branches[repo.mainbranch]]
    return {p for p in head.files if parser_for(p)}


def test_dependency_inventory_per_reference(bitbucket):
    integration = connect(["dependencies"])
    run = scan(integration)
    assert run.status == ScanStatus.SUCCEEDED, run.summary
    ws = bitbucket.sandbox.world.workspaces["demo"]
    for repo in ws.repos.values():
        ref = Reference.objects.get(project__remote_uuid=repo.uuid, is_default=True)
        paths = set(DependencyPackage.objects.filter(reference=ref).values_list("manifest_path", flat=True))
        assert paths == expected_manifests(repo), repo.slug
        assert not any("node_modules" in p for p in paths)
    assert run.counts["dependencies scanner"]["references"] == len(ws.repos)
    # The project page shows them.
    from django.urls import reverse

    from tests.factories import UserFactory

    client = Client()
    client.force_login(UserFactory(username="staff", is_staff=True))
    api = Project.objects.get(full_name="demo/api")
    page = client.get(reverse("portal:project_detail", kwargs={"pk": api.pk})).content.decode()
    assert "Dependencies at the default branch" in page
    name = DependencyPackage.objects.filter(reference__project=api).values_list("name", flat=True).first()
    assert name
    assert name in page
    # And they go with the integration.
    services.integration_delete_request(integration=integration, actor=None)
    services.integration_purge(integration_id=integration.pk)
    assert not DependencyPackage.objects.exists()
    assert not ScannerState.objects.exists()


def test_unchanged_heads_scan_nothing_and_a_push_rescans_one_repository(bitbucket, count_writes):
    integration = connect(["dependencies"])
    scan(integration)
    before = len(bitbucket.sandbox.requests)
    with count_writes(("scanning_dependencypackage", "scanning_scannerstate")) as writes:
        run = scan(integration)
    assert writes.rows == 0
    assert run.rest_requests == 3
    assert "dependencies scanner" not in run.counts
    assert not [r for r in list(bitbucket.sandbox.requests)[before:] if "/src/" in r.path]
    repo = bitbucket.sandbox.world.workspaces["demo"].repos["api"]
    bitbucket.sandbox.push(
        "demo", "api", repo.mainbranch, files={"requirements.txt": "django==5.2.1\nrequests>=2\n"}, fire=False
    )
    run = scan(integration)
    assert run.counts["dependencies scanner"]["references"] == 1
    ref = Reference.objects.get(project__remote_uuid=repo.uuid, is_default=True)
    assert set(
        DependencyPackage.objects.filter(reference=ref, manifest_path="requirements.txt").values_list("name", "version")
    ) == {("django", "5.2.1"), ("requests", ">=2")}


def test_malformed_manifest_is_a_warning_with_its_path(bitbucket):
    integration = connect(["dependencies"])
    repo = bitbucket.sandbox.world.workspaces["demo"].repos["api"]
    bitbucket.sandbox.push("demo", "api", repo.mainbranch, files={"package.json": "{broken"}, fire=False)
    run = scan(integration)
    assert run.status == ScanStatus.SUCCEEDED
    warning = SyncLog.objects.get(integration=integration, level="warning", message__contains="package.json")
    assert "not valid JSON" in warning.message
    assert warning.project.full_name == "demo/api"
    assert DependencyPackage.objects.filter(reference__project__full_name="demo/web").exists()


def test_posture_findings_open_and_resolve(bitbucket, settings):
    integration = connect(["posture"])
    scan(integration)
    ws = bitbucket.sandbox.world.workspaces["demo"]
    for repo in ws.repos.values():
        project = Project.objects.get(remote_uuid=repo.uuid)
        open_rules = set(
            PostureFinding.objects.filter(project=project, resolved_at__isnull=True).values_list("rule", flat=True)
        )
        kinds = {r["kind"] for r in repo.restrictions}
        assert (PostureRule.FORCE_PUSH in open_rules) == ("force" not in kinds), repo.slug
        assert (PostureRule.PUBLIC in open_rules) == (not repo.is_private), repo.slug
        assert (PostureRule.NO_DEFAULT_REVIEWERS in open_rules) == (not repo.default_reviewers), repo.slug
    # Settings change without a push: posture is re-read once its results are older than the window.
    repo = next(r for r in ws.repos.values() if not any(x["kind"] == "force" for x in r.restrictions))
    repo.restrictions.append({"id": 99, "kind": "force", "pattern": repo.mainbranch, "branch_match_kind": "glob"})
    bitbucket.sandbox._changed()
    settings.POSTURE_MAX_AGE_HOURS = 0
    scan(integration)
    finding = PostureFinding.objects.get(project__remote_uuid=repo.uuid, rule=PostureRule.FORCE_PUSH)
    assert finding.resolved_at is not None
    assert finding.first_seen_at < finding.resolved_at


def test_missing_scope_is_a_warning_per_project_and_the_scan_goes_on(bitbucket):
    integration = connect(["posture"], email=SANDBOX_EMAIL, token=SANDBOX_API_TOKEN)
    bitbucket.sandbox.world.find_credential(SANDBOX_API_TOKEN).scopes.remove("admin:repository:bitbucket")
    run = scan(integration)
    assert run.status == ScanStatus.SUCCEEDED
    assert Project.objects.filter(integration=integration).count() == 8
    warnings = SyncLog.objects.filter(
        integration=integration, level="warning", category=Category.INSUFFICIENT_PERMISSIONS, project__isnull=False
    )
    assert warnings.count() == 8
    assert "admin:repository:bitbucket" in warnings.first().hint
    assert not ScannerState.objects.filter(ok=True).exists()


def test_scanners_pace_themselves_from_the_shared_budget_and_resume(bitbucket, settings):
    """Bitbucket allows 12 requests an hour here: the scanners stop before the 13th, leaving
    the reserve, never see a 429, and the next scan (brought forward to when the hour has
    room) resumes where they stopped."""
    from django.utils import timezone

    from integrations.models import RequestBucket

    bitbucket.sandbox.rate_limit = 12
    settings.BITBUCKET_REST_RESERVE = 2
    integration = connect(["posture"])
    first = scan(integration)
    assert first.status == ScanStatus.SUCCEEDED
    assert "Scanners paused" in first.summary
    done_first = first.counts["posture scanner"]["references"]
    assert 0 < done_first < 8
    assert not [r for r in bitbucket.sandbox.requests if r.status == 429]
    integration.refresh_from_db()
    assert integration.next_scan_at <= timezone.now() + timezone.timedelta(hours=1, minutes=1)
    paused = SyncLog.objects.get(integration=integration, category=Category.RATE_LIMITED)
    assert "resume by themselves" in paused.hint
    # The API and the integration's page say where the inventory and the account stand.
    from django.urls import reverse
    from rest_framework.test import APIClient

    from integrations.models import Role
    from tests.factories import TenantFactory, member

    viewer = member(integration.tenant, Role.VIEWER, username="reader")
    api = APIClient()
    api.force_authenticate(viewer)
    body = api.get(reverse("api:integration-inventory", args=[integration.pk])).json()
    assert body["scanners"]["posture"] == {
        "covered": done_first,
        "total": 8,
        "requests_per_repository": {"repositories": 2.0},
    }
    assert body["complete"] is False
    assert body["budget"]["repositories"]["limit"] == 12
    assert body["budget"]["repositories"]["limit_source"] == "bitbucket"
    assert body["budget"]["repositories"]["left"] <= settings.BITBUCKET_REST_RESERVE
    assert body["requests_needed"]["repositories"] == (8 - done_first) * 2
    assert body["eta_bitbucket_hours"] > 0
    assert body["eta"] is not None
    web = Client()
    web.force_login(viewer)
    page = web.get(reverse("portal:sync_log", args=[integration.pk])).content.decode()
    assert f"{done_first} of 8 repositories read at their current head" in page
    assert "of 12 used this hour" in page
    assert "Complete by" in page
    api.force_authenticate(member(TenantFactory(), Role.OWNER, username="outsider"))
    assert api.get(reverse("api:integration-inventory", args=[integration.pk])).status_code == 404
    # An hour later: Bitbucket's window and the portal's budget have both rolled over.
    bitbucket.sandbox.rate_windows.clear()
    RequestBucket.objects.all().delete()
    bitbucket.sandbox.rate_limit = 1000
    second = scan(integration)
    assert second.counts["posture scanner"]["references"] == 8 - done_first  # resumed, not restarted
    assert ScannerState.objects.filter(ok=True, scanner="posture").count() == 8


def test_package_search_csv_sbom_and_posture_pages(bitbucket, client):
    import csv
    import io
    import json

    from django.urls import reverse

    from integrations.models import Role
    from tests.factories import member

    integration = connect(["dependencies", "posture"])
    repo = bitbucket.sandbox.world.workspaces["demo"].repos["api"]
    bitbucket.sandbox.push(
        "demo",
        "api",
        repo.mainbranch,
        files={
            "package-lock.json": json.dumps(
                {
                    "lockfileVersion": 3,
                    "packages": {"": {"dependencies": {"lodash": "^4"}}, "node_modules/lodash": {"version": "4.17.20"}},
                }
            )
        },
        fire=False,
    )
    scan(integration)
    viewer = member(integration.tenant, Role.VIEWER, username="reader")
    client.force_login(viewer)
    page = client.get(reverse("portal:packages"), {"name": "lodash", "below": "4.17.21"}).content.decode()
    assert "demo/api" in page
    assert "4.17.20" in page
    assert (
        "demo/api" not in client.get(reverse("portal:packages"), {"name": "lodash", "below": "4.0.0"}).content.decode()
    )
    assert (
        "not a version"
        in client.get(reverse("portal:packages"), {"name": "lodash", "below": "latest"}).content.decode()
    )
    exported = client.get(reverse("portal:packages"), {"name": "lodash", "below": "4.17.21", "format": "csv"})
    rows = list(csv.reader(io.StringIO(b"".join(exported.streaming_content).decode())))
    assert rows[0][:4] == ["repository", "branch", "ecosystem", "package"]
    assert ["demo/api", repo.mainbranch, "npm", "lodash", "4.17.20"] in [r[:5] for r in rows]
    ref = Reference.objects.get(project__full_name="demo/api", is_default=True)
    sbom = json.loads(client.get(reverse("portal:reference_sbom", kwargs={"pk": ref.pk})).content)
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["specVersion"] == "1.6"
    lodash = next(c for c in sbom["components"] if c["name"] == "lodash" and c["version"] == "4.17.20")
    assert lodash["purl"] == "pkg:npm/lodash@4.17.20"
    assert lodash["scope"] == "required"
    posture = client.get(reverse("portal:posture")).content.decode()
    assert "8 repositories read by the posture scanner" in posture
    assert "Worst repositories first" in posture

    from rest_framework.test import APIClient

    from integrations.services import api_token_create

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=viewer, actor=viewer)}")
    found = api.get("/api/v1/packages/", {"name": "lodash", "below": "4.17.21"}).json()
    assert {r["repository"] for r in found} >= {"demo/api"}
    assert api.get("/api/v1/packages/").status_code == 400
    assert api.get(f"/api/v1/references/{ref.pk}/sbom/").json()["bomFormat"] == "CycloneDX"
    assert api.get("/api/v1/posture-findings/", {"state": "open"}).json()["count"] > 0


def test_scanner_work_comes_in_the_order_that_matters(db):
    """When the budget cannot cover everything: never-read repositories first, then the most
    recently pushed."""
    from datetime import timedelta

    from django.utils import timezone

    from scanning.models import ScannerState
    from scanning.scanners import REGISTRY, due
    from tests.factories import ProjectFactory, ReferenceFactory

    now = timezone.now()
    refs = []
    for name, pushed_hours_ago, scanned in (
        ("old", 72, True),
        ("new-quiet", 48, False),
        ("hot", 1, True),
        ("new-hot", 2, False),
        ("unknown", None, True),
    ):
        project = ProjectFactory(
            name=name, remote_updated_on=now - timedelta(hours=pushed_hours_ago) if pushed_hours_ago else None
        )
        ref = ReferenceFactory(project=project)
        if scanned:  # read before, at an older head: due again because the head moved
            ScannerState.objects.create(reference=ref, scanner="dependencies", commit="f" * 40, ok=True)
        refs.append(ref)
    order = [ref.project.name for ref, _ in due(refs, [REGISTRY["dependencies"]])]
    assert order == ["new-hot", "new-quiet", "hot", "old", "unknown"]


def test_a_push_makes_dependencies_due_but_not_posture(bitbucket):
    integration = connect(["dependencies", "posture"])
    scan(integration)
    repo = bitbucket.sandbox.world.workspaces["demo"].repos["api"]
    bitbucket.sandbox.push("demo", "api", repo.mainbranch, files={"requirements.txt": "rich==13.0.0\n"}, fire=False)
    second = scan(integration)
    assert second.counts["dependencies scanner"]["references"] == 1
    assert "posture scanner" not in second.counts  # repository settings: re-read by age, not by push
