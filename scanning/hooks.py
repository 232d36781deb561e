"""Registering the portal's webhook in Bitbucket while pull-request scans are on.

A workspace hook when the credential may create one (one hook covers every
repository), else one hook per repository. Removed when pull-request scans are turned
off or the integration is deleted. Failures are sync log warnings with a hint.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.urls import reverse

from integrations.bitbucket import client as bb
from integrations.models import Integration, Project
from integrations.services import integration_feature_refused
from scanning.models import WebhookRegistration
from synclogs.classify import Classified
from synclogs.models import Category, Level, Operation
from synclogs.services import sync_log_record

logger = logging.getLogger(__name__)
EVENTS = [
    "repo:push",
    "repo:updated",
    "repo:deleted",
    "repo:transfer",
    "pullrequest:created",
    "pullrequest:updated",
    "pullrequest:approved",
    "pullrequest:unapproved",
    "pullrequest:fulfilled",
    "pullrequest:rejected",
    "pullrequest:comment_created",
]
REPOSITORY_EVENTS = [e for e in EVENTS if e != "repo:transfer"]  # a repository hook cannot see a transfer


def hook_url(integration: Integration) -> str:
    path = reverse("bitbucket-webhook", kwargs={"integration_uuid": integration.uuid})
    return settings.PORTAL_BASE_URL.rstrip("/") + path


def webhooks_sync(*, integration: Integration, client: bb.BitbucketClient | None = None) -> str:
    """Make Bitbucket's hooks match the integration's settings. Idempotent and cheap when
    nothing changes (one call: the workspace hook is still there; none for repository
    hooks). Hooks registered with an older address (``PORTAL_BASE_URL`` changed) or an
    older secret (rotated) are updated in place. A credential that may not manage hooks
    is asked once: the refusal is recorded and not retried until the credentials or the
    settings change."""
    wanted = bool(integration.pr_config["enabled"])
    registered = list(WebhookRegistration.objects.filter(integration=integration))
    if not wanted:
        return webhooks_remove(integration=integration, client=client) if registered else "none wanted"
    if REFUSED in integration.refused_features and not registered:
        return "refused earlier: " + integration.refused_features[REFUSED]
    if not settings.PORTAL_BASE_URL:
        sync_log_record(
            integration=integration,
            operation=Operation.PR_SCAN,
            level=Level.WARNING,
            merge=True,
            classified=Classified(
                Category.INVALID_HOST,
                "Pull-request scans are on, but the portal's webhook was not registered: PORTAL_BASE_URL is not set.",
                "Set PORTAL_BASE_URL to the address Bitbucket can reach this portal at "
                "(e.g. https://portal.example.com); the next scan registers the webhook.",
            ),
        )
        return "PORTAL_BASE_URL missing"
    client = client or bb.client_for(integration)
    body = _hook_body(integration)
    workspace_hook = next((r for r in registered if r.subject == "workspace"), None)
    if workspace_hook is not None:
        # One call per scan: a hook someone removed in Bitbucket is registered again.
        try:
            if _current(workspace_hook, integration):
                client.workspace_hook(integration.workspace, workspace_hook.hook_uuid)
                return "workspace hook registered"
            client.update_workspace_hook(integration.workspace, workspace_hook.hook_uuid, body)
            _mark_current(workspace_hook, integration)
            return "workspace hook updated (address or secret)"
        except bb.NotFound:
            workspace_hook.delete()
            registered.remove(workspace_hook)
        except bb.BitbucketError as exc:
            _warn(integration, exc)
            return "failed"
    outdated = [r for r in registered if not _current(r, integration)]
    updated = sum(1 for r in outdated if _update(client, integration, r, body))
    try:
        created = client.create_workspace_hook(integration.workspace, body)
        WebhookRegistration.objects.create(
            integration=integration,
            subject="workspace",
            hook_uuid=created["uuid"],
            url=body["url"],
            secret_rotated_at=integration.webhook_secret_rotated_at,
        )
        # A workspace hook supersedes any per-repository ones.
        for registration in registered:
            _delete(client, integration, registration)
        return "registered a workspace hook"
    except (bb.Forbidden, bb.NotFound):
        pass  # not allowed at workspace level: one hook per repository instead
    except bb.BitbucketError as exc:
        _warn(integration, exc)
        return "failed"
    have = {r.repository for r in registered}
    added = failed = 0
    for full_name in (
        Project.objects.filter(integration=integration, namespace__managed=True)
        .exclude(full_name__in=have)
        .values_list("full_name", flat=True)
    ):
        try:
            created = client.create_repository_hook(full_name, {**body, "events": REPOSITORY_EVENTS})
            WebhookRegistration.objects.create(
                integration=integration,
                subject="repository",
                repository=full_name,
                hook_uuid=created["uuid"],
                url=body["url"],
                secret_rotated_at=integration.webhook_secret_rotated_at,
            )
            added += 1
        except bb.Forbidden as exc:
            if added == 0 and not registered:
                # Neither the workspace nor the first repository allows it: the credential
                # cannot manage hooks. Say so once; do not try every repository every scan.
                _refuse(integration, exc)
                return "refused: " + integration.refused_features[REFUSED]
            failed += 1
            if failed == 1:
                _warn(integration, exc, repository=full_name)
        except bb.BitbucketError as exc:
            failed += 1
            if failed == 1:
                _warn(integration, exc, repository=full_name)
    return (
        f"registered {added} repository hook(s)"
        + (f", updated {updated}" if updated else "")
        + (f", {failed} failed" if failed else "")
    )


REFUSED = "webhooks"


def _hook_body(integration: Integration) -> dict:
    return {
        "description": f"Bitbucket portal ({integration.uuid})",
        "url": hook_url(integration),
        "active": True,
        "secret": integration.webhook_secret.reveal(),
        "events": EVENTS,
    }


def _current(registration: WebhookRegistration, integration: Integration) -> bool:
    """Registered with today's address and secret."""
    return (
        registration.url == hook_url(integration)
        and registration.secret_rotated_at == integration.webhook_secret_rotated_at
    )


def _mark_current(registration: WebhookRegistration, integration: Integration) -> None:
    registration.url, registration.secret_rotated_at = hook_url(integration), integration.webhook_secret_rotated_at
    registration.save(update_fields=["url", "secret_rotated_at"])


def _update(
    client: bb.BitbucketClient, integration: Integration, registration: WebhookRegistration, body: dict
) -> bool:
    if registration.subject != "repository":
        return False
    try:
        client.update_repository_hook(
            registration.repository, registration.hook_uuid, {**body, "events": REPOSITORY_EVENTS}
        )
    except bb.NotFound:
        registration.delete()  # removed in Bitbucket: the loop below registers it again
        return False
    except bb.BitbucketError as exc:
        _warn(integration, exc, repository=registration.repository)
        return False
    _mark_current(registration, integration)
    return True


def _refuse(integration: Integration, exc: bb.Forbidden) -> None:
    missing = ", ".join(exc.missing_scopes) or "webhook administration"
    reason = f"the credentials may not manage webhooks (missing: {missing})"
    integration_feature_refused(integration=integration, feature=REFUSED, reason=reason)
    sync_log_record(
        integration=integration,
        operation=Operation.PR_SCAN,
        exc=exc,
        level=Level.WARNING,
        merge=True,
        message=f"Pull-request scans are on, but {reason}, so Bitbucket will not send pull-request "
        "events. The portal stops asking until the credentials or the settings change.",
    )


def webhooks_remove(*, integration: Integration, client: bb.BitbucketClient | None = None) -> str:
    registrations = list(WebhookRegistration.objects.filter(integration=integration))
    if not registrations:
        return "nothing registered"
    client = client or bb.client_for(integration)
    removed = sum(1 for r in registrations if _delete(client, integration, r))
    return f"removed {removed} of {len(registrations)} hook(s)"


def _delete(client: bb.BitbucketClient, integration: Integration, registration: WebhookRegistration) -> bool:
    try:
        if registration.subject == "workspace":
            client.delete_workspace_hook(integration.workspace, registration.hook_uuid)
        else:
            client.delete_repository_hook(registration.repository, registration.hook_uuid)
    except bb.BitbucketError as exc:
        _warn(integration, exc, repository=registration.repository, removing=True)
        return False
    registration.delete()
    return True


def _warn(integration: Integration, exc: bb.BitbucketError, repository: str = "", removing: bool = False) -> None:
    what = "remove" if removing else "register"
    where = f" on {repository}" if repository else ""
    logger.warning("Could not %s the webhook of integration %s%s: %s", what, integration.pk, where, exc)
    sync_log_record(
        integration=integration,
        operation=Operation.PR_SCAN,
        exc=exc,
        level=Level.WARNING,
        message=f"Could not {what} the portal's webhook{where}: {exc}",
    )
