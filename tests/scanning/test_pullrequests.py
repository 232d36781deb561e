"""Pull-request scans, end to end: the sandbox opens and updates pull requests and
delivers signed webhooks to a live portal, which scans them and reports back as build
statuses and one summary comment."""

from __future__ import annotations

import json

import pytest

from bitbucket_sandbox import generate
from bitbucket_sandbox.data import SANDBOX_WORKSPACE_TOKEN
from integrations import services
from integrations.models import Reference
from scanning import services as scans
from scanning.models import DependencyPackage, PullRequest, PullRequestScan, WebhookRegistration
from scanning.pullrequests import status_key
from synclogs.models import SyncLog
from tests.factories import NamespaceFactory, TenantFactory

DENY = [{"name": "event-stream", "range": ""}, {"name": "minimist", "range": "<1.2.6"}]


@pytest.fixture
def sandbox_world():
    return generate(seed=9, workspaces=1, projects=2, repos=6, branches=2)


def npm(deps: dict[str, str]) -> dict[str, str]:
    """package.json and a matching package-lock.json (lockfileVersion 3)."""
    manifest = {"name": "service", "version": "1.0.0", "dependencies": {k: f"^{v}" for k, v in deps.items()}}
    lock = {
        "name": "service",
        "version": "1.0.0",
        "lockfileVersion": 3,
        "packages": {
            "": {"name": "service", "version": "1.0.0", "dependencies": manifest["dependencies"]},
            **{f"node_modules/{k}": {"version": v} for k, v in deps.items()},
        },
    }
    return {"package.json": json.dumps(manifest, indent=2), "package-lock.json": json.dumps(lock, indent=2)}


BASE = {"express": "4.18.2", "lodash": "4.17.20", "typescript": "5.3.3"}


@pytest.fixture
def portal(live_server, bitbucket, transactional_db, settings):
    """A live portal whose integration has PR scans on; its first scan registers the
    webhook in the sandbox (a workspace hook), as it would in Bitbucket."""
    settings.PORTAL_BASE_URL = live_server.url
    tenant = TenantFactory()
    integration = services.integration_create(
        tenant=tenant,
        parent=NamespaceFactory(tenant=tenant),
        name="PRs",
        workspace="demo",
        auth_method="access_token",
        credentials={"token": SANDBOX_WORKSPACE_TOKEN},
        actor=None,
        scanners=["dependencies"],
        verify=False,
        pr_settings={
            "enabled": True,
            "target_branches": ["master", "main"],
            "post_build_status": True,
            "post_summary_comment": True,
            "status_per_scanner": False,
            "deny_packages": DENY,
            "require_lockfile_update": True,
        },
    )
    run = scans.org_rescan_request(integration=integration, trigger="manual", actor=None)
    scans.scan_run_execute(scan_run_id=run.pk)
    assert WebhookRegistration.objects.filter(integration=integration, subject="workspace").exists()
    return integration


def statuses(sb, slug: str, commit: str) -> dict[str, dict]:
    repo = sb.world.workspaces["demo"].repos[slug]
    return {s["key"]: s for k, s in repo.statuses.items() if k.startswith(commit + "/")}


def test_denied_package_fails_the_pr_and_the_fix_passes_it_editing_the_same_comment(portal, bitbucket):
    sb = bitbucket.sandbox
    key = status_key(portal)
    first = sb.push("demo", "web", "feature/stream", files=npm({**BASE, "event-stream": "3.3.6"}))
    pr_id = sb.open_pullrequest("demo", "web", source="feature/stream", title="Add streaming")

    pr = PullRequest.objects.get(project__full_name="demo/web", remote_id=pr_id)
    scan = pr.scans.get()
    assert scan.status == PullRequestScan.Status.FAILED
    assert first.startswith(scan.source_commit)
    assert [a["name"] for a in scan.added] == ["event-stream"]
    assert scan.added[0]["after"] == ["3.3.6"]
    assert [v["rule"] for v in scan.violations] == ["deny_list"]
    assert [(p["commit"], p["state"]) for p in sb.status_posts] == [(first, "INPROGRESS"), (first, "FAILED")]
    status = statuses(sb, "web", first)[key]
    assert status["state"] == "FAILED"
    assert "event-stream 3.3.6 is denied" in status["description"]
    assert status["url"] == f"{portal_url(scan)}"
    assert status["refname"] == "feature/stream"
    remote = sb.world.workspaces["demo"].repos["web"].pullrequests[pr_id]
    assert len(remote.comments) == 1
    comment_id, comment = next(iter(remote.comments.items()))
    assert "FAILED" in comment.raw
    assert "event-stream" in comment.raw
    assert pr.summary_comment_id == comment_id

    # The fix: drop the package and bump lodash. The push fires pullrequest:updated.
    fixed = sb.push("demo", "web", "feature/stream", files=npm({**BASE, "lodash": "4.17.21"}))
    assert statuses(sb, "web", fixed)[key]["state"] == "SUCCESSFUL"
    assert statuses(sb, "web", first)[key]["state"] == "FAILED", "the old commit keeps its verdict"
    latest = pr.scans.order_by("-id").first()
    assert latest.status == PullRequestScan.Status.PASSED
    assert latest.violations == []
    assert [(c["name"], c["before"], c["after"]) for c in latest.changed] == [("lodash", ["4.17.20"], ["4.17.21"])]
    assert list(remote.comments) == [comment_id], "the summary comment was edited, not duplicated"
    assert "PASSED" in remote.comments[comment_id].raw
    assert "event-stream" not in remote.comments[comment_id].raw
    # A title edit (same commits) does not scan again.
    sb.set_pullrequest_state("demo", "web", pr_id, "updated")
    assert pr.scans.count() == 2


def portal_url(scan):
    from django.conf import settings
    from django.urls import reverse

    return settings.PORTAL_BASE_URL + reverse("portal:pr_scan_detail", args=[scan.pk])


def test_state_events_are_recorded_and_a_merge_refreshes_the_target_branch(portal, bitbucket):
    sb = bitbucket.sandbox
    sb.push("demo", "web", "feature/ok", files=npm({**BASE, "lodash": "4.17.21"}))
    pr_id = sb.open_pullrequest("demo", "web", source="feature/ok")
    pr = PullRequest.objects.get(remote_id=pr_id, project__full_name="demo/web")
    assert pr.scans.get().status == "passed"
    assert pr.state == "OPEN"

    members = sb.world.workspaces["demo"].members
    sb.set_pullrequest_state("demo", "web", pr_id, "approved", user=members[1])
    sb.set_pullrequest_state("demo", "web", pr_id, "approved", user=members[2])
    sb.set_pullrequest_state("demo", "web", pr_id, "unapproved", user=members[1])
    sb.set_pullrequest_state("demo", "web", pr_id, "comment_created", comment="Ship it")
    pr.refresh_from_db()
    assert len(pr.approved_by) == 1
    assert pr.last_event == "pullrequest:comment_created"
    assert pr.comment_count == 2  # the portal's summary and the reviewer's

    sb.set_pullrequest_state("demo", "web", pr_id, "fulfilled")
    pr.refresh_from_db()
    assert pr.state == "MERGED"
    head = sb.world.workspaces["demo"].repos["web"].branches["master"]
    ref = Reference.objects.get(project__full_name="demo/web", name="master")
    assert ref.head_commit == head
    assert DependencyPackage.objects.filter(reference=ref, name="lodash", version="4.17.21").exists()
    assert pr.scans.count() == 1, "closed pull requests are not scanned"


def test_manifest_changed_without_its_lock_file_fails_the_lockfile_check(portal, bitbucket):
    portal.pr_settings = {**portal.pr_settings, "status_per_scanner": True}
    portal.save()
    sb = bitbucket.sandbox
    head = sb.push(
        "demo", "web", "feature/nolock", files={"package.json": npm({**BASE, "ms": "2.1.3"})["package.json"]}
    )
    sb.open_pullrequest("demo", "web", source="feature/nolock")
    scan = PullRequestScan.objects.get(pull_request__source_branch="feature/nolock")
    assert scan.status == "failed"
    assert [(v["rule"], v["path"]) for v in scan.violations] == [("lockfile", "package.json")]
    assert "package-lock.json did not change" in scan.violations[0]["message"]
    posted = statuses(sb, "web", head)
    assert posted[status_key(portal, "lockfiles")]["state"] == "FAILED"
    assert posted[status_key(portal, "dependencies")]["state"] == "SUCCESSFUL"


def test_untargeted_branches_and_disabled_scans_do_nothing_and_failures_never_stay_in_progress(portal, bitbucket):
    sb = bitbucket.sandbox
    sb.push("demo", "web", "feature/dev", files=npm({**BASE, "event-stream": "3.3.6"}))
    pr_id = sb.open_pullrequest("demo", "web", source="feature/dev", destination="develop")
    pr = PullRequest.objects.get(remote_id=pr_id, project__full_name="demo/web")
    assert not pr.scans.exists(), "develop is not a target branch"

    # Bitbucket fails the diffstat: the scan ends as an error, the status says so, the sync log explains.
    head = sb.push("demo", "web", "feature/err", files=npm({**BASE, "event-stream": "3.3.6"}))
    sb.faults.errors.append({"status": 403, "count": 1, "path": "/diffstat/"})
    sb.open_pullrequest("demo", "web", source="feature/err")
    scan = PullRequestScan.objects.get(pull_request__source_branch="feature/err")
    assert scan.status == "error"
    assert "could not finish" in scan.description
    assert statuses(sb, "web", head)[status_key(portal)]["state"] == "FAILED"
    assert SyncLog.objects.filter(integration=portal, operation="pr_scan").exists()


@pytest.mark.parametrize(
    "rule,before,after,denied",
    [
        ({"name": "lodash", "range": "<4.17.21"}, ["4.17.19"], ["4.17.20"], True),
        ({"name": "lodash", "range": "<4.17.21"}, ["4.17.20"], ["4.17.21"], False),
        ({"name": "lodash", "range": ">=1.0,<2.0"}, [], ["1.5.0"], True),
        ({"name": "lodash", "range": "4.17.20"}, [], ["4.17.20"], True),  # a bare version: exactly it
        ({"name": "lodash", "range": ""}, [], ["9.9.9"], True),  # no range: every version
        (
            {"name": "lodash", "range": "<4.17.21"},
            [],
            ["github:lodash/lodash"],
            True,
        ),  # unreadable: treated as affected
        ({"name": "lodash", "range": "<4.17.21"}, ["4.17.20"], ["4.17.20", "4.17.22"], False),  # only what is new
        ({"name": "Django", "range": "<5"}, [], ["4.2.0"], True),  # names compare case-insensitively
    ],
)
def test_deny_list_matching(rule, before, after, denied):
    from scanning.pullrequests import Review, _check_denied

    review = Review(
        changed=[
            {
                "ecosystem": "npm",
                "name": rule["name"].lower(),
                "before": before,
                "after": after,
                "manifests": ["package-lock.json"],
            }
        ]
    )
    _check_denied(review, [rule])
    assert bool(review.violations) is denied


def test_a_deleted_summary_comment_is_posted_again_and_removed_packages_are_listed(portal, bitbucket):
    sb = bitbucket.sandbox
    repo = sb.world.workspaces["demo"].repos["web"]
    sb.push("demo", "web", "feature/slim", files=npm({"express": "4.18.2", "typescript": "5.3.3"}))
    pr_id = sb.open_pullrequest("demo", "web", source="feature/slim")
    scan = PullRequestScan.objects.get(pull_request__remote_id=pr_id, pull_request__project__full_name="demo/web")
    assert scan.status == "passed"
    assert {r["name"] for r in scan.removed} >= {"lodash"}
    first_comment = next(iter(repo.pullrequests[pr_id].comments))
    repo.pullrequests[pr_id].comments.clear()  # someone deleted it in Bitbucket
    sb.push("demo", "web", "feature/slim", files=npm({"express": "4.18.2"}))
    comments = repo.pullrequests[pr_id].comments
    assert len(comments) == 1
    assert first_comment not in comments
    assert PullRequest.objects.get(pk=scan.pull_request_id).summary_comment_id == next(iter(comments))


def test_repository_text_cannot_put_links_or_formatting_into_the_comment():
    from scanning.pullrequests import _md

    assert _md("[click](https://evil.example)") == "\\[click\\]\\(https://evil.example\\)"
    assert _md("a|b `c` <img> **x**\nnext") == "a\\|b \\`c\\` \\<img\\> \\*\\*x\\*\\* next"
    assert _md("x" * 300).endswith("…")
    assert len(_md("x" * 300)) == 201


def test_a_scan_queued_before_its_integration_was_deleted_ends_quietly(db):
    from integrations.models import Integration, IntegrationStatus
    from scanning.pullrequests import pr_scan_execute
    from tests.factories import ProjectFactory, make_integration

    integration = make_integration()
    project = ProjectFactory(namespace=integration.root_namespace, integration=integration)
    pr = PullRequest.objects.create(project=project, remote_id=2, source_branch="f", destination_branch="main")
    scan = PullRequestScan.objects.create(pull_request=pr, trigger="pullrequest:created", source_commit="e" * 12)
    Integration.objects.filter(pk=integration.pk).update(status=IntegrationStatus.DELETING)
    done = pr_scan_execute(scan_id=scan.pk)
    assert done.status == "error"
    assert "removed before the scan ran" in done.description
    assert pr_scan_execute(scan_id=scan.pk) is None, "a scan runs once"


def test_a_pull_request_bringing_in_a_known_vulnerability_fails_or_warns_per_policy(portal, bitbucket, settings):
    from scanning.vulnerabilities import advisories_refresh

    settings.OSV_URL = f"{bitbucket.web_url}/_osv/{{ecosystem}}/all.zip"
    advisories_refresh(ecosystems=["npm"])
    services.integration_update(
        integration=portal,
        actor=None,
        verify=False,
        pr_settings={**portal.pr_config, "vulnerabilities": "fail", "vulnerability_min_severity": "high"},
    )
    sb = bitbucket.sandbox
    sb.push("demo", "web", "feature/old-lodash", files=npm({**BASE, "lodash": "4.17.19"}))
    pr_id = sb.open_pullrequest("demo", "web", source="feature/old-lodash", title="Pin lodash")
    scan = PullRequest.objects.get(project__full_name="demo/web", remote_id=pr_id).scans.get()
    assert scan.status == PullRequestScan.Status.FAILED
    found = [v for v in scan.violations if v["rule"] == "known_vulnerability"]
    assert found[0]["advisories"] == ["GHSA-35jh-r3h4-6jhm"]  # high; the medium ReDoS is below the floor
    assert "fixed in 4.17.21" in found[0]["message"]
    comment = next(iter(sb.world.workspaces["demo"].repos["web"].pullrequests[pr_id].comments.values())).raw
    assert "GHSA-35jh-r3h4-6jhm" in comment
    assert "CVE-2021-23337" in comment

    # Warn only: the pull request passes and the summary says why it should still be looked at.
    services.integration_update(
        integration=type(portal).objects.get(pk=portal.pk),
        actor=None,
        verify=False,
        pr_settings={**portal.pr_config, "vulnerabilities": "warn", "vulnerability_min_severity": "medium"},
    )
    sb.push("demo", "web", "feature/older-lodash", files=npm({**BASE, "lodash": "4.17.18"}))
    pr_id = sb.open_pullrequest("demo", "web", source="feature/older-lodash", title="Pin lodash again")
    scan = PullRequest.objects.get(project__full_name="demo/web", remote_id=pr_id).scans.get()
    assert not [v for v in scan.violations if v["rule"] == "known_vulnerability"]
    assert any("GHSA-29mw-wpgm-hmr9" in w for w in scan.warnings)  # the medium one, now above the floor

    # A change to the manifest that keeps a vulnerable version a release fixes: said too.
    sb.push("demo", "web", "feature/express", files=npm({**BASE, "express": "4.18.3"}))
    pr_id = sb.open_pullrequest("demo", "web", source="feature/express", title="Bump express")
    scan = PullRequest.objects.get(project__full_name="demo/web", remote_id=pr_id).scans.get()
    kept = [w for w in scan.warnings if "keeps lodash" in w]
    base_lodash = [r for r in scan.changed + scan.added if r["name"] == "lodash"]
    assert not base_lodash  # the target branch pins the same lodash: the change keeps it
    assert kept
    assert "fixed in 4.17.21" in kept[0]
