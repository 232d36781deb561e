"""The portal's webhook is registered in Bitbucket while pull-request scans are on."""

from __future__ import annotations

import pytest

from bitbucket_sandbox import generate
from bitbucket_sandbox.data import SANDBOX_PROJECT_TOKEN, SANDBOX_WORKSPACE_TOKEN
from integrations import services
from scanning.hooks import EVENTS, webhooks_sync
from scanning.models import WebhookRegistration
from synclogs.models import SyncLog
from tests import helpers


@pytest.fixture
def sandbox_world():
    return generate(seed=3, workspaces=1, projects=2, repos=5, branches=2)


def connect(token=SANDBOX_WORKSPACE_TOKEN, project_key="", pr=True):
    return helpers.connect(
        name="PR", project_key=project_key, credentials={"token": token}, pr_settings={"enabled": pr}
    )


scan = helpers.scan


def test_workspace_hook_registered_with_secret_and_removed(bitbucket, settings, django_capture_on_commit_callbacks):
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    integration = connect()
    scan(integration)
    ws = bitbucket.sandbox.world.workspaces["demo"]
    (hook,) = ws.hooks.values()
    assert hook.url == f"https://portal.example.com/webhooks/bitbucket/{integration.uuid}/"
    assert hook.secret == integration.webhook_secret.reveal()
    assert set(hook.events) == set(EVENTS)
    assert WebhookRegistration.objects.get(integration=integration).subject == "workspace"
    before = len(bitbucket.sandbox.requests)
    scan(integration)  # idempotent: nothing registered twice; one read to see the hook is still there
    hook_calls = [(r.method, r.path) for r in list(bitbucket.sandbox.requests)[before:] if "/hooks" in r.path]
    assert len(ws.hooks) == 1
    assert hook_calls == [("GET", f"/2.0/workspaces/demo/hooks/{hook.uuid}")]
    # Someone removes it in Bitbucket: the next scan registers it again.
    ws.hooks.clear()
    scan(integration)
    assert len(ws.hooks) == 1
    assert WebhookRegistration.objects.get(integration=integration).hook_uuid != hook.uuid
    # Turning pull-request scans off removes it.
    with django_capture_on_commit_callbacks(execute=True):
        services.integration_update(integration=integration, actor=None, pr_settings={"enabled": False})
    assert not ws.hooks
    assert not WebhookRegistration.objects.exists()


def test_per_repository_hooks_when_the_credential_cannot_use_workspace_hooks(
    bitbucket, settings, django_capture_on_commit_callbacks
):
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    key = next(iter(bitbucket.sandbox.world.workspaces["demo"].projects))
    integration = connect(token=SANDBOX_PROJECT_TOKEN, project_key=key)
    scan(integration)
    repos = [r for r in bitbucket.sandbox.world.workspaces["demo"].repos.values() if r.project_key == key]
    assert all(len(r.hooks) == 1 for r in repos)
    assert not bitbucket.sandbox.world.workspaces["demo"].hooks
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
    assert "PORTAL_BASE_URL" in entry.hint
    assert not bitbucket.sandbox.world.workspaces["demo"].hooks


def test_nothing_happens_without_pull_request_scans(bitbucket, settings):
    settings.PORTAL_BASE_URL = "https://portal.example.com"
    integration = connect(pr=False)
    scan(integration)
    assert webhooks_sync(integration=integration) == "none wanted"
    assert not bitbucket.sandbox.world.workspaces["demo"].hooks


def test_rotating_the_secret_updates_the_hook_in_bitbucket_and_the_old_secret_has_a_grace_period(
    bitbucket, settings, client, django_capture_on_commit_callbacks
):
    import hashlib
    import hmac
    import json
    import uuid
    from datetime import timedelta

    from django.utils import timezone

    from integrations.models import Integration

    settings.PORTAL_BASE_URL = "https://portal.example.com"
    integration = connect()
    scan(integration)
    ws = bitbucket.sandbox.world.workspaces["demo"]
    (hook,) = ws.hooks.values()
    old = hook.secret
    with django_capture_on_commit_callbacks(execute=True):
        services.webhook_secret_rotate(integration=integration, actor=None)
    integration = Integration.objects.get(pk=integration.pk)
    new = integration.webhook_secret.reveal()
    assert new != old
    assert hook.secret == new, "Bitbucket's hook now signs with the new secret"
    assert len(ws.hooks) == 1
    assert hook.url.endswith(f"/webhooks/bitbucket/{integration.uuid}/")

    def deliver(secret):
        raw = json.dumps({"repository": {"uuid": "{x}"}}).encode()
        return client.post(
            f"/webhooks/bitbucket/{integration.uuid}/",
            raw,
            content_type="application/json",
            HTTP_X_EVENT_KEY="repo:fork",
            HTTP_X_REQUEST_UUID=str(uuid.uuid4()),
            HTTP_X_HUB_SIGNATURE="sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest(),
        )

    assert deliver(new).status_code == 202
    assert deliver(old).status_code == 202, "a delivery Bitbucket signed before the update is still accepted"
    Integration.objects.filter(pk=integration.pk).update(
        webhook_secret_previous_until=timezone.now() - timedelta(seconds=1)
    )
    assert deliver(old).status_code == 401, "after the grace period only the new secret counts"
    # The address moves (PORTAL_BASE_URL changed): the next scan updates the hook in place.
    settings.PORTAL_BASE_URL = "https://new-portal.example.com"
    scan(Integration.objects.get(pk=integration.pk))
    assert len(ws.hooks) == 1
    assert hook.url.startswith("https://new-portal.example.com/webhooks/bitbucket/")


def test_repository_hooks_are_updated_on_rotation_too(bitbucket, settings, django_capture_on_commit_callbacks):
    from integrations.models import Integration

    settings.PORTAL_BASE_URL = "https://portal.example.com"
    key = next(iter(bitbucket.sandbox.world.workspaces["demo"].projects))
    integration = connect(token=SANDBOX_PROJECT_TOKEN, project_key=key)
    scan(integration)
    with django_capture_on_commit_callbacks(execute=True):
        services.webhook_secret_rotate(integration=integration, actor=None)
    new = Integration.objects.get(pk=integration.pk).webhook_secret.reveal()
    repos = [r for r in bitbucket.sandbox.world.workspaces["demo"].repos.values() if r.project_key == key]
    assert repos
    assert all(h.secret == new for r in repos for h in r.hooks.values())


def test_a_credential_that_may_not_manage_hooks_is_asked_once(bitbucket, settings):
    from bitbucket_sandbox.data import SANDBOX_NO_WEBHOOK_TOKEN
    from integrations.models import Integration

    settings.PORTAL_BASE_URL = "https://portal.example.com"
    integration = connect(token=SANDBOX_NO_WEBHOOK_TOKEN)
    scan(integration)
    integration = Integration.objects.get(pk=integration.pk)
    assert "webhooks" in integration.refused_features
    (entry,) = SyncLog.objects.filter(integration=integration, operation="pr_scan")
    assert "webhook" in entry.message
    assert "stops asking" in entry.message
    before = len(bitbucket.sandbox.requests)
    run = scan(integration)  # an unchanged rescan: the pagination minimum, no hook calls
    calls = [r for r in list(bitbucket.sandbox.requests)[before:] if r.kind == "rest"]
    assert not [r for r in calls if "/hooks" in r.path]
    assert run.rest_requests == len(calls) == 3  # projects, repositories, members: nothing per repository
    # New credentials: asked again.
    services.credentials_update(
        integration=integration, auth_method="access_token", credentials={"token": SANDBOX_WORKSPACE_TOKEN}, actor=None
    )
    scan(Integration.objects.get(pk=integration.pk))
    assert len(bitbucket.sandbox.world.workspaces["demo"].hooks) == 1


def test_verification_names_the_write_scopes_pull_request_scans_need(bitbucket):
    from bitbucket_sandbox.data import SANDBOX_NO_WEBHOOK_TOKEN
    from integrations.bitbucket.credentials import Credentials
    from integrations.bitbucket.urls import parse_target
    from integrations.bitbucket.verify import verify_connection

    target = parse_target(workspace="demo")
    report = verify_connection(
        target=target, credentials=Credentials("access_token", "", SANDBOX_NO_WEBHOOK_TOKEN), pr_enabled=True
    )
    assert not report.ok
    failed = {c.name: c for c in report.failures()}
    assert set(failed) == {"Webhook registration"}
    assert "webhook" in failed["Webhook registration"].missing_scopes
    assert report.checks
    assert {c.name for c in report.checks} >= {"Build statuses", "Pull-request comments"}
    full = verify_connection(
        target=target, credentials=Credentials("access_token", "", SANDBOX_WORKSPACE_TOKEN), pr_enabled=True
    )
    assert full.ok, full.summary_lines()
    assert not bitbucket.sandbox.world.workspaces["demo"].hooks, "probes change nothing"
