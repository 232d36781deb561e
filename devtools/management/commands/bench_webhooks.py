"""``bench_webhooks``: webhook ingestion throughput, and delivery-to-processed latency."""

import hashlib
import hmac
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, connections

from integrations import services
from integrations.models import Integration
from scanning.metrics import remove_benchmark_tenant
from scanning.models import WebhookDelivery


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load(url: str, secret: str, deliveries: int, concurrency: int, out) -> None:
    """The second process: signed deliveries from ``concurrency`` threads with keep-alive."""
    body = json.dumps(
        {"repository": {"uuid": "{bench}"}, "push": {"changes": []}, "actor": {"display_name": "bench"}}
    ).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    local = __import__("threading").local()

    def send(_):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        headers = {
            "Content-Type": "application/json",
            "X-Event-Key": "repo:push",
            "X-Hub-Signature": signature,
            "X-Request-UUID": str(uuid.uuid4()),
            "X-Hook-UUID": "bench",
            "X-Attempt-Number": "1",
        }
        started = time.perf_counter()
        status = session.post(url, data=body, headers=headers, timeout=30).status_code
        return time.perf_counter() - started, status

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(send, range(min(50, deliveries))))  # warm-up, not counted
        begin = time.perf_counter()
        results = list(pool.map(send, range(deliveries)))
        elapsed = time.perf_counter() - begin
    out.send((elapsed, results))


class Command(BaseCommand):
    help = (
        "Benchmark webhook ingestion (verify + de-duplicate + enqueue) under concurrent load from a second "
        "process on loopback, against gunicorn serving this project with the configured database (use "
        "DATABASE_URL for PostgreSQL, and REDIS_URL for the Redis queue). Prints deliveries per second and "
        "latency percentiles. The benchmark's tenant and deliveries are removed afterwards."
    )

    def add_arguments(self, parser):
        parser.add_argument("--deliveries", type=int, default=3000)
        parser.add_argument(
            "--concurrency",
            type=int,
            default=4,
            help="Concurrent connections (4 already saturate 2 cores; more only queue).",
        )
        parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes.")
        parser.add_argument("--threads", type=int, default=2, help="gunicorn threads per worker.")
        parser.add_argument(
            "--client",
            choices=["auto", "wrk", "python"],
            default="auto",
            help="Load generator: wrk (Debian's, light; used when installed) or Python requests.",
        )
        parser.add_argument("--seconds", type=int, default=15, help="Duration of the wrk run.")
        parser.add_argument(
            "--latency",
            type=int,
            metavar="N",
            default=0,
            help="Instead: send N deliveries one at a time with random gaps (0 to 2x --gap-ms) while a "
            "task cluster (manage.py qcluster) processes them, and print how long each waited "
            "from receipt to processed.",
        )
        parser.add_argument("--gap-ms", type=float, default=40.0, help="Mean gap between deliveries with --latency.")

    def handle(
        self,
        *args,
        deliveries: int,
        concurrency: int,
        workers: int,
        threads: int,
        client: str,
        seconds: int,
        latency: int,
        gap_ms: float,
        **options,
    ):
        use_wrk = client == "wrk" or (client == "auto" and shutil.which("wrk"))
        engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        broker = "redis" if settings.Q_CLUSTER.get("redis") else "orm"
        tenant = services.tenant_create(name=f"Webhook bench {time.strftime('%H%M%S')}", actor=None)
        parent = services.namespace_create(tenant=tenant, name="Bench", actor=None)
        integration = services.integration_create(
            tenant=tenant,
            parent=parent,
            name="bench",
            workspace=f"bench-{uuid.uuid4().hex[:8]}",
            auth_method="access_token",
            credentials={"token": "ATCTT3xBenchmarkOnly0000"},
            actor=None,
            verify=False,
        )
        Integration.objects.filter(pk=integration.pk).update(next_scan_at=None)
        secret = Integration.objects.get(pk=integration.pk).webhook_secret.reveal()
        if self._vacuum():
            self.stdout.write("vacuumed the delivery table before the run (PostgreSQL)")
        port = _free_port()
        root = Path(settings.BASE_DIR)
        # The server's output goes to a file, as in production (journald, a log file): a pipe
        # that its reader drains slowly blocks the writing worker and shows up as latency.
        log_path = Path(tempfile.mkdtemp()) / "gunicorn.log"
        log_file = log_path.open("w")
        # Plain HTTP on loopback: TLS is the proxy's job, so the redirect to https that
        # production settings make (DEBUG off) is turned off for this server only.
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings"),
            "SECURE_SSL_REDIRECT": "false",
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "-b",
                f"127.0.0.1:{port}",
                "-w",
                str(workers),
                *(
                    ["--threads", str(threads), "--worker-class", "gthread"]
                    if threads > 1
                    else ["--worker-class", "sync"]
                ),
                "--log-level",
                "warning",
                "--keep-alive",
                "30",
            ],
            cwd=root,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        cluster = None
        try:
            self._wait(port)
            url = f"http://127.0.0.1:{port}/webhooks/bitbucket/{integration.uuid}/"
            if latency:
                cluster = subprocess.Popen(
                    [sys.executable, "manage.py", "qcluster"],
                    cwd=root,
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                self._run_latency(url, secret, integration, latency, gap_ms, engine, broker)
                return
            if use_wrk:
                self._run_wrk(url, secret, concurrency, seconds, integration, workers, threads, engine, broker)
                return
            connections.close_all()  # the forked client must not share the database sockets
            receive, send = multiprocessing.Pipe(duplex=False)
            client = multiprocessing.get_context("fork").Process(
                target=_load, args=(url, secret, deliveries, concurrency, send)
            )
            client.start()
            if not receive.poll(600):
                raise CommandError("The load generator did not finish within 10 minutes.")
            elapsed, results = receive.recv()
            client.join()
        except BaseException:
            remove_benchmark_tenant(tenant)
            raise
        finally:
            if cluster is not None:
                os.killpg(cluster.pid, signal.SIGTERM)
                cluster.wait(30)
            server.terminate()
            server.wait(10)
            log_file.close()
            lines = log_path.read_text(errors="replace").splitlines()
            self.stdout.write(
                f"server log: {len(lines)} line(s) in {log_path}"
                + ("; last ones:\n  " + "\n  ".join(lines[-5:]) if lines else "")
            )
            if use_wrk or latency:
                remove_benchmark_tenant(tenant)
        latencies = sorted(r[0] * 1000 for r in results)
        statuses = {s: sum(1 for r in results if r[1] == s) for s in {r[1] for r in results}}
        stored = WebhookDelivery.objects.filter(integration=integration).count()

        def pct(p):
            return latencies[min(len(latencies) - 1, int(len(latencies) * p))]

        self.stdout.write(
            f"{deliveries} deliveries from {concurrency} concurrent connections (gunicorn {workers}x{threads}, "
            f"{engine}, {broker} queue): {deliveries / elapsed:.0f} deliveries/s; latency p50 {pct(0.5):.1f} ms, "
            f"p95 {pct(0.95):.1f} ms, p99 {pct(0.99):.1f} ms, max {latencies[-1]:.1f} ms, mean "
            f"{statistics.mean(latencies):.1f} ms; statuses {statuses}; stored {stored}"
        )
        remove_benchmark_tenant(tenant)
        if statuses.get(202, 0) != deliveries:
            raise CommandError("Not every delivery was accepted.")

    def _run_wrk(self, url, secret, concurrency, seconds, integration, workers, threads, engine, broker) -> None:
        """wrk with a Lua script: the same signed body, a fresh X-Request-UUID each time."""
        body = json.dumps({"repository": {"uuid": "{bench}"}, "push": {"changes": []}})
        signature = "sha256=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
        script = (
            "local body = " + json.dumps(body) + "\n"
            "local counter = 0\n"
            'setup = function(thread) counter = counter + 1; thread:set("tid", tostring(counter)) end\n'
            "local n = 0\n"
            "local prefix = nil\n"
            "request = function()\n"
            '  if prefix == nil then prefix = tid .. "-" .. tostring(os.time()) end\n'
            "  n = n + 1\n"
            '  local headers = {["Content-Type"] = "application/json", ["X-Event-Key"] = "repo:push",\n'
            '    ["X-Hub-Signature"] = "' + signature + '", ["X-Hook-UUID"] = "bench",\n'
            '    ["X-Request-UUID"] = prefix .. "-" .. tostring(n)}\n'
            '  return wrk.format("POST", nil, headers, body)\n'
            "end\n"
        )
        path = Path(tempfile.mkdtemp()) / "webhook.lua"
        path.write_text(script)
        # A short warm-up first, not counted (as the Python client does): each worker thread's first
        # request opens its database connection and loads the URL configuration and views.
        subprocess.run(
            ["wrk", "-t", "1", "-c", str(concurrency), "-d", "2s", "-s", str(path), url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        result = subprocess.run(
            ["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{seconds}s", "--latency", "-s", str(path), url],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        out = result.stdout
        stored = WebhookDelivery.objects.filter(integration=integration).count()
        rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
        lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)", out, re.M))
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: (.*)", out)
        self.stdout.write(
            f"wrk, {concurrency} connections for {seconds}s (gunicorn {workers}x{threads}, {engine}, {broker} queue): "
            f"{float(rate.group(1)) if rate else 0:.0f} deliveries/s; "
            f"latency p50 {lat.get('50')}, p75 {lat.get('75')}, "
            f"p90 {lat.get('90')}, p99 {lat.get('99')}; stored {stored}; non-2xx {bad.group(1) if bad else 0}"
            + (f"; socket errors {errors.group(1)}" if errors else "")
        )
        if bad or result.returncode != 0:
            raise CommandError("Some deliveries were not accepted:\n" + out + result.stderr)

    def _run_latency(self, url, secret, integration, count, gap_ms, engine, broker) -> None:
        """One delivery at a time, random gaps, a real cluster: time from receipt to processed."""
        body = json.dumps(
            {
                "repository": {"uuid": "{not-in-the-inventory}"},
                "pullrequest": {"id": 1, "updated_on": "2026-01-01T00:00:00+00:00"},
                "approval": {"user": {"display_name": "bench"}},
            }
        ).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        session, rng, refused = requests.Session(), random.Random(7), 0
        for _ in range(count):
            headers = {
                "Content-Type": "application/json",
                "X-Event-Key": "pullrequest:approved",
                "X-Hub-Signature": signature,
                "X-Request-UUID": str(uuid.uuid4()),
                "X-Hook-UUID": "bench",
            }
            refused += session.post(url, data=body, headers=headers, timeout=30).status_code != 202
            time.sleep(rng.uniform(0, 2 * gap_ms) / 1000)
        deliveries = WebhookDelivery.objects.filter(integration=integration)
        deadline = time.monotonic() + 120
        while deliveries.filter(processed_at__isnull=True).exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        waits = sorted(
            (p - r).total_seconds() * 1000
            for r, p in deliveries.exclude(processed_at__isnull=True).values_list("received_at", "processed_at")
        )
        pending = deliveries.filter(processed_at__isnull=True).count()
        if not waits:
            raise CommandError("No delivery was processed: is the task cluster able to start?")

        def pct(p):
            return waits[min(len(waits) - 1, int(len(waits) * p))]

        self.stdout.write(
            f"{count} deliveries one at a time, random gaps of 0-{2 * gap_ms:.0f} ms ({engine}, {broker} queue, "
            f"{settings.Q_CLUSTER['workers']} task workers): receipt to processed p50 {pct(0.5):.0f} ms, p95 "
            f"{pct(0.95):.0f} ms, p99 {pct(0.99):.0f} ms, max {waits[-1]:.0f} ms; not processed within 2 min: "
            f"{pending}; refused {refused}"
        )
        if pending or refused:
            raise CommandError("Some deliveries were refused or never processed.")

    @staticmethod
    def _vacuum() -> bool:
        """On PostgreSQL, reclaim the dead rows earlier runs' clean-ups left in the delivery
        table, so a run does not pay for the last one (autovacuum may be off or slow)."""
        if connection.vendor != "postgresql":
            return False
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {WebhookDelivery._meta.db_table}")
        return True

    @staticmethod
    def _wait(port: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise CommandError("gunicorn did not start")
