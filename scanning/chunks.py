"""Scanner work in chunks that any task cluster may take (writes for ``ScanChunk``).

A scan lists Bitbucket and writes the inventory in one task (one integration's listing is
sequential: ``next`` links), then cuts its scanner work into chunks of up to
``SCAN_CHUNK_SIZE`` repositories and hands out *runners*: tasks that take the scan's queued
chunks one after another until none is left. As many runners as the clusters have workers
(``SCAN_CHUNK_RUNNERS``, or what django-q2's cluster stats say), so three clusters scan a
50,000-repository workspace together. The scan stays ``running`` until its last chunk ends,
so exactly one scan per integration at a time is still guaranteed by the database; the
runner that ends the last chunk finishes the scan (the scan row is locked, so only once).

Crashes: the chunk rows, not the queue, are the truth (a killed cluster loses the tasks it
had taken from Redis). A running chunk writes a heartbeat (and the scan's) like a scan
does; one silent for ``SCAN_STALE_SECONDS`` lost its worker, and the dispatcher queues it
again (at most ``SCAN_CHUNK_ATTEMPTS`` times) and tops the runners up. Chunk work is
idempotent: scanner rows are replaced per reference, and what a dead worker already
finished at the same head is not redone.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Max, Q, Sum
from django.utils import timezone

from integrations.bitbucket import client as bb
from integrations.models import IntegrationStatus, Reference
from integrations.queue import enqueue
from scanning.health import live_workers
from scanning.models import ScanChunk, ScannerState, ScanRun, ScanStatus
from scanning.runs import scan_run_finish
from scanning.scanners import due, merge_counts, scanners_pass, scanners_paused_record, selected_scanners
from scanning.shutdown import WorkerStopping
from scanning.sync import Heartbeat, ScanAbandoned
from synclogs.models import Operation
from synclogs.services import sync_log_record

logger = logging.getLogger(__name__)

Status = ScanChunk.Status
ACTIVE = (Status.QUEUED, Status.RUNNING)


def _claimant() -> str:
    """Who claims a chunk: ``host:pid:token``. The pid is asked each time, not at import
    (the cluster imports before it forks its workers); the random token tells two claims of
    one chunk apart even where containers share host names and pids."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def chunk_runners() -> int:
    return settings.SCAN_CHUNK_RUNNERS or live_workers() or settings.Q_CLUSTER["workers"]


def _hand_out(run_id: int, runners: int) -> None:
    for _ in range(max(1, runners)):
        enqueue("scanning.tasks.scan_chunks_work_task", run_id)


def scan_chunks_create(*, run: ScanRun, reference_ids: list[int]) -> int:
    """Cut the scan's pending references (in the order they should be scanned) into chunks
    and hand out runners; returns how many chunks."""
    size = max(1, settings.SCAN_CHUNK_SIZE)
    now = timezone.now()
    chunks = [
        ScanChunk(scan_run=run, number=n, reference_ids=reference_ids[i : i + size], heartbeat_at=now)
        for n, i in enumerate(range(0, len(reference_ids), size), start=1)
    ]
    runners = min(len(chunks), chunk_runners())
    with transaction.atomic():
        ScanChunk.objects.bulk_create(chunks, batch_size=500)
        _progress(run.pk)
        transaction.on_commit(lambda: _hand_out(run.pk, runners))
    return len(chunks)


def _progress(run_id: int) -> None:
    """The running scan's summary: how many of its chunks have ended."""
    chunks = ScanChunk.objects.filter(scan_run_id=run_id).aggregate(
        total=Count("pk"), ended=Count("pk", filter=~Q(status__in=ACTIVE))
    )
    ScanRun.objects.filter(pk=run_id, status=ScanStatus.RUNNING).update(
        summary=f"Scanners: {chunks['ended']} of {chunks['total']} chunks done."
    )


class ChunkHeartbeat(Heartbeat):
    """A running chunk's sign of life, and its scan's (so the scan is not taken for dead).
    Raises :class:`ScanAbandoned` when the dispatcher gave the chunk to another worker or
    the scan was ended."""

    def __init__(self, chunk: ScanChunk) -> None:
        super().__init__(chunk.scan_run_id)
        self.chunk = chunk

    def touch(self, moment) -> None:
        mine = ScanChunk.objects.filter(pk=self.chunk.pk, status=Status.RUNNING, worker=self.chunk.worker)
        if not mine.update(heartbeat_at=moment):
            raise ScanAbandoned(f"Chunk {self.chunk.pk} was handed to another worker.")
        super().touch(moment)


def _claim(chunk_id: int) -> str | None:
    """Claim a queued chunk for this worker; returns the claim (None if another worker has it)."""
    claim = _claimant()
    claimed = ScanChunk.objects.filter(pk=chunk_id, status=Status.QUEUED).update(
        status=Status.RUNNING, heartbeat_at=timezone.now(), attempts=F("attempts") + 1, worker=claim
    )
    return claim if claimed else None


def _claim_next(run_id: int) -> tuple[int, str] | None:
    """The scan's next queued chunk, claimed for this worker (None when none is left)."""
    while True:
        candidates = list(
            ScanChunk.objects.filter(scan_run_id=run_id, status=Status.QUEUED)
            .order_by("number")
            .values_list("pk", flat=True)[:8]
        )
        if not candidates:
            return None
        for chunk_id in candidates:
            if claim := _claim(chunk_id):
                return chunk_id, claim


def scan_chunks_work(*, run_id: int, client: bb.BitbucketClient | None = None) -> int:
    """A runner: take the scan's queued chunks one after another until none is left; after
    ``SCAN_CHUNK_RUNNER_SECONDS`` it hands itself out again (a task must end well within
    the cluster's timeout). Returns how many chunks it ran."""
    started, ran = time.monotonic(), 0
    while (claimed := _claim_next(run_id)) is not None:
        _run(*claimed, client)
        ran += 1
        if time.monotonic() - started > settings.SCAN_CHUNK_RUNNER_SECONDS:
            _hand_out(run_id, 1)
            break
    return ran


def scan_chunk_execute(*, chunk_id: int, client: bb.BitbucketClient | None = None) -> ScanChunk | None:
    """Run one queued chunk. Safe to call twice: only one caller claims it."""
    if claim := _claim(chunk_id):
        _run(chunk_id, claim, client)
    return ScanChunk.objects.filter(pk=chunk_id).first()


def _run(chunk_id: int, claim: str, client: bb.BitbucketClient | None) -> None:
    """Run a chunk this worker claimed, end it, and finish the scan if it was the last. Every
    write to the chunk names the claim: a worker the dispatcher gave up on cannot end the
    chunk another worker now runs."""
    chunk = ScanChunk.objects.select_related("scan_run__integration").get(pk=chunk_id)
    chunk.worker = claim
    run, integration = chunk.scan_run, chunk.scan_run.integration
    if run.status != ScanStatus.RUNNING or integration.status == IntegrationStatus.DELETING:
        _end(chunk, Status.FAILED, message="The scan had already ended.")
        return
    heartbeat = ChunkHeartbeat(chunk)
    client = client or bb.client_for(integration)
    client.before_request = heartbeat
    before = (client.stats.rest, client.stats.git)
    try:
        refs = list(
            Reference.objects.filter(pk__in=chunk.reference_ids, project__integration=integration, is_default=True)
            .exclude(head_commit="")
            .select_related("project")
        )
        order = {pk: i for i, pk in enumerate(chunk.reference_ids)}
        # Recomputed here: what a previous attempt finished at the same head is not redone.
        pending = sorted(due(refs, selected_scanners(integration)), key=lambda pair: order[pair[0].pk])
        done = scanners_pass(integration=integration, pending=pending, client=client)
    except WorkerStopping:
        # The cluster is shutting down: the chunk goes back to the queue, and a runner to
        # Redis for another cluster.
        ScanChunk.objects.filter(pk=chunk.pk, status=Status.RUNNING, worker=claim).update(
            status=Status.QUEUED, heartbeat_at=timezone.now()
        )
        _hand_out(run.pk, 1)
        raise
    except ScanAbandoned:
        logger.warning("Chunk %s was taken from this worker; stopping", chunk.pk)
        return
    except Exception as exc:  # noqa: BLE001 - recorded on the chunk and in the sync log; the scan goes on
        logger.exception("Chunk %s of scan %s failed unexpectedly", chunk.pk, run.pk)
        entry = sync_log_record(integration=integration, operation=Operation.SYNC, exc=exc)
        _end(chunk, Status.FAILED, message=entry.message, client=client, before=before)
        scan_chunks_finish(run_id=run.pk)
        return
    _end(
        chunk,
        Status.DONE,
        counts=done.counts,
        deferred=done.deferred,
        resume_after=(done.paused.retry_after or 3600.0) if done.paused else None,
        client=client,
        before=before,
    )
    scan_chunks_finish(run_id=run.pk)


def _end(
    chunk: ScanChunk,
    status: str,
    *,
    client: bb.BitbucketClient | None = None,
    before: tuple[int, int] = (0, 0),
    **fields,
) -> None:
    stats = (
        {"rest_requests": client.stats.rest - before[0], "git_requests": client.stats.git - before[1]} if client else {}
    )
    if not ScanChunk.objects.filter(pk=chunk.pk, status=Status.RUNNING, worker=chunk.worker).update(
        status=status, finished_at=timezone.now(), **stats, **fields
    ):
        return  # handed to another worker meanwhile: its claim ends it
    _progress(chunk.scan_run_id)


def scan_chunks_finish(*, run_id: int) -> ScanRun | None:
    """Finish the scan once none of its chunks is queued or running (whoever sees that first;
    the scan row is locked, so only once)."""
    with transaction.atomic():
        run = ScanRun.objects.select_for_update().filter(pk=run_id, status=ScanStatus.RUNNING).first()
        if run is None or not ScanChunk.objects.filter(scan_run=run).exists():
            return None
        if ScanChunk.objects.filter(scan_run=run, status__in=ACTIVE).exists():
            return None
        chunks = list(ScanChunk.objects.filter(scan_run=run))
        counts = dict(run.counts or {})
        for chunk in chunks:
            merge_counts(counts, chunk.counts or {})
        # Repositories each scanner read during this scan, from their states: a worker killed
        # mid-chunk never reported what it had done, and its successor did not redo it.
        for scanner in selected_scanners(run.integration):
            read = ScannerState.objects.filter(
                reference__project__integration=run.integration,
                scanner=scanner.name,
                ok=True,
                scanned_at__gte=run.started_at,
            ).count()
            if read:
                counts.setdefault(f"{scanner.name} scanner", {})["references"] = read
        totals = ScanChunk.objects.filter(scan_run=run).aggregate(rest=Sum("rest_requests"), git=Sum("git_requests"))
        failed = [c for c in chunks if c.status == Status.FAILED]
        deferred = sum(c.deferred for c in chunks)
        resume = max((c.resume_after for c in chunks if c.resume_after), default=None)
        summary = f"{run.problems} repositories could not be read completely." if run.problems else ""
        if failed:
            summary = f"{summary} {len(failed)} of {len(chunks)} scanner chunks failed (see the sync log).".strip()
        if deferred:
            scanners_paused_record(
                integration=run.integration,
                remaining=deferred,
                reason=bb.RateLimited("the account's hourly allowance is spent", retry_after=resume),
            )
            summary = (
                f"{summary} Scanners paused with {deferred} left (the account's hourly allowance is spent); "
                "the next scan continues when it has room."
            ).strip()
        status = ScanStatus.PARTIAL if run.problems or failed else ScanStatus.SUCCEEDED
        return scan_run_finish(
            run,
            status=status,
            summary=summary,
            counts=counts,
            rest=run.rest_requests + (totals["rest"] or 0),
            git=run.git_requests + (totals["git"] or 0),
            resume_after=resume,
        )


def scan_chunks_look_after(*, now: datetime) -> dict[str, int]:
    """The dispatcher's care of chunks: a running chunk silent for ``SCAN_STALE_SECONDS``
    lost its worker and is queued again (or failed after ``SCAN_CHUNK_ATTEMPTS``); a scan
    with queued chunks, none running and nothing handed out for ``SCAN_STALE_SECONDS`` gets
    runners again (its runner tasks were lost with a killed cluster);
    a scan whose chunks all ended but which was not finished (its finisher died) is finished."""
    stale = now - timedelta(seconds=settings.SCAN_STALE_SECONDS)
    requeued = failed = topped_up = 0
    silent = ScanChunk.objects.filter(status=Status.RUNNING, heartbeat_at__lt=stale)
    for chunk_id, attempts in list(silent.values_list("pk", "attempts")[:500]):
        still_silent = ScanChunk.objects.filter(pk=chunk_id, status=Status.RUNNING, heartbeat_at__lt=stale)
        if attempts >= settings.SCAN_CHUNK_ATTEMPTS:
            failed += still_silent.update(
                status=Status.FAILED,
                finished_at=now,
                message=f"Its worker stopped {attempts} times; left for the next scan.",
            )
        else:
            # Back in the queue, marked as not handed out since: runners are topped up below.
            requeued += still_silent.update(status=Status.QUEUED, heartbeat_at=stale - timedelta(seconds=1))
    waiting = (
        ScanChunk.objects.filter(status=Status.QUEUED, scan_run__status=ScanStatus.RUNNING)
        .values("scan_run_id")
        .annotate(last_handed=Max("heartbeat_at"))
        .filter(last_handed__lt=stale)
    )
    for row in list(waiting[:100]):
        run_id = row["scan_run_id"]
        # Only a scan none of whose chunks is running has lost its runners (those alive take the
        # queued chunks in turn); topping up busier scans would pile up tasks behind other work.
        if ScanChunk.objects.filter(scan_run_id=run_id, status=Status.RUNNING, heartbeat_at__gte=stale).exists():
            continue
        queued = ScanChunk.objects.filter(scan_run_id=run_id, status=Status.QUEUED).count()
        wanted = min(chunk_runners(), queued)
        if wanted > 0:
            ScanChunk.objects.filter(scan_run_id=run_id, status=Status.QUEUED).update(heartbeat_at=now)
            _hand_out(run_id, wanted)
            topped_up += wanted
    finished = 0
    unfinished = (
        ScanRun.objects.filter(status=ScanStatus.RUNNING, chunks__isnull=False)
        .exclude(chunks__status__in=ACTIVE)
        .values_list("pk", flat=True)
        .distinct()
    )
    for run_id in list(unfinished[:100]):
        finished += scan_chunks_finish(run_id=run_id) is not None
    return {
        "chunks_requeued": requeued,
        "chunks_failed": failed,
        "chunk_runners_handed_out": topped_up,
        "chunked_scans_finished": finished,
    }


def runs_with_active_chunks() -> Q:
    """Scans whose chunks are still queued or running: not stale while they wait their turn."""
    return Q(chunks__status__in=ACTIVE)
