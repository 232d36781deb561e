"""``bench_purge``: the product's chunked purge against a plain ordered cascade of the same rows."""

from __future__ import annotations

import time
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from common.db import generic_plans_allow
from integrations import services
from integrations.models import Integration, IntegrationStatus, Namespace, Project, Reference
from integrations.selectors import integration_purge_plan
from scanning.metrics import peak_rss_mb, reset_peak_rss
from scanning.models import DependencyPackage, PostureFinding, PostureRule, ScannerState, ScanRun
from synclogs.models import SyncLog


class Statements:
    """Counts statements and measures the longest transaction (BEGIN .. COMMIT) on this connection."""

    def __init__(self) -> None:
        self.count, self.longest, self._opened = 0, 0.0, None

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)

    def begin(self) -> None:
        self._opened = time.perf_counter()

    def end(self) -> None:
        if self._opened is not None:
            self.longest = max(self.longest, time.perf_counter() - self._opened)
            self._opened = None


class Command(BaseCommand):
    help = (
        "Build an integration with --repos repositories and scanner results (packages, posture findings, scanner "
        "states, references, sync logs) directly in the configured database, delete it with the product's purge, "
        "build it again and delete it with a plain ordered cascade (one DELETE per table, children first, one "
        "transaction). Prints rows, wall time, statements, the longest transaction and peak memory for each."
    )

    def add_arguments(self, parser):
        parser.add_argument("--repos", type=int, default=10000)
        parser.add_argument("--packages", type=int, default=8, help="Packages per repository.")

    def handle(self, *args, repos: int, packages: int, **options):
        if repos < 1:
            raise CommandError("--repos must be positive.")
        tenant = services.tenant_create(name=f"Purge bench {time.strftime('%H%M%S')}", actor=None)
        parent = services.namespace_create(tenant=tenant, name="Bench", actor=None)
        try:
            runs = (
                ("product purge", self._purge),
                ("purge via the collector", self._purge_collector),
                ("plain ordered cascade", self._cascade),
            )
            for name, run in runs:
                integration, rows = self._build(tenant, parent, repos, packages)
                reset_peak_rss()
                counter = Statements()
                started = time.perf_counter()
                with connection.execute_wrapper(counter):
                    run(integration, counter)
                elapsed = time.perf_counter() - started
                peak = peak_rss_mb()
                self.stdout.write(
                    f"{name:>22}: {rows} rows in {elapsed:.2f}s; {counter.count} statements; longest transaction "
                    f"{counter.longest * 1000:.0f} ms; peak memory {peak:.0f} MB"
                )
        finally:
            tenant.namespaces.all().delete()
            tenant.delete()

    @staticmethod
    def _purge(integration: Integration, counter: Statements) -> None:
        from integrations.services import purge  # noqa: PLC0415 - patched per run to time its transactions

        original = purge.transaction.atomic

        class Timed:
            def __init__(self, *a, **kw):
                self.inner = original(*a, **kw)

            def __enter__(self):
                counter.begin()
                return self.inner.__enter__()

            def __exit__(self, *exc):
                result = self.inner.__exit__(*exc)
                counter.end()
                return result

        purge.transaction.atomic = Timed
        try:
            services.integration_purge(integration_id=integration.pk)
        finally:
            purge.transaction.atomic = original

    @classmethod
    def _purge_collector(cls, integration: Integration, counter: Statements) -> None:
        """As the purge was before: every chunk through Django's delete collector."""
        from integrations.services import purge  # noqa: PLC0415 - patched for this run only

        original = purge._only_cascaded
        purge._only_cascaded = lambda model: False
        try:
            cls._purge(integration, counter)
        finally:
            purge._only_cascaded = original

    @staticmethod
    def _cascade(integration: Integration, counter: Statements) -> None:
        counter.begin()
        with transaction.atomic():
            generic_plans_allow()  # as the product's purge does: a fair comparison
            for qs in integration_purge_plan(integration=integration):
                qs._raw_delete(qs.db)
        counter.end()

    @staticmethod
    def _build(tenant, parent, repos: int, packages: int) -> tuple[Integration, int]:
        integration = services.integration_create(
            tenant=tenant,
            parent=parent,
            name=f"bench-{uuid.uuid4().hex[:6]}",
            workspace="bench",
            auth_method="access_token",
            credentials={"token": "ATCTT3xPurgeBenchmarkOnly"},
            actor=None,
            verify=False,
        )
        Integration.objects.filter(pk=integration.pk).update(next_scan_at=None)
        root = integration.root_namespace
        namespaces = Namespace.objects.bulk_create(
            [
                Namespace(
                    tenant=tenant,
                    parent=root,
                    name=f"P{i}",
                    slug=f"p{i}",
                    managed=True,
                    integration=integration,
                    remote_uuid=f"{{ns-{i}}}",
                    remote_key=f"P{i}",
                )
                for i in range(max(1, repos // 100))
            ]
        )
        now, rows = timezone.now(), 1 + len(namespaces)
        batch = 2000
        for start in range(0, repos, batch):
            chunk = range(start, min(repos, start + batch))
            projects = Project.objects.bulk_create(
                [
                    Project(
                        namespace=namespaces[i % len(namespaces)],
                        integration=integration,
                        name=f"r{i}",
                        slug=f"r{i}",
                        full_name=f"bench/r{i}",
                        remote_uuid=f"{{r-{i}}}",
                        main_branch="main",
                    )
                    for i in chunk
                ]
            )
            refs = Reference.objects.bulk_create(
                [Reference(project=p, name="main", is_default=True, head_commit=f"{p.pk:040x}") for p in projects]
            )
            DependencyPackage.objects.bulk_create(
                [
                    DependencyPackage(
                        reference=r, ecosystem="npm", name=f"pkg-{k}", version="1.0.0", manifest_path="package.json"
                    )
                    for r in refs
                    for k in range(packages)
                ]
            )
            ScannerState.objects.bulk_create(
                [
                    ScannerState(reference=r, scanner=s, commit=r.head_commit)
                    for r in refs
                    for s in ("dependencies", "posture")
                ]
            )
            PostureFinding.objects.bulk_create(
                [PostureFinding(project=p, rule=PostureRule.FORCE_PUSH) for p in projects]
            )
            rows += len(projects) * (1 + 1 + packages + 2 + 1)
        SyncLog.objects.bulk_create(
            [
                SyncLog(integration=integration, category="unexpected", operation="sync", message=f"m{i}")
                for i in range(100)
            ]
        )
        ScanRun.objects.create(integration=integration, trigger="manual", status="succeeded", finished_at=now)
        rows += 101
        Integration.objects.filter(pk=integration.pk).update(status=IntegrationStatus.DELETING)
        return Integration.objects.get(pk=integration.pk), rows
