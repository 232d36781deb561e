"""Reads for the integrations app. Views, admin, API and tasks read through these."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from django.db import models
from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery
from knox.models import AuthToken

from integrations.bitbucket.credentials import Credentials
from integrations.crypto import encrypted_fields, key_ring
from integrations.models import Integration, IntegrationStatus, Membership, Namespace, Project, Role, Tenant


def secrets_under_old_keys() -> dict[str, int]:
    """Per ``model.field``, how many stored secrets are not under the newest key."""
    prefix = key_ring().prefix
    counts: dict[str, int] = {}
    for model, field in encrypted_fields():
        stale = (
            model._base_manager.exclude(**{field.name: ""})
            .exclude(**{f"{field.name}__isnull": True})
            .exclude(**{f"{field.name}__startswith": prefix})
            .count()
        )
        counts[f"{model._meta.label}.{field.name}"] = stale
    return counts


def integration_list(*, tenant: Tenant | None = None) -> QuerySet[Integration]:
    """Integrations people see: those being deleted are hidden at once."""
    qs = Integration.objects.exclude(status=IntegrationStatus.DELETING).select_related("tenant", "root_namespace")
    return qs.filter(tenant=tenant) if tenant is not None else qs


def integrations_with_health(queryset: QuerySet[Integration]) -> QuerySet[Integration]:
    """Integrations with what every list of them shows, in one query: ``open_errors`` (open
    sync log entries), ``active_scan`` (a queued or running scan's id) and ``last_status``
    (the newest scan's status). The manage page, the API and the admin use this one
    definition (the rows live in other apps; the query names them by relation only)."""
    newest = (
        Integration.objects.filter(pk=OuterRef("pk"))
        .values("scan_runs__status")
        .order_by("-scan_runs__id")  # the newest, as the progress feed picks it (by id)
    )
    return queryset.annotate(
        open_errors=Count("sync_logs", filter=Q(sync_logs__resolved_at__isnull=True), distinct=True),
        active_scan=Max("scan_runs__id", filter=Q(scan_runs__status__in=["queued", "running"])),
        last_status=Subquery(newest[:1]),
    )


def integrations_overlapping(
    *, tenant: Tenant | int, workspace: str, project_key: str = "", exclude_pk: int | None = None
) -> list[Integration]:
    """The tenant's integrations whose scope overlaps this one's: the same workspace and
    project, the whole workspace around this project, or (for a workspace) any of its
    projects. Integrations being deleted do not count; other tenants never do."""
    qs = Integration.objects.filter(tenant=tenant, workspace__iexact=workspace).exclude(
        status=IntegrationStatus.DELETING
    )
    if project_key:
        qs = qs.filter(Q(project_key="") | Q(project_key__iexact=project_key))
    if exclude_pk is not None:
        qs = qs.exclude(pk=exclude_pk)
    return list(qs.order_by("project_key", "name"))


def integration_get_credentials(*, integration: Integration):
    """The decrypted credentials, for the Bitbucket client only. Fails closed."""
    return Credentials.from_json(integration.auth_method, integration.credentials.reveal())


ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


def membership_role(*, user, tenant: Tenant | int) -> str | None:
    """The user's role in a tenant; staff act as owners everywhere; None: no access."""
    if not getattr(user, "is_authenticated", False):
        return None
    if user.is_staff:
        return Role.OWNER
    tenant_id = tenant.pk if isinstance(tenant, Tenant) else tenant
    return user_tenant_roles(user=user).get(tenant_id)


def user_tenant_roles(*, user) -> dict[int, str]:
    """{tenant id: role} for a non-staff user (cached on the user object per request)."""
    cached = getattr(user, "_tenant_roles", None)
    if cached is None:
        cached = dict(Membership.objects.filter(user=user).values_list("tenant_id", "role"))
        user._tenant_roles = cached
    return cached


def user_has_api_token(*, user) -> bool:
    return AuthToken.objects.filter(user=user).exists()


def tenants_visible(*, user) -> QuerySet[Tenant]:
    if user.is_staff:
        return Tenant.objects.all()
    return Tenant.objects.filter(pk__in=list(user_tenant_roles(user=user)))


def has_role(*, user, tenant: Tenant | int, minimum: str) -> bool:
    role = membership_role(user=user, tenant=tenant)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[minimum]


def namespace_subtree_levels(*, root_ids: list[int]) -> list[list[int]]:
    """Namespace ids under (and including) ``root_ids``, grouped by depth.

    Each root is walked in turn; a root already reached from an earlier one is
    skipped, so depths are true depths and deleting the deepest level first never
    meets a protected parent. One query per level; trees here are a few levels deep.
    """
    levels: list[list[int]] = []
    seen: set[int] = set()
    for root in root_ids:
        if root is None or root in seen:
            continue
        current, depth = [root], 0
        while current:
            current = [i for i in current if i not in seen]
            if not current:
                break
            seen.update(current)
            if depth == len(levels):
                levels.append([])
            levels[depth].extend(current)
            current = list(Namespace.objects.filter(parent_id__in=current).values_list("id", flat=True))
            depth += 1
    return levels


def namespace_subtree_ids(*, root_id: int) -> list[int]:
    """The namespace and every namespace under it."""
    return [i for level in namespace_subtree_levels(root_ids=[root_id]) for i in level]


def integration_subtree_levels(*, integration: Integration) -> list[list[int]]:
    """Every namespace that goes when the integration goes: its root's subtree,
    including hand-made children, and any other namespace it manages."""
    roots = [integration.root_namespace_id] + list(
        Namespace.objects.filter(integration=integration).values_list("id", flat=True)
    )
    return namespace_subtree_levels(root_ids=roots)


def cascade_querysets(qs: QuerySet) -> Iterator[QuerySet]:
    """Querysets to delete, children first, so that deleting ``qs`` orphans nothing.

    Follows every reverse ``CASCADE`` relation (including those of apps that hang
    results off projects or integrations), skipping self-relations (trees are
    deleted level by level by the caller). ``PROTECT`` relations are the caller's
    job to empty first; ``SET_NULL`` ones are left to Django's collector.
    """
    model = qs.model
    for rel in model._meta.related_objects:
        if rel.many_to_many or rel.related_model is model or rel.on_delete is not models.CASCADE:
            continue
        child = rel.related_model._base_manager.filter(**{f"{rel.field.name}__in": qs.values("pk")})
        yield from cascade_querysets(child)
    yield qs


def integration_purge_plan(*, integration: Integration) -> list[QuerySet]:
    """The ordered querysets that deleting ``integration`` removes, bottom-up."""
    levels = integration_subtree_levels(integration=integration)
    all_ids = [i for level in levels for i in level]
    plan: list[QuerySet] = []
    plan.extend(cascade_querysets(Project._base_manager.filter(namespace_id__in=all_ids)))
    for level in reversed(levels):
        plan.extend(cascade_querysets(Namespace._base_manager.filter(id__in=level)))
    plan.extend(cascade_querysets(Integration._base_manager.filter(pk=integration.pk)))
    return plan


# What deleting removes, in the words of the people who use the portal (row kinds that are
# bookkeeping only, such as scanner bookmarks or scan chunks, are not listed).
PREVIEW_WORDS = {
    "namespaces": ("namespace", "namespaces (the workspace's and every one under it)"),
    "projects": ("repository", "repositories"),
    "references": ("tracked branch", "tracked branches"),
    "dependency packages": ("dependency record", "dependency records"),
    "posture findings": ("posture finding", "posture findings"),
    "pull requests": ("pull request", "pull requests"),
    "pull request scans": ("pull-request scan result", "pull-request scan results"),
    "scan runs": ("scan in the history", "scans in the history"),
    "sync logs": ("sync log entry", "sync log entries"),
    "members": ("workspace member", "workspace members"),
    "webhook deliveries": ("webhook delivery received", "webhook deliveries received"),
}


def delete_preview_in_words(preview: dict[str, int]) -> list[str]:
    """``integration_delete_preview`` as lines a person reads: "1,204 repositories"."""
    lines = []
    for key, (one, many) in PREVIEW_WORDS.items():
        n = preview.get(key, 0)
        if n or key in ("namespaces", "projects"):
            lines.append(f"{n:,} {one if n == 1 else many}")
    return lines


def integration_delete_preview(*, integration: Integration) -> dict[str, int]:
    """How many rows of each kind deleting the integration removes.

    Keys are verbose plural names ("namespaces", "projects", "references", ...);
    a row reachable by two paths (a sync log of a project, and of the integration)
    is counted once.
    """
    per_model: dict[type[models.Model], Q] = defaultdict(Q)
    for qs in integration_purge_plan(integration=integration):
        if qs.model is Integration:
            continue
        per_model[qs.model] |= Q(pk__in=qs.values("pk"))
    preview = {"namespaces": 0, "projects": 0, "references": 0}
    for model, condition in per_model.items():
        preview[str(model._meta.verbose_name_plural)] = model._base_manager.filter(condition).count()
    return preview
