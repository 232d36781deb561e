"""The integration as people live with it, in a real browser: overlapping scopes refused by
name, bad credentials shown and kept out until confirmed, a broken integration fixed in one
click from its sync log entry, the overview's numbers equal to the lists they link to, and
every page at 1280 px and at 390 px without horizontal scrolling and without a single
Content-Security-Policy violation. Screenshots of every page at both widths go to
test-artifacts/browser/widths/."""

from __future__ import annotations

import re

import requests

from bitbucket_sandbox.data import SANDBOX_WORKSPACE_TOKEN
from integrations import services
from integrations.models import Integration, Project, Role
from scanning.models import ScanRun
from synclogs.models import SyncLog
from tests.browser.test_flow import ARTIFACTS, browser_page, launch, playwright_api, pytestmark  # noqa: F401
from tests.factories import NamespaceFactory, TenantFactory, UserFactory
from tests.helpers import connect, scan

WIDTHS = {"desktop": 1280, "phone": 390}


def sign_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def test_living_with_an_integration(live_server, bitbucket, browser_page, transactional_db):  # noqa: F811
    page = browser_page
    base = live_server.url
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    tenant = TenantFactory(name="Acme", slug="acme")
    owner = UserFactory(username="omar")
    owner.set_password("correct horse battery")
    owner.save()
    services.membership_set(tenant=tenant, user=owner, role=Role.OWNER, actor=None)
    parent = NamespaceFactory(tenant=tenant, name="Engineering", slug="engineering")
    integration = connect(tenant=tenant, name="Demo workspace", scanners=["dependencies", "posture"])
    integration.root_namespace.parent = parent
    integration.root_namespace.save()
    services.integration_update(
        integration=integration,
        actor=None,
        verify=False,
        pr_settings={"enabled": False, "deny_packages": [{"name": "event-stream", "range": ""}]},
    )
    assert scan(integration).status == "succeeded"
    sign_in(page, base, "omar")

    # A project inside the connected workspace: Verify refuses it, naming the integration.
    page.goto(f"{base}/integrations/bitbucket/add/")
    page.fill("#id_name", "Platform only")
    page.fill("#id_workspace", "demo")
    page.fill("#id_project_key", next(iter(bitbucket.sandbox.world.workspaces["demo"].projects)))
    page.select_option("#id_parent", label="Acme / Engineering")
    page.check("input[name=auth_method][value=access_token]")
    page.fill("#id_token", SANDBOX_WORKSPACE_TOKEN)
    page.click("button[value=verify]")
    assert "already covered by integration 'Demo workspace'" in page.content().replace("&#x27;", "'")
    assert "all required checks passed" not in page.content()
    assert Integration.objects.filter(tenant=tenant).count() == 1

    # Update credentials with a bad token: the report, nothing saved until confirmed.
    before = Integration.objects.get(pk=integration.pk).credentials.reveal()
    page.goto(f"{base}/integrations/bitbucket/{integration.pk}/credentials/")
    page.check("input[name=auth_method][value=access_token]")
    page.fill("#id_token", "ATCTT3xTypoInTheToken0000000000")
    page.click("button[value=save_rescan]")
    assert "Verification against Bitbucket: failed" in page.content()
    assert "ATCTT3xTypoInTheToken" not in page.content()
    assert Integration.objects.get(pk=integration.pk).credentials.reveal() == before
    page.screenshot(path=str(ARTIFACTS / "credentials-refused.png"), full_page=True)

    # The token expires in Bitbucket: the integration breaks; its page offers the fix in one click.
    requests.post(f"{bitbucket.web_url}/_sandbox/credentials/expire", json={"secret": SANDBOX_WORKSPACE_TOKEN})
    assert scan(Integration.objects.get(pk=integration.pk)).status == "failed"
    page.goto(f"{base}/integrations/bitbucket/{integration.pk}/sync-log/?state=open")
    page.locator("a.fix", has_text="Update credentials").first.click()
    page.wait_for_url(re.compile(r".*/credentials/$"))
    requests.post(f"{bitbucket.web_url}/_sandbox/credentials/restore", json={"secret": SANDBOX_WORKSPACE_TOKEN})
    page.check("input[name=auth_method][value=access_token]")
    page.fill("#id_token", SANDBOX_WORKSPACE_TOKEN)
    page.click("button[value=save_rescan]")  # verified, saved, and a scan asked for
    assert "verified and saved" in page.content()
    queued = ScanRun.objects.filter(integration=integration).order_by("-pk").first()
    if queued.status == "queued":  # (no task cluster in this test: run it here)
        from scanning.services import scan_run_execute

        scan_run_execute(scan_run_id=queued.pk)
    assert not SyncLog.objects.filter(integration=integration, resolved_at__isnull=True, level="error").exists()

    # The overview's numbers equal the lists they link to.
    page.goto(f"{base}/")
    repositories = int(page.locator("[data-figure=repositories]").inner_text())
    assert repositories == Project.objects.filter(integration=integration).count()
    denied = int(page.locator("[data-figure=denied]").inner_text())
    page.locator("a.tile", has=page.locator("[data-figure=denied]")).click()
    assert f"({denied} manifest and lock file row" in page.content()
    page.goto(f"{base}/")
    errors = int(page.locator("[data-figure=open-errors]").inner_text())
    page.locator("a.tile", has=page.locator("[data-figure=open-errors]")).click()
    assert page.locator("td[data-label=Category]").count() == errors

    # Every page, at both widths: no horizontal scrolling, no CSP violation; a screenshot each.
    project = Project.objects.filter(integration=integration).first()
    run = ScanRun.objects.filter(integration=integration).first()
    paths = {
        "overview": "/",
        "integrations": "/integrations/",
        "manage": "/integrations/bitbucket/",
        "add": "/integrations/bitbucket/add/",
        "integration": f"/integrations/bitbucket/{integration.pk}/",
        "edit": f"/integrations/bitbucket/{integration.pk}/edit/",
        "credentials": f"/integrations/bitbucket/{integration.pk}/credentials/",
        "delete": f"/integrations/bitbucket/{integration.pk}/delete/",
        "sync-log": f"/integrations/bitbucket/{integration.pk}/sync-log/",
        "sync-logs": "/sync-logs/",
        "scan": f"/scans/{run.pk}/",
        "namespaces": "/namespaces/",
        "projects": "/projects/",
        "project": f"/projects/{project.pk}/",
        "import": "/projects/add/",
        "packages": "/packages/?name=lodash",
        "posture": "/posture/",
        "vulnerabilities": "/vulnerabilities/",
        "pull-requests": "/pull-request-scans/",
        "account": "/account/",
    }
    out = ARTIFACTS / "widths"
    out.mkdir(parents=True, exist_ok=True)
    overflowing = []
    for label, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        for name, path in paths.items():
            page.goto(f"{base}{path}")
            scroll, client = page.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            if scroll > client:
                overflowing.append(f"{name} at {width} px: {scroll} > {client}")
            page.screenshot(path=str(out / f"{name}-{label}.png"), full_page=True)
    assert not overflowing, overflowing
    assert not violations, violations[:5]
