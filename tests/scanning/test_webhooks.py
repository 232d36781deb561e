"""Signed Bitbucket webhooks: verification, de-duplication, and what each event does."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest

from bitbucket_sandbox import generate
from integrations.models import Integration, Project, Reference
from scanning import services as scans
from scanning.models import DependencyPackage, WebhookDelivery
from synclogs.models import Category, SyncLog
from tests import helpers


@pytest.fixture
def sandbox_world():
    return generate(seed=9, workspaces=1, projects=2, repos=6, branches=2)


def connect(scanners=()):
    return helpers.connect(name="Hooked", scanners=scanners)


def post(
    client,
    integration,
    body: dict | bytes,
    *,
    secret=None,
    event="repo:push",
    request_uuid=None,
    attempt=1,
    signature=None,
    **extra,
):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    secret = secret if secret is not None else Integration.objects.get(pk=integration.pk).webhook_secret.reveal()
    headers = {
        "HTTP_X_EVENT_KEY": event,
        "HTTP_X_REQUEST_UUID": request_uuid or str(uuid.uuid4()),
        "HTTP_X_HOOK_UUID": "hook-1",
        "HTTP_X_ATTEMPT_NUMBER": str(attempt),
    }
    if signature is None and secret:
        signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    if signature:
        headers["HTTP_X_HUB_SIGNATURE"] = signature
    headers.update(extra)
    return client.post(f"/webhooks/bitbucket/{integration.uuid}/", raw, content_type="application/json", **headers)


def test_unsigned_and_wrongly_signed_deliveries_are_refused_and_logged(client, db):
    integration = connect()
    assert post(client, integration, {"x": 1}, secret="").status_code == 401
    assert post(client, integration, {"x": 1}, signature="sha256=" + "0" * 64).status_code == 401
    assert post(client, integration, {"x": 1}, signature="md5=abc").status_code == 401
    assert not WebhookDelivery.objects.exists()
    # One entry per cause, counted: a wrong digest and a wrong scheme are both "does not match".
    entries = SyncLog.objects.filter(integration=integration, operation="webhook").order_by("id")
    assert entries.count() == 2
    assert {e.category for e in entries} == {Category.INVALID_CREDENTIALS}
    unsigned, mismatched = entries
    assert "not signed" in unsigned.message
    assert unsigned.occurrences == 1
    assert "does not match" in mismatched.message
    assert mismatched.occurrences == 2


def test_a_flood_of_unsigned_deliveries_is_one_counted_entry_and_the_source_is_slowed(client, db, settings):
    settings.WEBHOOK_REFUSALS_PER_MINUTE = 20
    integration = connect()
    answers = [post(client, integration, {"x": i}, secret="").status_code for i in range(500)]
    assert answers[:20] == [401] * 20
    assert set(answers[20:]) == {429}  # the rest of the minute: refused before any database work
    entry = SyncLog.objects.get(integration=integration, operation="webhook")
    assert entry.occurrences == 20
    assert entry.last_seen_at is not None
    assert entry.resolved_at is None
    # Another address is not held back by the first one's flood.
    other = client.post(
        f"/webhooks/bitbucket/{integration.uuid}/", b"{}", content_type="application/json", REMOTE_ADDR="10.9.9.9"
    )
    assert other.status_code == 401
    # Bitbucket's own, correctly signed deliveries from that other address still go through.
    assert (
        post(
            client, integration, {"repository": {"uuid": "{x}"}}, event="repo:fork", REMOTE_ADDR="10.9.9.9"
        ).status_code
        == 202
    )


def test_size_unknown_integration_and_missing_headers(client, db):
    integration = connect()
    assert post(client, integration, b"x" * (256 * 1024 + 1)).status_code == 413
    response = client.post(f"/webhooks/bitbucket/{uuid.uuid4()}/", b"{}", content_type="application/json")
    assert response.status_code == 404
    raw = b"{}"
    sig = "sha256=" + hmac.new(integration.webhook_secret.reveal().encode(), raw, hashlib.sha256).hexdigest()
    missing = client.post(
        f"/webhooks/bitbucket/{integration.uuid}/", raw, content_type="application/json", HTTP_X_HUB_SIGNATURE=sig
    )
    assert missing.status_code == 400
    assert client.get(f"/webhooks/bitbucket/{integration.uuid}/").status_code == 405


def test_a_retried_delivery_is_acknowledged_but_processed_once(client, db, django_capture_on_commit_callbacks):
    integration = connect()
    request_uuid = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        first = post(
            client, integration, {"repository": {"uuid": "{nope}"}}, event="repo:fork", request_uuid=request_uuid
        )
        again = post(
            client,
            integration,
            {"repository": {"uuid": "{nope}"}},
            event="repo:fork",
            request_uuid=request_uuid,
            attempt=2,
        )
    assert first.status_code == again.status_code == 202
    assert first.json()["duplicate"] is False
    assert again.json()["duplicate"] is True
    assert len(callbacks) == 1
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == "ignored"
    assert delivery.attempt == 1


def test_push_from_bitbucket_refreshes_one_project_and_runs_its_scanners(
    live_server, bitbucket, transactional_db, settings
):
    integration = connect(scanners=["dependencies"])
    run = scans.org_rescan_request(integration=integration, trigger="manual", actor=None)
    scans.scan_run_execute(scan_run_id=run.pk)
    secret = Integration.objects.get(pk=integration.pk).webhook_secret.reveal()
    sb = bitbucket.sandbox
    sb.world.workspaces["demo"].hooks["{h}"] = __import__("bitbucket_sandbox.data", fromlist=["Hook"]).Hook(
        uuid="{h}",
        url=f"{live_server.url}/webhooks/bitbucket/{integration.uuid}/",
        description="portal",
        events=["repo:push", "repo:deleted"],
        active=True,
        secret=secret,
        created_at="2026-01-01T00:00:00+00:00",
    )
    repo = sb.world.workspaces["demo"].repos["api"]
    other = Reference.objects.get(project__full_name="demo/web", is_default=True)
    other_head = other.head_commit
    before = len(sb.requests)
    head = sb.push("demo", "api", repo.mainbranch, files={"requirements.txt": "flask==3.0.0\n"})
    assert [d["status"] for d in sb.deliveries] == [202]
    ref = Reference.objects.get(project__full_name="demo/api", is_default=True)
    assert ref.head_commit == head
    assert DependencyPackage.objects.filter(reference=ref, name="flask", version="3.0.0").exists()
    other.refresh_from_db()
    assert other.head_commit == other_head
    fetched = {r.path for r in list(sb.requests)[before:] if r.path.endswith("/git-upload-pack")}
    assert fetched == {"/demo/api.git/git-upload-pack"}, "only the pushed project was scanned"
    delivery = WebhookDelivery.objects.get(event_key="repo:push")
    assert delivery.state == "processed"
    assert "scanners: dependencies" in delivery.outcome
    # A repository deleted in Bitbucket leaves the inventory without waiting for a scan.
    sb.delete_repo("demo", "web")
    assert not Project.objects.filter(full_name="demo/web").exists()


def test_repository_changes_refresh_that_repository_without_a_scan(live_server, bitbucket, transactional_db):
    from bitbucket_sandbox.data import Hook
    from scanning.models import ScanRun

    integration = connect(scanners=["dependencies"])
    scans.scan_run_execute(
        scan_run_id=scans.org_rescan_request(integration=integration, trigger="manual", actor=None).pk
    )
    sb = bitbucket.sandbox
    ws = sb.world.workspaces["demo"]
    ws.hooks["{h}"] = Hook(
        uuid="{h}",
        url=f"{live_server.url}/webhooks/bitbucket/{integration.uuid}/",
        description="portal",
        events=["repo:updated"],
        active=True,
        secret=Integration.objects.get(pk=integration.pk).webhook_secret.reveal(),
        created_at="2026-01-01T00:00:00+00:00",
    )
    project = Project.objects.get(integration=integration, full_name="demo/api")
    other_key = next(k for k in ws.projects if k != ws.repos["api"].project_key)
    before, runs = len(sb.requests), ScanRun.objects.count()

    sb.rename_repo("demo", "api", name="API v2", new_slug="api-v2", project_key=other_key)

    project.refresh_from_db()
    assert (project.name, project.full_name, project.slug) == ("API v2", "demo/api-v2", "api-v2")
    assert project.namespace.remote_key == other_key
    assert ScanRun.objects.count() == runs, "no scan was needed"
    calls = [(r.kind, r.path) for r in list(sb.requests)[before:]]
    assert calls == [("rest", "/2.0/repositories/demo/api-v2"), ("git", "/demo/api-v2.git/info/refs")]
    delivery = WebhookDelivery.objects.get(event_key="repo:updated")
    assert "updated demo/api-v2" in delivery.outcome
    assert "scanners: up to date" in delivery.outcome


def test_every_accepted_delivery_queues_a_drain_unless_one_is_waiting_to_start(
    client, db, django_capture_on_commit_callbacks
):
    """The race that left deliveries waiting minutes: a drain that had already finished
    still suppressed the next enqueue. The shared flag is cleared as a drain starts, so a
    delivery recorded after that always queues another, whatever the interleaving."""
    from unittest import mock

    from scanning.models import QueueFlag
    from scanning.webhooks import DRAIN_FLAG, deliveries_drain

    integration = connect()
    body = {"repository": {"uuid": "{none}"}}

    def deliver():
        with django_capture_on_commit_callbacks(execute=True):
            assert post(client, integration, body, event="repo:fork").status_code == 202

    with mock.patch("scanning.webhooks.enqueue") as enqueue:
        deliver()
        deliver()  # a burst: the first drain has not started
        assert enqueue.call_count == 1
        assert deliveries_drain() == 2  # the drain runs and finishes...
        deliver()  # ...and the next delivery, moments later:
        assert enqueue.call_count == 2, "a finished drain must not swallow the next delivery"
        # Interleaving: a drain clears the flag as it starts; a delivery lands before it reads.
        QueueFlag.objects.filter(name=DRAIN_FLAG).update(pending=False)
        deliver()
        assert enqueue.call_count == 3
        assert deliveries_drain() == 2
        assert not WebhookDelivery.objects.filter(state="queued").exists()
        # The table was emptied (a flushed test database): the flag is created again, not lost.
        QueueFlag.objects.all().delete()
        deliver()
        assert enqueue.call_count == 4
