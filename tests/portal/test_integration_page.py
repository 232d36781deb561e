"""The integration page (health, progress by phase, history, webhook, budget, members,
actions) and errors one click from their fix, against the sandbox."""

from __future__ import annotations

import pytest
import requests
from django.urls import reverse

from bitbucket_sandbox.data import SANDBOX_WORKSPACE_TOKEN
from integrations.models import Role
from scanning.models import ScanRun
from scanning.selectors import scan_phases
from synclogs.models import SyncLog
from tests.factories import member
from tests.helpers import connect, scan

pytestmark = pytest.mark.django_db


def test_integration_page_shows_health_history_and_the_fix_of_a_broken_credential(client, bitbucket):
    integration = connect(scanners=["dependencies"])
    admin = member(integration.tenant, Role.ADMIN, username="page-admin")
    viewer = member(integration.tenant, Role.VIEWER, username="page-viewer")
    good = scan(integration)
    assert good.status == "succeeded"
    client.force_login(admin)
    url = reverse("portal:integration_detail", kwargs={"pk": integration.pk})
    page = client.get(url).content.decode()
    assert "Healthy: the last scan succeeded." in page
    assert f"#{good.pk}" in page
    assert "UTC" in page  # absolute times carry their zone
    assert "Dependencies scanner" in page  # progress by phase, with coverage
    assert reverse("bitbucket-webhook", args=[integration.uuid]) in page
    secret = integration.webhook_secret.reveal()
    assert secret in page  # admins see the webhook secret
    assert "Members from Bitbucket (" in page
    assert "Test configuration" in page
    assert "REST (/repositories)" in page  # the account's request budget

    # The token expires in Bitbucket: the scan fails and the page says so, with the fix as a button.
    requests.post(f"{bitbucket.web_url}/_sandbox/credentials/expire", json={"secret": SANDBOX_WORKSPACE_TOKEN})
    failed = scan(integration)
    assert failed.status == "failed"
    page = client.get(url).content.decode()
    assert "The last scan failed" in page
    fix = reverse("portal:bitbucket_credentials", kwargs={"pk": integration.pk})
    assert f'<a class="button primary" href="{fix}">Update credentials</a>' in page
    log = client.get(reverse("portal:sync_log", kwargs={"pk": integration.pk})).content.decode()
    assert f'href="{fix}">Update credentials</a>' in log

    # Viewers see health and history, but neither the secret nor admin fixes.
    client.force_login(viewer)
    page = client.get(url).content.decode()
    assert secret not in page
    assert fix not in page

    # Fixed in Bitbucket, rescanned: the entry is resolved and looks it.
    requests.post(f"{bitbucket.web_url}/_sandbox/credentials/restore", json={"secret": SANDBOX_WORKSPACE_TOKEN})
    assert scan(integration).status == "succeeded"
    assert not SyncLog.objects.filter(integration=integration, resolved_at__isnull=True, level="error").exists()
    client.force_login(admin)
    log = client.get(reverse("portal:sync_log", kwargs={"pk": integration.pk})).content.decode()
    assert '<tr class="resolved">' in log
    assert f'href="{fix}">Update credentials</a>' not in log  # nothing to fix any more


def test_test_configuration_from_the_integration_page(client, bitbucket):
    integration = connect(scanners=["posture"])
    client.force_login(member(integration.tenant, Role.ADMIN, username="tester"))
    page = client.post(reverse("portal:integration_test", kwargs={"pk": integration.pk})).content.decode()
    assert "Verification against Bitbucket: all required checks passed" in page


def test_phases_follow_a_scan_from_the_listing_to_each_scanner(bitbucket):
    integration = connect(scanners=["dependencies", "posture"])
    queued = ScanRun.objects.create(integration=integration, trigger="manual", status="queued")
    phases = scan_phases(run=queued)
    assert [p["name"] for p in phases] == [
        "Listing repositories and branch heads",
        "Dependencies scanner",
        "Posture scanner",
    ]
    assert {p["state"] for p in phases} == {"waiting"}
    queued.delete()
    run = scan(integration)
    phases = scan_phases(run=run)
    assert all(p["state"] == "done" for p in phases)
    listing = phases[0]
    assert listing["done"] == listing["total"] > 0
    assert phases[1]["done"] == phases[1]["total"] == listing["total"]
