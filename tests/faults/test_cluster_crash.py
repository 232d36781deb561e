"""Fault injection on the production path: real task clusters on PostgreSQL + Redis,
stopped with SIGTERM and killed with SIGKILL in the middle of a scan.

Shows: SIGTERM to the cluster's process group stops it within seconds and the scan
records where it stopped; after ``kill -9`` the scan's missing heartbeat lets the
dispatcher end it and start a new one within seconds here (``SCAN_STALE_SECONDS`` is
short in this test; production figures are in docs/performance.md); the inventory ends
complete, with nothing duplicated. And three clusters share one scan's scanner work in
chunks; one killed with ``kill -9`` in the middle of a chunk loses nothing (its chunk is
handed out again, the others finish the scan, every repository scanned once). Runs where
PostgreSQL and Redis are (CI's second suite); elsewhere it skips saying why.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import requests
from django.conf import settings
from django.db import connection

from bitbucket_sandbox.data import SANDBOX_WORKSPACE_TOKEN
from integrations import services
from integrations.models import Project, Reference
from scanning.models import DependencyPackage, ScanChunk, ScannerState, ScanRun
from tests.factories import NamespaceFactory, TenantFactory

ROOT = Path(__file__).resolve().parents[2]
REDIS = "redis://127.0.0.1:6379/15"
REPOS = 2000

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what}")


def _latest(integration_id: int) -> ScanRun | None:
    return ScanRun.objects.filter(integration_id=integration_id).order_by("-id").first()


@pytest.fixture
def stack(transactional_db, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (the production path): run with DATABASE_URL=postgres://...")
    if not _redis_up():
        pytest.skip("needs Redis at 127.0.0.1:6379 (the production path)")
    port = _free_port()
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "true",
        "SECRET_KEY": "fault-injection-secret-key-0123456789abcdef",
        "FIELD_ENCRYPTION_KEYS": ",".join(settings.FIELD_ENCRYPTION_KEYS),
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": REDIS,
        "BITBUCKET_API_URL": f"http://127.0.0.1:{port}/2.0",
        "BITBUCKET_WEB_URL": f"http://127.0.0.1:{port}",
        "SCAN_STALE_SECONDS": "6",
        "SCAN_HEARTBEAT_SECONDS": "1",
        "SCAN_CHUNK_SIZE": "100",
        "Q_WORKERS": "2",
        "CONN_MAX_AGE": "0",
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run([sys.executable, "-c", "import redis; redis.Redis.from_url('%s').flushdb()" % REDIS], check=True)
    sandbox = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "bitbucket_sandbox",
            "--port",
            str(port),
            "--repos",
            str(REPOS),
            "--projects",
            "20",
            "--rate-limit",
            "1000000",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    _wait(lambda: _get_ok(f"{base}/_sandbox/credentials"), 60, "the sandbox")
    clusters: list[subprocess.Popen] = []

    def cluster() -> subprocess.Popen:
        log = open(tmp_path / f"cluster-{len(clusters)}.log", "w")
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        clusters.append(process)
        return process

    def manage(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout

    def slow_listing(pages: int = 100) -> None:
        requests.post(
            f"{base}/_sandbox/faults",
            json={"delay": 0.3, "count": pages, "path": "^/2.0/repositories/demo$"},
            timeout=5,
        )

    def slow_git(fetches: int) -> None:
        requests.post(
            f"{base}/_sandbox/faults",
            json={"delay": 0.05, "count": fetches, "path": "git-upload-pack$"},
            timeout=5,
        )

    yield {"cluster": cluster, "manage": manage, "slow_listing": slow_listing, "slow_git": slow_git, "base": base}
    for process in [*clusters, sandbox]:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    connection.close()


def _get_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _group_alive(process: subprocess.Popen) -> bool:
    process.poll()
    out = subprocess.run(["ps", "-eo", "pgid=,stat="], capture_output=True, text=True).stdout
    return any(
        line.split()[0] == str(process.pid) and not line.split()[1].startswith("Z")
        for line in out.splitlines()
        if line.strip()
    )


def _connect(name: str, scanners: list[str] | None = None):
    """An integration on the sandbox whose scans the clusters below run (not this process)."""
    tenant = TenantFactory()
    with mock.patch("integrations.services.lifecycle.enqueue"):
        return services.integration_create(
            tenant=tenant,
            parent=NamespaceFactory(tenant=tenant),
            name=name,
            workspace="demo",
            auth_method="access_token",
            credentials={"token": SANDBOX_WORKSPACE_TOKEN},
            actor=None,
            scanners=scanners or [],
            verify=False,
        )


def test_sigterm_and_kill_9_in_the_middle_of_a_scan(stack, capsys):
    integration = _connect("Crash")

    # 1. SIGTERM to the whole process group (what systemd sends) during a scan.
    stack["slow_listing"]()
    first = stack["cluster"]()
    stack["manage"]("rescan_org", str(integration.pk))
    running = _wait(
        lambda: (r := _latest(integration.pk)) and r.status == "running" and r.progress_done > 0 and r,
        120,
        "the first scan to be running",
    )
    sent = time.monotonic()
    os.killpg(first.pid, signal.SIGTERM)
    _wait(lambda: not _group_alive(first), 30, "the cluster to stop after SIGTERM")
    sigterm_seconds = time.monotonic() - sent
    running.refresh_from_db()
    assert running.status == "failed"
    assert "task cluster was stopped" in running.summary
    resume = _latest(integration.pk)
    assert resume.pk != running.pk
    assert resume.status == "queued", "the scan that resumes it waits in the queue"

    # 2. A new cluster takes the queued scan; kill -9 of its whole group mid-scan.
    stack["slow_listing"]()
    second = stack["cluster"]()
    _wait(
        lambda: (r := _latest(integration.pk)) and r.pk == resume.pk and r.status == "running" and r.progress_done > 0,
        120,
        "the resumed scan to run",
    )
    os.killpg(second.pid, signal.SIGKILL)
    killed = time.monotonic()
    second.wait(10)

    # 3. A fresh cluster; the dispatcher (run here every few seconds instead of every minute)
    #    ends the silent scan and starts the next.
    stack["cluster"]()

    def new_scan_started():
        stack["manage"]("shell", "-c", "from scanning.tasks import dispatch_due_scans_task as d; d()")
        latest = _latest(integration.pk)
        return latest.pk != resume.pk and latest.status in ("running", "succeeded", "partial") and latest

    final = _wait(new_scan_started, 120, "a new scan after kill -9")
    restart_seconds = time.monotonic() - killed
    resume.refresh_from_db()
    assert resume.status == "failed"
    assert "no sign of life" in resume.summary
    final = _wait(
        lambda: (r := ScanRun.objects.get(pk=final.pk)).status in ("succeeded", "partial") and r,
        180,
        "the last scan to finish",
    )

    # Nothing lost, nothing twice.
    projects = Project.objects.filter(integration=integration)
    assert projects.count() == REPOS
    assert projects.values("remote_uuid").distinct().count() == REPOS
    assert Reference.objects.filter(project__integration=integration, is_default=True).count() == REPOS
    assert ScanRun.objects.filter(integration=integration, status__in=["queued", "running"]).count() == 0
    with capsys.disabled():
        print(
            f"\n[fault injection] SIGTERM to stopped: {sigterm_seconds:.1f} s; kill -9 to new scan running: "
            f"{restart_seconds:.1f} s (SCAN_STALE_SECONDS=6, dispatcher every ~2 s)"
        )
    assert sigterm_seconds < 15


def _pids_of(process: subprocess.Popen) -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True).stdout
    return {
        int(pid)
        for pid, pgid in (line.split() for line in out.splitlines() if line.strip())
        if int(pgid) == process.pid
    }


def test_three_clusters_share_a_scan_in_chunks_and_a_killed_one_loses_nothing(stack, capsys):
    integration = _connect("Shared", scanners=["dependencies"])
    stack["slow_git"](REPOS)  # 50 ms a fetch: chunks take long enough to be shared and killed
    clusters = [stack["cluster"]() for _ in range(3)]
    started = time.monotonic()
    stack["manage"]("rescan_org", str(integration.pk))
    run = _wait(
        lambda: (
            (r := _latest(integration.pk)) and ScanChunk.objects.filter(scan_run=r, status="running").count() >= 2 and r
        ),
        180,
        "chunks running on several workers",
    )
    # kill -9 the cluster running a chunk, in the middle of it.
    victim_chunk = _wait(
        lambda: ScanChunk.objects.filter(scan_run=run, status="running").exclude(worker="").first(),
        60,
        "a running chunk",
    )
    victim_pid = int(victim_chunk.worker.rsplit(":", 2)[1])  # host:pid:claim
    victim = next(c for c in clusters if victim_pid in _pids_of(c))
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)

    def finished():
        stack["manage"]("shell", "-c", "from scanning.tasks import dispatch_due_scans_task as d; d()")
        r = ScanRun.objects.get(pk=run.pk)
        return r.status in ("succeeded", "partial", "failed") and r

    final = _wait(finished, 300, "the chunked scan to finish")
    seconds = time.monotonic() - started
    assert final.status == "succeeded", final.summary
    chunks = list(ScanChunk.objects.filter(scan_run=run))
    assert len(chunks) == REPOS // 100
    assert all(c.status == "done" for c in chunks)
    assert ScanChunk.objects.get(pk=victim_chunk.pk).attempts >= 2  # handed out again after the kill
    owners = {
        next((i for i, c in enumerate(clusters) if int(chunk.worker.rsplit(":", 2)[1]) in _pids_of(c)), "gone")
        for chunk in chunks
    }
    assert len(owners - {"gone"}) >= 2, f"chunks ran on clusters {owners}"
    # Everything scanned once: every default branch has its state, no package twice.
    assert ScannerState.objects.filter(reference__project__integration=integration, ok=True).count() == REPOS
    assert final.counts["dependencies scanner"]["references"] == REPOS  # what the killed worker did too
    packages = DependencyPackage.objects.filter(reference__project__integration=integration)
    assert (
        packages.count()
        == packages.values("reference", "manifest_path", "ecosystem", "name", "version").distinct().count()
    )
    assert ScanRun.objects.filter(integration=integration, status__in=["queued", "running"]).count() == 0
    with capsys.disabled():
        print(
            f"\n[three clusters] {REPOS} repositories, {len(chunks)} chunks on {len(owners - {'gone'})} surviving "
            f"clusters (+1 killed mid-chunk); scan to done: {seconds:.1f} s"
        )
