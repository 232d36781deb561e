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
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from integrations.bitbucket import client as bb
from integrations.crypto import SealedSecret
from integrations.models import Integration, IntegrationStatus, Project, Reference
from integrations.net import Window
from integrations.queue import enqueue
from integrations.services import projects_purge, reference_move, references_remove
from scanning.models import QueueFlag, Trigger, WebhookDelivery
from scanning.pullrequests import PrScanNotQueued, pr_scan_request, pull_request_record
from scanning.scanners import run_for_project
from scanning.services import ScanAlreadyRunning, org_rescan_request
from scanning.sync import OrgSync
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


# Per-process cache of an integration's webhook secrets for a few seconds (a rotated
# secret or a deleted integration is honoured within WEBHOOK_LOOKUP_TTL).
_lookup: dict[str, tuple[float, "Secrets | None"]] = {}
DRAIN_FLAG = "webhook-drain"


@dataclass(frozen=True)
class Secrets:
    integration_id: int
    current: SealedSecret
    previous: SealedSecret | None
    previous_until: datetime | None

    def accepts(self, body: bytes, header: str) -> bool:
        """The current secret, or the previous one during its grace period after a rotation
        (Bitbucket signs with the old secret until each hook has been updated)."""
        if signature_ok(self.current.reveal(), body, header):
            return True
        return bool(
            self.previous
            and self.previous_until
            and timezone.now() < self.previous_until
            and signature_ok(self.previous.reveal(), body, header)
        )


def _integration_for(integration_uuid) -> Secrets | None:
    key, now = str(integration_uuid), time.monotonic()
    hit = _lookup.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    row = (
        Integration.objects.exclude(status=IntegrationStatus.DELETING)
        .filter(uuid=integration_uuid)
        .values_list("id", "webhook_secret", "webhook_secret_previous", "webhook_secret_previous_until")
        .first()
    )
    found = Secrets(row[0], row[1], row[2] or None, row[3]) if row else None
    if len(_lookup) > 10_000:
        _lookup.clear()
    _lookup[key] = (now + settings.WEBHOOK_LOOKUP_TTL, found)
    return found


def _request_drain() -> None:
    """Queue the drain task unless one is queued and has not started yet.

    The flag lives in the database, shared by every web process and worker: the drain
    clears it as it starts, before it reads the queue, so a delivery recorded after that
    read always finds the flag clear and queues another drain. A burst queues one task;
    no interleaving leaves a delivery waiting for the dispatcher.
    """
    flag = QueueFlag.objects.filter(name=DRAIN_FLAG)
    if flag.filter(pending=False).update(pending=True):
        enqueue("scanning.tasks.webhook_drain_task")
    elif not flag.exists():  # a migration creates it; a flushed table (tests) does not keep it
        _, created = QueueFlag.objects.get_or_create(name=DRAIN_FLAG, defaults={"pending": True})
        if created:
            enqueue("scanning.tasks.webhook_drain_task")


def _refused(integration_id: int, source: str, *, unsigned: bool, integration_uuid) -> Rejected:
    """One sync log entry per integration and cause, counted; the source is slowed down."""
    Window("webhook-refused", source).add()
    integration = Integration.objects.get(pk=integration_id)
    sync_log_record(
        integration=integration,
        operation=Operation.WEBHOOK,
        level=Level.WARNING,
        merge=True,
        classified=Classified(
            Category.INVALID_CREDENTIALS,
            "Webhook deliveries were refused: "
            + ("they were not signed." if unsigned else "their signature does not match the webhook secret."),
            "Set the webhook's secret in Bitbucket to the integration's webhook secret (Edit Integration shows "
            "it to admins), or rotate it (the portal updates the hooks it registered). Unsigned deliveries are "
            "never processed. Many of these from an unknown address are someone probing the endpoint: the count "
            "and the last time are on this entry.",
            status_code=401,
            method="POST",
            path=f"/webhooks/bitbucket/{integration_uuid}/",
        ),
    )
    return Rejected(401, "Missing or wrong X-Hub-Signature.")


def delivery_receive(
    *, integration_uuid, body: bytes, headers: dict[str, str], source: str = "unknown"
) -> tuple[WebhookDelivery, bool]:
    """Verify and record a delivery. Returns (delivery, is_new); raises :class:`Rejected`.

    ``source`` is the sender's address: one that keeps sending refused deliveries gets
    429 for the rest of the minute, before any database work.
    """
    if len(body) > MAX_BODY:
        raise Rejected(413, "Payload larger than 256 KB.")
    if Window("webhook-refused", source).count() >= settings.WEBHOOK_REFUSALS_PER_MINUTE:
        raise Rejected(429, "Too many refused deliveries from this address; try again in a minute.")
    found = _integration_for(integration_uuid)
    if found is None:
        raise Rejected(404, "No such integration.")
    signature = headers.get("x-hub-signature", "")
    if not found.accepts(body, signature):
        raise _refused(found.integration_id, source, unsigned=not signature, integration_uuid=integration_uuid)
    request_uuid = headers.get("x-request-uuid", "").strip()
    event_key = headers.get("x-event-key", "").strip()
    if not request_uuid or not event_key:
        raise Rejected(400, "X-Request-UUID and X-Event-Key are required.")
    if b"\x00" in body or "\x00" in request_uuid + event_key:
        raise Rejected(400, "The delivery contains a NUL byte; Bitbucket never sends one.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(400, "The delivery is not UTF-8 JSON.") from None
    attempt = headers.get("x-attempt-number", "1")
    delivery = WebhookDelivery(
        integration_id=found.integration_id,
        request_uuid=request_uuid[:64],
        event_key=event_key[:64],
        hook_uuid=headers.get("x-hook-uuid", "")[:64],
        body=text,
        attempt=int(attempt) if attempt.isascii() and attempt.isdigit() and len(attempt) < 4 else 1,
        received_at=timezone.now(),
    )
    delivery.pk = _insert_unless_seen(delivery)
    if delivery.pk is None:
        return WebhookDelivery.objects.get(integration_id=found.integration_id, request_uuid=request_uuid[:64]), False
    transaction.on_commit(_request_drain)
    return delivery, True


def _insert_unless_seen(delivery: WebhookDelivery) -> int | None:
    """Store a delivery in one statement (``INSERT ... ON CONFLICT DO NOTHING RETURNING``,
    PostgreSQL and SQLite alike): the id, or None when its request UUID was already
    recorded. The hot path of every delivery: no transaction block, no exception."""
    qn = connection.ops.quote_name
    fields = [f for f in WebhookDelivery._meta.concrete_fields if not f.primary_key]
    values = [f.get_db_prep_save(f.pre_save(delivery, add=True), connection) for f in fields]
    sql = (
        f"INSERT INTO {qn(WebhookDelivery._meta.db_table)} ({', '.join(qn(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"ON CONFLICT ({qn('integration_id')}, {qn('request_uuid')}) DO NOTHING RETURNING {qn('id')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    return row[0] if row else None


def deliveries_drain(*, limit: int = 5000) -> int:
    """Process queued deliveries oldest first (the drain task, and the dispatcher's sweep).
    Clears the drain flag first: whatever is recorded from now on queues a new drain."""
    QueueFlag.objects.filter(name=DRAIN_FLAG, pending=True).update(pending=False)
    done = 0
    while done < limit:
        ids = list(
            WebhookDelivery.objects.filter(state=WebhookDelivery.State.QUEUED)
            .order_by("received_at", "id")
            .values_list("id", flat=True)[:100]
        )
        if not ids:
            break
        for delivery_id in ids:
            delivery_process(delivery_id=delivery_id)
            done += 1
    return done


# --- Processing (in the task queue) ------------------------------------------------------

# Top-level keys that tell one event's payload from another's. The event key is not
# covered by the signature, so a signed body is only acted on as the event its shape
# shows: a captured push re-sent as ``repo:deleted`` still carries ``push`` and is refused.
# (https://support.atlassian.com/bitbucket-cloud/docs/event-payloads/)
DISCRIMINATORS = frozenset(
    {
        "push",
        "pullrequest",
        "changes",
        "approval",
        "comment",
        "previous_workspace",
        "previous_owner",
        "fork",
        "commit_status",
        "issue",
    }
)
_PR = ({"repository", "pullrequest"}, frozenset())
SHAPES: dict[str, tuple[set[str], frozenset[str]]] = {
    "repo:push": ({"repository", "push"}, frozenset()),
    "repo:deleted": ({"repository"}, frozenset()),
    "repo:created": ({"repository"}, frozenset()),
    "repo:updated": ({"repository"}, frozenset({"changes"})),
    "repo:transfer": ({"repository"}, frozenset({"previous_workspace", "previous_owner"})),
    "pullrequest:created": _PR,
    "pullrequest:updated": _PR,
    "pullrequest:fulfilled": _PR,
    "pullrequest:rejected": _PR,
    "pullrequest:approved": ({"repository", "pullrequest"}, frozenset({"approval"})),
    "pullrequest:unapproved": ({"repository", "pullrequest"}, frozenset({"approval"})),
    "pullrequest:comment_created": ({"repository", "pullrequest"}, frozenset({"comment"})),
}


class Misshapen(Exception):
    """The payload does not have the shape of the event it was delivered as."""


def payload_check(event: str, payload: object) -> dict:
    """The payload, if it has ``event``'s shape; else :class:`Misshapen` saying why."""
    if not isinstance(payload, dict):
        raise Misshapen("the body is not a JSON object")
    required, optional = SHAPES[event]
    missing = sorted(k for k in required if not isinstance(payload.get(k), dict))
    if missing:
        raise Misshapen(f"it has no {', '.join(missing)} object")
    foreign = sorted((DISCRIMINATORS & payload.keys()) - required - optional)
    if foreign:
        raise Misshapen(f"it carries {', '.join(foreign)}, which {event} payloads never do")
    uuid = payload["repository"].get("uuid")
    if not isinstance(uuid, str) or not uuid:
        raise Misshapen("its repository has no uuid")
    return payload


def delivery_process(*, delivery_id: int) -> str:
    """Act on a recorded delivery (in the task queue)."""
    delivery = (
        WebhookDelivery.objects.select_related("integration__root_namespace")
        .filter(pk=delivery_id, state=WebhookDelivery.State.QUEUED)
        .first()
    )
    if delivery is None:
        return "nothing to do"
    integration = delivery.integration
    handler = HANDLERS.get(delivery.event_key)
    try:
        if handler is None:
            outcome, state = "ignored: not an event the portal acts on", WebhookDelivery.State.IGNORED
        else:
            payload = payload_check(delivery.event_key, _parse(delivery.body))
            outcome = handler(integration, payload)
            state = WebhookDelivery.State.IGNORED if outcome.startswith("ignored") else WebhookDelivery.State.PROCESSED
    except Misshapen as exc:
        outcome, state = f"rejected: {exc}", WebhookDelivery.State.REJECTED
        sync_log_record(
            integration=integration,
            operation=Operation.WEBHOOK,
            level=Level.WARNING,
            merge=True,
            classified=Classified(
                Category.UNEXPECTED,
                f"A signed {delivery.event_key[:64]} delivery was not acted on: its payload does "
                "not have that event's shape.",
                "Bitbucket does not send such payloads. If it keeps happening, someone may be replaying captured "
                "deliveries under another event name: rotate the webhook secret (Edit Integration). The deliveries "
                "are listed in the admin (Webhook deliveries, state Rejected).",
                status_code=None,
            ),
        )
    except Exception as exc:  # noqa: BLE001 - recorded on the delivery and in the sync log
        # Bitbucket could not confirm or complete the change: classified, no traceback.
        # Anything else is a bug in the portal: its traceback goes to the log.
        expected = isinstance(exc, bb.BitbucketError)
        if not expected:
            logger.exception("Webhook delivery %s failed", delivery_id)
        detail = str(exc) if expected else f"{type(exc).__name__}."
        sync_log_record(
            integration=integration,
            operation=Operation.WEBHOOK,
            exc=exc,
            level=Level.WARNING,
            message=f"Processing a {delivery.event_key} delivery failed: {detail}",
        )
        outcome, state = f"failed: {detail}", WebhookDelivery.State.FAILED
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=state, processed_at=timezone.now(), outcome=outcome[:2000]
    )
    return outcome


def _parse(body: str) -> object:
    if "\\u0000" in body.lower():
        # An escaped NUL: valid JSON, but nothing Bitbucket names contains one and no
        # column can store it (PostgreSQL refuses NUL in text).
        raise Misshapen("it contains a NUL character (\\u0000)")
    try:
        return json.loads(body)
    except RecursionError:
        raise Misshapen("the JSON is nested too deeply") from None
    except ValueError:
        raise Misshapen("the body is not JSON") from None


def _project(integration: Integration, payload: dict) -> Project | None:
    uuid = payload["repository"]["uuid"]
    return Project.objects.filter(integration=integration, remote_uuid=uuid).select_related("namespace").first()


def on_push(integration: Integration, payload: dict) -> str:
    """Refresh pushed tracked branches of that project and run its scanners. A tracked
    branch the push deleted (``new: null``) loses its reference once git confirms it is
    gone: a signed body is not proof enough to delete."""
    project = _project(integration, payload)
    if project is None:
        return _rescan(integration, "push to a repository not yet in the inventory")
    moved, deleted = [], []
    for change in payload["push"].get("changes") or []:
        if not isinstance(change, dict):
            continue
        new, old = change.get("new"), change.get("old")
        if isinstance(new, dict):
            name, head = str(new.get("name", "")), str((new.get("target") or {}).get("hash", ""))
            if (
                new.get("type") == "branch"
                and head
                and integration.tracks_branch(name, main_branch=project.main_branch)
                and reference_move(project, name, head)
            ):
                moved.append(name)
        elif new is None and isinstance(old, dict) and old.get("type") == "branch":
            name = str(old.get("name", ""))
            if (
                name != project.main_branch
                and Reference.objects.filter(project=project, name=name, kind="branch").exists()
            ):
                deleted.append(name)
    outcome = []
    if deleted:
        client = bb.client_for(integration)
        heads = client.git_refs(integration.workspace, project.full_name.partition("/")[2])
        gone = [name for name in deleted if f"refs/heads/{name}" not in heads]
        if gone:
            references_remove(project=project, names=gone)
            outcome.append(f"removed {', '.join(gone)} of {project.full_name} (confirmed gone in Bitbucket)")
        if len(gone) < len(deleted):
            outcome.append(f"kept {', '.join(sorted(set(deleted) - set(gone)))}: Bitbucket still has them")
    if moved:
        ran = run_for_project(integration=integration, project=project)
        outcome.append(f"refreshed {', '.join(moved)} of {project.full_name}; scanners: {ran}")
    return "; ".join(outcome) or "ignored: no tracked branch moved"


def on_pullrequest(integration: Integration, payload: dict, event: str) -> str:
    """Record the pull request's state; created/updated start a PR scan; fulfilled
    refreshes the destination branch (and runs the project's scanners if it moved). An
    event older than what is recorded (a retry delivered late) changes nothing."""
    project = _project(integration, payload)
    if project is None:
        return "ignored: repository not in the inventory"
    pr, applied = pull_request_record(project=project, payload=payload, event=event)
    if pr is None:
        return "ignored: no pull request in the payload"
    if not applied:
        return f"ignored: #{pr.remote_id} has a newer state ({pr.state}) than this {event} delivery"
    outcome = f"recorded #{pr.remote_id} ({pr.state})"
    if event in ("pullrequest:created", "pullrequest:updated"):
        try:
            scan = pr_scan_request(pull_request=pr, trigger=Trigger.WEBHOOK, actor=None, event=event)
        except PrScanNotQueued as exc:
            return f"{outcome}; {exc}"
        return f"{outcome}; queued PR scan #{scan.pk}"
    if event == "pullrequest:fulfilled" and integration.tracks_branch(
        pr.destination_branch, main_branch=project.main_branch
    ):
        client = bb.client_for(integration)
        head = client.branch_head(project.full_name, pr.destination_branch)
        if reference_move(project, pr.destination_branch, head):
            ran = run_for_project(integration=integration, project=project, client=client)
            return f"{outcome}; refreshed {pr.destination_branch}; scanners: {ran}"
        return f"{outcome}; {pr.destination_branch} already current"
    return outcome


def on_repo_deleted(integration: Integration, payload: dict) -> str:
    """Remove the project, once Bitbucket itself answers that the repository is gone."""
    project = _project(integration, payload)
    if project is None or not project.namespace.managed:
        return "ignored: repository not in a managed namespace"
    client = bb.client_for(integration)
    try:
        client.repository(f"{integration.workspace}/{project.remote_uuid}")
    except bb.NotFound:
        projects_purge(project_ids=[project.pk])
        return f"removed {project.full_name} (Bitbucket confirms it is gone)"
    sync_log_record(
        integration=integration,
        operation=Operation.WEBHOOK,
        level=Level.WARNING,
        project=project,
        merge=True,
        classified=Classified(
            Category.UNEXPECTED,
            f"A repo:deleted delivery named {project.full_name}, but Bitbucket still has it, so nothing was removed.",
            "Nothing to do if the repository was restored. Otherwise someone may be replaying "
            "signed deliveries: rotate the webhook secret (Edit Integration).",
        ),
    )
    return f"ignored: Bitbucket still has {project.full_name}; nothing removed"


def on_repo_changed(integration: Integration, payload: dict) -> str:
    """Created, updated (renamed, moved between projects, main branch changed) or
    transferred: refresh that one repository; only what a single read cannot settle (a
    repository that left the integration's scope, a new Bitbucket project) takes an
    incremental scan."""
    full_name = str(payload["repository"].get("full_name") or "")
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
    try:
        run = org_rescan_request(integration=integration, trigger="webhook", actor=None)
    except ScanAlreadyRunning:
        return f"{why}: a scan is already running and will see it"
    return f"{why}: queued incremental scan #{run.pk}"


HANDLERS = {
    "repo:push": on_push,
    "repo:deleted": on_repo_deleted,
    "repo:created": on_repo_changed,
    "repo:updated": on_repo_changed,
    "repo:transfer": on_repo_changed,
    **{
        f"pullrequest:{e}": partial(on_pullrequest, event=f"pullrequest:{e}")
        for e in ("created", "updated", "approved", "unapproved", "fulfilled", "rejected", "comment_created")
    },
}
