import threading
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.models import Q

from integrations.models import Integration, IntegrationStatus
from scanning import services
from scanning.models import ScanRun, ScanStatus, Trigger


class Command(BaseCommand):
    help = (
        "Rescan an integration's Bitbucket workspace now (by id or name; --tenant narrows a name; --all "
        "rescans every active integration). With --wait the scan runs here, prints progress and the result, "
        "and the command exits non-zero unless it succeeded; without it the scan is queued for the cluster."
    )

    def add_arguments(self, parser):
        parser.add_argument("integration", nargs="?", help="Integration id or name.")
        parser.add_argument("--tenant", help="Tenant slug, to pick an integration by name.")
        parser.add_argument("--all", action="store_true", help="Every active integration (of --tenant, if given).")
        parser.add_argument("--wait", action="store_true", help="Run here and wait for the result.")

    def handle(self, *args, integration=None, tenant=None, all=False, wait=False, **options):
        if bool(integration) == bool(all):
            raise CommandError("Name one integration (id or name), or use --all.")
        qs = Integration.objects.exclude(status=IntegrationStatus.DELETING).select_related("tenant", "root_namespace")
        if tenant:
            qs = qs.filter(tenant__slug=tenant)
        if all:
            targets = list(qs.filter(status__in=[IntegrationStatus.ACTIVE, IntegrationStatus.ERROR]))
            if not targets:
                raise CommandError("No active integrations" + (f" in tenant {tenant}." if tenant else "."))
        else:
            matches = list(qs.filter(Q(name=integration) | (Q(pk=int(integration)) if integration.isdigit() else Q())))
            if not matches:
                raise CommandError(
                    f"No integration with id or name '{integration}'"
                    + (f" in tenant {tenant}." if tenant else ". (--tenant narrows by tenant slug.)")
                )
            if len(matches) > 1:
                names = ", ".join(f"{m.pk} ({m.tenant.slug})" for m in matches)
                raise CommandError(f"'{integration}' names several integrations: {names}. Use the id or --tenant.")
            targets = matches
        failed = 0
        for target in targets:
            try:
                run = services.org_rescan_request(integration=target, trigger=Trigger.CLI, actor=None)
            except services.ScanAlreadyRunning as exc:
                self.stderr.write(f"{target}: {exc}")
                failed += 1
                continue
            if not wait:
                self.stdout.write(f"{target}: queued scan #{run.pk}.")
                continue
            self.stdout.write(f"{target}: scanning {target.bitbucket_url} (scan #{run.pk})...")
            run = self._run_and_watch(run)
            self.stdout.write(self._result_line(target, run))
            if run.status != ScanStatus.SUCCEEDED:
                failed += 1
        if failed:
            raise CommandError(f"{failed} scan(s) did not succeed.", returncode=1)

    def _run_and_watch(self, run: ScanRun) -> ScanRun:
        stop = threading.Event()

        def watch():
            last = None
            while not stop.wait(1.0):
                current = ScanRun.objects.filter(pk=run.pk).values_list("progress_done", "progress_total").first()
                if current and current != last and current[1]:
                    self.stdout.write(f"  {current[0]}/{current[1]} repositories")
                    last = current
            connection.close()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            return services.scan_run_execute(scan_run_id=run.pk)
        finally:
            stop.set()
            watcher.join(timeout=2)
            time.sleep(0)

    @staticmethod
    def _result_line(target, run: ScanRun) -> str:
        counts = (
            "; ".join(
                f"{kind}: " + ", ".join(f"{n} {action}" for action, n in c.items() if n)
                for kind, c in (run.counts or {}).items()
            )
            or "no changes"
        )
        took = f"{run.duration.total_seconds():.1f}s" if run.duration else "?"
        line = (
            f"{target}: {run.status} in {took}; {counts}; {run.rest_requests} REST requests, "
            f"{run.git_requests} git ref reads."
        )
        return line + (f" {run.summary}" if run.summary else "")
