"""django-q2 tasks of the scanning app: take ids, load, call a service."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from integrations import services as integration_services
from integrations.bitbucket.client import BitbucketError
from integrations.models import Integration
from scanning import services
from scanning.chunks import scan_chunks_work
from scanning.health import cluster_heartbeat
from scanning.hooks import webhooks_remove, webhooks_sync
from scanning.models import Trigger
from scanning.pullrequests import pr_scan_execute
from scanning.vulnerabilities import advisories_refresh
from scanning.webhooks import deliveries_drain
from synclogs.services import sync_logs_prune


def first_scan_task(integration_id: int, actor_id: int | None = None) -> None:
    scan_request_task(integration_id, actor_id)


def scan_request_task(integration_id: int, actor_id: int | None = None) -> None:
    """A manual scan asked for by a service that does not own scans (a new integration,
    "Save and rescan"); nothing happens when one is already queued or running."""
    integration = Integration.objects.filter(pk=integration_id).first()
    if integration is None:
        return
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    try:
        services.org_rescan_request(integration=integration, trigger=Trigger.MANUAL, actor=actor)
    except services.ScanAlreadyRunning:
        pass


def scan_run_task(scan_run_id: int) -> str:
    return services.scan_run_execute(scan_run_id=scan_run_id).status


def scan_chunks_work_task(scan_run_id: int) -> int:
    return scan_chunks_work(run_id=scan_run_id)


def dispatch_due_scans_task() -> dict:
    cluster_heartbeat()
    result = services.scans_dispatch_due()
    result["webhook_deliveries"] = deliveries_drain()  # any delivery whose drain task was lost
    return result


def advisories_refresh_task() -> dict:
    """Refresh the OSV copy of each ecosystem the inventory uses (only changed archives are
    downloaded) and match what changed."""
    return advisories_refresh()


def prune_sync_logs_task() -> int:
    return sync_logs_prune()


def webhook_drain_task() -> int:
    return deliveries_drain()


def webhooks_sync_task(integration_id: int) -> str:
    integration = Integration.objects.filter(pk=integration_id).first()
    return webhooks_sync(integration=integration) if integration else "gone"


def integration_teardown_task(integration_id: int) -> bool:
    """Remove the portal's webhooks from Bitbucket (best effort), then purge the subtree."""
    integration = Integration.objects.filter(pk=integration_id).first()
    if integration is not None:
        try:
            webhooks_remove(integration=integration)
        except BitbucketError:
            pass  # logged by webhooks_remove; a stale hook's deliveries are refused (404) anyway
    return integration_services.integration_purge(integration_id=integration_id)


def pr_scan_task(scan_id: int) -> str:
    scan = pr_scan_execute(scan_id=scan_id)
    return scan.status if scan else "nothing to do"
