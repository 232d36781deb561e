"""Shared steps of the end-to-end tests: connect an integration to the sandbox's ``demo``
workspace, and run a scan to the end in this process."""

from __future__ import annotations

from bitbucket_sandbox.data import (
    SANDBOX_API_TOKEN,
    SANDBOX_EMAIL,
    SANDBOX_OAUTH_KEY,
    SANDBOX_OAUTH_SECRET,
    SANDBOX_WORKSPACE_TOKEN,
)
from integrations import services
from integrations.models import Integration
from scanning import services as scans
from scanning.models import ScanRun
from tests.factories import NamespaceFactory, TenantFactory

CREDENTIALS = {
    "access_token": {"token": SANDBOX_WORKSPACE_TOKEN},
    "api_token": {"email": SANDBOX_EMAIL, "token": SANDBOX_API_TOKEN},
    "oauth": {"key": SANDBOX_OAUTH_KEY, "secret": SANDBOX_OAUTH_SECRET},
}


def connect(
    *,
    tenant=None,
    name: str = "Demo",
    workspace: str = "demo",
    project_key: str = "",
    auth_method: str = "access_token",
    credentials: dict | None = None,
    scanners=(),
    verify: bool = False,
    **settings,
) -> Integration:
    """An integration on the sandbox, created through the service (with its root namespace
    under a fresh parent); ``settings`` are the service's other keyword arguments."""
    tenant = tenant or TenantFactory()
    return services.integration_create(
        tenant=tenant,
        parent=NamespaceFactory(tenant=tenant),
        name=name,
        workspace=workspace,
        project_key=project_key,
        auth_method=auth_method,
        credentials=credentials or CREDENTIALS[auth_method],
        actor=None,
        scanners=list(scanners),
        verify=verify,
        **settings,
    )


def scan(integration: Integration, trigger: str = "manual") -> ScanRun:
    """Request a scan and run it here, to the end: its chunks too, as the task clusters
    would (their tasks are queued on commit, which a test's transaction never reaches)."""
    from scanning.chunks import scan_chunks_work

    run = scans.org_rescan_request(integration=integration, trigger=trigger, actor=None)
    run = scans.scan_run_execute(scan_run_id=run.pk)
    scan_chunks_work(run_id=run.pk)
    run.refresh_from_db()
    return run
