"""``manage.py bench_inventory``: time to a complete dependency inventory and posture, on
the git path and the REST path side by side, under Bitbucket's published limits."""

import multiprocessing
import time

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.test.utils import override_settings
from django.utils import timezone
from django_q.conf import Conf

from bitbucket_sandbox import SandboxServer, generate
from bitbucket_sandbox.data import SANDBOX_WORKSPACE_TOKEN
from integrations import services
from integrations.models import Reference
from scanning import services as scans
from scanning.chunks import scan_chunks_work
from scanning.metrics import peak_rss_mb, remove_benchmark_tenant, reset_peak_rss
from scanning.models import ScannerState, ScanRun
from scanning.selectors import inventory_status

REST_PER_HOUR, GIT_PER_HOUR = 1000, 60000


def _serve(repos: int, projects: int, window: float, ready) -> None:
    world = generate(seed=1, repos=repos, projects=projects, branches=2, pullrequests=False)
    # Bitbucket's published limits, over a window of ``window`` seconds standing for the hour.
    server = SandboxServer(world, rate_limit=REST_PER_HOUR, git_rate_limit=GIT_PER_HOUR, rate_window=window)
    ready.send((server.api_url, server.web_url))
    server.serve_forever()


class Command(BaseCommand):
    help = (
        "Benchmark the first inventory of a workspace of --repos repositories against the sandbox (in a separate "
        "process) enforcing Bitbucket's published limits (1,000 REST and 60,000 git requests an hour), with the "
        "hour compressed to --window seconds on both sides. For the git path and the REST path of the dependency "
        "scanner, and for posture: wall time on this machine, Bitbucket-hours under the published limits (and at "
        "10,000 REST an hour), REST and git requests and bytes per repository, and 429s received (must be 0). "
        "Uses the configured database; the benchmark's tenant is deleted afterwards."
    )

    def add_arguments(self, parser):
        parser.add_argument("--repos", type=int, default=10000)
        parser.add_argument("--projects", type=int, default=100)
        parser.add_argument(
            "--window", type=float, default=3.6, help="Seconds standing for Bitbucket's hour (default 3.6: 1/1000)."
        )
        parser.add_argument("--paths", default="git,rest", help="Dependency paths to measure: git, rest or both.")

    def handle(self, *args, repos: int, projects: int, window: float, paths: str, **options):
        paths_wanted = [p.strip() for p in paths.split(",") if p.strip()]
        if repos < 1 or projects < 1 or window <= 0 or not set(paths_wanted) <= {"git", "rest"}:
            raise CommandError("--repos, --projects and --window must be positive; --paths is git, rest or both.")
        receive, send = multiprocessing.Pipe(duplex=False)
        process = multiprocessing.get_context("fork").Process(
            target=_serve, args=(repos, projects, window, send), daemon=True
        )
        process.start()
        api_url, web_url = receive.recv()
        self.web_url = web_url
        self.stdout.write(
            f"sandbox: {repos} repositories, limits {REST_PER_HOUR} REST + {GIT_PER_HOUR} git per {window:g} s "
            f"(standing for an hour); budget store: {settings.REQUEST_BUDGET_STORE}"
        )
        sync_mode = Conf.SYNC
        Conf.SYNC = True
        tenants = []
        try:
            with override_settings(
                BITBUCKET_API_URL=api_url,
                BITBUCKET_WEB_URL=web_url,
                BITBUCKET_RATE_WINDOW_SECONDS=window,
                BITBUCKET_REST_PER_HOUR=REST_PER_HOUR,
                BITBUCKET_GIT_PER_HOUR=GIT_PER_HOUR,
            ):
                rows = []
                # One tenant each: a workspace is connected once per organisation.
                for label, scanners, git in [
                    *[(f"dependencies ({path})", ["dependencies"], path == "git") for path in paths_wanted],
                    ("posture", ["posture"], True),
                ]:
                    name = f"Benchmark {time.strftime('%Y%m%d-%H%M%S')} {label}"
                    tenants.append(services.tenant_create(name=name, actor=None))
                    parent = services.namespace_create(tenant=tenants[-1], name="Bench", actor=None)
                    with override_settings(SCANNER_GIT_MANIFESTS=git):
                        rows.append(self._measure(tenants[-1], parent, label, scanners, window))
        finally:
            Conf.SYNC = sync_mode
            for tenant in tenants:
                remove_benchmark_tenant(tenant)
            process.terminate()
        self.stdout.write("")
        header = (
            f"{'scanner':<22}{'wall s':>9}{'Bb-hours':>10}{'@10k/h':>8}{'REST/repo':>11}{'git/repo':>10}"
            f"{'KB/repo':>9}{'429s':>6}{'scans':>7}{'peak MB':>9}"
        )
        self.stdout.write(header)
        for r in rows:
            self.stdout.write(
                f"{r['label']:<22}{r['wall']:>9.1f}{r['hours']:>10.2f}{r['hours_10k']:>8.2f}{r['rest']:>11.2f}"
                f"{r['git']:>10.2f}{r['kb']:>9.2f}{r['r429']:>6}{r['scans']:>7}{r['peak']:>9.0f}"
            )
        if any(r["r429"] for r in rows):
            raise CommandError("Bitbucket refused requests for rate limiting: the shared budget let them through.")

    def _measure(self, tenant, parent, label: str, scanners: list[str], window: float) -> dict:
        """A fresh integration: its first sync with no scanner, then scans with ``scanners`` until the
        inventory is complete, each started when the previous one said the hour has room again."""
        integration = services.integration_create(
            tenant=tenant,
            parent=parent,
            name=label,
            workspace="demo",
            auth_method="access_token",
            credentials={"token": SANDBOX_WORKSPACE_TOKEN},
            actor=None,
        )
        self._wait_for_room(integration)
        services.integration_update(integration=integration, actor=None, scanners=scanners)
        integration.refresh_from_db()
        refs = Reference.objects.filter(project__integration=integration, is_default=True).count()
        reset_peak_rss()
        mark = self._sandbox_log_size()
        started, scans_run = time.monotonic(), 0
        while True:
            run = scans.org_rescan_request(integration=integration, trigger="cli", actor=None)
            scans.scan_run_execute(scan_run_id=run.pk)
            scan_chunks_work(run_id=run.pk)
            scans_run += 1
            status = inventory_status(integration=integration)
            if status["complete"]:
                break
            self._wait_for_room(integration)
        wall = time.monotonic() - started
        log = self._sandbox_log(mark)
        rest = sum(1 for r in log if r["kind"] == "rest")
        git = sum(1 for r in log if r["kind"] == "git")
        r429 = sum(1 for r in log if r["status"] == 429)
        state = ScannerState.objects.filter(reference__project__integration=integration, scanner=scanners[0])
        via = dict.fromkeys(state.values_list("via", flat=True).distinct())
        git_bytes = sum(
            (run.counts.get(f"{scanners[0]} scanner") or {}).get("git_bytes", 0)
            for run in ScanRun.objects.filter(integration=integration)
        )
        kb = git_bytes / refs / 1024 if git_bytes else sum(r.get("size", 0) for r in log) / refs / 1024
        hours = max(rest / REST_PER_HOUR, git / GIT_PER_HOUR)
        self.stdout.write(
            f"{label}: complete after {scans_run} scan(s), {wall:.1f} s; via {', '.join(via) or '-'}; "
            f"{rest} REST, {git} git, {r429} x 429"
        )
        return {
            "label": label,
            "wall": wall,
            "hours": hours,
            "hours_10k": max(rest / 10000, git / GIT_PER_HOUR),
            "rest": rest / refs,
            "git": git / refs,
            "kb": kb,
            "r429": r429,
            "scans": scans_run,
            "peak": peak_rss_mb(),
            "window": window,
        }

    @staticmethod
    def _wait_for_room(integration) -> None:
        """What the dispatcher does: the next scan when the previous one said there is room."""
        integration.refresh_from_db()
        if integration.next_scan_at and integration.next_scan_at > timezone.now():
            pause = (integration.next_scan_at - timezone.now()).total_seconds()
            if pause < 3600:
                time.sleep(pause)

    def _sandbox_log_size(self) -> int:
        return requests.get(f"{self.web_url}/_sandbox/requests/count", timeout=30).json()["total"]

    def _sandbox_log(self, since: int) -> list[dict]:
        return requests.get(f"{self.web_url}/_sandbox/requests", params={"since": since}, timeout=120).json()
