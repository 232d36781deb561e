"""Reads for sync logs (the admin, pages and API filter the same way)."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from synclogs.models import SyncLog

DEFAULT_DAYS = 7


def sync_log_list(
    *, integration_ids=None, category: str = "", operation: str = "", state: str = "", days: int | None = DEFAULT_DAYS
) -> QuerySet[SyncLog]:
    """``state``: "open", "resolved" or "" (both); ``days``: None for all time."""
    qs = SyncLog.objects.select_related("integration", "project")
    if integration_ids is not None:
        qs = qs.filter(integration_id__in=integration_ids)
    if category:
        qs = qs.filter(category=category)
    if operation:
        qs = qs.filter(operation=operation)
    if state == "open":
        qs = qs.filter(resolved_at__isnull=True)
    elif state == "resolved":
        qs = qs.filter(resolved_at__isnull=False)
    if days:
        qs = qs.filter(created_at__gte=timezone.now() - timedelta(days=days))
    return qs
