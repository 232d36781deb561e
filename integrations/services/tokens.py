"""API tokens, stored hashed (django-rest-knox); created and revoked with an audit row."""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from knox.models import AuthToken

from integrations.services.audit import Actor, audit

logger = logging.getLogger(__name__)

# --- API tokens ------------------------------------------------------------------------


@transaction.atomic
def api_token_create(*, user: AbstractBaseUser, actor: Actor) -> str:
    """Replace the user's API token with a new one. Returns the token, the only time it
    exists in clear: the database keeps a SHA-512 digest (django-rest-knox)."""
    removed, _ = AuthToken.objects.filter(user=user).delete()
    _, token = AuthToken.objects.create(user=user, expiry=None)
    audit(
        actor=actor,
        action="api_token.create",
        target=user,
        tenant=None,
        details={"replaced": bool(removed)},  # no part of the token: audit rows hold no secret
    )
    return token


@transaction.atomic
def api_token_revoke(*, user: AbstractBaseUser, actor: Actor) -> int:
    removed, _ = AuthToken.objects.filter(user=user).delete()
    if removed:
        audit(actor=actor, action="api_token.revoke", target=user, tenant=None, details={"revoked": removed})
    return removed
