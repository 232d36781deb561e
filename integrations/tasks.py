"""django-q2 tasks of the integrations app: take ids, load, call a service."""

from __future__ import annotations

from integrations import services


def integration_purge_task(integration_id: int) -> bool:
    return services.integration_purge(integration_id=integration_id)
