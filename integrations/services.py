"""Writes for the integrations app.

Every function is keyword-only, atomic at the outermost call, raises
``ValidationError`` (keyed by field where one is at fault) for bad input, and writes
an audit event naming the acting user. Views, admin, API, commands and tasks only
adapt their input and call these.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone
from knox.models import AuthToken

from integrations.bitbucket.credentials import clean_credentials
from integrations.bitbucket.urls import parse_target
from integrations.crypto import seal
from integrations.models import (
    AuditEvent,
    Integration,
    IntegrationStatus,
    Membership,
    Namespace,
    Project,
    Reference,
    ReferenceKind,
    Role,
    Tenant,
    default_pr_settings,
)
from integrations.queue import enqueue
from integrations.selectors import cascade_querysets, integration_delete_preview, integration_purge_plan
from integrations.slugs import MAX_LENGTH, is_valid_slug, slugify_name, unique_slug

logger = logging.getLogger(__name__)

Actor = AbstractBaseUser | None
SECRET_KEYS = ("token", "secret", "password", "credential", "authorization", "api_key")
MIN_SCAN_INTERVAL = timedelta(hours=1)
MAX_SCAN_INTERVAL = timedelta(days=30)


# --- Audit ---------------------------------------------------------------------------

def _scrub(value: Any) -> Any:
    """Belt and braces: drop anything secret-looking from audit details."""
    if isinstance(value, dict):
        return {
            k: ("[redacted]" if any(s in str(k).lower() for s in SECRET_KEYS) else _scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def audit(
    *, actor: Actor, action: str, target: models.Model, tenant: Tenant | None, details: dict | None = None
) -> AuditEvent:
    return AuditEvent.objects.create(
        tenant=tenant,
        actor=actor if actor is not None and actor.pk else None,
        actor_repr=actor.get_username() if actor is not None and actor.pk else "system",
        action=action,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        target_repr=str(target)[:255],
        details=_scrub(details or {}),
    )


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
    audit(actor=actor, action="membership.set", target=membership, tenant=tenant,
          details={"user": user.get_username(), "role": role, "created": created})
    return membership


# --- Namespaces ----------------------------------------------------------------------

def _managed_refusal(namespace: Namespace, doing: str) -> ValidationError:
    owner = namespace.integration.name if namespace.integration_id else "an integration"
    return ValidationError(
        f"Namespace '{namespace.name}' is managed by integration '{owner}', so it cannot be {doing}: "
        "its contents come from Bitbucket. Change it in Bitbucket (the next scan follows), "
        "or delete the integration.",
        code="managed",
    )


def _sibling_slugs(tenant: Tenant, parent: Namespace | None, exclude_pk: int | None = None) -> set[str]:
    qs = Namespace.objects.filter(tenant=tenant, parent=parent)
    if exclude_pk:
        qs = qs.exclude(pk=exclude_pk)
    return set(qs.values_list("slug", flat=True))


def _clean_slug(slug: str, field: str = "slug") -> str:
    slug = slug.strip()
    if not is_valid_slug(slug):
        raise ValidationError({field: (
            f"'{slug}' is not a valid slug: use only a-z, 0-9, '-' and '_', at most {MAX_LENGTH} characters."
        )})
    return slug


@transaction.atomic
def namespace_create(
    *, tenant: Tenant, name: str, parent: Namespace | None = None, slug: str = "", description: str = "",
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
            raise _managed_refusal(parent, "given new namespaces")
    taken = _sibling_slugs(tenant, parent)
    if slug:
        slug = _clean_slug(slug)
        if slug in taken:
            raise ValidationError({"slug": f"A namespace with slug '{slug}' already exists here."})
    else:
        slug = unique_slug(name, taken)
    namespace = Namespace.objects.create(tenant=tenant, parent=parent, name=name, slug=slug, description=description)
    audit(actor=actor, action="namespace.create", target=namespace, tenant=tenant,
          details={"slug": slug, "parent": parent.pk if parent else None})
    return namespace


@transaction.atomic
def namespace_update(
    *, namespace: Namespace, actor: Actor, name: str | None = None, slug: str | None = None,
    description: str | None = None,
) -> Namespace:
    if namespace.managed:
        raise _managed_refusal(namespace, "renamed or edited")
    changes: dict[str, Any] = {}
    if name is not None and name.strip() != namespace.name:
        if not name.strip():
            raise ValidationError({"name": "Enter a name."})
        changes["name"] = name.strip()
    if slug is not None and slug.strip() != namespace.slug:
        slug = _clean_slug(slug)
        if slug in _sibling_slugs(namespace.tenant, namespace.parent, exclude_pk=namespace.pk):
            raise ValidationError({"slug": f"A namespace with slug '{slug}' already exists here."})
        changes["slug"] = slug
    if description is not None and description != namespace.description:
        changes["description"] = description
    if changes:
        for field, value in changes.items():
            setattr(namespace, field, value)
        namespace.save(update_fields=[*changes, "updated_at"])
        audit(actor=actor, action="namespace.update", target=namespace, tenant=namespace.tenant,
              details={"changed": sorted(changes)})
    return namespace


@transaction.atomic
def namespace_delete(*, namespace: Namespace, actor: Actor) -> None:
    """Delete an empty, unmanaged namespace. Contents are never deleted implicitly."""
    if namespace.managed:
        raise _managed_refusal(namespace, "deleted")
    children = namespace.children.count()
    projects = namespace.projects.count()
    if children or projects:
        raise ValidationError(
            f"Namespace '{namespace.name}' is not empty ({children} namespaces, {projects} projects). "
            "Move or delete what is inside it first; if it holds an integration, delete the integration.",
            code="not_empty",
        )
    audit(actor=actor, action="namespace.delete", target=namespace, tenant=namespace.tenant,
          details={"slug": namespace.slug})
    namespace.delete()


# --- Projects added by hand ----------------------------------------------------------

@transaction.atomic
def project_create(
    *, namespace: Namespace, name: str, actor: Actor, slug: str = "", full_name: str = "",
    integration: Integration | None = None, remote_uuid: str = "", is_private: bool = True, web_url: str = "",
) -> Project:
    """A project added by a person (not by a scan). Refused inside managed namespaces."""
    if namespace.managed and not (actor is not None and actor.is_superuser):
        raise _managed_refusal(namespace, "given new projects")
    if integration is not None and integration.tenant_id != namespace.tenant_id:
        raise ValidationError({"integration": "The integration belongs to another organisation."})
    taken = set(namespace.projects.values_list("slug", flat=True))
    slug = _clean_slug(slug) if slug else unique_slug(name, taken)
    if slug in taken:
        raise ValidationError({"slug": f"A project with slug '{slug}' already exists in this namespace."})
    project = Project.objects.create(
        namespace=namespace, name=name.strip(), slug=slug, full_name=full_name, integration=integration,
        remote_uuid=remote_uuid, is_private=is_private, web_url=web_url,
    )
    audit(actor=actor, action="project.create", target=project, tenant=namespace.tenant,
          details={"namespace": namespace.pk, "full_name": full_name})
    return project


REPO_FIELDS = "uuid,slug,name,full_name,is_private,language,updated_on,mainbranch.name,links.html.href"


def project_import(*, namespace: Namespace, integration: Integration, url: str, actor: Actor) -> Project:
    """"Scan More Repositories": add one repository by URL to an unmanaged namespace,
    read with the chosen integration's credentials (repository, then its main branch head)."""
    from integrations.bitbucket import client as bb
    from integrations.bitbucket.urls import parse_repository_url

    if namespace.managed:
        raise _managed_refusal(namespace, "given new projects")
    if integration.tenant_id != namespace.tenant_id:
        raise ValidationError({"integration": "The integration belongs to another organisation."})
    workspace, slug = parse_repository_url(url)
    client = bb.client_for(integration)
    try:
        repo = client.get(f"repositories/{workspace}/{slug}", fields=REPO_FIELDS)
    except bb.NotFound:
        raise ValidationError({"url": f"{workspace}/{slug} was not found, or is not visible with the credentials of "
                                      f"'{integration}'."}) from None
    except bb.BitbucketError as exc:
        raise ValidationError({"url": f"Bitbucket refused: {exc}"}) from None
    existing = Project.objects.filter(integration=integration, remote_uuid=repo["uuid"]).select_related("namespace").first()
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
        project = project_create(namespace=namespace, name=repo.get("name") or slug, actor=actor, slug="",
                                 full_name=repo["full_name"], integration=integration, remote_uuid=repo["uuid"],
                                 is_private=bool(repo.get("is_private")),
                                 web_url=((repo.get("links") or {}).get("html") or {}).get("href", ""))
        Project.objects.filter(pk=project.pk).update(language=repo.get("language") or "", main_branch=main)
        if main:
            Reference.objects.create(project=project, name=main, head_commit=head, is_default=True)
    project.refresh_from_db()
    return project


@transaction.atomic
def project_delete(*, project: Project, actor: Actor) -> None:
    namespace = project.namespace
    if namespace.managed:
        raise _managed_refusal(namespace, "have projects deleted by hand")
    audit(actor=actor, action="project.delete", target=project, tenant=namespace.tenant,
          details={"full_name": project.full_name})
    projects_purge(project_ids=[project.pk])


# --- References --------------------------------------------------------------------------
# Written here and by the sync's bulk upsert (scanning/sync.py), which compares first.

def reference_move(project: Project, name: str, head: str) -> bool:
    """Point a tracked branch's reference at ``head`` (a push, a merge); True when
    something changed."""
    if Reference.objects.filter(project=project, kind=ReferenceKind.BRANCH, name=name).exclude(
            head_commit=head).update(head_commit=head):
        return True
    _, created = Reference.objects.get_or_create(
        project=project, kind=ReferenceKind.BRANCH, name=name,
        defaults={"head_commit": head, "is_default": name == project.main_branch})
    return created


def references_remove(*, project: Project, names: list[str]) -> int:
    """Remove references (branches gone from Bitbucket) with what hangs off them."""
    removed = 0
    with transaction.atomic():
        for qs in cascade_querysets(Reference.objects.filter(project=project, kind=ReferenceKind.BRANCH,
                                                             name__in=names)):
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


# --- Integrations --------------------------------------------------------------------

def _pr_settings_problem(pr: dict) -> str:
    """What is wrong with pull-request settings (types, deny list entries), or ''."""
    from scanning.manifests import version_range

    for key in ("enabled", "post_build_status", "post_summary_comment", "status_per_scanner",
                "require_lockfile_update"):
        if not isinstance(pr[key], bool):
            return f"pr_settings.{key} must be true or false."
    if not isinstance(pr["target_branches"], list) or not all(isinstance(p, str) and p.strip()
                                                               for p in pr["target_branches"]):
        return "pr_settings.target_branches must be a list of branch patterns such as main or release/*."
    if not isinstance(pr["deny_packages"], list):
        return "pr_settings.deny_packages must be a list of {name, range} objects."
    for number, entry in enumerate(pr["deny_packages"], start=1):
        if not isinstance(entry, dict) or not str(entry.get("name", "")).strip() or set(entry) - {"name", "range"}:
            return f"pr_settings.deny_packages[{number}]: give a package name and an optional range, e.g. " \
                   '{"name": "lodash", "range": "<4.17.21"}.'
        try:
            version_range(str(entry.get("range") or ""))
        except ValueError as exc:
            return f"pr_settings.deny_packages[{number}] ({entry['name']}): {exc}"
    return ""


def _clean_settings(
    *, scanners: Iterable[str] | None = None, pr_settings: dict | None = None,
    scan_interval: timedelta | None = None, labels: Iterable[str] | None = None,
    tracked_branches: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Validate the editable settings; returns only those given."""
    cleaned: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if scanners is not None:
        scanners = [s.strip() for s in scanners if s and s.strip()]
        known = set(settings.SCANNERS_AVAILABLE)
        unknown = [s for s in scanners if s not in known]
        if unknown:
            errors["scanners"] = f"Unknown scanner(s): {', '.join(unknown)}. Available: {', '.join(sorted(known))}."
        cleaned["scanners"] = sorted(set(scanners))
    if pr_settings is not None:
        if not isinstance(pr_settings, dict):
            errors["pr_settings"] = "Pull-request settings must be an object."
        else:
            allowed = default_pr_settings()
            unknown = sorted(set(pr_settings) - set(allowed))
            if unknown:
                errors["pr_settings"] = f"Unknown pull-request setting(s): {', '.join(unknown)}."
            cleaned["pr_settings"] = {**allowed, **{k: v for k, v in pr_settings.items() if k in allowed}}
            problem = _pr_settings_problem(cleaned["pr_settings"])
            if problem and "pr_settings" not in errors:
                errors["pr_settings"] = problem
    if scan_interval is not None:
        if not isinstance(scan_interval, timedelta) or not MIN_SCAN_INTERVAL <= scan_interval <= MAX_SCAN_INTERVAL:
            errors["scan_interval"] = "The scan interval must be between 1 hour and 30 days."
        cleaned["scan_interval"] = scan_interval
    if labels is not None:
        labels = [str(label).strip() for label in labels if str(label).strip()]
        too_long = [label for label in labels if len(label) > 64]
        if too_long:
            errors["labels"] = f"Labels may have at most 64 characters: '{too_long[0][:20]}...'."
        cleaned["labels"] = sorted(set(labels))
    if tracked_branches is not None:
        patterns = [str(p).strip() for p in tracked_branches if str(p).strip()]
        if any(len(p) > 200 or any(c in p for c in " \t\n~^:\\") for p in patterns):
            errors["tracked_branches"] = "Branch patterns are globs like release/* (no spaces, ~, ^, : or \\)."
        cleaned["tracked_branches"] = sorted(set(patterns))
    if errors:
        raise ValidationError(errors)
    return cleaned


class VerificationFailed(ValidationError):
    """Verification against Bitbucket failed; ``report`` says which checks and why."""

    def __init__(self, report) -> None:
        self.report = report
        super().__init__({"__all__": report.summary_lines() or ["Verification against Bitbucket failed."]})


def integration_create(
    *, tenant: Tenant, parent: Namespace, name: str, auth_method: str, credentials: dict[str, str],
    actor: Actor, bitbucket_url: str = "", workspace: str = "", project_key: str = "",
    scanners: Iterable[str] = (), pr_settings: dict | None = None, scan_interval: timedelta | None = None,
    labels: Iterable[str] = (), description: str = "", tracked_branches: Iterable[str] = (), verify: bool = True,
) -> Integration:
    """Connect a workspace (or one project) and create its root managed namespace
    under ``parent``. The Bitbucket URL is fixed from here on.

    With ``verify`` (the default), Bitbucket is asked first whether the credentials
    can do what the integration needs; if not, :class:`VerificationFailed` carries the
    report and nothing is saved. The first scan is queued once the rows are committed.
    """
    errors: dict[str, Any] = {}
    name = name.strip()
    if not name:
        errors["name"] = "Enter a name for the integration."
    elif Integration.objects.filter(tenant=tenant, name=name).exclude(status=IntegrationStatus.DELETING).exists():
        errors["name"] = f"An integration named '{name}' already exists in this organisation."
    if parent is None:
        errors["parent"] = "Choose the namespace the workspace goes under."
    elif parent.tenant_id != tenant.pk:
        errors["parent"] = "The parent namespace belongs to another organisation."
    elif parent.managed:
        errors["parent"] = (
            f"'{parent.name}' is managed by integration '{parent.integration}'; choose a namespace you created."
        )
    target = None
    try:
        target = parse_target(url=bitbucket_url, workspace=workspace, project_key=project_key)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    creds = None
    try:
        creds = clean_credentials(auth_method, credentials)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        cleaned = _clean_settings(
            scanners=scanners, pr_settings=pr_settings if pr_settings is not None else {},
            scan_interval=scan_interval or timedelta(hours=24), labels=labels, tracked_branches=tracked_branches,
        )
    except ValidationError as exc:
        errors.update(exc.message_dict)
        cleaned = {}
    if target is not None and Integration.objects.filter(
        tenant=tenant, workspace=target.workspace, project_key=target.project_key
    ).exclude(status=IntegrationStatus.DELETING).exists():
        errors["bitbucket_url"] = f"{target.url} is already connected in this organisation."
    if errors:
        raise ValidationError(errors)

    if verify:
        # Outside any transaction: these are network calls.
        from integrations.bitbucket.verify import verify_connection

        report = verify_connection(target=target, credentials=creds, scanners=cleaned.get("scanners", []),
                                   pr_enabled=bool(cleaned.get("pr_settings", {}).get("enabled")))
        if not report.ok:
            raise VerificationFailed(report)

    with transaction.atomic():
        integration = Integration.objects.create(
            tenant=tenant, name=name, description=description.strip(),
            bitbucket_url=target.url, workspace=target.workspace, project_key=target.project_key,
            auth_method=auth_method, credential_identity=creds.identity, credentials=seal(creds.to_json()),
            credentials_updated_at=timezone.now(), webhook_secret=seal(secrets.token_urlsafe(32)),
            created_by=actor if actor is not None and actor.pk else None, next_scan_at=timezone.now(), **cleaned,
        )
        root = Namespace.objects.create(
            tenant=tenant, parent=parent, name=target.workspace, managed=True, integration=integration,
            slug=unique_slug(target.workspace, _sibling_slugs(tenant, parent)),
        )
        integration.root_namespace = root
        integration.save(update_fields=["root_namespace"])
        audit(actor=actor, action="integration.create", target=integration, tenant=tenant, details={
            "bitbucket_url": target.url, "auth_method": auth_method, "parent": parent.pk, "root_namespace": root.pk,
            "verified": verify,
        })
        actor_id = actor.pk if actor is not None and actor.pk else None
        integration_id = integration.pk
        # The first scan starts at once (scanning owns scans; referenced by path only).
        transaction.on_commit(lambda: enqueue("scanning.tasks.first_scan_task", integration_id, actor_id))
    return integration


IMMUTABLE_FIELDS = ("bitbucket_url", "workspace", "project_key")
EDITABLE_FIELDS = ("name", "description", "scanners", "pr_settings", "scan_interval", "labels", "status",
                   "tracked_branches")


@transaction.atomic
def integration_update(*, integration: Integration, actor: Actor, **changes: Any) -> Integration:
    """Edit settings (scanners, PR settings, interval, labels, description, name,
    active/paused). They apply from the next scan."""
    immutable = [f for f in IMMUTABLE_FIELDS if f in changes and changes[f] != getattr(integration, f)]
    if immutable:
        raise ValidationError({immutable[0]: (
            "The Bitbucket URL of an integration cannot be changed. To connect a different workspace or "
            "project, delete this integration and create a new one."
        )})
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS) - set(IMMUTABLE_FIELDS))
    if unknown:
        raise ValidationError(f"These fields cannot be edited here: {', '.join(unknown)}.")
    if integration.status == IntegrationStatus.DELETING:
        raise ValidationError("This integration is being deleted.")
    cleaned = _clean_settings(
        scanners=changes.get("scanners"), pr_settings=changes.get("pr_settings"),
        scan_interval=changes.get("scan_interval"), labels=changes.get("labels"),
        tracked_branches=changes.get("tracked_branches"),
    )
    errors: dict[str, str] = {}
    if "name" in changes:
        name = (changes["name"] or "").strip()
        if not name:
            errors["name"] = "Enter a name for the integration."
        elif Integration.objects.filter(tenant=integration.tenant, name=name).exclude(
            pk=integration.pk).exclude(status=IntegrationStatus.DELETING).exists():
            errors["name"] = f"An integration named '{name}' already exists in this organisation."
        cleaned["name"] = name
    if "description" in changes:
        cleaned["description"] = (changes["description"] or "").strip()
    if "status" in changes:
        if changes["status"] not in (IntegrationStatus.ACTIVE, IntegrationStatus.PAUSED):
            errors["status"] = "An integration can only be set to active or paused."
        cleaned["status"] = changes["status"]
    if errors:
        raise ValidationError(errors)
    changed = sorted(f for f, v in cleaned.items() if getattr(integration, f) != v)
    if not changed:
        return integration
    if "pr_settings" in changed and cleaned["pr_settings"].get("enabled") != integration.pr_config.get(
            "enabled"):
        integration_id = integration.pk
        transaction.on_commit(lambda: enqueue("scanning.tasks.webhooks_sync_task", integration_id))
    for field in changed:
        setattr(integration, field, cleaned[field])
    refreshed = []
    if integration.refused_features and {"scanners", "pr_settings"} & set(changed):
        # New settings may need what was refused before: ask Bitbucket again.
        integration.refused_features, refreshed = {}, ["refused_features"]
    integration.save(update_fields=[*changed, *refreshed, "updated_at"])
    audit(actor=actor, action="integration.update", target=integration, tenant=integration.tenant,
          details={"changed": changed})
    return integration


@transaction.atomic
def credentials_update(
    *, integration: Integration, auth_method: str, credentials: dict[str, str], actor: Actor,
) -> Integration:
    """Replace the credentials (possibly switching method). The old secret is never
    read back or shown; the new one is encrypted before it leaves this function."""
    if integration.status == IntegrationStatus.DELETING:
        raise ValidationError("This integration is being deleted.")
    creds = clean_credentials(auth_method, credentials)
    previous_method = integration.auth_method
    integration.auth_method = auth_method
    integration.credential_identity = creds.identity
    integration.credentials = seal(creds.to_json())
    integration.credentials_updated_at = timezone.now()
    integration.refused_features = {}  # new credentials may have what the old ones lacked
    integration.save(update_fields=[
        "auth_method", "credential_identity", "credentials", "credentials_updated_at", "refused_features",
        "updated_at",
    ])
    audit(actor=actor, action="integration.credentials_update", target=integration, tenant=integration.tenant,
          details={"auth_method": auth_method, "previous_auth_method": previous_method})
    return integration


@transaction.atomic
def webhook_secret_rotate(*, integration: Integration, actor: Actor) -> Integration:
    """A new webhook secret. Bitbucket keeps signing with the old one until each hook the
    portal registered is updated (queued at once, and re-checked by every scan), so the
    previous secret is still accepted for ``WEBHOOK_SECRET_GRACE_MINUTES``."""
    now = timezone.now()
    integration.webhook_secret_previous = integration.webhook_secret
    integration.webhook_secret_previous_until = now + timedelta(minutes=settings.WEBHOOK_SECRET_GRACE_MINUTES)
    integration.webhook_secret_rotated_at = now
    integration.webhook_secret = seal(secrets.token_urlsafe(32))
    integration.save(update_fields=["webhook_secret", "webhook_secret_previous", "webhook_secret_previous_until",
                                    "webhook_secret_rotated_at", "updated_at"])
    audit(actor=actor, action="integration.webhook_secret_rotate", target=integration, tenant=integration.tenant,
          details={"previous_accepted_until": integration.webhook_secret_previous_until.isoformat()})
    integration_id = integration.pk
    transaction.on_commit(lambda: enqueue("scanning.tasks.webhooks_sync_task", integration_id))
    return integration


# --- API tokens ------------------------------------------------------------------------

@transaction.atomic
def api_token_create(*, user: AbstractBaseUser, actor: Actor) -> str:
    """Replace the user's API token with a new one. Returns the token, the only time it
    exists in clear: the database keeps a SHA-512 digest (django-rest-knox)."""
    removed, _ = AuthToken.objects.filter(user=user).delete()
    instance, token = AuthToken.objects.create(user=user, expiry=None)
    audit(actor=actor, action="api_token.create", target=user, tenant=None,
          details={"replaced": bool(removed), "prefix": instance.token_key[:8]})
    return token


@transaction.atomic
def api_token_revoke(*, user: AbstractBaseUser, actor: Actor) -> int:
    removed, _ = AuthToken.objects.filter(user=user).delete()
    if removed:
        audit(actor=actor, action="api_token.revoke", target=user, tenant=None, details={"revoked": removed})
    return removed


# --- Encryption keys -----------------------------------------------------------------

def encryption_keys_rotate(*, batch_size: int | None = None, actor: Actor = None) -> dict[str, int]:
    """Re-encrypt every stored secret that is not under the newest key.

    Works in batches of ``batch_size`` rows, one transaction each, so it can be
    interrupted and run again. Fails closed: a secret no configured key can read
    raises ``DecryptionError`` and nothing in that batch changes.
    """
    from integrations.crypto import SealedSecret, encrypted_fields, key_ring

    ring = key_ring()
    batch_size = batch_size or settings.FIELD_ENCRYPTION_ROTATE_BATCH
    rotated: dict[str, int] = {}
    for model, field in encrypted_fields():
        label = f"{model._meta.label}.{field.name}"
        rotated[label] = 0
        stale = (model._base_manager.exclude(**{field.name: ""}).exclude(**{f"{field.name}__isnull": True})
                 .exclude(**{f"{field.name}__startswith": ring.prefix}).order_by("pk"))
        last_pk = None
        while True:
            with transaction.atomic():
                page = stale.filter(pk__gt=last_pk) if last_pk is not None else stale
                rows = list(page.select_for_update().only("pk", field.attname)[:batch_size])
                if not rows:
                    break
                for row in rows:
                    sealed = getattr(row, field.attname)
                    setattr(row, field.attname, SealedSecret(ring.encrypt(ring.decrypt(sealed.ciphertext))))
                model._base_manager.bulk_update(rows, [field.attname])
                rotated[label] += len(rows)
                last_pk = rows[-1].pk
    if any(rotated.values()):
        logger.info("Re-encrypted secrets under key %s: %s", ring.primary_id, rotated)
        AuditEvent.objects.create(
            tenant=None, actor=actor if actor is not None and actor.pk else None,
            actor_repr=actor.get_username() if actor is not None and actor.pk else "system",
            action="encryption.rotate", target_type="crypto.keyring", target_id=ring.primary_id,
            target_repr=f"key {ring.primary_id}", details={"rotated": rotated},
        )
    return rotated


# --- Deletion ------------------------------------------------------------------------

@transaction.atomic
def integration_delete_request(*, integration: Integration, actor: Actor) -> dict[str, int]:
    """Hide the integration at once and queue the bottom-up purge of its subtree.

    Returns the preview counts that were recorded in the audit event.
    """
    integration = Integration.objects.select_for_update().get(pk=integration.pk)
    preview = integration_delete_preview(integration=integration)
    if integration.status != IntegrationStatus.DELETING:
        integration.status = IntegrationStatus.DELETING
        integration.next_scan_at = None
        integration.save(update_fields=["status", "next_scan_at", "updated_at"])
        audit(actor=actor, action="integration.delete", target=integration, tenant=integration.tenant,
              details={"preview": preview})
    integration_id = integration.pk
    # Scanning removes the webhooks it registered in Bitbucket, then calls integration_purge.
    transaction.on_commit(lambda: enqueue("scanning.tasks.integration_teardown_task", integration_id))
    return preview


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
        tenant=tenant, actor=None, actor_repr="system", action="integration.purged",
        target_type=Integration._meta.label_lower, target_id=str(integration_id), target_repr=label,
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
