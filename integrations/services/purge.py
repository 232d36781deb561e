"""Deleting an integration's whole subtree: bottom-up, chunked, restartable."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import models, transaction

from integrations.models import (
    AuditEvent,
    Integration,
    IntegrationStatus,
)
from integrations.selectors import (
    integration_purge_plan,
)

logger = logging.getLogger(__name__)


def integration_purge(*, integration_id: int, chunk_size: int | None = None) -> bool:
    """Delete an integration marked ``deleting`` and its whole subtree.

    Bottom-up, in chunks of ``chunk_size`` rows with one transaction per chunk, so
    memory and lock time stay bounded. Restartable: a run killed half-way leaves a
    consistent tree (only leaves were removed) and the next run finishes the job.
    Returns False if there was nothing to do (already gone, or not marked).
    """
    chunk_size = chunk_size or settings.INTEGRATION_PURGE_CHUNK
    integration = Integration.objects.filter(pk=integration_id, status=IntegrationStatus.DELETING).first()
    if integration is None:
        return False
    tenant, label = integration.tenant, str(integration)
    removed: dict[str, int] = {}
    for qs in integration_purge_plan(integration=integration):
        removed_here = _delete_in_chunks(qs, chunk_size)
        if removed_here:
            key = str(qs.model._meta.verbose_name_plural)
            removed[key] = removed.get(key, 0) + removed_here
    AuditEvent.objects.create(
        tenant=tenant,
        actor=None,
        actor_repr="system",
        action="integration.purged",
        target_type=Integration._meta.label_lower,
        target_id=str(integration_id),
        target_repr=label,
        details={"removed": removed},
    )
    logger.info("Purged integration %s (%s): %s", integration_id, label, removed)
    return True


def _delete_in_chunks(qs: models.QuerySet, chunk_size: int) -> int:
    model = qs.model
    total = 0
    while True:
        with transaction.atomic():
            ids = list(qs.order_by().values_list("pk", flat=True)[:chunk_size])
            if not ids:
                return total
            model._base_manager.filter(pk__in=ids).delete()
            total += len(ids)
