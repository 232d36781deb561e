"""Audit events: one function writes them all, with the acting user (or 'system')."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import models

from integrations.models import (
    AuditEvent,
    Tenant,
)

logger = logging.getLogger(__name__)

Actor = AbstractBaseUser | None
SECRET_KEYS = ("token", "secret", "password", "credential", "authorization", "api_key")


def _scrub(value: Any) -> Any:
    """Belt and braces: drop anything secret-looking from audit details."""
    if isinstance(value, dict):
        return {
            k: ("[redacted]" if any(s in str(k).lower() for s in SECRET_KEYS) else _scrub(v)) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def actor_or_none(actor: Actor) -> AbstractBaseUser | None:
    """The user to record, or None for the system (commands, the scheduler, webhooks)."""
    return actor if actor is not None and actor.pk else None


def audit(
    *,
    actor: Actor,
    action: str,
    target: models.Model | None,
    tenant: Tenant | None,
    details: dict | None = None,
    target_type: str = "",
    target_id: str = "",
    target_repr: str = "",
) -> AuditEvent:
    """The one writer of audit events. ``target`` is the object acted on; for actions on
    many objects (a key rotation) pass ``target=None`` and describe it with ``target_*``."""
    who = actor_or_none(actor)
    return AuditEvent.objects.create(
        tenant=tenant,
        actor=who,
        actor_repr=who.get_username() if who is not None else "system",
        action=action,
        target_type=target._meta.label_lower if target is not None else target_type,
        target_id=str(target.pk) if target is not None else target_id,
        target_repr=(str(target) if target is not None else target_repr)[:255],
        details=_scrub(details or {}),
    )
