"""Deleting an integration's whole subtree: bottom-up, chunked, restartable."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import models, transaction

from common.db import generic_plans_allow
from integrations.models import Integration, IntegrationStatus, Namespace, Project
from integrations.selectors import cascade_querysets, integration_subtree_levels
from integrations.services.audit import audit

logger = logging.getLogger(__name__)


def integration_purge(*, integration_id: int, chunk_size: int | None = None) -> bool:
    """Delete an integration marked ``deleting`` and its whole subtree.

    Bottom-up and restartable: projects go ``chunk_size`` at a time, each batch with
    everything under it (references, scanner results, pull requests, ...) in one
    transaction, children first; then the namespaces level by level; then the
    integration's own rows and the integration. Each step selects its rows by a one-level
    query on ids (not a chain of nested ``IN (SELECT ...)`` re-run for every chunk) and
    deletes tables that only ``CASCADE`` relations point at with one plain ``DELETE``. A run
    killed half-way leaves a consistent tree (only whole leaves were removed) and the next
    run finishes the job. Returns False if there was nothing to do (already gone, or not
    marked).
    """
    chunk_size = chunk_size or settings.INTEGRATION_PURGE_CHUNK
    integration = Integration.objects.filter(pk=integration_id, status=IntegrationStatus.DELETING).first()
    if integration is None:
        return False
    tenant, label = integration.tenant, str(integration)
    removed: dict[str, int] = {}

    def count(model: type[models.Model], n: int) -> None:
        if n:
            key = str(model._meta.verbose_name_plural)
            removed[key] = removed.get(key, 0) + n

    levels = integration_subtree_levels(integration=integration)
    projects = Project._base_manager.filter(namespace_id__in=[i for level in levels for i in level])
    after = 0
    while True:
        with transaction.atomic():
            generic_plans_allow()
            # Keyset order: each chunk starts past the last, never re-reading the dead rows
            # the chunks before it left behind (not yet vacuumed).
            ids = list(projects.filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)[:chunk_size])
            if not ids:
                break
            after = ids[-1]
            # The chunk as a range of ids within the subtree, not a list of a thousand literals:
            # the deletes under it become range scans and joins PostgreSQL plans well.
            for qs in cascade_querysets(projects.filter(pk__gte=ids[0], pk__lte=ids[-1])):
                count(qs.model, _delete(qs))
    rest = [qs for level in reversed(levels) for qs in cascade_querysets(Namespace._base_manager.filter(id__in=level))]
    rest += list(cascade_querysets(Integration._base_manager.filter(pk=integration.pk)))
    for qs in rest:
        count(qs.model, _delete_in_chunks(qs, chunk_size))
    audit(
        actor=None,
        action="integration.purged",
        target=None,
        tenant=tenant,
        details={"removed": removed},
        target_type=Integration._meta.label_lower,
        target_id=str(integration_id),
        target_repr=label,
    )
    logger.info("Purged integration %s (%s): %s", integration_id, label, removed)
    return True


def _delete(qs: models.QuerySet) -> int:
    """Delete ``qs`` (its children are gone already). A table that only ``CASCADE``
    relations point at has nothing left pointing at these rows: one plain ``DELETE`` does,
    without Django's collector asking every related table again. Tables with ``SET_NULL``
    (or other) relations go through the collector, which handles those."""
    if _only_cascaded(qs.model):
        return qs._raw_delete(qs.db)
    return qs.delete()[1].get(qs.model._meta.label, 0)


def _delete_in_chunks(qs: models.QuerySet, chunk_size: int) -> int:
    """``qs`` deleted ``chunk_size`` rows a transaction."""
    total = 0
    while True:
        with transaction.atomic():
            generic_plans_allow()
            ids = list(qs.order_by().values_list("pk", flat=True)[:chunk_size])
            if not ids:
                return total
            total += _delete(qs.model._base_manager.filter(pk__in=ids))


def _only_cascaded(model: type[models.Model]) -> bool:
    return all(
        rel.on_delete in (models.CASCADE, models.DO_NOTHING)
        for rel in model._meta.related_objects
        if not rel.many_to_many
    )
