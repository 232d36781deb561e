"""Bitbucket webhooks: verify, de-duplicate and queue fast; process in the task queue.

Bitbucket waits 10 s, retries a 5xx twice and caps payloads at 256 KB
(https://support.atlassian.com/bitbucket-cloud/docs/manage-webhooks/). The endpoint
verifies ``X-Hub-Signature: sha256=<hex>`` over the raw body with a constant-time
compare before parsing anything, records the delivery (a retry with the same
``X-Request-UUID`` is acknowledged and not processed again), answers 202 and leaves
the work to django-q2.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from functools import partial
from urllib.parse import quote

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from integrations.crypto import SealedSecret
from integrations.models import Integration, IntegrationStatus, Project, Reference
from integrations.services import _enqueue
from scanning.models import WebhookDelivery
from synclogs.classify import Classified
from synclogs.models import Category, Level, Operation
from synclogs.services import sync_log_record

logger = logging.getLogger(__name__)
MAX_BODY = 256 * 1024


class Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def signature_ok(secret: str, body: bytes, header: str) -> bool:
    scheme, _, digest = (header or "").partition("=")
    if scheme != "sha256" or not digest:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, digest.strip().lower())


# Per-process caches: an integration's webhook secret for a few seconds (a rotated secret
# or a deleted integration is honoured within WEBHOOK_LOOKUP_TTL), and whether a drain
# task is already queued (one enqueue covers a burst of deliveries).
_lookup: dict[str, tuple[float, int, SealedSecret | None]] = {}
_drain_queued_until = 0.0


def _integration_for(integration_uuid) -> tuple[int, SealedSecret] | None:
    """(integration id, sealed webhook secret), cached briefly."""
    key, now = str(integration_uuid), time.monotonic()
    hit = _lookup.get(key)
    if hit is not None and hit[0] > now:
        return (hit[1], hit[2]) if hit[1] else None
    row = (Integration.objects.exclude(status=IntegrationStatus.DELETING).filter(uuid=integration_uuid)
           .values_list("id", "webhook_secret").first())
    _lookup[key] = (now + settings.WEBHOOK_LOOKUP_TTL, row[0] if row else 0, row[1] if row else None)
    if len(_lookup) > 10_000:
        _lookup.clear()
    return row


def _request_drain() -> None:
    """Queue the drain task unless this process queued one moments ago."""
    global _drain_queued_until
    now = time.monotonic()
    if now < _drain_queued_until and not settings.Q_CLUSTER.get("sync"):
        return
    _drain_queued_until = now + 2.0
    _enqueue("scanning.tasks.webhook_drain_task")


def delivery_receive(*, integration_uuid, body: bytes, headers: dict[str, str]) -> tuple[WebhookDelivery, bool]:
    """Verify and record a delivery. Returns (delivery, is_new); raises :class:`Rejected`."""
    if len(body) > MAX_BODY:
        raise Rejected(413, "Payload larger than 256 KB.")
    found = _integration_for(integration_uuid)
    if found is None:
        raise Rejected(404, "No such integration.")
    integration_id, sealed = found
    if not signature_ok(sealed.reveal(), body, headers.get("x-hub-signature", "")):
        integration = Integration.objects.get(pk=integration_id)
        sync_log_record(
            integration=integration, operation=Operation.WEBHOOK, level=Level.WARNING,
            classified=Classified(
                Category.INVALID_CREDENTIALS,
                "A webhook delivery was refused: " + ("it was not signed." if not headers.get("x-hub-signature")
                                                      else "its signature does not match the webhook secret."),
                "Set the webhook's secret in Bitbucket to the integration's webhook secret (Edit Integration shows "
                "it to admins), or rotate it and update the webhook. Unsigned deliveries are never processed.",
                status_code=401, method="POST", path=f"/webhooks/bitbucket/{integration_uuid}/"))
        raise Rejected(401, "Missing or wrong X-Hub-Signature.")
    request_uuid = headers.get("x-request-uuid", "").strip()
    event_key = headers.get("x-event-key", "").strip()
    if not request_uuid or not event_key:
        raise Rejected(400, "X-Request-UUID and X-Event-Key are required.")
    attempt = headers.get("x-attempt-number", "1")
    delivery = WebhookDelivery(
        integration_id=integration_id, request_uuid=request_uuid[:64], event_key=event_key[:64],
        hook_uuid=headers.get("x-hook-uuid", "")[:64], body=body.decode("utf-8", "replace"),
        attempt=int(attempt) if attempt.isdigit() and int(attempt) < 1000 else 1, received_at=timezone.now())
    delivery.pk = _insert_unless_seen(delivery)
    if delivery.pk is None:
        return WebhookDelivery.objects.get(integration_id=integration_id, request_uuid=request_uuid[:64]), False
    transaction.on_commit(_request_drain)
    return delivery, True


def _insert_unless_seen(delivery: WebhookDelivery) -> int | None:
    """Store a delivery in one statement (``INSERT ... ON CONFLICT DO NOTHING RETURNING``,
    PostgreSQL and SQLite alike): the id, or None when its request UUID was already
    recorded. The hot path of every delivery: no transaction block, no exception."""
    qn = connection.ops.quote_name
    fields = [f for f in WebhookDelivery._meta.concrete_fields if not f.primary_key]
    values = [f.get_db_prep_save(f.pre_save(delivery, add=True), connection) for f in fields]
    sql = (f"INSERT INTO {qn(WebhookDelivery._meta.db_table)} ({', '.join(qn(f.column) for f in fields)}) "
           f"VALUES ({', '.join(['%s'] * len(fields))}) "
           f"ON CONFLICT ({qn('integration_id')}, {qn('request_uuid')}) DO NOTHING RETURNING {qn('id')}")
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    return row[0] if row else None


def deliveries_drain(*, limit: int = 5000) -> int:
    """Process queued deliveries oldest first (the drain task, and the dispatcher's sweep)."""
    done = 0
    while done < limit:
        ids = list(WebhookDelivery.objects.filter(state=WebhookDelivery.State.QUEUED)
                   .order_by("received_at", "id").values_list("id", flat=True)[:100])
        if not ids:
            break
        for delivery_id in ids:
            delivery_process(delivery_id=delivery_id)
            done += 1
    return done


def delivery_process(*, delivery_id: int) -> str:
    """Act on a recorded delivery (in the task queue)."""
    delivery = WebhookDelivery.objects.select_related("integration__root_namespace").filter(
        pk=delivery_id, state=WebhookDelivery.State.QUEUED).first()
    if delivery is None:
        return "nothing to do"
    integration = delivery.integration
    try:
        payload = json.loads(delivery.body)
        handler = HANDLERS.get(delivery.event_key)
        outcome = handler(integration, payload) if handler else "ignored: not an event the portal acts on"
        state = WebhookDelivery.State.IGNORED if outcome.startswith("ignored") else WebhookDelivery.State.PROCESSED
    except Exception as exc:  # noqa: BLE001 - recorded on the delivery and in the sync log
        logger.exception("Webhook delivery %s failed", delivery_id)
        sync_log_record(integration=integration, operation=Operation.WEBHOOK, exc=exc, level=Level.WARNING,
                        message=f"Processing a {delivery.event_key} delivery failed: {type(exc).__name__}.")
        outcome, state = f"failed: {type(exc).__name__}", WebhookDelivery.State.FAILED
    WebhookDelivery.objects.filter(pk=delivery.pk).update(state=state, processed_at=timezone.now(), outcome=outcome[:2000])
    return outcome


def _project(integration: Integration, payload: dict) -> Project | None:
    uuid = (payload.get("repository") or {}).get("uuid")
    return Project.objects.filter(integration=integration, remote_uuid=uuid).select_related("namespace").first()


def _reference_move(project: Project, name: str, head: str) -> bool:
    """Point a tracked branch's reference at ``head``; True when something changed."""
    if Reference.objects.filter(project=project, kind="branch", name=name).exclude(head_commit=head).update(
            head_commit=head):
        return True
    if Reference.objects.filter(project=project, kind="branch", name=name).exists():
        return False
    Reference.objects.create(project=project, name=name, head_commit=head, is_default=(name == project.main_branch))
    return True


def on_push(integration: Integration, payload: dict) -> str:
    """Refresh pushed tracked branches of that project and run its scanners."""
    project = _project(integration, payload)
    if project is None:
        return _rescan(integration, "push to a repository not yet in the inventory")
    moved = []
    for change in (payload.get("push") or {}).get("changes") or []:
        new = change.get("new") or {}
        name, head = new.get("name", ""), (new.get("target") or {}).get("hash", "")
        if new.get("type") == "branch" and integration.tracks_branch(name, main_branch=project.main_branch) and _reference_move(project, name, head):
            moved.append(name)
    if not moved:
        return "ignored: no tracked branch moved"
    from scanning.scanners import run_for_project

    ran = run_for_project(integration=integration, project=project)
    return f"refreshed {', '.join(moved)} of {project.full_name}; scanners: {ran}"


def on_pullrequest(integration: Integration, payload: dict, event: str) -> str:
    """Record the pull request's state; created/updated start a PR scan; fulfilled
    refreshes the destination branch (and runs the project's scanners if it moved)."""
    from scanning.pullrequests import pr_scan_request, pull_request_record

    project = _project(integration, payload)
    if project is None:
        return "ignored: repository not in the inventory"
    pr = pull_request_record(project=project, payload=payload, event=event)
    if pr is None:
        return "ignored: no pull request in the payload"
    outcome = f"recorded #{pr.remote_id} ({pr.state})"
    if event in ("pullrequest:created", "pullrequest:updated"):
        _, why = pr_scan_request(pull_request=pr, trigger=event)
        return f"{outcome}; {why}"
    if event == "pullrequest:fulfilled" and integration.tracks_branch(
            pr.destination_branch, main_branch=project.main_branch):
        from integrations.bitbucket import client as bb
        from scanning.scanners import run_for_project

        client = bb.client_for(integration)
        branch = client.get(f"repositories/{project.full_name}/refs/branches/{quote(pr.destination_branch, safe='')}",
                            fields="target.hash")
        if _reference_move(project, pr.destination_branch, branch["target"]["hash"]):
            ran = run_for_project(integration=integration, project=project, client=client)
            return f"{outcome}; refreshed {pr.destination_branch}; scanners: {ran}"
        return f"{outcome}; {pr.destination_branch} already current"
    return outcome


def on_repo_deleted(integration: Integration, payload: dict) -> str:
    from integrations.services import projects_purge

    project = _project(integration, payload)
    if project is None or not project.namespace.managed:
        return "ignored: repository not in a managed namespace"
    projects_purge(project_ids=[project.pk])
    return f"removed {project.full_name}"


def on_repo_changed(integration: Integration, payload: dict) -> str:
    """Created, updated (renamed, moved between projects, main branch changed) or
    transferred: refresh that one repository; only what a single read cannot settle (a
    repository that left the integration's scope, a new Bitbucket project) takes an
    incremental scan."""
    from scanning.scanners import run_for_project
    from scanning.sync import OrgSync

    full_name = (payload.get("repository") or {}).get("full_name") or ""
    if "/" not in full_name:
        return _rescan(integration, "repository change without a name")
    sync = OrgSync(integration=integration)
    done = sync.refresh_repository(full_name)
    if done is None:
        return _rescan(integration, f"{full_name} changed beyond one repository")
    project = _project(integration, payload)
    if project is None:
        return done
    return f"{done}; scanners: {run_for_project(integration=integration, project=project, client=sync.client)}"


def _rescan(integration: Integration, why: str) -> str:
    """An incremental rescan costs the pagination minimum and touches only what changed."""
    from scanning.services import ScanAlreadyRunning, org_rescan_request

    try:
        run = org_rescan_request(integration=integration, trigger="webhook", actor=None)
    except ScanAlreadyRunning:
        return f"{why}: a scan is already running and will see it"
    return f"{why}: queued incremental scan #{run.pk}"


HANDLERS = {"repo:push": on_push, "repo:deleted": on_repo_deleted, "repo:created": on_repo_changed,
            "repo:updated": on_repo_changed, "repo:transfer": on_repo_changed,
            **{f"pullrequest:{e}": partial(on_pullrequest, event=f"pullrequest:{e}")
               for e in ("created", "updated", "approved", "unapproved", "fulfilled", "rejected", "comment_created")}}

