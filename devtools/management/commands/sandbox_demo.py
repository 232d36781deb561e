from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from bitbucket_sandbox.data import SANDBOX_WORKSPACE_TOKEN
from common.scanners import CATALOGUE
from integrations import services
from integrations.models import Integration, IntegrationStatus, Namespace, Tenant
from scanning.services import ScanAlreadyRunning, org_rescan_request
from scanning.vulnerabilities import advisories_refresh


class Command(BaseCommand):
    help = (
        "Connect the demo organisation to the sandbox's 'demo' workspace with the sandbox's workspace "
        "access token (idempotent). Run with BITBUCKET_API_URL/BITBUCKET_WEB_URL pointing at the sandbox."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", default="Demo")
        parser.add_argument("--workspace", default="demo")

    def handle(self, *args, tenant: str, workspace: str, **options):
        if "bitbucket.org" in settings.BITBUCKET_WEB_URL:
            raise CommandError("BITBUCKET_WEB_URL points at Bitbucket itself; start the sandbox and point it there.")
        if "/_osv/" in settings.OSV_URL:
            # The sandbox's OSV archives, imported before the first scan: its packages are
            # matched as they are written.
            for ecosystem, outcome in advisories_refresh(ecosystems=["npm", "pypi", "maven"]).items():
                self.stdout.write(f"OSV {ecosystem}: {outcome['error'] or str(outcome['advisories']) + ' advisories'}")
        organisation = Tenant.objects.filter(name=tenant).first()
        if organisation is None:
            raise CommandError(f"No organisation named '{tenant}'; run init_portal first.")
        existing = (
            Integration.objects.filter(tenant=organisation, workspace=workspace, project_key="")
            .exclude(status=IntegrationStatus.DELETING)
            .first()
        )
        if existing:
            # The sandbox starts from its generated world each time (and without the portal's
            # webhook): a rescan brings the inventory up to date and registers the hook again.
            try:
                org_rescan_request(integration=existing, trigger="cli", actor=None)
                queued = "; rescan queued"
            except ScanAlreadyRunning:
                queued = "; a scan is already running"
            self.stdout.write(f"Demo integration '{existing}' already connects {existing.bitbucket_url}{queued}.")
            return
        parent = Namespace.objects.filter(tenant=organisation, parent=None, managed=False).order_by("id").first()
        actor = get_user_model().objects.filter(is_superuser=True).order_by("id").first()
        integration = services.integration_create(
            tenant=organisation,
            parent=parent,
            name="Demo workspace (sandbox)",
            workspace=workspace,
            auth_method="access_token",
            credentials={"token": SANDBOX_WORKSPACE_TOKEN},
            actor=actor,
            scanners=list(CATALOGUE),
            description="Connected to the built-in Bitbucket sandbox.",
            # Pull-request scans with a small policy, so a demo pull request has something to say.
            pr_settings={
                "enabled": True,
                "target_branches": ["main", "master", "trunk"],
                "post_build_status": True,
                "post_summary_comment": True,
                "status_per_scanner": False,
                "require_lockfile_update": True,
                "deny_packages": [{"name": "event-stream", "range": ""}, {"name": "lodash", "range": "<4.17.21"}],
            },
        )
        self.stdout.write(self.style.SUCCESS(f"Connected '{integration}' to {integration.bitbucket_url}."))
