"""The portal's webhook is registered in Bitbucket while pull-request scans are on."""

from __future__ import annotations

import pytest

from integrations import services
from scanning import services as scans
from scanning.hooks import EVENTS, webhooks_sync
from scanning.models import WebhookRegistration
from scanning.sandbox import generate
from scanning.sandbox.data import SANDBOX_PROJECT_TOKEN, SANDBOX_WORKSPACE_TOKEN
from synclogs.models import SyncLog
from tests.factories import NamespaceFactory, TenantFactory


@pytest.fixture
def sandbox_world():
    return generate(seed=3, workspaces=1, projects=2, repos=5, branches=2)


def connect(token=SANDBOX_WORKSPACE_TOKEN, project_key="", pr=True):
    tenant = TenantFactory()
    return services.integration_create(
        tenant=tenant, parent=NamespaceFactory(tenant=tenant), name="PR", workspace="demo", project_key=project_key,
        auth_method="access_token", credentials={"token": token}, actor=None, verify=False,
        pr_settings={"enabled": pr})


def scan(integration):
    run = scans.org_rescan_request(integration=integration, trigger="manual", actor=None)
    return scans.scan_run_execute(scan_run_id=run.pk)


def test_workspace_hook_registered_with_secret_and_removed(bitbucket, settings, django_capture_on_commit_callbacks):
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    integration = connect()
    scan(integration)
    ws = bitbucket.sandbox.world.workspaces["demo"]
    (hook,) = ws.hooks.values()
    assert hook.url == f"https://portal.example.com/webhooks/bitbucket/{integration.uuid}/"
    assert hook.secret == integration.webhook_secret.reveal() and set(hook.events) == set(EVENTS)
    assert WebhookRegistration.objects.get(integration=integration).subject == "workspace"
    before = len(bitbucket.sandbox.requests)
    scan(integration)  # idempotent: nothing registered twice; one read to see the hook is still there
    hook_calls = [(r.method, r.path) for r in list(bitbucket.sandbox.requests)[before:] if "/hooks" in r.path]
    assert len(ws.hooks) == 1 and hook_calls == [("GET", f"/2.0/workspaces/demo/hooks/{hook.uuid}")]
    # Someone removes it in Bitbucket: the next scan registers it again.
    ws.hooks.clear()
    scan(integration)
    assert len(ws.hooks) == 1 and WebhookRegistration.objects.get(integration=integration).hook_uuid != hook.uuid
    # Turning pull-request scans off removes it.
    with django_capture_on_commit_callbacks(execute=True):
        services.integration_update(integration=integration, actor=None, pr_settings={"enabled": False})
    assert not ws.hooks and not WebhookRegistration.objects.exists()


def test_per_repository_hooks_when_the_credential_cannot_use_workspace_hooks(bitbucket, settings,
                                                                             django_capture_on_commit_callbacks):
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    key = next(iter(bitbucket.sandbox.world.workspaces["demo"].projects))
    integration = connect(token=SANDBOX_PROJECT_TOKEN, project_key=key)
    scan(integration)
    repos = [r for r in bitbucket.sandbox.world.workspaces["demo"].repos.values() if r.project_key == key]
    assert all(len(r.hooks) == 1 for r in repos) and not bitbucket.sandbox.world.workspaces["demo"].hooks
    assert WebhookRegistration.objects.filter(integration=integration, subject="repository").count() == len(repos)
    # Deleting the integration removes them from Bitbucket too.
    with django_capture_on_commit_callbacks(execute=True):
        services.integration_delete_request(integration=integration, actor=None)
    assert all(not r.hooks for r in repos)
    assert not WebhookRegistration.objects.exists()


def test_missing_base_url_is_a_warning(bitbucket, settings):
    settings.PORTAL_BASE_URL = ""
    integration = connect()
    scan(integration)
    entry = SyncLog.objects.get(integration=integration, operation="pr_scan")
    assert "PORTAL_BASE_URL" in entry.hint and not bitbucket.sandbox.world.workspaces["demo"].hooks


def test_nothing_happens_without_pull_request_scans(bitbucket, settings):
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    integration = connect(pr=False)
    scan(integration)
    assert webhooks_sync(integration=integration) == "none wanted"
    assert not bitbucket.sandbox.world.workspaces["demo"].hooks
