"""The whole "manage Bitbucket Cloud" flow in a real browser (Playwright + Debian's chromium).

Screenshots of the main pages are kept in test-artifacts/browser/. Skips, with the
reason shown, where Playwright or chromium is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from bitbucket_sandbox.data import (
    SANDBOX_API_TOKEN,
    SANDBOX_API_TOKEN_NO_ADMIN,
    SANDBOX_EMAIL,
    SANDBOX_WORKSPACE_TOKEN,
)
from integrations import services
from integrations.models import Integration, Namespace, Project, Role
from synclogs.models import SyncLog
from tests.factories import NamespaceFactory, TenantFactory, UserFactory

CHROMIUM = os.environ.get("PORTAL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [
    pytest.mark.skipif(
        not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists(),
        reason=f"no chromium at {CHROMIUM} (apt-get install chromium)",
    ),
    pytest.mark.browser,
]


FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def launch(playwright):
    """Debian's chromium with the flags this closed network needs (never a downloaded browser)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


@pytest.fixture
def browser_page(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # are synchronous. Scoped to the test, so it never leaks into other tests' processes.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20000)
        page.on("dialog", lambda dialog: dialog.accept())  # confirm() prompts: yes
        yield page
        browser.close()
        # While Playwright's loop runs, Django keeps the test's database connection in
        # context-local storage, out of reach once the loop is gone: close it here, or
        # PostgreSQL's test database is still in use when pytest-django drops it.
        from django.db import connections

        connections.close_all()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def row_menu(page, name: str, item: str) -> None:
    row = page.locator("tr", has_text=name)
    row.locator("summary").click()
    row.locator(".menu-items").get_by_text(item, exact=True).click()


def test_the_whole_flow(live_server, bitbucket, browser_page, transactional_db):
    page = browser_page
    tenant = TenantFactory(name="Acme", slug="acme")
    NamespaceFactory(tenant=tenant, name="Engineering", slug="engineering")
    owner = UserFactory(username="olivia")
    owner.set_password("correct horse battery")
    owner.save()
    services.membership_set(tenant=tenant, user=owner, role=Role.OWNER, actor=None)
    base = live_server.url

    # Sign in.
    page.goto(f"{base}/")
    page.fill("#id_username", "olivia")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")
    assert page.locator(".error").is_visible()
    page.fill("#id_username", "olivia")
    page.fill("#id_password", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    shot(page, "01-overview")
    page.get_by_role("link", name="Integrations", exact=True).click()
    page.get_by_role("link", name="Manage").click()
    page.get_by_role("link", name="Add integration").click()

    # A credential that lacks a scope the posture scanner needs: Verify says which.
    page.fill("#id_name", "Demo workspace")
    page.fill("#id_workspace", "demo")
    page.select_option("#id_parent", label="Acme / Engineering")
    page.check("input[name=auth_method][value=api_token]")
    assert page.locator("#id_key").is_hidden()  # only the chosen method's fields show
    page.fill("#id_email", SANDBOX_EMAIL)
    page.fill("#id_token", SANDBOX_API_TOKEN_NO_ADMIN)
    page.check("input[name=scanners][value=posture]")
    page.click("button[value=verify]")
    assert "Missing scopes: admin:repository:bitbucket" in page.content()
    assert SANDBOX_API_TOKEN_NO_ADMIN not in page.content()
    shot(page, "02-verify-missing-scope")

    # Fix it with a workspace access token and start scanning; the first scan finishes.
    page.check("input[name=auth_method][value=access_token]")
    page.fill("#id_token", SANDBOX_WORKSPACE_TOKEN)
    page.click("button[value=create]")
    page.wait_for_url(f"{base}/integrations/bitbucket/")
    assert "The first scan has started" in page.content()
    row = page.locator("tr", has_text="Demo workspace")
    row.get_by_text("succeeded").wait_for()
    shot(page, "03-manage-after-first-scan")
    integration = Integration.objects.get(name="Demo workspace")
    repositories = len(bitbucket.sandbox.world.workspaces["demo"].repos)
    assert Project.objects.filter(integration=integration).count() == repositories

    # Edit scanners.
    row_menu(page, "Demo workspace", "Edit Integration")
    page.check("input[name=scanners][value=dependencies]")
    page.click("button:has-text('Save')")
    assert "Changes apply from the next scan" in page.content() or "apply from the next scan" in page.content()
    shot(page, "04-edit-integration")
    integration.refresh_from_db()
    assert integration.scanners == ["dependencies", "posture"]

    # Update credentials: switch to email + API token.
    page.goto(f"{base}/integrations/bitbucket/")
    row_menu(page, "Demo workspace", "Update Credentials")
    assert integration.bitbucket_url in page.content()
    page.check("input[name=auth_method][value=api_token]")
    page.fill("#id_email", SANDBOX_EMAIL)
    page.fill("#id_token", SANDBOX_API_TOKEN)
    shot(page, "05-update-credentials")
    page.click("button[value=save]")  # verified first (it passes), saved without a rescan
    assert "verified and saved" in page.content()
    integration.refresh_from_db()
    assert integration.auth_method == "api_token"

    # Break the token in Bitbucket: the rescan's failure is classified in the sync log.
    requests.post(f"{bitbucket.web_url}/_sandbox/credentials/expire", json={"secret": SANDBOX_API_TOKEN})
    row_menu(page, "Demo workspace", "Rescan this integration")
    page.locator("tr", has_text="Demo workspace").get_by_text("failed").wait_for()
    row_menu(page, "Demo workspace", "View Sync Log")
    page.locator("td", has_text="Invalid or expired credentials").first.wait_for()
    assert "API token is invalid, expired" in page.content()
    assert SANDBOX_API_TOKEN not in page.content()
    shot(page, "06-sync-log-error")

    # Fix it in Bitbucket; a rescan resolves the entry.
    requests.post(f"{bitbucket.web_url}/_sandbox/credentials/restore", json={"secret": SANDBOX_API_TOKEN})
    page.click("button:has-text('Rescan this integration')")
    page.locator(".badge", has_text="resolved").first.wait_for()
    shot(page, "07-sync-log-resolved")
    assert not SyncLog.objects.filter(integration=integration, resolved_at__isnull=True, level="error").exists()

    # Other pages.
    page.get_by_role("link", name="Namespaces").click()
    assert "Managed by" in page.content()  # the lock icon's label
    shot(page, "08-namespaces")
    page.get_by_role("link", name="Projects").click()
    page.fill("#q", "api")
    page.click("button:has-text('Search')")
    shot(page, "09-projects")

    # Delete, typing the name to confirm; everything under it goes.
    page.goto(f"{base}/integrations/bitbucket/")
    row_menu(page, "Demo workspace", "Delete Integration")
    assert f"<li>{repositories} repositories</li>" in page.content()
    shot(page, "10-delete-preview")
    page.fill("#id_confirm_name", "demo workspace")
    page.click("button:has-text('Delete integration')")
    assert page.locator(".field-error").is_visible()
    page.fill("#id_confirm_name", "Demo workspace")
    page.click("button:has-text('Delete integration')")
    page.wait_for_url(f"{base}/integrations/bitbucket/")
    assert "No Bitbucket Cloud integration yet" in page.content()
    shot(page, "11-after-delete")
    assert not Integration.objects.filter(pk=integration.pk).exists()
    assert not Namespace.objects.filter(integration_id=integration.pk).exists()
    assert not Project.objects.filter(integration_id=integration.pk).exists()

    # A narrow screen.
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto(f"{base}/projects/")
    page.click("[data-nav-toggle]")
    assert page.get_by_role("link", name="Sync Logs").is_visible()
    shot(page, "12-narrow-screen")


def test_pull_request_scans_in_the_browser(live_server, bitbucket, browser_page, transactional_db, settings):
    """Turn PR scans on in Edit Integration; a pull request adding a denied package shows as
    failed on the project page, with its reasons; the fixing push turns it passed."""
    import json

    from scanning import services as scans

    settings.PORTAL_BASE_URL = live_server.url  # where the sandbox delivers webhooks
    page, base, sb = browser_page, live_server.url, bitbucket.sandbox
    tenant = TenantFactory(name="Acme", slug="acme")
    owner = UserFactory(username="olivia")
    owner.set_password("correct horse battery")
    owner.save()
    services.membership_set(tenant=tenant, user=owner, role=Role.OWNER, actor=None)
    integration = services.integration_create(
        tenant=tenant,
        parent=NamespaceFactory(tenant=tenant),
        name="Demo workspace",
        workspace="demo",
        auth_method="access_token",
        credentials={"token": SANDBOX_WORKSPACE_TOKEN},
        actor=None,
        scanners=["dependencies"],
        verify=False,
    )
    scans.scan_run_execute(
        scan_run_id=scans.org_rescan_request(integration=integration, trigger="manual", actor=None).pk
    )
    ws = sb.world.workspaces["demo"]
    slug, repo = next(
        (s, r) for s, r in ws.repos.items() if "package.json" in r.commits[r.branches[r.mainbranch]].files
    )

    page.goto(f"{base}/")
    page.fill("#id_username", "olivia")
    page.fill("#id_password", "correct horse battery")
    page.click("button[type=submit]")
    page.goto(f"{base}/integrations/bitbucket/")
    row_menu(page, "Demo workspace", "Edit Integration")
    page.check("#id_pr_enabled")
    page.fill("#id_pr_target_branches", repo.mainbranch)
    page.check("#id_pr_post_summary_comment")
    page.fill("#id_pr_deny_packages", "event-stream\nlodash about 4")
    page.click("button:has-text('Save')")
    assert "not a version range in any ecosystem" in page.content()  # refused, with the reason; nothing saved
    page.fill("#id_pr_deny_packages", "event-stream\nlodash <4.17.21")
    page.click("button:has-text('Save')")
    shot(page, "13-pull-request-settings")
    page.click("button:has-text('Rescan this integration')")  # registers the portal's webhook in Bitbucket
    assert any(h.url.startswith(base) for h in ws.hooks.values())

    manifest = json.loads(repo.commits[repo.branches[repo.mainbranch]].files["package.json"])
    manifest.setdefault("dependencies", {}).pop("event-stream", None)
    clean = json.dumps(manifest, indent=2)
    manifest["dependencies"]["event-stream"] = "3.3.6"
    sb.push("demo", slug, "feature/streams", files={"package.json": json.dumps(manifest, indent=2)})
    pr_id = sb.open_pullrequest("demo", slug, source="feature/streams", title="Stream everything")

    project = Project.objects.get(integration=integration, remote_uuid=repo.uuid)
    page.goto(f"{base}/projects/{project.pk}/")
    row = page.locator("tr", has_text="Stream everything")
    row.locator(".badge", has_text="failed").click()
    assert "event-stream 3.3.6 is denied" in page.content()
    shot(page, "14-pr-scan-failed")
    assert len(repo.pullrequests[pr_id].comments) == 1

    sb.push("demo", slug, "feature/streams", files={"package.json": clean})
    page.goto(f"{base}/projects/{project.pk}/")
    page.locator("tr", has_text="Stream everything").locator(".badge", has_text="passed").click()
    assert "No policy violations" in page.content()
    shot(page, "15-pr-scan-passed")
    assert len(repo.pullrequests[pr_id].comments) == 1, "the summary comment was edited, not duplicated"
