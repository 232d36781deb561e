"""Tenants and memberships."""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from integrations.models import (
    Membership,
    Role,
    Tenant,
)
from integrations.services.audit import Actor, audit
from integrations.slugs import is_valid_slug, slugify_name

logger = logging.getLogger(__name__)

# --- Tenants and memberships ---------------------------------------------------------


@transaction.atomic
def tenant_create(*, name: str, slug: str = "", actor: Actor) -> Tenant:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Enter a name for the organisation."})
    slug = slug.strip() or slugify_name(name)
    if not is_valid_slug(slug):
        raise ValidationError({"slug": "Use only a-z, 0-9, '-' and '_' (at most 64 characters)."})
    if Tenant.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": f"The slug '{slug}' is taken by another organisation."})
    tenant = Tenant.objects.create(name=name, slug=slug)
    audit(actor=actor, action="tenant.create", target=tenant, tenant=tenant, details={"slug": slug})
    return tenant


@transaction.atomic
def membership_set(*, tenant: Tenant, user: AbstractBaseUser, role: str, actor: Actor) -> Membership:
    if role not in Role.values:
        raise ValidationError({"role": f"Role must be one of: {', '.join(Role.values)}."})
    membership, created = Membership.objects.update_or_create(user=user, tenant=tenant, defaults={"role": role})
    audit(
        actor=actor,
        action="membership.set",
        target=membership,
        tenant=tenant,
        details={"user": user.get_username(), "role": role, "created": created},
    )
    return membership
