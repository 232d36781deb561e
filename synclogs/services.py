"""Writes for sync logs: record a classified entry, resolve, prune."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from integrations.models import Integration, Project
from synclogs.classify import Classified, classify
from synclogs.models import Level, SyncLog

logger = logging.getLogger(__name__)


def sync_log_record(
    *,
    integration: Integration,
    operation: str,
    exc: BaseException | None = None,
    classified: Classified | None = None,
    project: Project | None = None,
    level: str = Level.ERROR,
    message: str | None = None,
    merge: bool = False,
) -> SyncLog:
    """Record one entry. Give the exception (classified here) or a ready ``Classified``.

    ``merge``: when the same problem is already open (integration, operation, category,
    project and message alike), count it there (``occurrences``, ``last_seen_at``) instead
    of adding a row, so a flood of refused webhook deliveries is one entry, not thousands.
    """
    if classified is None:
        if exc is None:
            raise ValueError("sync_log_record needs exc or classified")
        classified = classify(exc, auth_method=integration.auth_method)
    text = message or classified.message
    if merge:
        same = SyncLog.objects.filter(
            integration=integration,
            project=project,
            operation=operation,
            level=level,
            category=classified.category,
            message=text,
            resolved_at__isnull=True,
        )
        if same.update(occurrences=F("occurrences") + 1, last_seen_at=timezone.now()):
            return same.order_by("-id").first()
    entry = SyncLog.objects.create(
        integration=integration,
        project=project,
        level=level,
        category=classified.category,
        operation=operation,
        message=text,
        status_code=classified.status_code,
        method=classified.method,
        last_seen_at=timezone.now(),
        path=classified.path[:500],
        remote_message=classified.remote_message,
        hint=classified.hint,
    )
    log = logger.warning if level == Level.WARNING else logger.error
    log(
        "sync log %s for integration %s: %s (%s %s -> %s)",
        entry.category,
        integration.pk,
        entry.message,
        entry.method,
        entry.path,
        entry.status_code,
    )
    return entry


@transaction.atomic
def sync_logs_resolve(*, integration: Integration, scan_run_id: int, before=None) -> int:
    """Mark the integration's open entries resolved by a successful scan.

    Entries written during that scan (at or after ``before``) stay open: they are
    what the scan itself found.
    """
    qs = SyncLog.objects.filter(integration=integration, resolved_at__isnull=True)
    if before is not None:
        qs = qs.filter(created_at__lt=before)
    return qs.update(resolved_at=timezone.now(), resolved_by_scan_id=scan_run_id)


def sync_logs_prune(*, older_than_days: int | None = None) -> int:
    """Delete entries older than the retention period; returns how many."""
    days = older_than_days if older_than_days is not None else settings.SYNCLOG_RETENTION_DAYS
    cutoff = timezone.now() - timedelta(days=days)
    deleted, _ = SyncLog.objects.filter(created_at__lt=cutoff).delete()
    return deleted
