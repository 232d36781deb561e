"""The self-service pages: roles, tenancy, forms, and each flow."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import get_resolver, reverse

from bitbucket_sandbox.data import SANDBOX_API_TOKEN_NO_ADMIN, SANDBOX_EMAIL, SANDBOX_WORKSPACE_TOKEN
from integrations import services
from integrations.models import Integration, IntegrationStatus, Namespace, Project, Role
from scanning.models import PullRequest, PullRequestScan, ScanRun
from synclogs.models import SyncLog
from tests.factories import NamespaceFactory, ProjectFactory, ReferenceFactory, TenantFactory, make_integration, member


@pytest.fixture
def site(db):
    a, b = TenantFactory(name="Alpha", slug="alpha"), TenantFactory(name="Beta", slug="beta")
    users = {role: member(a, role, username=f"{role}-a") for role in Role.values}
    users["outsider"] = member(b, Role.OWNER, username="owner-b")
    parent = NamespaceFactory(tenant=a, name="Engineering", slug="engineering")
    integration = make_integration(tenant=a, parent=parent, name="Alpha BB", workspace="demo")
    project = ProjectFactory(
        namespace=integration.root_namespace, integration=integration, name="api", full_name="demo/api"
    )
    ReferenceFactory(project=project)
    run = ScanRun.objects.create(integration=integration, trigger="manual", status="failed")
    pr = PullRequest.objects.create(
        project=project,
        remote_id=7,
        title="Bump lodash",
        source_branch="feature/x",
        destination_branch="main",
        source_commit="a" * 12,
    )
    pr_scan = PullRequestScan.objects.create(
        pull_request=pr,
        trigger="pullrequest:created",
        source_commit="a" * 12,
        status="failed",
        description="1 policy violation(s): lodash 4.17.20",
        violations=[
            {
                "check": "dependencies",
                "rule": "deny_list",
                "message": "lodash 4.17.20 is denied.",
                "path": "package.json",
            }
        ],
    )
    SyncLog.objects.create(
        integration=integration,
        category="invalid_credentials",
        operation="sync",
        message="Bitbucket rejected the credentials",
        status_code=401,
        method="GET",
        path="/2.0/workspaces/demo/projects",
        hint="Create a new access token",
    )
    return {
        "a": a,
        "b": b,
        "users": users,
        "integration": integration,
        "project": project,
        "parent": parent,
        "run": run,
        "pr": pr,
        "pr_scan": pr_scan,
    }


def login(client, user):
    client.force_login(user)
    return client


def portal_routes():
    """Every portal URL pattern: (name, takes_pk)."""
    routes = []
    for pattern in get_resolver().url_patterns:
        if getattr(pattern, "namespace", None) == "portal":
            for sub in pattern.url_patterns:
                routes.append((sub.name, "<int:pk>" in str(sub.pattern)))
    return routes


def test_every_page_needs_a_login(client, site):
    for name, takes_pk in portal_routes():
        url = reverse(f"portal:{name}", kwargs={"pk": 1} if takes_pk else None)
        response = client.get(url)
        assert response.status_code in (302, 405), name
        if response.status_code == 302:
            assert response.url.startswith(reverse("login")), name


def test_every_page_answers_404_for_another_tenants_ids(client, site):
    login(client, site["users"]["outsider"])
    ids = {
        "bitbucket": site["integration"].pk,
        "rescan": site["integration"].pk,
        "integration": site["integration"].pk,
        "sync_log": site["integration"].pk,
        "scan_detail": site["run"].pk,
        "namespace_delete": site["parent"].pk,
        "project_detail": site["project"].pk,
        "reference": site["project"].references.get().pk,
        "pr_scan": site["pr_scan"].pk,
        "pr_rescan": site["pr"].pk,
    }
    checked = 0
    for name, takes_pk in portal_routes():
        if not takes_pk:
            continue
        pk = next(v for k, v in ids.items() if name.startswith(k))
        url = reverse(f"portal:{name}", kwargs={"pk": pk})
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            if response.status_code == 405:
                continue
            assert response.status_code == 404, (name, method, response.status_code)
            checked += 1
    assert checked >= 9
    assert "Alpha BB" not in client.get(reverse("portal:bitbucket_manage")).content.decode()
    assert client.get(reverse("portal:projects")).content.decode().count("demo/api") == 0
    assert Integration.objects.get(pk=site["integration"].pk).status == IntegrationStatus.ACTIVE
    assert Namespace.objects.filter(pk=site["parent"].pk).exists()


@pytest.mark.parametrize("role,status", [("viewer", 403), ("member", 403), ("admin", 200), ("owner", 200)])
def test_admin_pages_need_admin(client, site, role, status):
    login(client, site["users"][role])
    i = site["integration"].pk
    for name in ("bitbucket_credentials", "bitbucket_edit", "bitbucket_delete"):
        assert client.get(reverse(f"portal:{name}", kwargs={"pk": i})).status_code == status, name
    assert client.get(reverse("portal:bitbucket_add")).status_code == status
    assert client.get(reverse("portal:project_import")).status_code == status


@pytest.mark.parametrize("role,allowed", [("viewer", False), ("member", True), ("admin", True)])
def test_rescan_needs_member_and_refuses_overlap(client, site, role, allowed):
    login(client, site["users"][role])
    url = reverse("portal:rescan", kwargs={"pk": site["integration"].pk})
    response = client.post(url, follow=True)
    if not allowed:
        assert response.status_code == 403
        assert ScanRun.objects.count() == 1
        return
    assert "Rescan of" in response.content.decode()
    again = client.post(url, follow=True).content.decode()
    assert "already queued" in again
    assert ScanRun.objects.count() == 2


def test_viewer_sees_everything_read_only(client, site):
    login(client, site["users"]["viewer"])
    page = client.get(reverse("portal:bitbucket_manage")).content.decode()
    assert "Alpha BB" in page
    assert "View Sync Log" in page
    assert "Update Credentials" not in page
    assert "Delete Integration" not in page
    assert "Add integration" not in page
    for name in ("integrations", "namespaces", "projects", "sync_logs", "account"):
        assert client.get(reverse(f"portal:{name}")).status_code == 200, name
    assert client.get(reverse("portal:project_detail", kwargs={"pk": site["project"].pk})).status_code == 200
    assert client.get(reverse("portal:scan_detail", kwargs={"pk": site["run"].pk})).status_code == 200


def test_manage_page_columns_and_menu(client, site):
    login(client, site["users"]["owner"])
    page = client.get(reverse("portal:bitbucket_manage")).content.decode()
    for text in (
        "Alpha BB",
        "workspace",
        "demo",
        "Access token",
        "Active",
        "failed",
        "Update Credentials",
        "Edit Integration",
        "View Sync Log",
        "Delete Integration",
        "Add integration",
        "Rescan all integrations",
        "Rescan this integration",
        "Test configuration",
        "Scan More Repositories",
    ):
        assert text in page, text
    assert '?state=open">1</a>' in page  # one open error, linked to the sync log


@pytest.mark.parametrize("name", ["bitbucket_manage", "projects", "namespaces", "sync_logs"])
def test_list_pages_run_a_constant_number_of_queries(client, site, name):
    login(client, site["users"]["viewer"])
    url = reverse(f"portal:{name}")

    def count():
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        return len(ctx)

    small = count()
    for i in range(4):
        integration = make_integration(tenant=site["a"], name=f"More {i}", workspace=f"more-{i}")
        ReferenceFactory(project=ProjectFactory(namespace=integration.root_namespace, integration=integration))
        SyncLog.objects.create(integration=integration, category="unexpected", operation="sync", message="m")
        ScanRun.objects.create(integration=integration, trigger="manual", status="succeeded")
    assert count() == small


def test_add_rejects_bad_input_next_to_fields_and_never_echoes_secrets(client, site, bitbucket):
    login(client, site["users"]["admin"])
    url = reverse("portal:bitbucket_add")
    response = client.post(
        url,
        {
            "action": "create",
            "name": "",
            "bitbucket_url": f"{bitbucket.web_url}/demo/api",
            "parent": site["parent"].pk,
            "auth_method": "api_token",
            "email": "nope",
            "token": "ATBB" + "x" * 28,
            "scan_interval_hours": 24,
        },
    )
    page = response.content.decode()
    assert page.count('class="field-error"') >= 3
    assert "URL of a repository" in page
    assert "2026-07-28" in page
    assert "ATBB" + "x" * 28 not in page
    assert Integration.objects.filter(tenant=site["a"]).count() == 1


def test_verify_then_start_scanning_without_retyping_the_token(
    client, site, bitbucket, django_capture_on_commit_callbacks
):
    login(client, site["users"]["admin"])
    url = reverse("portal:bitbucket_add")
    base = {
        "name": "Second",
        "workspace": "demo",
        "project_key": next(iter(bitbucket.sandbox.world.workspaces["demo"].projects)),
        "parent": site["parent"].pk,
        "scan_interval_hours": 24,
        "scanners": ["posture"],
    }
    # The site's integration connects all of workspace demo: a project inside it is refused by
    # Verify itself, before Bitbucket is asked, naming the integration and what to do.
    covered = client.post(
        url, {**base, "action": "verify", "auth_method": "access_token", "token": SANDBOX_WORKSPACE_TOKEN}
    ).content.decode()
    assert "already covered by integration &#x27;Alpha BB&#x27;" in covered
    assert "all required checks passed" not in covered
    services.integration_delete_request(integration=site["integration"], actor=None)  # "delete one of them"
    missing = client.post(
        url,
        {
            **base,
            "action": "verify",
            "auth_method": "api_token",
            "email": SANDBOX_EMAIL,
            "token": SANDBOX_API_TOKEN_NO_ADMIN,
        },
    ).content.decode()
    assert "Missing scopes: admin:repository:bitbucket" in missing
    assert SANDBOX_API_TOKEN_NO_ADMIN not in missing
    verified = client.post(
        url, {**base, "action": "verify", "auth_method": "access_token", "token": SANDBOX_WORKSPACE_TOKEN}
    ).content.decode()
    assert "all required checks passed" in verified
    assert SANDBOX_WORKSPACE_TOKEN not in verified
    assert "kept (encrypted) for this form" in verified
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post(url, {**base, "action": "create", "auth_method": "access_token", "token": ""}, follow=True)
    assert "The first scan has started" in done.content.decode()
    created = Integration.objects.get(name="Second")
    assert ScanRun.objects.get(integration=created).status == "succeeded"
    assert Project.objects.filter(integration=created).exists()


def test_credentials_page_never_shows_the_secret(client, site):
    login(client, site["users"]["owner"])
    url = reverse("portal:bitbucket_credentials", kwargs={"pk": site["integration"].pk})
    page = client.get(url).content.decode()
    assert site["integration"].bitbucket_url in page
    assert "delete this integration and create a new one" in page
    secret = Integration.objects.get(pk=site["integration"].pk).credentials.reveal()
    assert "ATCTT3xTestToken" not in page
    assert secret not in page
    bad = client.post(url, {"auth_method": "oauth", "key": "", "secret": "short"}).content.decode()
    assert "Enter the OAuth consumer key" in bad
    assert "too short" in bad
    # Bitbucket cannot confirm them (the test site's workspace is not reachable): refused with the
    # report, nothing saved, the secret kept encrypted for the confirmation and never echoed.
    refused = client.post(url, {"auth_method": "oauth", "key": "consumer", "secret": "s" * 30}).content.decode()
    assert "Bitbucket verification failed; nothing was saved" in refused
    assert "Save anyway" in refused
    assert "s" * 30 not in refused
    assert Integration.objects.get(pk=site["integration"].pk).auth_method != "oauth"
    ok = client.post(
        url,
        {"auth_method": "oauth", "key": "consumer", "secret": "", "confirm_failed": "on", "action": "save"},
        follow=True,
    )
    assert "saved although verification failed" in ok.content.decode()
    assert Integration.objects.get(pk=site["integration"].pk).auth_method == "oauth"


def test_edit_page_saves_settings(client, site):
    login(client, site["users"]["admin"])
    url = reverse("portal:bitbucket_edit", kwargs={"pk": site["integration"].pk})
    assert "apply from the next scan" in client.get(url).content.decode()
    bad = client.post(url, {"name": "Alpha BB", "status": "active", "scan_interval_hours": 0}).content.decode()
    assert "field-error" in bad
    client.post(
        url,
        {
            "name": "Alpha BB",
            "status": "paused",
            "scan_interval_hours": 12,
            "scanners": ["dependencies"],
            "tracked_branches": "release/*, develop",
            "pr_enabled": "on",
            "pr_target_branches": "main",
            "pr_deny_packages": "lodash <4.17.21",
            "confirm_failed": "on",  # the new scanner and PR scans cannot be checked against this test site
        },
    )
    integration = Integration.objects.get(pk=site["integration"].pk)
    assert integration.status == "paused"
    assert integration.tracked_branches == ["develop", "release/*"]
    assert integration.pr_settings["enabled"]
    assert integration.pr_settings["deny_packages"][0]["name"] == "lodash"
    # A range the policy cannot read is refused with the line and the reason; nothing is lost.
    bad = client.post(
        url,
        {
            "name": "Alpha BB",
            "status": "paused",
            "scan_interval_hours": 12,
            "pr_deny_packages": "lodash <4.17.21\nminimist about 1.2",
        },
    ).content.decode()
    assert "Line 2 (minimist)" in bad
    assert "not a version range in any ecosystem" in bad
    assert "lodash &lt;4.17.21" in bad
    assert Integration.objects.get(pk=integration.pk).pr_settings["deny_packages"] == [
        {"name": "lodash", "range": "<4.17.21"}
    ]


def test_delete_page_previews_and_needs_the_name(client, site, django_capture_on_commit_callbacks):
    login(client, site["users"]["owner"])
    url = reverse("portal:bitbucket_delete", kwargs={"pk": site["integration"].pk})
    page = client.get(url).content.decode()
    assert "<li>1 repository</li>" in page
    assert "<li>1 tracked branch</li>" in page
    assert "scanner states" not in page  # bookkeeping rows are not listed
    assert "only the webhook the portal registered" in page
    assert "field-error" in client.post(url, {"confirm_name": "wrong"}).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url, {"confirm_name": "Alpha BB"})
    assert not Integration.objects.filter(pk=site["integration"].pk).exists()
    assert not Project.objects.filter(pk=site["project"].pk).exists()


def test_sync_log_page_filters_and_chart(client, site):
    login(client, site["users"]["viewer"])
    url = reverse("portal:sync_log", kwargs={"pk": site["integration"].pk})
    page = client.get(url).content.decode()
    for text in (
        "Bitbucket rejected the credentials",
        "401",
        "GET /2.0/workspaces/demo/projects",
        "Create a new access token",
        "open",
        "Scans per day",
    ):
        assert text in page, text
    assert "Bitbucket rejected" not in client.get(url + "?state=resolved").content.decode()
    assert "Bitbucket rejected" not in client.get(url + "?category=rate_limited").content.decode()
    assert "Bitbucket rejected" in client.get(reverse("portal:sync_logs")).content.decode()
    progress = client.get(reverse("portal:scan_progress")).json()["scans"]
    assert progress == [
        {
            "integration": site["integration"].pk,
            "scan": site["run"].pk,
            "status": "failed",
            "active": False,
            "done": 0,
            "total": 0,
            "finished_at": None,
            "summary": "",
            "phases": [],
        }
    ]


def test_namespaces_tree_add_and_delete(client, site):
    login(client, site["users"]["admin"])
    url = reverse("portal:namespaces")
    page = client.get(url).content.decode()
    assert "Managed by" in page  # the lock icon's label
    assert "managed by <a href=" in page
    assert ">Alpha BB</a>" in page
    bad = client.post(url, {"name": "Bad", "slug": "Bad Slug"}).content.decode()
    assert "not a valid slug" in bad
    client.post(url, {"name": "Team X", "parent": site["parent"].pk})
    created = Namespace.objects.get(name="Team X")
    assert created.parent == site["parent"]
    refused = client.post(
        reverse("portal:namespace_delete", kwargs={"pk": site["integration"].root_namespace_id}), follow=True
    )
    assert refused.status_code == 404 or "managed" in refused.content.decode()
    client.post(reverse("portal:namespace_delete", kwargs={"pk": created.pk}))
    assert not Namespace.objects.filter(pk=created.pk).exists()


def test_projects_search_and_detail(client, site):
    login(client, site["users"]["viewer"])
    assert "demo/api" in client.get(reverse("portal:projects") + "?q=api").content.decode()
    assert "demo/api" not in client.get(reverse("portal:projects") + "?q=zzz").content.decode()
    detail = client.get(reverse("portal:project_detail", kwargs={"pk": site["project"].pk})).content.decode()
    assert "main" in detail
    assert "default" in detail


def test_scan_more_repositories(client, site, bitbucket):
    login(client, site["users"]["admin"])
    url = reverse("portal:project_import")
    free = NamespaceFactory(tenant=site["a"], name="Hand picked", slug="hand-picked")
    from integrations import services

    refused = client.post(
        url, {"url": f"{bitbucket.web_url}/demo/web", "namespace": free.pk, "integration": site["integration"].pk}
    ).content.decode()
    assert "Bitbucket refused" in refused  # the factory's token means nothing to Bitbucket
    services.credentials_update(
        integration=site["integration"],
        auth_method="access_token",
        credentials={"token": SANDBOX_WORKSPACE_TOKEN},
        actor=None,
    )
    bad = client.post(
        url,
        {"url": f"{bitbucket.web_url}/demo/no-such-repo", "namespace": free.pk, "integration": site["integration"].pk},
    ).content.decode()
    assert "was not found" in bad
    managed = client.post(
        url,
        {
            "url": f"{bitbucket.web_url}/demo/web",
            "namespace": site["integration"].root_namespace_id,
            "integration": site["integration"].pk,
        },
    ).content.decode()
    assert "field-error" in managed  # managed namespaces are not offered
    done = client.post(
        url,
        {"url": f"{bitbucket.web_url}/demo/web", "namespace": free.pk, "integration": site["integration"].pk},
        follow=True,
    )
    assert "Added demo/web" in done.content.decode()
    project = Project.objects.get(namespace=free)
    repo = bitbucket.sandbox.world.workspaces["demo"].repos["web"]
    assert project.references.get(is_default=True).head_commit == repo.branches[repo.mainbranch]


def test_account_token_create_and_revoke(client, site):
    from knox.models import AuthToken

    from integrations.models import AuditEvent

    user = site["users"]["viewer"]
    login(client, user)
    response = client.post(reverse("portal:account"), {"action": "create"})
    page = response.content.decode()
    assert "no-store" in response["Cache-Control"]  # a page showing a secret is never cached
    key = re.search(r"bbp_[A-Za-z0-9]+", page).group(0)  # shown once, to its owner, at creation
    stored = AuthToken.objects.get(user=user)
    assert key != stored.digest
    assert key not in str(stored.__dict__.values())
    assert key not in client.get(reverse("portal:account")).content.decode()
    client.post(reverse("portal:account"), {"action": "revoke"})
    assert not AuthToken.objects.filter(user=user).exists()
    actions = list(AuditEvent.objects.filter(target_id=str(user.pk)).values_list("action", flat=True))
    assert actions.count("api_token.create") == 1
    assert actions.count("api_token.revoke") == 1
    assert all(key not in str(details) for details in AuditEvent.objects.values_list("details", flat=True))


def test_tenant_switcher(client, site):
    user = site["users"]["owner"]
    other = TenantFactory(name="Gamma", slug="gamma")
    member_of = member(other, Role.VIEWER, username="x")  # noqa: F841 - another user in gamma
    from integrations import services

    services.membership_set(tenant=other, user=user, role=Role.VIEWER, actor=None)
    login(client, user)
    assert "Alpha BB" in client.get(reverse("portal:bitbucket_manage")).content.decode()
    client.post(reverse("portal:tenant_switch"), {"tenant": other.pk})
    page = client.get(reverse("portal:bitbucket_manage")).content.decode()
    assert "Alpha BB" not in page
    assert "No Bitbucket Cloud integration yet" in page
    assert client.post(reverse("portal:tenant_switch"), {"tenant": site["b"].pk}).status_code == 404


def test_webhook_secret_only_for_admins_and_rotation(client, site):
    secret = Integration.objects.get(pk=site["integration"].pk).webhook_secret.reveal()
    edit = reverse("portal:bitbucket_edit", kwargs={"pk": site["integration"].pk})
    login(client, site["users"]["member"])
    assert client.get(edit).status_code == 403
    for name in ("bitbucket_manage", "sync_logs", "projects", "namespaces"):
        assert secret not in client.get(reverse(f"portal:{name}")).content.decode()
    login(client, site["users"]["admin"])
    assert secret in client.get(edit).content.decode()
    client.post(reverse("portal:bitbucket_webhook_secret", kwargs={"pk": site["integration"].pk}))
    rotated = Integration.objects.get(pk=site["integration"].pk).webhook_secret.reveal()
    assert rotated != secret
    assert rotated in client.get(edit).content.decode()


def test_pull_request_scans_on_the_project_page_and_their_own_page(client, site):
    login(client, site["users"]["viewer"])
    pr, scan = site["pr"], site["pr_scan"]
    pr.web_url = "https://bitbucket.org/demo/api/pull-requests/7"
    pr.save()
    page = client.get(reverse("portal:project_detail", kwargs={"pk": site["project"].pk})).content.decode()
    assert "#7 Bump lodash" in page
    assert reverse("portal:pr_scan_detail", kwargs={"pk": scan.pk}) in page
    assert pr.web_url in page
    assert "1 policy violation(s)" in page
    detail = client.get(reverse("portal:pr_scan_detail", kwargs={"pk": scan.pk})).content.decode()
    assert "lodash 4.17.20 is denied." in detail
    assert "Denied package" in detail
    assert "Scan again" not in detail, "viewers cannot start scans"
    assert client.post(reverse("portal:pr_rescan", kwargs={"pk": pr.pk})).status_code == 403

    login(client, site["users"]["member"])
    assert "Scan again" in client.get(reverse("portal:pr_scan_detail", kwargs={"pk": scan.pk})).content.decode()
    response = client.post(reverse("portal:pr_rescan", kwargs={"pk": pr.pk}), follow=True)
    assert "Not scanned: pull-request scans are off." in response.content.decode()
    site["integration"].pr_settings = {**site["integration"].pr_settings, "enabled": True}
    site["integration"].save()
    response = client.post(reverse("portal:pr_rescan", kwargs={"pk": pr.pk}))
    newest = pr.scans.order_by("-id").first()
    assert newest.trigger == "manual"
    assert response.url == reverse("portal:pr_scan_detail", kwargs={"pk": newest.pk})
    from integrations.models import AuditEvent

    event = AuditEvent.objects.get(action="pull_request.scan")
    assert event.actor == site["users"]["member"]
    assert event.details["scan"] == newest.pk
    assert event.details["forced"] is True
