import math
import multiprocessing
import time

import requests
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test.utils import override_settings
from django_q.conf import Conf

from bitbucket_sandbox import SandboxServer, generate
from bitbucket_sandbox.data import SANDBOX_WORKSPACE_TOKEN
from integrations import services
from integrations.models import Member, Namespace, Project, Reference
from scanning import services as scans
from scanning.metrics import counting_writes, peak_rss_mb, remove_benchmark_tenant, reset_peak_rss
from scanning.models import ScanRun


def _serve(repos: int, projects: int, ready) -> None:
    world = generate(seed=1, repos=repos, projects=projects, branches=2, pullrequests=False)
    server = SandboxServer(world, rate_limit=10**9, git_rate_limit=10**9)
    ready.send((server.api_url, server.web_url, len(next(iter(world.workspaces.values())).members)))
    server.serve_forever()


class Command(BaseCommand):
    help = (
        "Benchmark the org sync against the sandbox (in a separate process): a first sync of a workspace with "
        "--repos repositories in --projects projects, then an unchanged rescan. Prints REST requests (and the "
        "pagination minimum), git ref reads, wall time, rows written and peak memory for each. Uses the "
        "configured database; the benchmark's tenant is deleted afterwards unless --keep."
    )

    def add_arguments(self, parser):
        parser.add_argument("--repos", type=int, default=10000)
        parser.add_argument("--projects", type=int, default=100)
        parser.add_argument("--keep", action="store_true", help="Keep the benchmark tenant and its rows.")
        parser.add_argument(
            "--analyze",
            action="store_true",
            help="VACUUM ANALYZE the inventory tables first (PostgreSQL): planner statistics of empty tables.",
        )

    def handle(self, *args, repos: int, projects: int, keep: bool, analyze: bool = False, **options):
        if repos < 1 or projects < 1:
            raise CommandError("--repos and --projects must be positive.")
        if analyze:
            if connection.vendor != "postgresql":
                raise CommandError("--analyze needs PostgreSQL.")
            with connection.cursor() as cursor:
                for model in (Namespace, Project, Reference, Member):
                    cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
            self.stdout.write("VACUUM ANALYZE of the inventory tables done")
        receive, send = multiprocessing.Pipe(duplex=False)
        process = multiprocessing.get_context("fork").Process(target=_serve, args=(repos, projects, send), daemon=True)
        process.start()
        api_url, web_url, members = receive.recv()
        self.stdout.write(f"sandbox: {repos} repositories in {projects} projects, {members} members, at {web_url}")
        minimum = math.ceil(repos / 100) + math.ceil(projects / 100) + math.ceil(members / 100)
        sync_mode = Conf.SYNC
        Conf.SYNC = True  # run the queued scans here, so they are measured in this process
        tenant = None
        try:
            with override_settings(BITBUCKET_API_URL=api_url, BITBUCKET_WEB_URL=web_url):
                tenant = services.tenant_create(name=f"Benchmark {time.strftime('%Y%m%d-%H%M%S')}", actor=None)
                parent = services.namespace_create(tenant=tenant, name="Bench", actor=None)

                def first_sync():
                    return services.integration_create(
                        tenant=tenant,
                        parent=parent,
                        name="bench",
                        workspace="demo",
                        auth_method="access_token",
                        credentials={"token": SANDBOX_WORKSPACE_TOKEN},
                        actor=None,
                    )

                integration = None
                for label in ("first sync", "unchanged rescan"):
                    reset_peak_rss()
                    before = self._sandbox_count(web_url)["total"]
                    with counting_writes() as writes:
                        if integration is None:
                            integration = first_sync()
                        else:
                            scans.org_rescan_request(integration=integration, trigger="cli", actor=None)
                    run = ScanRun.objects.filter(integration=integration).order_by("-id").first()
                    rest = self._sandbox_count(web_url, since=before)["by_kind"].get("rest", 0)
                    wall = (run.finished_at - run.started_at).total_seconds()
                    self.stdout.write(
                        f"{label:>16}: {run.status}; REST requests {run.rest_requests} (pagination minimum {minimum}, "
                        f"+{run.rest_requests - minimum}; {rest - run.rest_requests} more for verification); "
                        f"git ref reads {run.git_requests}; wall time {wall:.1f}s; rows written {writes.rows}; "
                        f"peak memory {peak_rss_mb() or 0:.0f} MB"
                    )
                self.stdout.write(
                    f"inventory: {Namespace.objects.filter(integration=integration).count()} namespaces, "
                    f"{Project.objects.filter(integration=integration).count()} projects, "
                    f"{Reference.objects.filter(project__integration=integration).count()} references, "
                    f"{Member.objects.filter(integration=integration).count()} members"
                )
        finally:
            Conf.SYNC = sync_mode
            process.terminate()
            process.join(5)
            if tenant is not None and not keep:
                remove_benchmark_tenant(tenant)

    @staticmethod
    def _sandbox_count(web_url: str, since: int = 0) -> dict:
        # Counts only: holding every recorded request here would grow this process with N
        # and be measured as the sync's memory.
        return requests.get(f"{web_url}/_sandbox/requests/count", params={"since": since}, timeout=60).json()
