"""What Bitbucket really sends, replayed: real-world-shaped payloads (branch create and
delete, tags, forced and truncated pushes, several changes at once, a pull request from
a fork, late retries), misshapen and replayed bodies, and destructive events confirmed
with Bitbucket before anything is removed. Bitbucket is mocked with ``responses``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import responses

from integrations.models import Project, Reference
from scanning.models import PullRequest, WebhookDelivery
from scanning.pullrequests import review_change
from scanning.webhooks import delivery_process
from synclogs.models import SyncLog
from tests.factories import ProjectFactory, ReferenceFactory, make_integration

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
API, WEB = "http://127.0.0.1:9/2.0", "https://bitbucket.org"
REPO_UUID = "{0f4c5e3a-1111-4a4a-9a9a-000000000001}"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def event_of(name: str) -> str:
    return name.split("__")[0].replace("repo_", "repo:").replace("pullrequest_", "pullrequest:")


@pytest.fixture
def acme(db, settings):
    settings.BITBUCKET_API_URL, settings.BITBUCKET_WEB_URL = API, WEB
    integration = make_integration(name="Acme", workspace="acme", tracked_branches=["release/*", "develop"])
    project = ProjectFactory(
        namespace=integration.root_namespace,
        integration=integration,
        name="api",
        full_name="acme/api",
        remote_uuid=REPO_UUID,
        main_branch="main",
    )
    ReferenceFactory(project=project, name="main", is_default=True, head_commit="1" * 40)
    ReferenceFactory(
        project=project, name="release/1.0", is_default=False, head_commit="75148ac469a9cc56f86e09dd06cf6c287ab0b657"
    )
    ReferenceFactory(project=project, name="develop", is_default=False, head_commit="2" * 40)
    return integration, project


def deliver(integration, event: str, payload: dict | str) -> WebhookDelivery:
    body = payload if isinstance(payload, str) else json.dumps(payload)
    delivery = WebhookDelivery.objects.create(
        integration=integration, request_uuid=f"r-{WebhookDelivery.objects.count()}", event_key=event, body=body
    )
    delivery_process(delivery_id=delivery.pk)
    delivery.refresh_from_db()
    return delivery


def refs_body(branches: dict[str, str]) -> bytes:
    def pkt(line: bytes) -> bytes:
        return f"{len(line) + 4:04x}".encode() + line

    lines = [pkt(b"# service=git-upload-pack\n"), b"0000"]
    lines += [pkt(f"{sha} refs/heads/{name}\n".encode()) for name, sha in branches.items()]
    return b"".join(lines) + b"0000"


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
@responses.activate
def test_every_real_payload_is_handled_without_a_crash(acme, name):
    integration, _ = acme
    responses.get(f"{WEB}/acme/api.git/info/refs", body=refs_body({"main": "1" * 40}))
    responses.get(
        f"{API}/repositories/acme/{REPO_UUID}",
        status=404,
        json={"type": "error", "error": {"message": "Repository acme/api not found"}},
    )
    responses.get(f"{API}/repositories/acme/api", status=404, json={"type": "error", "error": {"message": "gone"}})
    responses.get(
        f"{API}/repositories/acme/api-service",
        json={
            "uuid": REPO_UUID,
            "slug": "api-service",
            "name": "api-service",
            "full_name": "acme/api-service",
            "is_private": True,
            "updated_on": "2026-11-20T10:00:00+00:00",
            "mainbranch": {"name": "main"},
            "project": {"key": "PLAT", "uuid": "{p}"},
            "links": {"html": {"href": f"{WEB}/acme/api-service"}},
        },
    )
    responses.get(f"{API}/repositories/acme/api/refs/branches/main", json={"target": {"hash": "9" * 40}})
    delivery = deliver(integration, event_of(name), fixture(name))
    assert delivery.state in ("processed", "ignored"), delivery.outcome
    assert not delivery.outcome.startswith(("failed", "rejected")), delivery.outcome


@responses.activate
def test_a_deleted_tracked_branch_loses_its_reference_once_git_confirms(acme):
    integration, project = acme
    responses.get(f"{WEB}/acme/api.git/info/refs", body=refs_body({"main": "1" * 40, "develop": "2" * 40}))
    delivery = deliver(integration, "repo:push", fixture("repo_push__branch_deleted"))
    assert "removed release/1.0" in delivery.outcome
    assert set(Reference.objects.filter(project=project).values_list("name", flat=True)) == {"main", "develop"}


@responses.activate
def test_a_branch_deletion_bitbucket_does_not_confirm_removes_nothing(acme):
    integration, project = acme
    # A replayed (or forged-by-reuse) deletion: git still lists the branch.
    responses.get(
        f"{WEB}/acme/api.git/info/refs",
        body=refs_body({"main": "1" * 40, "release/1.0": "75148ac469a9cc56f86e09dd06cf6c287ab0b657"}),
    )
    delivery = deliver(integration, "repo:push", fixture("repo_push__branch_deleted"))
    assert "kept release/1.0" in delivery.outcome
    assert Reference.objects.filter(project=project, name="release/1.0").exists()


def test_one_push_with_several_changes_moves_each_tracked_branch_and_ignores_the_tag(acme):
    integration, project = acme
    payload = fixture("repo_push__several_changes")
    heads = {c["new"]["name"]: c["new"]["target"]["hash"] for c in payload["push"]["changes"] if c["new"]}
    delivery = deliver(integration, "repo:push", payload)
    assert delivery.state == "processed"
    refs = dict(Reference.objects.filter(project=project).values_list("name", "head_commit"))
    assert refs["main"] == heads["main"]
    assert refs["develop"] == heads["develop"]
    assert "v2" not in refs


@pytest.mark.parametrize("name", ["repo_push__forced", "repo_push__truncated"])
def test_forced_and_truncated_pushes_move_the_branch_to_the_new_head(acme, name):
    integration, project = acme
    payload = fixture(name)
    delivery = deliver(integration, "repo:push", payload)
    assert delivery.state == "processed"
    new_head = payload["push"]["changes"][0]["new"]["target"]["hash"]
    assert Reference.objects.get(project=project, name="main").head_commit == new_head


def test_a_signed_push_replayed_as_repo_deleted_is_rejected_and_logged(acme):
    integration, project = acme
    delivery = deliver(integration, "repo:deleted", fixture("repo_push__branch_created"))
    assert delivery.state == "rejected"
    assert "push" in delivery.outcome
    assert Project.objects.filter(pk=project.pk).exists()
    assert Reference.objects.filter(project=project).count() == 3
    entry = SyncLog.objects.get(integration=integration, operation="webhook")
    assert "shape" in entry.message
    assert "rotate the webhook secret" in entry.hint


@pytest.mark.parametrize(
    "event, body",
    [
        ("repo:push", {"repository": {"uuid": REPO_UUID}}),  # no push
        ("pullrequest:created", {"repository": {"uuid": REPO_UUID}, "pullrequest": "x"}),
        ("repo:push", {"repository": "acme/api", "push": {}}),
        ("repo:push", "[1, 2]"),
        ("repo:push", "not json"),
        ("repo:push", "[" * 100_000),
    ],
)
def test_misshapen_payloads_are_rejected_not_crashed(acme, event, body):
    integration, _ = acme
    delivery = deliver(integration, event, body)
    assert delivery.state == "rejected"


@responses.activate
def test_repo_deleted_removes_only_what_bitbucket_confirms_is_gone(acme):
    integration, project = acme
    responses.get(f"{API}/repositories/acme/{REPO_UUID}", json={"uuid": REPO_UUID})
    kept = deliver(integration, "repo:deleted", fixture("repo_deleted"))
    assert "still has" in kept.outcome
    assert Project.objects.filter(pk=project.pk).exists()
    responses.replace(
        responses.GET,
        f"{API}/repositories/acme/{REPO_UUID}",
        status=404,
        json={"type": "error", "error": {"message": "Repository not found"}},
    )
    gone = deliver(integration, "repo:deleted", fixture("repo_deleted"))
    assert "removed acme/api" in gone.outcome
    assert not Project.objects.filter(pk=project.pk).exists()


@responses.activate
def test_a_late_retry_of_an_older_event_never_overwrites_a_newer_state(acme):
    integration, project = acme
    responses.get(f"{API}/repositories/acme/api/refs/branches/main", json={"target": {"hash": "9" * 40}})
    merged = deliver(integration, "pullrequest:fulfilled", fixture("pullrequest_fulfilled__same_repo"))
    assert merged.state == "processed"
    late = deliver(integration, "pullrequest:updated", fixture("pullrequest_updated__same_repo"))  # 10:00 < 11:00
    assert late.state == "ignored"
    assert "newer state" in late.outcome
    assert PullRequest.objects.get(project=project, remote_id=8).state == "MERGED"


def test_a_pull_request_from_a_fork_remembers_its_source_repository(acme):
    integration, project = acme
    deliver(integration, "pullrequest:created", fixture("pullrequest_created__fork"))
    pr = PullRequest.objects.get(project=project, remote_id=7)
    assert pr.source_repository == "alice/api"


@responses.activate
def test_a_fork_pull_request_is_reviewed_with_its_own_diffstat_and_the_forks_files(settings, db):
    settings.BITBUCKET_API_URL = API
    from integrations.bitbucket.client import BitbucketClient
    from integrations.bitbucket.credentials import Credentials

    responses.get(
        f"{API}/repositories/acme/api/pullrequests/7/diffstat",
        json={"values": [{"status": "modified", "old": {"path": "package.json"}, "new": {"path": "package.json"}}]},
    )
    responses.get(
        f"{API}/repositories/acme/api/src/dest123/package.json", body='{"dependencies": {"lodash": "4.17.21"}}'
    )
    responses.get(
        f"{API}/repositories/alice/api/src/fork456/package.json",
        body='{"dependencies": {"lodash": "4.17.21", "event-stream": "3.3.6"}}',
    )
    review = review_change(
        client=BitbucketClient(Credentials("access_token", "", "ATCTT3xToken42")),
        full_name="acme/api",
        source="fork456",
        destination="dest123",
        policy={"deny_packages": [{"name": "event-stream", "range": ""}]},
        source_full_name="alice/api",
        pull_request_id=7,
    )
    assert [r["name"] for r in review.added] == ["event-stream"]
    assert review.violations
    assert review.violations[0]["package"] == "event-stream"
    assert not any(
        "acme/api/diffstat/" in c.request.url or "acme/api/src/fork456" in c.request.url for c in responses.calls
    )
