"""The /api/v1/ API: every endpoint, role, tenancy boundary and error shape."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import get_resolver, reverse
from rest_framework.test import APIClient

from bitbucket_sandbox.data import SANDBOX_API_TOKEN_NO_ADMIN, SANDBOX_EMAIL, SANDBOX_WORKSPACE_TOKEN
from integrations import services
from integrations.models import Integration, IntegrationStatus, Role
from integrations.services import api_token_create
from scanning.models import PullRequest, PullRequestScan, ScanRun
from synclogs.models import SyncLog
from tests.factories import NamespaceFactory, ProjectFactory, ReferenceFactory, TenantFactory, make_integration, member


@pytest.fixture
def world(db):
    a, b = TenantFactory(slug="alpha"), TenantFactory(slug="beta")
    users = {role: member(a, role, username=f"{role}-a") for role in Role.values}
    users["outsider"] = member(b, Role.OWNER, username="owner-b")
    integration = make_integration(tenant=a, name="Alpha BB", workspace="demo")
    project = ProjectFactory(namespace=integration.root_namespace, integration=integration)
    ReferenceFactory(project=project)
    run = ScanRun.objects.create(integration=integration, trigger="manual", status="succeeded")
    log = SyncLog.objects.create(integration=integration, category="rate_limited", operation="sync", message="slow")
    free_ns = NamespaceFactory(tenant=a, name="Free")
    pr = PullRequest.objects.create(
        project=project,
        remote_id=4,
        title="Add left-pad",
        source_branch="feature/pad",
        destination_branch="main",
        source_commit="c" * 12,
    )
    pr_scan = PullRequestScan.objects.create(
        pull_request=pr,
        trigger="pullrequest:created",
        source_commit="c" * 12,
        status="passed",
        description="No policy violations",
    )
    return {
        "a": a,
        "b": b,
        "users": users,
        "integration": integration,
        "project": project,
        "run": run,
        "log": log,
        "reference": project.references.get(),
        "namespace": free_ns,
        "pr": pr,
        "pr_scan": pr_scan,
    }


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {user_token(user)}")
    return client


_tokens: dict[int, str] = {}


def user_token(user) -> str:
    """One API token per user for the test (tokens are stored hashed: keep the clear one)."""
    from knox.models import AuthToken

    if user.pk not in _tokens or not AuthToken.objects.filter(user=user).exists():
        _tokens[user.pk] = api_token_create(user=user, actor=user)
    return _tokens[user.pk]


def assert_error(response, status, code=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert {"code", "message"} <= set(body["error"])
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def test_unauthenticated_gets_401_in_the_error_shape(world):
    assert_error(APIClient().get("/api/v1/integrations/"), 401, "not_authenticated")
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token nope")
    assert_error(bad.get("/api/v1/integrations/"), 401)


def test_tokens_from_the_command_line(world, capsys):
    from knox.models import AuthToken

    user = world["users"]["viewer"]
    call_command("create_api_token", user.username)
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("bbp_")
    stored = AuthToken.objects.get(user=user)
    assert key not in (stored.digest, stored.token_key)  # only a digest and a short prefix are kept
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/tenants/").status_code == 200
    call_command("create_api_token", user.username)  # replaces it
    assert client.get("/api/v1/tenants/").status_code == 401


def test_reads_for_a_viewer(world):
    viewer = client_for(world["users"]["viewer"])
    tenants = viewer.get("/api/v1/tenants/").json()["results"]
    assert [(t["slug"], t["role"]) for t in tenants] == [("alpha", "viewer")]
    listed = viewer.get("/api/v1/integrations/").json()
    assert listed["count"] == 1
    item = listed["results"][0]
    assert item["name"] == "Alpha BB"
    assert item["open_errors"] == 1
    assert item["scope"] == "workspace"
    assert "credentials" not in item
    assert "webhook_secret" not in item
    assert "ATCTT3xTestToken" not in str(item)
    for path in ("namespaces", "projects", "references", "scans", "sync-logs"):
        assert viewer.get(f"/api/v1/{path}/").json()["count"] >= 1, path
    project = viewer.get(f"/api/v1/projects/{world['project'].pk}/").json()
    assert project["default_reference"]["name"] == "main"
    scan = viewer.get(f"/api/v1/scans/{world['run'].pk}/").json()
    assert scan["progress"] == {"done": 0, "total": 0, "percent": None}


def test_filters(world):
    c = client_for(world["users"]["viewer"])
    assert c.get("/api/v1/sync-logs/?state=open&category=rate_limited").json()["count"] == 1
    assert c.get("/api/v1/sync-logs/?state=resolved").json()["count"] == 0
    SyncLog.objects.filter(pk=world["log"].pk).update(created_at="2020-01-01T00:00:00Z")
    assert c.get("/api/v1/sync-logs/").json()["count"] == 0  # last 7 days by default
    assert c.get("/api/v1/sync-logs/?days=0").json()["count"] == 1
    assert c.get(f"/api/v1/projects/?search={world['project'].name[-3:]}").json()["count"] == 1
    assert c.get("/api/v1/projects/?search=zzz-none").json()["count"] == 0
    assert c.get("/api/v1/namespaces/?managed=true").json()["count"] == 1
    assert c.get("/api/v1/integrations/?status=paused").json()["count"] == 0
    assert_error(c.get("/api/v1/integrations/?status=bogus"), 400, "invalid")


@pytest.mark.parametrize("role,allowed", [("viewer", False), ("member", True), ("admin", True), ("owner", True)])
def test_rescan_needs_member(world, role, allowed):
    response = client_for(world["users"][role]).post(f"/api/v1/integrations/{world['integration'].pk}/rescan/")
    if allowed:
        assert response.status_code == 202
        assert response.json()["status"] == "queued"
        again = client_for(world["users"][role]).post(f"/api/v1/integrations/{world['integration'].pk}/rescan/")
        assert_error(again, 409, "scan_running")
    else:
        assert_error(response, 403, "permission_denied")


@pytest.mark.parametrize("role", ["viewer", "member"])
def test_writes_need_admin(world, role):
    c = client_for(world["users"][role])
    i = world["integration"].pk
    assert_error(c.patch(f"/api/v1/integrations/{i}/", {"description": "x"}, format="json"), 403)
    assert_error(c.delete(f"/api/v1/integrations/{i}/"), 403)
    assert_error(
        c.post(
            f"/api/v1/integrations/{i}/credentials/", {"auth_method": "access_token", "token": "x" * 20}, format="json"
        ),
        403,
    )
    assert_error(c.post(f"/api/v1/integrations/{i}/verify/"), 403)
    assert_error(c.post("/api/v1/namespaces/", {"name": "n"}, format="json"), 403)
    assert_error(c.delete(f"/api/v1/namespaces/{world['namespace'].pk}/"), 403)
    assert Integration.objects.get(pk=i).description == ""


def test_admin_edits_settings_and_the_url_stays(world):
    c = client_for(world["users"]["admin"])
    i = world["integration"].pk
    change = {"scanners": ["posture"], "scan_interval_hours": 6, "labels": ["prod"], "status": "paused"}
    # A new scanner is checked against Bitbucket first (unreachable for this test world): refused with
    # the report, nothing saved; saved when confirmed, with the report in the answer.
    err = assert_error(c.patch(f"/api/v1/integrations/{i}/", change, format="json"), 400, "verification_failed")
    assert err["verification"]["ok"] is False
    assert Integration.objects.get(pk=i).status == "active"
    ok = c.patch(f"/api/v1/integrations/{i}/", {**change, "confirm": True}, format="json")
    assert ok.status_code == 200
    assert ok.json()["verification"]["ok"] is False
    assert ok.json()["scanners"] == ["posture"]
    unchecked = c.patch(f"/api/v1/integrations/{i}/", {"scan_interval_hours": 6}, format="json")
    assert unchecked.json()["verification"] is None  # nothing new asked of Bitbucket: no checks
    assert ok.json()["scan_interval_hours"] == 6
    assert ok.json()["status"] == "paused"
    err = assert_error(
        c.patch(f"/api/v1/integrations/{i}/", {"bitbucket_url": "https://bitbucket.org/other"}, format="json"),
        400,
        "invalid",
    )
    assert "delete this integration and create a new one" in err["fields"]["bitbucket_url"][0]
    err = assert_error(c.patch(f"/api/v1/integrations/{i}/", {"scan_interval_hours": 0}, format="json"), 400)
    assert "scan_interval_hours" in err["fields"]
    err = assert_error(c.patch(f"/api/v1/integrations/{i}/", {"scanners": ["nope"]}, format="json"), 400)
    assert "Unknown scanner" in err["fields"]["scanners"][0]


def test_credentials_are_write_only(world):
    c = client_for(world["users"]["owner"])
    i = world["integration"].pk
    new = {"auth_method": "api_token", "email": "ops@example.com", "token": "ATATT3xBrandNewSecret9"}
    refused = c.post(f"/api/v1/integrations/{i}/credentials/", new, format="json")
    assert_error(refused, 400, "verification_failed")
    assert "ATATT3xBrandNewSecret9" not in refused.content.decode()
    response = c.post(f"/api/v1/integrations/{i}/credentials/", {**new, "confirm": True}, format="json")
    assert response.status_code == 200
    assert response.json()["verification"]["ok"] is False
    assert "ATATT3xBrandNewSecret9" not in response.content.decode()
    assert response.json()["auth_method"] == "api_token"
    assert response.json()["credential_identity"] == "ops@example.com"
    detail = c.get(f"/api/v1/integrations/{i}/").content.decode()
    assert "ATATT3xBrandNewSecret9" not in detail
    err = assert_error(
        c.post(
            f"/api/v1/integrations/{i}/credentials/",
            {"auth_method": "api_token", "token": "ATBB" + "x" * 28},
            format="json",
        ),
        400,
    )
    assert "2026-07-28" in err["fields"]["token"][0]
    assert "email" in err["fields"]


def test_delete_with_preview_then_for_real(world, django_capture_on_commit_callbacks):
    c = client_for(world["users"]["owner"])
    i = world["integration"].pk
    preview = c.delete(f"/api/v1/integrations/{i}/?dry_run=1")
    assert preview.status_code == 200
    assert preview.json()["preview"]["projects"] == 1
    assert Integration.objects.filter(pk=i).exists()
    with django_capture_on_commit_callbacks(execute=True):
        gone = c.delete(f"/api/v1/integrations/{i}/")
    assert gone.status_code == 202
    assert gone.json()["preview"]["references"] == 1
    assert c.get("/api/v1/integrations/").json()["count"] == 0
    assert not Integration.objects.filter(pk=i).exists()


def test_namespaces_crud_and_managed_refusals(world):
    c = client_for(world["users"]["admin"])
    created = c.post("/api/v1/namespaces/", {"name": "Platform Team", "parent": world["namespace"].pk}, format="json")
    assert created.status_code == 201
    assert created.json()["slug"] == "platform-team"
    ns_id = created.json()["id"]
    assert c.patch(f"/api/v1/namespaces/{ns_id}/", {"name": "Platform"}, format="json").json()["name"] == "Platform"
    root = world["integration"].root_namespace_id
    err = assert_error(c.patch(f"/api/v1/namespaces/{root}/", {"name": "x"}, format="json"), 400)
    assert "managed by integration" in err["message"]
    assert_error(c.delete(f"/api/v1/namespaces/{root}/"), 400)
    assert_error(c.post("/api/v1/namespaces/", {"name": "x", "parent": root}, format="json"), 400)
    assert_error(c.post("/api/v1/namespaces/", {"name": "x", "slug": "Bad Slug"}, format="json"), 400)
    assert c.delete(f"/api/v1/namespaces/{ns_id}/").status_code == 204


def test_create_verifies_and_reports_missing_scopes(world, bitbucket, django_capture_on_commit_callbacks):
    c = client_for(world["users"]["admin"])
    body = {
        "tenant": "alpha",
        "parent": world["namespace"].pk,
        "name": "Second",
        "workspace": "demo",
        "project_key": next(iter(bitbucket.sandbox.world.workspaces["demo"].projects)),
        "auth_method": "api_token",
        "email": SANDBOX_EMAIL,
        "token": SANDBOX_API_TOKEN_NO_ADMIN,
        "scanners": ["posture"],
    }
    # The world's integration connects all of workspace demo: the project is refused as covered.
    err = assert_error(c.post("/api/v1/integrations/", body, format="json"), 400, "invalid")
    assert "already covered by integration 'Alpha BB'" in err["fields"]["bitbucket_url"][0]
    services.integration_delete_request(integration=world["integration"], actor=None)
    err = assert_error(c.post("/api/v1/integrations/", body, format="json"), 400, "verification_failed")
    assert "admin:repository:bitbucket" in err["verification"]["missing_scopes"]
    assert SANDBOX_API_TOKEN_NO_ADMIN not in str(err)
    with django_capture_on_commit_callbacks(execute=True):
        ok = c.post(
            "/api/v1/integrations/",
            {**body, "auth_method": "access_token", "token": SANDBOX_WORKSPACE_TOKEN, "email": ""},
            format="json",
        )
    assert ok.status_code == 201, ok.content
    created = Integration.objects.get(pk=ok.json()["id"])
    assert created.scope == "project"
    assert ScanRun.objects.get(integration=created).status == "succeeded"
    verify = c.post(f"/api/v1/integrations/{created.pk}/verify/")
    assert verify.status_code == 200
    assert verify.json()["ok"] is True
    err = assert_error(c.post("/api/v1/integrations/", {"name": "x"}, format="json"), 400, "invalid")
    assert {"parent", "auth_method"} <= set(err["fields"])
    err = assert_error(c.post("/api/v1/integrations/", {**body, "tenant": "beta"}, format="json"), 400)
    assert "tenant" in err["fields"]


# --- Tenancy: every route, as a user of another tenant -----------------------------------------


def _detail_routes():
    """Every /api/v1/ route that takes an object id, with the methods it answers."""
    routes = []
    for pattern in get_resolver().url_patterns:
        if str(pattern.pattern) != "api/v1/":
            continue
        for sub in pattern.url_patterns:
            route = str(sub.pattern)
            if "<pk>" in route or "(?P<pk>" in route or "<int:pk>" in route:
                routes.append(sub)
    return routes


def test_every_api_route_answers_404_for_another_tenants_ids(world):
    outsider = client_for(world["users"]["outsider"])
    from scanning.models import PostureFinding

    finding = PostureFinding.objects.create(project=world["project"], rule="public_repository")
    from advisories.models import Advisory
    from scanning.models import DependencyPackage, PackageVulnerability

    package = DependencyPackage.objects.create(
        reference=world["reference"], ecosystem="npm", name="lodash", version="4.17.20", manifest_path="package.json"
    )
    advisory = Advisory.objects.create(osv_id="GHSA-35jh-r3h4-6jhm", ecosystem="npm", severity="high")
    vulnerability = PackageVulnerability.objects.create(package=package, advisory=advisory, fixed_version="4.17.21")
    ids = {
        "integration": world["integration"].pk,
        "namespace": world["integration"].root_namespace_id,
        "posturefinding": finding.pk,
        "project": world["project"].pk,
        "reference": world["reference"].pk,
        "scan": world["run"].pk,
        "synclog": world["log"].pk,
        "pullrequest": world["pr"].pk,
        "pullrequestscan": world["pr_scan"].pk,
        "tenant": world["a"].pk,
        "vulnerability": vulnerability.pk,
    }
    checked = 0
    for sub in _detail_routes():
        name = sub.name or ""
        base = name.rsplit("-", 1)[0] if name.endswith(("-detail", "-credentials")) else name.split("-")[0]
        pk = ids.get(base) or ids.get(name.split("-")[0])
        assert pk is not None, f"{name}: add an object of this kind to the tenancy walk"
        url = reverse(f"api:{name}", kwargs={"pk": pk})
        for method in ("get", "patch", "delete", "post"):
            response = getattr(outsider, method)(url, {}, format="json")
            if response.status_code == 405:
                continue
            assert_error(response, 404, "not_found")
            checked += 1
    assert checked >= 15
    for path in (
        "integrations",
        "namespaces",
        "projects",
        "references",
        "scans",
        "sync-logs",
        "pull-requests",
        "pull-request-scans",
    ):
        assert outsider.get(f"/api/v1/{path}/?days=0").json()["count"] == 0, path
    assert Integration.objects.get(pk=world["integration"].pk).status == IntegrationStatus.ACTIVE


def test_staff_see_every_tenant(world, superuser):
    c = client_for(superuser)
    assert {t["slug"] for t in c.get("/api/v1/tenants/").json()["results"]} == {"alpha", "beta"}
    assert c.get(f"/api/v1/integrations/{world['integration'].pk}/").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "integrations",
        "namespaces",
        "projects",
        "references",
        "scans",
        "sync-logs",
        "tenants",
        "pull-requests",
        "pull-request-scans",
    ],
)
def test_list_endpoints_run_a_constant_number_of_queries(world, path):
    c = client_for(world["users"]["viewer"])

    def count():
        with CaptureQueriesContext(connection) as ctx:
            assert c.get(f"/api/v1/{path}/").status_code == 200
        return len(ctx)

    small = count()
    for i in range(5):
        integration = make_integration(tenant=world["a"], name=f"more {i}", workspace=f"ws-more-{i}")
        project = ProjectFactory(namespace=integration.root_namespace, integration=integration)
        ReferenceFactory(project=project)
        ScanRun.objects.create(integration=integration, trigger="api", status="failed")
        SyncLog.objects.create(integration=integration, category="unexpected", operation="sync", message="m")
        pr = PullRequest.objects.create(project=project, remote_id=i + 1, source_branch="f", destination_branch="main")
        PullRequestScan.objects.create(pull_request=pr, trigger="rerun", source_commit="d" * 12)
    assert count() == small


def test_pull_requests_and_their_scans(world):
    viewer = client_for(world["users"]["viewer"])
    listing = viewer.get(f"/api/v1/pull-requests/?project={world['project'].pk}&state=OPEN").json()
    assert listing["count"] == 1
    assert listing["results"][0]["latest_scan"] == {
        "id": world["pr_scan"].pk,
        "status": "passed",
        "description": "No policy violations",
    }
    scan = viewer.get(f"/api/v1/pull-request-scans/{world['pr_scan'].pk}/").json()
    assert scan["pull_request"] == world["pr"].pk
    assert scan["page_url"].endswith(f"/pull-request-scans/{world['pr_scan'].pk}/")
    assert viewer.get("/api/v1/pull-request-scans/?status=failed").json()["count"] == 0
    assert_error(viewer.get("/api/v1/pull-request-scans/?status=bogus"), 400)
    rescan = f"/api/v1/pull-requests/{world['pr'].pk}/rescan/"
    assert_error(viewer.post(rescan), 403)
    # PR scans are off for this integration: a clear 409, nothing queued.
    error = assert_error(client_for(world["users"]["member"]).post(rescan), 409, "not_scannable")
    assert "pull-request scans are off" in error["message"]
    assert PullRequestScan.objects.count() == 1
    integration = world["integration"]
    integration.pr_settings = {**integration.pr_settings, "enabled": True}
    integration.save()
    response = client_for(world["users"]["member"]).post(rescan)
    assert response.status_code == 202
    assert response.json()["trigger"] == "api"


def test_pr_settings_are_validated(world):
    admin = client_for(world["users"]["admin"])
    url = f"/api/v1/integrations/{world['integration'].pk}/"
    bad = admin.patch(
        url, {"pr_settings": {"deny_packages": [{"name": "lodash", "range": "4.x or so"}]}}, format="json"
    )
    assert "not a version range in any ecosystem's syntax" in assert_error(bad, 400)["fields"]["pr_settings"][0]
    # npm's own syntax is accepted (the range is read in each package's ecosystem's syntax).
    npm = admin.patch(url, {"pr_settings": {"deny_packages": [{"name": "lodash", "range": "^4.0"}]}}, format="json")
    assert npm.status_code == 200
    bad = admin.patch(url, {"pr_settings": {"enabled": "yes"}}, format="json")
    assert "enabled must be true or false" in assert_error(bad, 400)["fields"]["pr_settings"][0]
    good = admin.patch(
        url, {"pr_settings": {"deny_packages": [{"name": "lodash", "range": "<4.17.21"}]}}, format="json"
    )
    assert good.status_code == 200
    assert good.json()["pr_settings"]["deny_packages"][0]["range"] == "<4.17.21"


def test_schema_and_docs(world, client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/integrations/{id}/rescan/" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    page = docs.content.decode()
    # Swagger UI from the portal itself (drf-spectacular-sidecar), never a CDN.
    assert "cdn.jsdelivr.net" not in page
    assert "unpkg.com" not in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
