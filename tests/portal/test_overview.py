"""The overview at /: every figure equals the list it links to; deny-list hits are marked
wherever packages appear; the tenant-wide pull-request scans list."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from integrations import services
from integrations.models import Project, Reference, Role
from scanning.models import DependencyPackage, PullRequest, PullRequestScan
from synclogs.models import SyncLog
from tests.factories import member
from tests.helpers import connect, scan

pytestmark = pytest.mark.django_db


def _figure(page: str, name: str) -> int:
    return int(re.search(rf'data-figure="{name}">(\d+)<', page).group(1))


def _link(page: str, name: str) -> str:
    return (
        re.search(rf'<a class="tile[^"]*" href="([^"]+)"><span class="tile-figure" data-figure="{name}"', page)
        .group(1)
        .replace("&amp;", "&")
    )


def test_overview_figures_equal_the_lists_they_link_to(client, bitbucket):
    integration = connect(scanners=["dependencies", "posture"])
    services.integration_update(
        integration=integration,
        actor=None,
        verify=False,
        pr_settings={"enabled": False, "deny_packages": [{"name": "event-stream", "range": ""}]},
    )
    assert scan(integration).status == "succeeded"
    project = Project.objects.filter(integration=integration).first()
    pr = PullRequest.objects.create(
        project=project, remote_id=7, title="Add a bad thing", source_branch="f", destination_branch="main"
    )
    PullRequestScan.objects.create(
        pull_request=pr, trigger="pullrequest:created", source_commit="a" * 40, status="failed"
    )
    client.force_login(member(integration.tenant, Role.VIEWER, username="looker"))
    page = client.get("/").content.decode()

    repositories = _figure(page, "repositories")
    assert repositories == Project.objects.filter(integration=integration).count() > 0
    assert f"{Reference.objects.filter(project__integration=integration).count()} branches" in page
    listed = client.get(_link(page, "repositories")).content.decode()
    assert listed.count('data-label="Repository"') == min(50, repositories)

    denied = _figure(page, "denied")
    expected = DependencyPackage.objects.filter(
        reference__project__integration=integration, reference__is_default=True, name="event-stream"
    ).count()
    assert denied == expected > 0
    packages = client.get(_link(page, "denied")).content.decode()
    assert f"({denied} manifest and lock file row" in packages
    assert packages.count(">denied</span>") > 0

    # A search lists its rows grouped, with the deny-list hit marked and the repositories counted.
    search = client.get(reverse("portal:packages"), {"name": "event-stream"}).content.decode()
    affected = DependencyPackage.objects.filter(name="event-stream").values("reference__project").distinct().count()
    assert f"{affected} repositor" in search
    assert 'title="is denied">denied</span>' in search

    assert _figure(page, "failing-prs") == 1
    prs = client.get(_link(page, "failing-prs")).content.decode()
    assert "Add a bad thing" in prs

    errors = _figure(page, "open-errors")
    assert errors == SyncLog.objects.filter(integration=integration, resolved_at__isnull=True).count()
    logs = client.get(_link(page, "open-errors")).content.decode()
    assert logs.count('data-label="Category"') == min(50, errors)

    # Posture bars: one per check, phrased as what passes, each linking to the repositories failing it.
    assert "Default branch refuses force pushes" in page
    failing = client.get(reverse("portal:posture"), {"rule": "force_push_allowed"}).content.decode()
    assert "Repositories failing “Default branch refuses force pushes”" in failing
    assert "<svg" in client.get(reverse("portal:sync_log", kwargs={"pk": integration.pk})).content.decode()


def test_projects_page_accepts_search_and_namespace_filters(client, bitbucket):
    integration = connect()
    scan(integration)
    client.force_login(member(integration.tenant, Role.VIEWER, username="finder"))
    project = Project.objects.filter(integration=integration).order_by("full_name").first()
    page = client.get(reverse("portal:projects"), {"search": project.full_name}).content.decode()
    assert project.full_name in page
    assert (
        page.count('data-label="Repository"') == Project.objects.filter(full_name__icontains=project.full_name).count()
    )
    root = integration.root_namespace
    under = client.get(reverse("portal:projects"), {"namespace": root.pk}).content.decode()
    assert f"in namespace <strong>{root.name}</strong> and below" in under
    tree = client.get(reverse("portal:namespaces")).content.decode()
    total = Project.objects.filter(integration=integration).count()
    assert f"{total} projects" in tree  # the root counts what its children hold


def test_add_page_shows_the_scopes_to_tick_before_a_token_exists(client, bitbucket):
    integration = connect()
    client.force_login(member(integration.tenant, Role.ADMIN, username="adder"))
    page = client.get(reverse("portal:bitbucket_add")).content.decode()
    for step in ("1</span> Connect", "2</span> Credentials", "3</span> Scanners", "4</span> Verify and start"):
        assert step in page
    assert "Scopes to tick" in page
    assert "<code>read:repository:bitbucket</code>" in page  # API tokens
    assert "<code>admin:repository:bitbucket</code>" in page  # what the posture scanner adds
    assert "Access tokens" in page  # where to create one
    assert (
        'value="dependencies" checked' in page
        or 'checked value="dependencies"' in page
        or (re.search(r'<input[^>]*value="dependencies"[^>]*checked', page) is not None)
    )
