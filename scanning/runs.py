"""Ending a scan run and scheduling the next one: the one writer of a finished scan's
status, counts and requests, and of the integration's scan times (``services`` ends
scans that ran in one task, ``chunks`` the ones whose scanners ran in chunks)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from integrations.models import Integration, IntegrationStatus
from scanning.models import ScanRun, ScanStatus
from synclogs.services import sync_logs_resolve

logger = logging.getLogger(__name__)


def next_scan_time(integration: Integration, after: datetime) -> datetime:
    """``after`` plus the interval, less a stable per-integration offset (up to 5% of the
    interval, at most an hour) so integrations created together drift apart."""
    interval = integration.scan_interval
    spread = min(interval * 0.05, timedelta(hours=1))
    offset = spread * ((integration.uuid.int % 1_000_003) / 1_000_003)
    return after + interval - offset


def retry_delay(integration: Integration) -> timedelta:
    """How long after a failed scan the next is tried: ``SCAN_RETRY_SECONDS``, doubled for
    each failed scan before it in a row, at most ``SCAN_RETRY_MAX_SECONDS`` (and never later
    than the interval would)."""
    in_a_row = 0
    for status in (
        ScanRun.objects.filter(integration=integration, finished_at__isnull=False)
        .order_by("-pk")
        .values_list("status", flat=True)[:12]
    ):
        if status != ScanStatus.FAILED:
            break
        in_a_row += 1
    seconds = settings.SCAN_RETRY_SECONDS * 2 ** max(0, in_a_row - 1)
    return timedelta(seconds=min(seconds, settings.SCAN_RETRY_MAX_SECONDS))


def scan_run_finish(
    run: ScanRun,
    *,
    status: str,
    summary: str,
    counts: dict | None = None,
    rest: int | None = None,
    git: int | None = None,
    resume_after: float | None = None,
    transient: bool = False,
) -> ScanRun:
    """Record how the scan ended and when the next one runs: the interval from when this
    one started, brought forward to when the account's hour has room if scanner work was
    left (``resume_after`` seconds), or, for a scan that failed for a passing reason
    (``transient``: Bitbucket unavailable, timing out, rate limited), to a retry with
    backoff (:func:`retry_delay`)."""
    integration = run.integration
    started = run.started_at or timezone.now()
    finished = timezone.now()
    run.refresh_from_db(fields=["progress_done", "progress_total"])
    run.status, run.finished_at, run.summary = status, finished, summary[:2000]
    fields = ["status", "finished_at", "summary"]
    if counts is not None:
        run.counts, run.rest_requests, run.git_requests = counts, rest or 0, git or 0
        fields += ["counts", "rest_requests", "git_requests"]
    run.save(update_fields=fields)
    schedule = {"last_scan_at": finished}
    if integration.status != IntegrationStatus.DELETING:
        schedule["next_scan_at"] = next_scan_time(integration, started)
        if resume_after:
            # Keep going across the hour: come back when the account's window has room again
            # (not sooner than one slice of it: the budget counts in sixtieths of the window).
            schedule["next_scan_at"] = min(
                schedule["next_scan_at"],
                finished + timedelta(seconds=max(settings.BITBUCKET_RATE_WINDOW_SECONDS / 60, resume_after)),
            )
        if transient and status == ScanStatus.FAILED:
            retry = finished + retry_delay(integration)
            schedule["next_scan_at"] = min(schedule["next_scan_at"], retry)
            run.summary = f"{run.summary} Retrying at {retry:%H:%M} UTC.".strip()[:2000]
            run.save(update_fields=["summary"])
        if integration.status != IntegrationStatus.PAUSED:
            schedule["status"] = IntegrationStatus.ERROR if status == ScanStatus.FAILED else IntegrationStatus.ACTIVE
    Integration.objects.filter(pk=integration.pk).update(**schedule)
    if status == ScanStatus.SUCCEEDED:
        sync_logs_resolve(integration=integration, scan_run_id=run.pk, before=started)
    logger.info(
        "Scan %s of %s: %s (%s REST, %s git) %s",
        run.pk,
        integration,
        status,
        run.rest_requests,
        run.git_requests,
        run.counts,
    )
    return run
