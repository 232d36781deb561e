"""Integrations: settings validation, create, update, credentials, webhook secret, delete request."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from integrations.bitbucket.credentials import clean_credentials
from integrations.bitbucket.urls import parse_target
from integrations.bitbucket.verify import VerificationReport, verify_connection, verify_draft
from integrations.crypto import seal
from integrations.models import (
    Integration,
    IntegrationStatus,
    Namespace,
    Tenant,
)
from integrations.queue import enqueue
from integrations.selectors import (
    integration_delete_preview,
    integration_get_credentials,
    integrations_overlapping,
)
from integrations.services.audit import Actor, actor_or_none, audit
from integrations.services.namespaces import sibling_slugs
from integrations.services.validation import clean_settings
from integrations.slugs import unique_slug

logger = logging.getLogger(__name__)


# --- Integrations --------------------------------------------------------------------


def credentials_sealed(credentials) -> dict:
    """Checked credentials in a form a page may keep for the next attempt (the session):
    the method and the encrypted secret, never the secret itself."""
    return {"auth_method": credentials.method, "sealed": seal(credentials.to_json()).ciphertext}


def integration_verify(
    *, integration: Integration, credentials=None, scanners=None, pr_enabled: bool | None = None
) -> VerificationReport:
    """Verify against Bitbucket what ``integration`` needs: its own target, the stored
    credentials unless others are given, its scanners and PR setting unless others are."""
    return verify_connection(
        target=parse_target(workspace=integration.workspace, project_key=integration.project_key),
        credentials=credentials or integration_get_credentials(integration=integration),
        scanners=integration.scanners if scanners is None else scanners,
        pr_enabled=bool(integration.pr_config.get("enabled")) if pr_enabled is None else pr_enabled,
    )


class VerificationFailed(ValidationError):
    """Verification against Bitbucket failed; ``report`` says which checks and why.
    ``kept`` holds the credentials that were checked, encrypted (``{"auth_method",
    "sealed"}``), so a page can keep them for the next attempt without echoing them."""

    def __init__(self, report, credentials=None) -> None:
        self.report = report
        self.kept = credentials_sealed(credentials) if credentials is not None else None
        super().__init__({"__all__": report.summary_lines() or ["Verification against Bitbucket failed."]})


def integration_overlap_problem(
    *, tenant: Tenant, workspace: str, project_key: str = "", exclude_pk: int | None = None
) -> str | None:
    """Why this scope may not be connected in ``tenant`` (another integration already lists
    some of its repositories: they would be inventoried twice), naming that integration and
    what to do; None when nothing overlaps. Other tenants' integrations never count."""
    found = integrations_overlapping(tenant=tenant, workspace=workspace, project_key=project_key, exclude_pk=exclude_pk)
    if not found:
        return None
    same = next((i for i in found if i.project_key.lower() == project_key.lower()), None)
    if same is not None:
        what = f"Project {project_key} of workspace {workspace}" if project_key else f"Workspace {workspace}"
        return (
            f"{what} is already connected as integration '{same.name}'. Edit '{same.name}' to change its "
            "scanners, settings or credentials, or delete it before connecting this again."
        )
    whole = next((i for i in found if not i.project_key), None)
    if whole is not None:
        return (
            f"Project {project_key} is already covered by integration '{whole.name}', which connects all of "
            f"workspace {workspace}: connecting it too would list its repositories twice. Keep '{whole.name}', "
            "or delete it and connect the projects you want one by one."
        )
    names = ", ".join(f"'{i.name}' (project {i.project_key})" for i in found)
    them = "that integration" if len(found) == 1 else "those integrations"
    return (
        f"Workspace {workspace} already has projects connected: {names}. Connecting the whole workspace would "
        f"list their repositories twice. Delete {them} first (the workspace integration then covers their "
        "repositories), or connect the other projects one by one."
    )


def integration_verify_draft(
    *,
    tenant: Tenant,
    auth_method: str,
    credentials: dict[str, str],
    bitbucket_url: str = "",
    workspace: str = "",
    project_key: str = "",
    scanners: Iterable[str] = (),
    pr_enabled: bool = False,
):
    """The Add page's Verify: what a person typed, checked before anything is saved. A scope
    another integration of the tenant already covers is refused first (``ValidationError``
    on ``bitbucket_url``), without asking Bitbucket. Returns ``(target, credentials, report)``."""
    try:
        target = parse_target(url=bitbucket_url, workspace=workspace, project_key=project_key)
    except ValidationError:
        target = None  # verify_draft reports it with the other fields
    if target is not None:
        problem = integration_overlap_problem(tenant=tenant, workspace=target.workspace, project_key=target.project_key)
        if problem:
            raise ValidationError({"bitbucket_url": problem})
    return verify_draft(
        auth_method=auth_method,
        credentials=credentials,
        bitbucket_url=bitbucket_url,
        workspace=workspace,
        project_key=project_key,
        scanners=list(scanners),
        pr_enabled=pr_enabled,
    )


def integration_create(
    *,
    tenant: Tenant,
    parent: Namespace,
    name: str,
    auth_method: str,
    credentials: dict[str, str],
    actor: Actor,
    bitbucket_url: str = "",
    workspace: str = "",
    project_key: str = "",
    scanners: Iterable[str] = (),
    pr_settings: dict | None = None,
    scan_interval: timedelta | None = None,
    labels: Iterable[str] = (),
    description: str = "",
    tracked_branches: Iterable[str] = (),
    verify: bool = True,
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
        cleaned = clean_settings(
            scanners=scanners,
            pr_settings=pr_settings if pr_settings is not None else {},
            scan_interval=scan_interval or timedelta(hours=24),
            labels=labels,
            tracked_branches=tracked_branches,
        )
    except ValidationError as exc:
        errors.update(exc.message_dict)
        cleaned = {}
    if target is not None:
        problem = integration_overlap_problem(tenant=tenant, workspace=target.workspace, project_key=target.project_key)
        if problem:
            errors["bitbucket_url"] = problem
    if errors:
        raise ValidationError(errors)

    if verify:
        # Outside any transaction: these are network calls.

        report = verify_connection(
            target=target,
            credentials=creds,
            scanners=cleaned.get("scanners", []),
            pr_enabled=bool(cleaned.get("pr_settings", {}).get("enabled")),
        )
        if not report.ok:
            raise VerificationFailed(report, creds)

    with transaction.atomic():
        # Verification took seconds: another Add of an overlapping scope may have landed
        # meanwhile. The tenant's row serialises Adds; the check runs again under it.
        Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
        problem = integration_overlap_problem(tenant=tenant, workspace=target.workspace, project_key=target.project_key)
        if problem:
            raise ValidationError({"bitbucket_url": problem})
        integration = Integration.objects.create(
            tenant=tenant,
            name=name,
            description=description.strip(),
            bitbucket_url=target.url,
            workspace=target.workspace,
            project_key=target.project_key,
            auth_method=auth_method,
            credential_identity=creds.identity,
            credentials=seal(creds.to_json()),
            credentials_updated_at=timezone.now(),
            webhook_secret=seal(secrets.token_urlsafe(32)),
            created_by=actor_or_none(actor),
            next_scan_at=timezone.now(),
            **cleaned,
        )
        root = Namespace.objects.create(
            tenant=tenant,
            parent=parent,
            name=target.workspace,
            managed=True,
            integration=integration,
            slug=unique_slug(target.workspace, sibling_slugs(tenant, parent)),
        )
        integration.root_namespace = root
        integration.save(update_fields=["root_namespace"])
        audit(
            actor=actor,
            action="integration.create",
            target=integration,
            tenant=tenant,
            details={
                "bitbucket_url": target.url,
                "auth_method": auth_method,
                "parent": parent.pk,
                "root_namespace": root.pk,
                "verified": verify,
            },
        )
        actor_id = actor.pk if actor_or_none(actor) else None
        integration_id = integration.pk
        # The first scan starts at once (scanning owns scans; referenced by path only).
        transaction.on_commit(lambda: enqueue("scanning.tasks.first_scan_task", integration_id, actor_id))
    return integration


IMMUTABLE_FIELDS = ("bitbucket_url", "workspace", "project_key")
EDITABLE_FIELDS = (
    "name",
    "description",
    "scanners",
    "pr_settings",
    "scan_interval",
    "labels",
    "status",
    "tracked_branches",
)


def integration_update(
    *, integration: Integration, actor: Actor, verify: bool = True, confirmed: bool = False, **changes: Any
) -> VerificationReport | None:
    """Edit settings (scanners, PR settings, interval, labels, description, name,
    active/paused). They apply from the next scan.

    Newly selected scanners, or pull-request scans turned on, may need scopes the credential
    lacks: with ``verify`` (the default) Bitbucket is asked first, for what is new only,
    and a failing required
    check raises :class:`VerificationFailed` (nothing saved) unless ``confirmed``. Returns
    the report of the checks that ran, or None when the change needed none."""
    immutable = [f for f in IMMUTABLE_FIELDS if f in changes and changes[f] != getattr(integration, f)]
    if immutable:
        raise ValidationError(
            {
                immutable[0]: (
                    "The Bitbucket URL of an integration cannot be changed. To connect a different workspace or "
                    "project, delete this integration and create a new one."
                )
            }
        )
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS) - set(IMMUTABLE_FIELDS))
    if unknown:
        raise ValidationError(f"These fields cannot be edited here: {', '.join(unknown)}.")
    if integration.status == IntegrationStatus.DELETING:
        raise ValidationError("This integration is being deleted.")
    cleaned = clean_settings(
        scanners=changes.get("scanners"),
        pr_settings=changes.get("pr_settings"),
        scan_interval=changes.get("scan_interval"),
        labels=changes.get("labels"),
        tracked_branches=changes.get("tracked_branches"),
    )
    errors: dict[str, str] = {}
    if "name" in changes:
        name = (changes["name"] or "").strip()
        if not name:
            errors["name"] = "Enter a name for the integration."
        elif (
            Integration.objects.filter(tenant=integration.tenant, name=name)
            .exclude(pk=integration.pk)
            .exclude(status=IntegrationStatus.DELETING)
            .exists()
        ):
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
        return None
    report = None
    added, pr_on = _newly_needed(integration, cleaned)
    if verify and (added or pr_on):
        # Only what this change asks for anew (a gap confirmed earlier is not asked again).
        # Outside any transaction: these are network calls.
        report = integration_verify(integration=integration, scanners=added, pr_enabled=pr_on)
        if not report.ok and not confirmed:
            raise VerificationFailed(report)
    with transaction.atomic():
        _still_editable(integration)
        _settings_save(integration, cleaned, changed, actor, report)
    return report


def _still_editable(integration: Integration) -> None:
    """Under a row lock, after the network calls: a delete requested meanwhile wins."""
    current = Integration.objects.select_for_update().filter(pk=integration.pk).values_list("status", flat=True)
    if current.first() in (None, IntegrationStatus.DELETING):
        raise ValidationError("This integration is being deleted.")


def _newly_needed(integration: Integration, cleaned: dict) -> tuple[list[str], bool]:
    """What this change asks of Bitbucket that the integration did not: the scanners added,
    and whether pull-request scans are turned on."""
    added = [n for n in cleaned.get("scanners", integration.scanners) if n not in integration.scanners]
    pr_on = bool(cleaned.get("pr_settings", integration.pr_config).get("enabled"))
    return added, pr_on and not integration.pr_config.get("enabled")


def _settings_save(
    integration: Integration, cleaned: dict, changed: list[str], actor: Actor, report: VerificationReport | None
) -> None:
    if "pr_settings" in changed and cleaned["pr_settings"].get("enabled") != integration.pr_config.get("enabled"):
        integration_id = integration.pk
        transaction.on_commit(lambda: enqueue("scanning.tasks.webhooks_sync_task", integration_id))
    for field in changed:
        setattr(integration, field, cleaned[field])
    refreshed = []
    if integration.refused_features and {"scanners", "pr_settings"} & set(changed):
        # New settings may need what was refused before: ask Bitbucket again.
        integration.refused_features, refreshed = {}, ["refused_features"]
    integration.save(update_fields=[*changed, *refreshed, "updated_at"])
    audit(
        actor=actor,
        action="integration.update",
        target=integration,
        tenant=integration.tenant,
        details={"changed": changed, **_verified(report)},
    )


def credentials_update(
    *,
    integration: Integration,
    auth_method: str,
    credentials: dict[str, str],
    actor: Actor,
    verify: bool = True,
    confirmed: bool = False,
    rescan: bool = False,
) -> VerificationReport | None:
    """Replace the credentials (possibly switching method). The old secret is never
    read back or shown; the new one is encrypted before it leaves this function.

    With ``verify`` (the default) the new credentials are checked against Bitbucket first,
    for everything this integration's scanners and pull-request settings need, as Add does:
    a failing required check raises :class:`VerificationFailed` and nothing is saved, unless
    ``confirmed`` (the person saw the report and saves anyway). With ``rescan`` a scan is
    requested once saved ("Save and rescan"). Returns the report."""
    if integration.status == IntegrationStatus.DELETING:
        raise ValidationError("This integration is being deleted.")
    creds = clean_credentials(auth_method, credentials)
    report = None
    if verify:
        report = integration_verify(integration=integration, credentials=creds)
        if not report.ok and not confirmed:
            raise VerificationFailed(report, creds)
    previous_method = integration.auth_method
    with transaction.atomic():
        _still_editable(integration)
        integration.auth_method = auth_method
        integration.credential_identity = creds.identity
        integration.credentials = seal(creds.to_json())
        integration.credentials_updated_at = timezone.now()
        integration.refused_features = {}  # new credentials may have what the old ones lacked
        integration.save(
            update_fields=[
                "auth_method",
                "credential_identity",
                "credentials",
                "credentials_updated_at",
                "refused_features",
                "updated_at",
            ]
        )
        audit(
            actor=actor,
            action="integration.credentials_update",
            target=integration,
            tenant=integration.tenant,
            details={"auth_method": auth_method, "previous_auth_method": previous_method, **_verified(report)},
        )
        if rescan:
            integration_id, actor_id = integration.pk, (actor.pk if actor_or_none(actor) else None)
            # Scanning owns scans (referenced by path only); one already running is left to end.
            transaction.on_commit(lambda: enqueue("scanning.tasks.scan_request_task", integration_id, actor_id))
    return report


def _verified(report: VerificationReport | None) -> dict:
    """What the audit trail says about the checks a change ran (never a secret)."""
    if report is None:
        return {}
    return {"verified": report.ok, "missing_scopes": report.missing_scopes}


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
    integration.save(
        update_fields=[
            "webhook_secret",
            "webhook_secret_previous",
            "webhook_secret_previous_until",
            "webhook_secret_rotated_at",
            "updated_at",
        ]
    )
    audit(
        actor=actor,
        action="integration.webhook_secret_rotate",
        target=integration,
        tenant=integration.tenant,
        details={"previous_accepted_until": integration.webhook_secret_previous_until.isoformat()},
    )
    integration_id = integration.pk
    transaction.on_commit(lambda: enqueue("scanning.tasks.webhooks_sync_task", integration_id))
    return integration


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
        audit(
            actor=actor,
            action="integration.delete",
            target=integration,
            tenant=integration.tenant,
            details={"preview": preview},
        )
    integration_id = integration.pk
    # Scanning removes the webhooks it registered in Bitbucket, then calls integration_purge.
    transaction.on_commit(lambda: enqueue("scanning.tasks.integration_teardown_task", integration_id))
    return preview


def integration_feature_refused(*, integration: Integration, feature: str, reason: str) -> None:
    """Remember that Bitbucket refused ``feature`` (workspace members, webhook management) to
    these credentials, so scans stop asking; cleared when the credentials or the settings
    change (``credentials_update``, ``integration_update``). The one writer besides those."""
    integration.refused_features = {**integration.refused_features, feature: reason}
    Integration.objects.filter(pk=integration.pk).update(refused_features=integration.refused_features)
    audit(
        actor=None,
        action="integration.feature_refused",
        target=integration,
        tenant=integration.tenant,
        details={"feature": feature, "reason": reason[:300]},
    )
