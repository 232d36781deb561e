"""Scanner work in chunks any task cluster may take: one scan per integration still, a chunk
whose worker died is handed out again, and the scan ends when its last chunk does."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from bitbucket_sandbox import generate
from integrations.models import Integration
from scanning import services as scans
from scanning.chunks import scan_chunk_execute
from scanning.models import ScanChunk, ScannerState, ScanRun, ScanStatus
from tests import helpers


@pytest.fixture
def sandbox_world():
    return generate(seed=5, workspaces=1, projects=2, repos=8, branches=2)


@pytest.fixture
def small_chunks(settings):
    settings.SCAN_CHUNK_SIZE = 3


def connect():
    return helpers.connect(name="Chunked", scanners=["dependencies", "posture"])


def test_a_large_scan_hands_its_scanners_out_in_chunks_and_ends_with_the_last(bitbucket, small_chunks):
    integration = connect()
    run = scans.scan_run_execute(
        scan_run_id=scans.org_rescan_request(integration=integration, trigger="manual", actor=None).pk
    )
    assert run.status == ScanStatus.RUNNING  # the inventory is written; scanners wait in chunks
    chunks = list(ScanChunk.objects.filter(scan_run=run).order_by("number"))
    assert [len(c.reference_ids) for c in chunks] == [3, 3, 2]
    assert run.summary == "Scanners: 0 of 3 chunks done."
    # Another request meanwhile is refused: one scan per integration, chunks or not.
    with pytest.raises(scans.ScanAlreadyRunning):
        scans.org_rescan_request(integration=integration, trigger="manual", actor=None)
    for chunk in chunks:
        scan_chunk_execute(chunk_id=chunk.pk)
        assert scan_chunk_execute(chunk_id=chunk.pk).status == "done"  # a duplicate task does nothing
    run.refresh_from_db()
    assert run.status == ScanStatus.SUCCEEDED, run.summary
    assert run.counts["dependencies scanner"]["references"] == 8
    assert run.counts["posture scanner"]["references"] == 8
    assert run.counts["projects"]["created"] == 8
    assert run.git_requests >= 8
    assert ScannerState.objects.filter(ok=True).count() == 16
    integration.refresh_from_db()
    assert integration.next_scan_at > timezone.now() + timedelta(hours=20)


def test_a_chunk_whose_worker_died_is_handed_out_again_and_nothing_is_done_twice(bitbucket, small_chunks, settings):
    integration = connect()
    run = scans.scan_run_execute(
        scan_run_id=scans.org_rescan_request(integration=integration, trigger="manual", actor=None).pk
    )
    first, *rest = ScanChunk.objects.filter(scan_run=run).order_by("number")
    scan_chunk_execute(chunk_id=first.pk)
    for chunk in rest[:-1]:
        scan_chunk_execute(chunk_id=chunk.pk)
    # The last chunk's worker is killed mid-chunk: claimed, then silent.
    last = rest[-1]
    long_ago = timezone.now() - timedelta(seconds=settings.SCAN_STALE_SECONDS + 5)
    ScanChunk.objects.filter(pk=last.pk).update(status="running", attempts=1, heartbeat_at=long_ago, worker="dead:1")
    ScanRun.objects.filter(pk=run.pk).update(heartbeat_at=long_ago)
    before = ScannerState.objects.count()
    care = scans.scans_dispatch_due()
    assert care["chunks_requeued"] == 1
    assert care["chunk_runners_handed_out"] >= 1
    assert care["stale_failed"] == 0  # the scan waits for its chunk, it is not dead
    last.refresh_from_db()
    assert (last.status, last.attempts) == ("done", 2)  # queued again, a runner handed out (inline in tests)
    run.refresh_from_db()
    assert run.status == ScanStatus.SUCCEEDED
    assert ScannerState.objects.count() == before + 4  # 2 references x 2 scanners, each once
    assert ScannerState.objects.filter(ok=True).count() == 16


def test_a_chunk_that_keeps_losing_its_worker_fails_and_the_scan_is_partial(bitbucket, small_chunks, settings):
    integration = connect()
    run = scans.scan_run_execute(
        scan_run_id=scans.org_rescan_request(integration=integration, trigger="manual", actor=None).pk
    )
    chunks = list(ScanChunk.objects.filter(scan_run=run).order_by("number"))
    for chunk in chunks[1:]:
        scan_chunk_execute(chunk_id=chunk.pk)
    long_ago = timezone.now() - timedelta(seconds=settings.SCAN_STALE_SECONDS + 5)
    ScanChunk.objects.filter(pk=chunks[0].pk).update(
        status="running", attempts=settings.SCAN_CHUNK_ATTEMPTS, heartbeat_at=long_ago
    )
    care = scans.scans_dispatch_due()
    assert care["chunks_failed"] == 1
    assert care["chunked_scans_finished"] == 1
    run.refresh_from_db()
    assert run.status == ScanStatus.PARTIAL
    assert "1 of 3 scanner chunks failed" in run.summary
    # The next scan picks up what the failed chunk left.
    second = helpers.scan(Integration.objects.get(pk=integration.pk))
    assert second.counts["dependencies scanner"]["references"] == 3


def test_chunks_share_the_account_budget_and_the_scan_resumes_when_it_has_room(bitbucket, small_chunks, settings):
    bitbucket.sandbox.rate_limit = 12
    settings.BITBUCKET_REST_RESERVE = 2
    integration = helpers.connect(name="Chunked", scanners=["posture"])
    run = helpers.scan(integration)
    assert run.status == ScanStatus.SUCCEEDED
    assert "Scanners paused" in run.summary
    assert not [r for r in bitbucket.sandbox.requests if r.status == 429]
    integration.refresh_from_db()
    assert integration.next_scan_at < timezone.now() + timedelta(hours=1, minutes=1)
