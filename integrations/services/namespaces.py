"""Namespaces: a tree per tenant; managed ones (an integration's) are read-only to people."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from integrations.models import (
    Namespace,
    Tenant,
)
from integrations.services.audit import Actor, audit
from integrations.slugs import MAX_LENGTH, is_valid_slug, unique_slug

logger = logging.getLogger(__name__)

# --- Namespaces ----------------------------------------------------------------------


def managed_refusal(namespace: Namespace, doing: str) -> ValidationError:
    owner = namespace.integration.name if namespace.integration_id else "an integration"
    return ValidationError(
        f"Namespace '{namespace.name}' is managed by integration '{owner}', so it cannot be {doing}: "
        "its contents come from Bitbucket. Change it in Bitbucket (the next scan follows), "
        "or delete the integration.",
        code="managed",
    )


def sibling_slugs(tenant: Tenant, parent: Namespace | None, exclude_pk: int | None = None) -> set[str]:
    qs = Namespace.objects.filter(tenant=tenant, parent=parent)
    if exclude_pk:
        qs = qs.exclude(pk=exclude_pk)
    return set(qs.values_list("slug", flat=True))


def clean_slug(slug: str, field: str = "slug") -> str:
    slug = slug.strip()
    if not is_valid_slug(slug):
        raise ValidationError(
            {field: (f"'{slug}' is not a valid slug: use only a-z, 0-9, '-' and '_', at most {MAX_LENGTH} characters.")}
        )
    return slug


@transaction.atomic
def namespace_create(
    *,
    tenant: Tenant,
    name: str,
    parent: Namespace | None = None,
    slug: str = "",
    description: str = "",
    actor: Actor,
) -> Namespace:
    """A hand-made (unmanaged) namespace. Only a superuser may add one inside a
    managed namespace (the integration's delete removes it with the rest)."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Enter a name."})
    if parent is not None:
        if parent.tenant_id != tenant.pk:
            raise ValidationError({"parent": "The parent namespace belongs to another organisation."})
        if parent.managed and not (actor is not None and actor.is_superuser):
            raise managed_refusal(parent, "given new namespaces")
    taken = sibling_slugs(tenant, parent)
    if slug:
        slug = clean_slug(slug)
        if slug in taken:
            raise ValidationError({"slug": f"A namespace with slug '{slug}' already exists here."})
    else:
        slug = unique_slug(name, taken)
    namespace = Namespace.objects.create(tenant=tenant, parent=parent, name=name, slug=slug, description=description)
    audit(
        actor=actor,
        action="namespace.create",
        target=namespace,
        tenant=tenant,
        details={"slug": slug, "parent": parent.pk if parent else None},
    )
    return namespace


@transaction.atomic
def namespace_update(
    *,
    namespace: Namespace,
    actor: Actor,
    name: str | None = None,
    slug: str | None = None,
    description: str | None = None,
) -> Namespace:
    if namespace.managed:
        raise managed_refusal(namespace, "renamed or edited")
    changes: dict[str, Any] = {}
    if name is not None and name.strip() != namespace.name:
        if not name.strip():
            raise ValidationError({"name": "Enter a name."})
        changes["name"] = name.strip()
    if slug is not None and slug.strip() != namespace.slug:
        slug = clean_slug(slug)
        if slug in sibling_slugs(namespace.tenant, namespace.parent, exclude_pk=namespace.pk):
            raise ValidationError({"slug": f"A namespace with slug '{slug}' already exists here."})
        changes["slug"] = slug
    if description is not None and description != namespace.description:
        changes["description"] = description
    if changes:
        for field, value in changes.items():
            setattr(namespace, field, value)
        namespace.save(update_fields=[*changes, "updated_at"])
        audit(
            actor=actor,
            action="namespace.update",
            target=namespace,
            tenant=namespace.tenant,
            details={"changed": sorted(changes)},
        )
    return namespace


@transaction.atomic
def namespace_delete(*, namespace: Namespace, actor: Actor) -> None:
    """Delete an empty, unmanaged namespace. Contents are never deleted implicitly."""
    if namespace.managed:
        raise managed_refusal(namespace, "deleted")
    children = namespace.children.count()
    projects = namespace.projects.count()
    if children or projects:
        raise ValidationError(
            f"Namespace '{namespace.name}' is not empty ({children} namespaces, {projects} projects). "
            "Move or delete what is inside it first; if it holds an integration, delete the integration.",
            code="not_empty",
        )
    audit(
        actor=actor,
        action="namespace.delete",
        target=namespace,
        tenant=namespace.tenant,
        details={"slug": namespace.slug},
    )
    namespace.delete()
