"""Verify everywhere: new credentials and new settings are checked against Bitbucket (the
sandbox) before they are saved, on every interface, and a failing check is saved only when
someone confirms it."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from bitbucket_sandbox.data import (
    SANDBOX_NO_WEBHOOK_TOKEN,
    SANDBOX_READONLY_WORKSPACE_TOKEN,
    SANDBOX_WORKSPACE_TOKEN,
)
from integrations import services
from integrations.models import AuditEvent, Integration, Role
from scanning.models import ScanRun
from tests.factories import member
from tests.helpers import connect

pytestmark = pytest.mark.django_db


def _stored_secret(integration: Integration) -> str:
    return Integration.objects.get(pk=integration.pk).credentials.reveal()


def test_credentials_that_fail_a_required_check_are_refused_until_confirmed(bitbucket):
    integration = connect(scanners=["posture"])
    before = _stored_secret(integration)
    # A typo: Bitbucket rejects it. Nothing is saved.
    with pytest.raises(services.VerificationFailed) as typo:
        services.credentials_update(
            integration=integration,
            auth_method="access_token",
            credentials={"token": "ATCTT3xTypoTypoTypoTypo0000000"},
            actor=None,
        )
    assert not typo.value.report.ok
    assert "ATCTT3xTypo" not in str(typo.value.report.as_dict())
    assert _stored_secret(integration) == before
    # A read-only token: the posture scanner's scope is named.
    with pytest.raises(services.VerificationFailed) as read_only:
        services.credentials_update(
            integration=integration,
            auth_method="access_token",
            credentials={"token": SANDBOX_READONLY_WORKSPACE_TOKEN},
            actor=None,
        )
    assert "repository:admin" in read_only.value.report.missing_scopes
    assert _stored_secret(integration) == before
    # Saved when someone confirms it, and the audit trail says so (never the secret).
    report = services.credentials_update(
        integration=integration,
        auth_method="access_token",
        credentials={"token": SANDBOX_READONLY_WORKSPACE_TOKEN},
        actor=None,
        confirmed=True,
    )
    assert not report.ok
    assert SANDBOX_READONLY_WORKSPACE_TOKEN in _stored_secret(integration)
    event = AuditEvent.objects.filter(action="integration.credentials_update").latest("pk")
    assert event.details["verified"] is False
    assert "repository:admin" in event.details["missing_scopes"]
    assert SANDBOX_READONLY_WORKSPACE_TOKEN not in str(event.details)


def test_good_credentials_are_saved_and_save_and_rescan_starts_a_scan(bitbucket, django_capture_on_commit_callbacks):
    integration = connect(scanners=["dependencies"])
    with django_capture_on_commit_callbacks(execute=True):
        report = services.credentials_update(
            integration=integration,
            auth_method="access_token",
            credentials={"token": SANDBOX_WORKSPACE_TOKEN},
            actor=None,
            rescan=True,
        )
    assert report.ok
    assert ScanRun.objects.filter(integration=integration).count() == 1


def test_new_scanners_and_pull_request_scans_are_checked_against_the_stored_credentials(bitbucket):
    integration = connect(credentials={"token": SANDBOX_NO_WEBHOOK_TOKEN})
    # Pull-request scans need the webhook scope this token lacks: refused, nothing saved.
    with pytest.raises(services.VerificationFailed) as refused:
        services.integration_update(integration=integration, actor=None, pr_settings={"enabled": True})
    assert "webhook" in refused.value.report.missing_scopes
    assert not Integration.objects.get(pk=integration.pk).pr_config["enabled"]
    # Confirmed: saved, with the report.
    report = services.integration_update(
        integration=integration, actor=None, pr_settings={"enabled": True}, confirmed=True
    )
    assert not report.ok
    assert Integration.objects.get(pk=integration.pk).pr_config["enabled"]
    # A scanner this token can serve: only it is checked (the gap confirmed above is not asked
    # again), and it passes. A change that asks nothing new of Bitbucket runs no checks.
    report = services.integration_update(integration=integration, actor=None, scanners=["dependencies"])
    assert report.ok
    assert "Webhook registration" not in {c.name for c in report.checks}
    assert services.integration_update(integration=integration, actor=None, labels=["prod"]) is None


def test_update_credentials_page_shows_the_report_and_needs_confirmation(client, bitbucket):
    integration = connect(scanners=["posture"])
    user = member(integration.tenant, Role.ADMIN, username="admin-creds")
    client.force_login(user)
    url = reverse("portal:bitbucket_credentials", kwargs={"pk": integration.pk})
    before = _stored_secret(integration)
    page = client.post(
        url, {"auth_method": "access_token", "token": SANDBOX_READONLY_WORKSPACE_TOKEN, "action": "save_rescan"}
    ).content.decode()
    assert "Verification against Bitbucket: failed" in page
    assert "Missing scopes: repository:admin" in page
    assert "Save anyway" in page
    assert SANDBOX_READONLY_WORKSPACE_TOKEN not in page
    assert _stored_secret(integration) == before
    # The secret was kept (encrypted) for the confirmation: it need not be typed again.
    done = client.post(
        url, {"auth_method": "access_token", "token": "", "confirm_failed": "on", "action": "save"}, follow=True
    ).content.decode()
    assert "saved although verification failed" in done
    assert SANDBOX_READONLY_WORKSPACE_TOKEN in _stored_secret(integration)
    # Good credentials, "Save and rescan" (the primary action): verified, saved, a scan asked for.
    good = client.post(
        url, {"auth_method": "access_token", "token": SANDBOX_WORKSPACE_TOKEN, "action": "save_rescan"}, follow=True
    ).content.decode()
    assert "verified and saved. A scan has started with them." in good


def test_api_returns_the_report_for_credentials_and_settings(bitbucket):
    integration = connect()
    owner = member(integration.tenant, Role.OWNER, username="owner-api")
    api = APIClient()
    api.force_authenticate(owner)
    url = f"/api/v1/integrations/{integration.pk}/credentials/"
    read_only = api.post(url, {"auth_method": "access_token", "token": SANDBOX_READONLY_WORKSPACE_TOKEN}, format="json")
    assert read_only.status_code == 200  # nothing this integration does needs more than reading
    assert read_only.json()["verification"]["ok"] is True
    settings_change = api.patch(f"/api/v1/integrations/{integration.pk}/", {"scanners": ["posture"]}, format="json")
    assert settings_change.status_code == 400
    body = settings_change.json()["error"]
    assert body["code"] == "verification_failed"
    assert "repository:admin" in body["verification"]["missing_scopes"]
    ok = api.post(url, {"auth_method": "access_token", "token": SANDBOX_WORKSPACE_TOKEN}, format="json")
    assert ok.json()["verification"]["ok"] is True
    assert SANDBOX_WORKSPACE_TOKEN not in ok.content.decode()
    changed = api.patch(f"/api/v1/integrations/{integration.pk}/", {"scanners": ["posture"]}, format="json")
    assert changed.status_code == 200
    assert changed.json()["verification"]["ok"] is True
