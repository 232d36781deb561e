"""Projects (added by hand, imported, purged) and references (the one writer besides the sync's bulk upsert)."""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError
from django.db import transaction

from integrations.bitbucket import client as bb
from integrations.bitbucket.urls import parse_repository_url
from integrations.models import (
    Integration,
    Namespace,
    Project,
    Reference,
    ReferenceKind,
    branch_matches,
)
from integrations.selectors import (
    cascade_querysets,
)
from integrations.services.audit import Actor, audit
from integrations.services.namespaces import clean_slug, managed_refusal
from integrations.slugs import unique_slug

logger = logging.getLogger(__name__)

# --- Projects added by hand ----------------------------------------------------------


@transaction.atomic
def project_create(
    *,
    namespace: Namespace,
    name: str,
    actor: Actor,
    slug: str = "",
    full_name: str = "",
    integration: Integration | None = None,
    remote_uuid: str = "",
    is_private: bool = True,
    web_url: str = "",
) -> Project:
    """A project added by a person (not by a scan). Refused inside managed namespaces."""
    if namespace.managed and not (actor is not None and actor.is_superuser):
        raise managed_refusal(namespace, "given new projects")
    if integration is not None and integration.tenant_id != namespace.tenant_id:
        raise ValidationError({"integration": "The integration belongs to another organisation."})
    taken = set(namespace.projects.values_list("slug", flat=True))
    slug = clean_slug(slug) if slug else unique_slug(name, taken)
    if slug in taken:
        raise ValidationError({"slug": f"A project with slug '{slug}' already exists in this namespace."})
    project = Project.objects.create(
        namespace=namespace,
        name=name.strip(),
        slug=slug,
        full_name=full_name,
        integration=integration,
        remote_uuid=remote_uuid,
        is_private=is_private,
        web_url=web_url,
    )
    audit(
        actor=actor,
        action="project.create",
        target=project,
        tenant=namespace.tenant,
        details={"namespace": namespace.pk, "full_name": full_name},
    )
    return project


def project_import(*, namespace: Namespace, integration: Integration, url: str, actor: Actor) -> Project:
    """ "Scan More Repositories": add one repository by URL to an unmanaged namespace,
    read with the chosen integration's credentials (repository, then its main branch head)."""
    if namespace.managed:
        raise managed_refusal(namespace, "given new projects")
    if integration.tenant_id != namespace.tenant_id:
        raise ValidationError({"integration": "The integration belongs to another organisation."})
    workspace, slug = parse_repository_url(url)
    client = bb.client_for(integration)
    try:
        repo = client.repository(f"{workspace}/{slug}")
    except bb.NotFound:
        raise ValidationError(
            {"url": f"{workspace}/{slug} was not found, or is not visible with the credentials of '{integration}'."}
        ) from None
    except bb.BitbucketError as exc:
        raise ValidationError({"url": f"Bitbucket refused: {exc}"}) from None
    existing = (
        Project.objects.filter(integration=integration, remote_uuid=repo["uuid"]).select_related("namespace").first()
    )
    if existing:
        raise ValidationError({"url": f"{repo['full_name']} is already in the inventory, in '{existing.namespace}'."})
    main = (repo.get("mainbranch") or {}).get("name") or ""
    head = ""
    if main:
        try:
            head = client.git_refs(workspace, slug).get(f"refs/heads/{main}", "")
        except bb.BitbucketError:
            head = ""  # the next scan of the project fills it in
    with transaction.atomic():
        project = project_create(
            namespace=namespace,
            name=repo.get("name") or slug,
            actor=actor,
            slug="",
            full_name=repo["full_name"],
            integration=integration,
            remote_uuid=repo["uuid"],
            is_private=bool(repo.get("is_private")),
            web_url=((repo.get("links") or {}).get("html") or {}).get("href", ""),
        )
        Project.objects.filter(pk=project.pk).update(language=repo.get("language") or "", main_branch=main)
        if main:
            references_sync(rows=[(project.pk, main, {main: head})], tracked=[])
    project.refresh_from_db()
    return project


@transaction.atomic
def project_delete(*, project: Project, actor: Actor) -> None:
    namespace = project.namespace
    if namespace.managed:
        raise managed_refusal(namespace, "have projects deleted by hand")
    audit(
        actor=actor,
        action="project.delete",
        target=project,
        tenant=namespace.tenant,
        details={"full_name": project.full_name},
    )
    projects_purge(project_ids=[project.pk])


# --- References --------------------------------------------------------------------------
# Written here and by the sync's bulk upsert (scanning/sync.py), which compares first.


def references_sync(*, rows: list[tuple[int, str, dict[str, str] | None]], tracked: list[str]) -> dict[str, int]:
    """Make projects' references match their branch heads (the org sync, a repository
    refresh, an import): for each ``(project id, main branch, {branch: head} or None)``,
    the main branch is the default reference and branches matching ``tracked`` are kept;
    references of branches that are gone are removed with what hangs off them. ``None``
    heads (not readable this time) leave that project's references as they are. Writes only
    what differs, in bulk; returns ``{"created", "updated", "removed"}`` counts."""
    counts = {"created": 0, "updated": 0, "removed": 0}
    wanted: list[Reference] = []
    keep: dict[int, set[str]] = {}
    readable = [(pid, main, heads) for pid, main, heads in rows if heads is not None]
    for project_id, main, heads in readable:
        names = {main} if main else set()
        names |= {b for b in heads if branch_matches(b, tracked)}
        keep[project_id] = names
        wanted += [
            Reference(
                project_id=project_id,
                kind=ReferenceKind.BRANCH,
                name=name,
                head_commit=heads.get(name, ""),
                is_default=(name == main),
            )
            for name in sorted(names)
        ]
    if not readable:
        return counts
    current = {
        (pid, name): (head, default)
        for pid, name, head, default in Reference.objects.filter(
            project_id__in=[pid for pid, _, _ in readable], kind=ReferenceKind.BRANCH
        ).values_list("project_id", "name", "head_commit", "is_default")
    }
    with transaction.atomic():
        stale = [(pid, name) for (pid, name) in current if name not in keep.get(pid, set())]
        for pid in {pid for pid, _ in stale}:
            names = [name for p, name in stale if p == pid]
            for qs in cascade_querysets(
                Reference.objects.filter(project_id=pid, kind=ReferenceKind.BRANCH, name__in=names)
            ):
                qs.delete()
        counts["removed"] = len(stale)
        # A main branch that moved: clear the old default first (one default per project).
        moved = [
            pid
            for pid, main, _ in readable
            if any(default and name != main for (p, name), (_, default) in current.items() if p == pid)
        ]
        if moved:
            Reference.objects.filter(project_id__in=moved, is_default=True).update(is_default=False)
        changed = [r for r in wanted if current.get((r.project_id, r.name)) != (r.head_commit, r.is_default)]
        if changed:
            Reference.objects.bulk_create(
                changed,
                update_conflicts=True,
                unique_fields=["project", "kind", "name"],
                update_fields=["head_commit", "is_default", "updated_at"],
            )
    created = sum(1 for r in changed if (r.project_id, r.name) not in current)
    counts["created"], counts["updated"] = created, len(changed) - created
    return counts


def reference_move(project: Project, name: str, head: str) -> bool:
    """Point a tracked branch's reference at ``head`` (a push, a merge); True when
    something changed."""
    if (
        Reference.objects.filter(project=project, kind=ReferenceKind.BRANCH, name=name)
        .exclude(head_commit=head)
        .update(head_commit=head)
    ):
        return True
    _, created = Reference.objects.get_or_create(
        project=project,
        kind=ReferenceKind.BRANCH,
        name=name,
        defaults={"head_commit": head, "is_default": name == project.main_branch},
    )
    return created


def references_remove(*, project: Project, names: list[str]) -> int:
    """Remove references (branches gone from Bitbucket) with what hangs off them."""
    removed = 0
    with transaction.atomic():
        for qs in cascade_querysets(
            Reference.objects.filter(project=project, kind=ReferenceKind.BRANCH, name__in=names)
        ):
            count, _ = qs.delete()
            removed = count
    return removed


def projects_purge(*, project_ids: list[int]) -> int:
    """Remove projects and everything that hangs off them (references, scanner results,
    sync log entries...), children first. Used by manual deletes, the sync's
    reconciliation and ``repo:deleted`` webhooks; the callers check the rules."""
    if not project_ids:
        return 0
    with transaction.atomic():
        for qs in cascade_querysets(Project._base_manager.filter(pk__in=project_ids)):
            qs.delete()
    return len(project_ids)
