"""Writes for scanning: requesting, running and dispatching scans.

``org_rescan_request`` is the one way to ask for a scan (admin action, pages, API,
``rescan_org``, the scheduler and the first scan after creation all use it).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from integrations.bitbucket import client as bb
from integrations.bitbucket.verify import VerificationReport
from integrations.models import Integration, IntegrationStatus
from integrations.queue import enqueue
from integrations.services import Actor, actor_or_none, audit, integration_verify
from scanning.chunks import runs_with_active_chunks, scan_chunks_create, scan_chunks_look_after
from scanning.hooks import webhooks_sync
from scanning.models import ACTIVE_SCAN_STATUSES, PullRequestScan, ScanRun, ScanStatus, Trigger
from scanning.runs import next_scan_time, scan_run_finish
from scanning.shutdown import WorkerStopping
from scanning.sync import ListingIncomplete, OrgSync, ScanAbandoned
from synclogs.classify import classify
from synclogs.models import Category, Level, Operation
from synclogs.services import sync_log_record

# Failures that pass by themselves: the scan is retried in minutes (runs.retry_delay). A rate
# limit is not one of them: the next scan waits for the account's hour (Retry-After).
TRANSIENT = (Category.UNAVAILABLE,)

logger = logging.getLogger(__name__)


class ScanAlreadyRunning(Exception):
    def __init__(self, scan_run: ScanRun | None) -> None:
        self.scan_run = scan_run
        super().__init__(
            f"A scan of this integration is already {scan_run.status if scan_run else 'running'}"
            + (f" (scan #{scan_run.pk})." if scan_run else ".")
        )


def org_rescan_request(*, integration: Integration, trigger: str, actor: Actor) -> ScanRun:
    """Queue a scan. Raises :class:`ScanAlreadyRunning` (and changes nothing) when one
    is queued or running; a database constraint makes that hold under races too."""
    if integration.status == IntegrationStatus.DELETING:
        raise ValidationError("This integration is being deleted.")
    if trigger not in Trigger.values:
        raise ValidationError(f"Unknown trigger {trigger!r}.")
    try:
        with transaction.atomic():
            run = ScanRun.objects.create(
                integration=integration, trigger=trigger, status=ScanStatus.QUEUED, requested_by=actor_or_none(actor)
            )
            audit(
                actor=actor,
                action="integration.rescan",
                target=integration,
                tenant=integration.tenant,
                details={"scan_run": run.pk, "trigger": trigger},
            )
            transaction.on_commit(lambda: enqueue("scanning.tasks.scan_run_task", run.pk))
    except IntegrityError:
        raise ScanAlreadyRunning(
            ScanRun.objects.filter(integration=integration, status__in=ACTIVE_SCAN_STATUSES).first()
        ) from None
    return run


def scan_run_execute(*, scan_run_id: int, client: bb.BitbucketClient | None = None) -> ScanRun:
    """Run a queued scan to the end. Safe to call twice: only one caller claims it."""
    now = timezone.now()
    if not ScanRun.objects.filter(pk=scan_run_id, status=ScanStatus.QUEUED).update(
        status=ScanStatus.RUNNING, started_at=now, heartbeat_at=now
    ):
        return ScanRun.objects.get(pk=scan_run_id)
    run = ScanRun.objects.select_related("integration__root_namespace", "integration__tenant").get(pk=scan_run_id)
    integration = run.integration
    sync = None
    status, summary, transient, resume_after = ScanStatus.FAILED, "", False, None
    try:
        if integration.status == IntegrationStatus.DELETING:
            raise ValidationError("The integration is being deleted.")
        sync = OrgSync(run, client=client)
        outcome = sync.execute()
        status = ScanStatus.PARTIAL if outcome.problems else ScanStatus.SUCCEEDED
        summary = f"{outcome.problems} repositories could not be read completely." if outcome.problems else ""
        try:
            webhooks_sync(integration=integration, client=sync.client)
        except bb.RateLimited:
            pass  # the next scan registers it
        if outcome.scanners_deferred:
            summary = (
                summary + f" Scanners paused with {outcome.scanners_deferred} left (the account's hourly "
                "allowance is spent); the next scan continues when it has room."
            ).strip()
    except WorkerStopping:
        # The cluster is shutting down: end this scan and queue the one that resumes it (it
        # waits in the queue for the next cluster), then let the worker exit.
        ScanRun.objects.filter(pk=run.pk, status=ScanStatus.RUNNING).update(
            status=ScanStatus.FAILED,
            finished_at=timezone.now(),
            summary="The task cluster was stopped during this scan; a new scan picks up where it stopped.",
        )
        try:
            org_rescan_request(integration=integration, trigger=Trigger.SCHEDULE, actor=None)
        except (ScanAlreadyRunning, ValidationError):
            pass
        raise
    except ScanAbandoned:
        # The dispatcher ended this scan as stale and queued its successor: write nothing more.
        logger.warning("Scan %s of integration %s was ended while this worker ran it; stopping", run.pk, integration.pk)
        return ScanRun.objects.get(pk=run.pk)
    except ListingIncomplete as exc:
        cause = exc.__cause__ or exc
        classified = classify(cause, auth_method=integration.auth_method)
        entry = sync_log_record(
            integration=integration,
            operation=Operation.SYNC,
            classified=classified,
            message="The scan stopped while listing Bitbucket, so nothing was removed: " + classified.message,
        )
        summary = entry.message
        transient = entry.category in TRANSIENT
        if isinstance(cause, bb.RateLimited) and sync is not None:
            # The account's hour is spent: what was listed is kept, and the scan resumes by
            # itself when there is room (unchanged repositories cost nothing the second time).
            status = ScanStatus.PARTIAL
            sync.outcome.resume_after = cause.retry_after or 3600.0
    except bb.BitbucketError as exc:
        entry = sync_log_record(integration=integration, operation=Operation.SYNC, exc=exc)
        summary, transient = entry.message, entry.category in TRANSIENT
        if isinstance(exc, bb.RateLimited):
            # The account's hour is spent: come back when Bitbucket said, not in minutes.
            transient, resume_after = False, exc.retry_after or 3600.0
    except ValidationError as exc:
        summary = " ".join(exc.messages)
    except Exception as exc:  # noqa: BLE001 - recorded, classified, and re-raised nowhere: the scan is over
        logger.exception("Scan %s of integration %s failed unexpectedly", run.pk, integration.pk)
        entry = sync_log_record(integration=integration, operation=Operation.SYNC, exc=exc)
        summary = entry.message
    if sync is None:
        return scan_run_finish(run, status=status, summary=summary, transient=transient, resume_after=resume_after)
    stats = sync.client.stats
    if sync.outcome.chunked_refs and status != ScanStatus.FAILED:
        # The inventory is written; its scanner work goes out in chunks any cluster may take,
        # and the scan stays running until the last one ends (chunks.py finishes it).
        handed = ScanRun.objects.filter(pk=run.pk, status=ScanStatus.RUNNING).update(
            counts=sync.counts.data,
            rest_requests=stats.rest + stats.oauth,
            git_requests=stats.git,
            problems=sync.outcome.problems,
        )
        if handed:  # (not if the dispatcher ended this scan as stale meanwhile: its successor scans)
            scan_chunks_create(run=run, reference_ids=sync.outcome.chunked_refs)
        return ScanRun.objects.get(pk=run.pk)
    return scan_run_finish(
        run,
        status=status,
        summary=summary,
        counts=sync.counts.data,
        rest=stats.rest + stats.oauth,
        git=stats.git,
        resume_after=sync.outcome.resume_after or resume_after,
        transient=transient,
    )


def scans_dispatch_due(*, now: datetime | None = None) -> dict[str, int]:
    """Queue scans for active integrations whose next scan is due, and look after scans
    whose worker vanished:

    * a running scan with no heartbeat for ``SCAN_STALE_SECONDS`` (its worker was killed,
      ran out of memory, lost its database) is ended and a new scan is queued at once; it
      picks up where the other stopped (unchanged rows cost nothing, scanners resume from
      their saved state), so an integration is never blocked for long;
    * a queued scan nobody picked up (its task was lost with a killed cluster) is queued
      again: running it is claimed atomically, so a duplicate task does nothing.
    """
    now = now or timezone.now()
    stale_after = timedelta(seconds=settings.SCAN_STALE_SECONDS)
    chunk_care = scan_chunks_look_after(now=now)
    stale_runs = list(
        ScanRun.objects.filter(status=ScanStatus.RUNNING)
        .filter(Q(heartbeat_at__lt=now - stale_after) | Q(heartbeat_at__isnull=True, started_at__lt=now - stale_after))
        .exclude(runs_with_active_chunks())  # waiting for their chunks' turn, not dead
        .select_related("integration")
    )
    resumed = 0
    for run in stale_runs:
        if not ScanRun.objects.filter(pk=run.pk, status=ScanStatus.RUNNING).update(
            status=ScanStatus.FAILED,
            finished_at=now,
            summary="The worker running this scan stopped (no sign of life for "
            f"{settings.SCAN_STALE_SECONDS} seconds); a new scan picks up where it stopped.",
        ):
            continue
        if run.integration.status in (IntegrationStatus.ACTIVE, IntegrationStatus.ERROR):
            try:
                org_rescan_request(integration=run.integration, trigger=Trigger.SCHEDULE, actor=None)
                resumed += 1
            except ScanAlreadyRunning:
                pass
    lost = ScanRun.objects.filter(status=ScanStatus.QUEUED, queued_at__lt=now - stale_after).filter(
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=now - stale_after)
    )
    requeued = 0
    for run_id in list(lost.values_list("pk", flat=True)[:100]):
        ScanRun.objects.filter(pk=run_id).update(heartbeat_at=now)  # when it was last handed to the queue
        enqueue("scanning.tasks.scan_run_task", run_id)
        requeued += 1
    task_stale = timedelta(seconds=settings.Q_CLUSTER["timeout"] + 300)
    stale = len(stale_runs)
    stale += ScanRun.objects.filter(status=ScanStatus.QUEUED, queued_at__lt=now - task_stale * 4).update(
        status=ScanStatus.FAILED, finished_at=now, summary="The scan was never picked up; is the task cluster running?"
    )
    stale += PullRequestScan.objects.filter(
        Q(status=PullRequestScan.Status.RUNNING, started_at__lt=now - task_stale)
        | Q(status=PullRequestScan.Status.QUEUED, queued_at__lt=now - task_stale * 4)
    ).update(
        status=PullRequestScan.Status.ERROR,
        finished_at=now,
        description="The portal could not finish the scan: its worker stopped. Scan again from the portal.",
    )
    queued = skipped = 0
    due = Integration.objects.filter(
        status__in=[IntegrationStatus.ACTIVE, IntegrationStatus.ERROR], next_scan_at__lte=now
    ).select_related("tenant")
    for integration in due:
        try:
            org_rescan_request(integration=integration, trigger=Trigger.SCHEDULE, actor=None)
            queued += 1
        except ScanAlreadyRunning:
            skipped += 1
        # Push the next run out either way, so a slow scan is not queued again every few minutes.
        Integration.objects.filter(pk=integration.pk).update(next_scan_at=next_scan_time(integration, now))
    return {
        "queued": queued,
        "skipped": skipped,
        "stale_failed": stale,
        "resumed": resumed,
        "requeued": requeued,
        **chunk_care,
    }


def integration_test_configuration(*, integration: Integration, actor: Actor) -> VerificationReport:
    """Verify the stored credentials now ("Test configuration"); failures are recorded
    as sync log entries (operation: verify) with their remediation hints."""
    report = integration_verify(integration=integration)
    for check in report.failures() + report.warnings():
        if check.error is not None:
            sync_log_record(
                integration=integration,
                operation=Operation.VERIFY,
                exc=check.error,
                level=Level.ERROR if check.required else Level.WARNING,
                message=f"{check.name}: {classify(check.error, auth_method=integration.auth_method).message}",
            )
    audit(
        actor=actor,
        action="integration.verify",
        target=integration,
        tenant=integration.tenant,
        details={"ok": report.ok, "missing_scopes": report.missing_scopes},
    )
    return report
