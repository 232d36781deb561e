"""``bench_advisories``: importing a large OSV archive and matching it against a large
inventory, on the configured database."""

from __future__ import annotations

import http.server
import threading
import time
import uuid

from django.core.management.base import BaseCommand, CommandError
from django.core.paginator import Paginator
from django.db import connection
from django.test.utils import override_settings

from advisories.models import Advisory, AffectedPackage, OsvFeed
from advisories.osv import osv_refresh
from bitbucket_sandbox.osv import archive, etag
from integrations import services
from integrations.models import Integration, IntegrationStatus, Project, Reference
from scanning.metrics import peak_rss_mb, remove_benchmark_tenant, reset_peak_rss
from scanning.models import DependencyPackage, PackageVulnerability
from scanning.sbom import tenant_sbom_stream
from scanning.selectors import (
    denied_on_default_branches,
    tenant_overview,
    vulnerabilities_visible,
    vulnerability_counts,
)
from scanning.vulnerabilities import vulnerabilities_match_all, vulnerabilities_match_names


def _advisory(i: int, names: int) -> dict:
    return {
        "id": f"BENCH-{i:07d}",
        "modified": "2026-01-01T00:00:00Z",
        "summary": f"Benchmark advisory {i}",
        "affected": [
            {
                "package": {"ecosystem": "npm", "name": f"pkg-{i % names}"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": f"1.{i % 10 + 1}.0"}]}],
            }
        ],
        "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    }


class Command(BaseCommand):
    help = (
        "Build an OSV archive of --advisories npm advisories over --names package names and an inventory of "
        "--packages package rows, then measure: the import (wall time, peak memory), a full re-match, and the "
        "incremental match of one new advisory; then the overview, the Vulnerabilities page and the organisation "
        "SBOM at that scale. Uses the configured database; its rows are removed afterwards."
    )

    def add_arguments(self, parser):
        parser.add_argument("--advisories", type=int, default=100_000)
        parser.add_argument("--packages", type=int, default=200_000)
        parser.add_argument("--names", type=int, default=50_000, help="Distinct package names the advisories name.")

    def handle(self, *args, advisories: int, packages: int, names: int, **options):
        if min(advisories, packages, names) < 1:
            raise CommandError("--advisories, --packages and --names must be positive.")
        if Advisory.objects.filter(ecosystem="npm").exists():
            raise CommandError("The npm advisories table is not empty: run this on a benchmark database.")
        started = time.perf_counter()
        body = archive([_advisory(i, names) for i in range(advisories)])
        self.stdout.write(
            f"archive: {advisories} advisories, {len(body) / 1e6:.1f} MB zipped, built in "
            f"{time.perf_counter() - started:.1f}s"
        )
        server, url = self._serve(body)
        tenant = services.tenant_create(name=f"Advisory bench {time.strftime('%H%M%S')}", actor=None)
        try:
            self._inventory(tenant, packages, names)
            with override_settings(OSV_URL=url):
                reset_peak_rss()
                t0 = time.perf_counter()
                result = osv_refresh(ecosystem="npm")
                took = time.perf_counter() - t0
                if result.error:
                    raise CommandError(result.error)
                self.stdout.write(
                    f"import: {result.advisories} advisories, {AffectedPackage.objects.count()} affected entries in "
                    f"{took:.1f}s; peak memory {peak_rss_mb():.0f} MB"
                )
                reset_peak_rss()
                t0 = time.perf_counter()
                matched = vulnerabilities_match_all()
                self.stdout.write(
                    f"full match: {packages} package rows, {matched} matches in {time.perf_counter() - t0:.1f}s; "
                    f"peak memory {peak_rss_mb():.0f} MB"
                )
                self._pages(tenant)
                new = _advisory(advisories, names)
                new["id"] = "BENCH-NEW"
                body = archive([_advisory(i, names) for i in range(advisories)] + [new])
                server.body = body
                t0 = time.perf_counter()
                result = osv_refresh(ecosystem="npm")
                imported = time.perf_counter() - t0
                t0 = time.perf_counter()
                rematched = vulnerabilities_match_names(names=result.names)
                self.stdout.write(
                    f"one new advisory: archive read again in {imported:.1f}s (only it written); "
                    f"incremental match of its package's rows: {rematched} matches in "
                    f"{(time.perf_counter() - t0) * 1000:.0f} ms"
                )
                t0 = time.perf_counter()
                unchanged = osv_refresh(ecosystem="npm")
                self.stdout.write(
                    f"unchanged archive: {'not downloaded (ETag)' if not unchanged.changed else 'changed?'} in "
                    f"{(time.perf_counter() - t0) * 1000:.0f} ms"
                )
        finally:
            server.shutdown()
            PackageVulnerability.objects.filter(package__reference__project__namespace__tenant=tenant).delete()
            Advisory.objects.filter(osv_id__startswith="BENCH-").delete()
            OsvFeed.objects.filter(ecosystem="npm").delete()
            for integration in Integration.objects.filter(tenant=tenant):
                Integration.objects.filter(pk=integration.pk).update(status=IntegrationStatus.DELETING)
                services.integration_purge(integration_id=integration.pk)
            remove_benchmark_tenant(tenant)

    def _pages(self, tenant) -> None:
        """What people open at this scale: the overview (with a 20-entry deny list), the first
        page of the Vulnerabilities list, and the organisation SBOM streamed to the end."""
        Integration.objects.filter(tenant=tenant).update(
            pr_settings={"deny_packages": [{"name": f"pkg-{i * 7}", "range": "<1.5.0"} for i in range(20)]}
        )
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:  # as autovacuum would, a minute after 200,000 new rows
                cursor.execute("ANALYZE")
        t0 = time.perf_counter()
        denied = denied_on_default_branches(tenant=tenant)
        t1 = time.perf_counter()
        counts = vulnerability_counts(tenant=tenant)
        t2 = time.perf_counter()
        tenant_overview(tenant=tenant)
        self.stdout.write(
            f"overview: {counts['total']} vulnerable rows, {len(denied)} denied rows; whole page's figures in "
            f"{(time.perf_counter() - t2) * 1000:.0f} ms (deny list {(t1 - t0) * 1000:.0f} ms, vulnerability counts "
            f"{(t2 - t1) * 1000:.0f} ms)"
        )
        t0 = time.perf_counter()
        first_page = list(Paginator(vulnerabilities_visible(tenant=tenant), 100).get_page(1))
        self.stdout.write(
            f"vulnerabilities page: first {len(first_page)} rows, worst first (and the count), in "
            f"{(time.perf_counter() - t0) * 1000:.0f} ms"
        )
        reset_peak_rss()
        t0 = time.perf_counter()
        size = sum(len(piece) for piece in tenant_sbom_stream(tenant=tenant))
        self.stdout.write(
            f"organisation SBOM: {size / 1e6:.1f} MB streamed in {time.perf_counter() - t0:.1f}s; "
            f"peak memory {peak_rss_mb():.0f} MB"
        )

    @staticmethod
    def _serve(body: bytes):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                current = self.server.body
                tag = etag(current)
                if self.headers.get("If-None-Match") == tag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", tag)
                self.send_header("Content-Length", str(len(current)))
                self.end_headers()
                self.wfile.write(current)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.body = body
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/{{ecosystem}}/all.zip"

    def _inventory(self, tenant, packages: int, names: int) -> None:
        parent = services.namespace_create(tenant=tenant, name="Bench", actor=None)
        integration = services.integration_create(
            tenant=tenant,
            parent=parent,
            name=f"bench-{uuid.uuid4().hex[:6]}",
            workspace="advbench",
            auth_method="access_token",
            credentials={"token": "ATCTT3xAdvisoryBenchmarkOnly"},
            actor=None,
            verify=False,
        )
        Integration.objects.filter(pk=integration.pk).update(next_scan_at=None)
        per_repo = 100
        repos = max(1, packages // per_repo)
        t0 = time.perf_counter()
        for start in range(0, repos, 1000):
            projects = Project.objects.bulk_create(
                [
                    Project(
                        namespace=integration.root_namespace,
                        integration=integration,
                        name=f"r{i}",
                        slug=f"r{i}",
                        full_name=f"advbench/r{i}",
                        remote_uuid=f"{{a-{i}}}",
                        main_branch="main",
                    )
                    for i in range(start, min(repos, start + 1000))
                ]
            )
            refs = Reference.objects.bulk_create(
                [Reference(project=p, name="main", is_default=True, head_commit=f"{p.pk:040x}") for p in projects]
            )
            DependencyPackage.objects.bulk_create(
                [
                    DependencyPackage(
                        reference=r,
                        ecosystem="npm",
                        name=f"pkg-{(r.pk * per_repo + k) % (names * 2)}",  # half the names have advisories
                        version=f"1.{k % 12}.0",
                        manifest_path="package-lock.json",
                        direct=k < 10,
                        # Each package requires the next one in its lock file (the SBOM's graph).
                        requires=[f"pkg-{(r.pk * per_repo + k + 1) % (names * 2)} 1.{(k + 1) % 12}.0"]
                        if k + 1 < per_repo
                        else [],
                    )
                    for r in refs
                    for k in range(per_repo)
                ],
                batch_size=5000,
            )
        self.stdout.write(
            f"inventory: {repos} repositories, {repos * per_repo} package rows in {time.perf_counter() - t0:.1f}s"
        )
