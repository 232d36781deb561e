import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from integrations.models import Integration, IntegrationStatus, Namespace
from scanning.models import PullRequest, PullRequestScan, ScanRun, WebhookDelivery, WebhookRegistration
from synclogs.models import SyncLog
from tests.factories import NamespaceFactory, ProjectFactory, ReferenceFactory, make_integration

TOKEN = "ATCTT3xAdminSecret0042"


@pytest.fixture
def populated(tenant, superuser):
    integration = make_integration(tenant=tenant, name="Acme", workspace="acme", credentials={"token": TOKEN})
    project = ProjectFactory(namespace=integration.root_namespace, integration=integration)
    ReferenceFactory(project=project)
    pr = PullRequest.objects.create(project=project, remote_id=3, source_branch="f", destination_branch="main")
    PullRequestScan.objects.create(pull_request=pr, trigger="pullrequest:created", source_commit="b" * 12)
    WebhookDelivery.objects.create(integration=integration, request_uuid="r-1", event_key="repo:push", body="{}")
    WebhookRegistration.objects.create(integration=integration, subject="workspace", hook_uuid="{h}")
    ScanRun.objects.create(integration=integration, trigger="manual", status="succeeded")
    SyncLog.objects.create(integration=integration, category="rate_limited", operation="sync", message="slow down")
    return integration


def all_admin_urls(obj_for_model):
    urls = []
    for model, model_admin in admin.site._registry.items():
        info = model._meta.app_label, model._meta.model_name
        urls.append(reverse("admin:%s_%s_changelist" % info))
        if model_admin.has_add_permission.__func__ is not admin.ModelAdmin.has_add_permission:
            pass
        obj = obj_for_model(model)
        if obj is not None:
            urls.append(reverse("admin:%s_%s_change" % info, args=[obj.pk]))
    return urls


def test_every_admin_page_renders_and_shows_no_secret(staff_client, populated):
    secret = Integration.objects.get(pk=populated.pk).webhook_secret.reveal()
    urls = all_admin_urls(lambda model: model._default_manager.first())
    urls += [
        reverse("admin:integrations_integration_add"),
        reverse("admin:integrations_integration_credentials", args=[populated.pk]),
        reverse("admin:integrations_integration_delete", args=[populated.pk]),
        reverse("admin:integrations_namespace_add"),
    ]
    for url in urls:
        response = staff_client.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        assert TOKEN not in body, url
        assert secret not in body, url
        assert populated.credentials.ciphertext not in body, url


@pytest.mark.parametrize(
    "model_name,make",
    [
        ("integration", lambda t, i: make_integration(tenant=t)),
        ("namespace", lambda t, i: NamespaceFactory(tenant=t)),
        ("project", lambda t, i: ProjectFactory(namespace=i.root_namespace, integration=i)),
        ("reference", lambda t, i: ReferenceFactory(project=ProjectFactory(namespace=i.root_namespace, integration=i))),
        ("membership", None),
        ("auditevent", None),
    ],
)
def test_changelist_queries_do_not_grow_with_rows(staff_client, tenant, populated, model_name, make):
    app = "integrations"
    url = reverse(f"admin:{app}_{model_name}_changelist")

    def count():
        with CaptureQueriesContext(connection) as ctx:
            assert staff_client.get(url).status_code == 200
        return len(ctx)

    def add_rows(n):
        for _ in range(n):
            if make is not None:
                make(tenant, populated)
            else:
                from tests.factories import member

                member(tenant)

    add_rows(2)
    small = count()
    add_rows(15)
    assert count() == small


@pytest.mark.parametrize(
    "url_name,model", [("scanning_scanrun_changelist", ScanRun), ("synclogs_synclog_changelist", SyncLog)]
)
def test_log_changelists_are_constant_too(staff_client, populated, url_name, model):
    url = reverse(f"admin:{url_name}")

    def count():
        with CaptureQueriesContext(connection) as ctx:
            staff_client.get(url)
        return len(ctx)

    small = count()
    for _ in range(10):
        if model is ScanRun:
            ScanRun.objects.create(integration=populated, trigger="cli", status="failed")
        else:
            SyncLog.objects.create(integration=populated, category="unexpected", operation="sync", message="m")
    assert count() == small


def test_add_integration_through_the_admin(staff_client, tenant, bitbucket):
    from bitbucket_sandbox.data import SANDBOX_API_TOKEN_NO_ADMIN, SANDBOX_EMAIL, SANDBOX_WORKSPACE_TOKEN

    parent = NamespaceFactory(tenant=tenant)
    url = reverse("admin:integrations_integration_add")
    bad = staff_client.post(
        url,
        {
            "name": "",
            "bitbucket_url": f"{bitbucket.web_url}/acme/repo",
            "parent": parent.pk,
            "auth_method": "api_token",
            "email": "x",
            "token": TOKEN,
            "scan_interval_hours": 24,
        },
    )
    assert bad.status_code == 200
    body = bad.content.decode()
    assert "URL of a repository" in body
    assert "Atlassian account email" in body
    assert TOKEN not in body  # the secret is not echoed back into the form
    assert Integration.objects.count() == 0

    # Verification against Bitbucket: a token without a scope the posture scanner needs.
    refused = staff_client.post(
        url,
        {
            "name": "Acme",
            "workspace": "demo",
            "parent": parent.pk,
            "auth_method": "api_token",
            "email": SANDBOX_EMAIL,
            "token": SANDBOX_API_TOKEN_NO_ADMIN,
            "scan_interval_hours": 12,
            "scanners": ["posture"],
        },
    )
    body = refused.content.decode()
    assert refused.status_code == 200
    assert "verification failed" in body
    assert "admin:repository:bitbucket" in body
    assert SANDBOX_API_TOKEN_NO_ADMIN not in body
    assert Integration.objects.count() == 0

    ok = staff_client.post(
        url,
        {
            "name": "Acme",
            "workspace": "demo",
            "parent": parent.pk,
            "auth_method": "access_token",
            "token": SANDBOX_WORKSPACE_TOKEN,
            "scan_interval_hours": 12,
            "scanners": ["posture"],
            "labels": "prod, eu",
            "pr_target_branches": "main",
        },
    )
    assert ok.status_code == 302
    integration = Integration.objects.get()
    assert integration.root_namespace.parent == parent
    assert integration.scanners == ["posture"]
    assert integration.labels == ["eu", "prod"]


def test_edit_credentials_and_delete_through_the_admin(staff_client, populated, django_capture_on_commit_callbacks):
    change = reverse("admin:integrations_integration_change", args=[populated.pk])
    page = staff_client.get(change).content.decode()
    assert populated.bitbucket_url in page
    assert "delete this integration and create a new one" in page
    response = staff_client.post(
        change,
        {
            "name": "Acme",
            "status": "paused",
            "scan_interval_hours": 48,
            "scanners": ["dependencies"],
            "pr_target_branches": "*",
            "pr_deny_packages": "lodash <4.17.21\nevent-stream",
            "confirm_failed": "on",  # a new scanner: checked against Bitbucket, which this test site cannot reach
        },
    )
    assert response.status_code == 302
    populated.refresh_from_db()
    assert populated.status == "paused"
    assert populated.scan_interval.total_seconds() == 48 * 3600
    assert populated.pr_settings["deny_packages"] == [
        {"name": "lodash", "range": "<4.17.21"},
        {"name": "event-stream", "range": ""},
    ]

    creds = reverse("admin:integrations_integration_credentials", args=[populated.pk])
    refused = staff_client.post(
        creds, {"auth_method": "api_token", "email": "ops@example.com", "token": "ATATT3xReplacement77"}
    ).content.decode()
    assert "Bitbucket verification failed; nothing was saved" in refused
    assert "ATATT3xReplacement77" not in refused
    response = staff_client.post(
        creds,
        {
            "auth_method": "api_token",
            "email": "ops@example.com",
            "token": "ATATT3xReplacement77",
            "confirm_failed": "on",
        },
    )
    assert response.status_code == 302
    populated.refresh_from_db()
    assert populated.auth_method == "api_token"
    assert populated.credential_identity == "ops@example.com"

    delete = reverse("admin:integrations_integration_delete", args=[populated.pk])
    page = staff_client.get(delete).content.decode()
    assert "<li>1 repository</li>" in page
    assert "<li>1 tracked branch</li>" in page
    assert "scanner states" not in page  # bookkeeping rows are not listed
    assert "only the webhook the portal registered" in page
    wrong = staff_client.post(delete, {"confirm_name": "acme"})
    assert "Type &#x27;Acme&#x27; exactly" in wrong.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(delete, {"confirm_name": "Acme"})
    assert response.status_code == 302
    assert not Integration.objects.filter(pk=populated.pk).exists()  # the queue ran the purge (sync mode)


def test_deleting_integrations_are_hidden_in_the_admin(staff_client, populated):
    Integration.objects.filter(pk=populated.pk).update(status=IntegrationStatus.DELETING)
    body = staff_client.get(reverse("admin:integrations_integration_changelist")).content.decode()
    assert "Acme" not in body
    assert staff_client.get(reverse("admin:integrations_integration_change", args=[populated.pk])).status_code == 404


def test_managed_namespace_is_read_only_in_the_admin(staff_client, populated):
    root = populated.root_namespace
    page = staff_client.get(reverse("admin:integrations_namespace_change", args=[root.pk])).content.decode()
    assert "managed by integration" in page
    assert 'name="name"' not in page
    response = staff_client.post(
        reverse("admin:integrations_namespace_delete", args=[root.pk]), {"post": "yes"}, follow=True
    )
    assert "cannot be deleted" in response.content.decode()
    assert Namespace.objects.filter(pk=root.pk).exists()
    # The bulk action refuses with the reason.
    response = staff_client.post(
        reverse("admin:integrations_namespace_changelist"),
        {"action": "delete_namespaces", "_selected_action": [root.pk]},
        follow=True,
    )
    assert "managed by integration" in response.content.decode()
    assert Namespace.objects.filter(pk=root.pk).exists()
