import multiprocessing
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from django.core.management.base import BaseCommand

from bitbucket_sandbox import SandboxServer, generate
from bitbucket_sandbox.data import SANDBOX_WORKSPACE_TOKEN

PORTAL_FIELDS = (
    "next,values.uuid,values.slug,values.name,values.full_name,values.is_private,values.language,"
    "values.updated_on,values.mainbranch.name,values.project.key,values.project.uuid,values.links.html.href"
)


def _serve(repos: int, projects: int, ready) -> None:
    world = generate(seed=1, repos=repos, projects=projects, branches=1, pullrequests=False)
    server = SandboxServer(world, rate_limit=10**9)
    server.sandbox.warm()
    ready.send(server.api_url)
    server.serve_forever()


class Command(BaseCommand):
    help = (
        "Benchmark the sandbox: list a whole N-repository workspace with pagelen=100 from a second "
        "process over loopback (keep-alive), and print pages per second and page latency; then read git ref "
        "advertisements (what a first sync reads per repository) on 8 and on 24 threads, and print reads per "
        "second: the ceiling this machine's sandbox sets on a first sync, whatever the number of task clusters."
    )

    def add_arguments(self, parser):
        parser.add_argument("--repos", type=int, default=10000)
        parser.add_argument("--projects", type=int, default=100)
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--ref-reads", type=int, default=3000, help="Git ref advertisements read per measure.")

    def handle(self, *args, repos: int, projects: int, rounds: int, ref_reads: int = 3000, **options):
        receive, send = multiprocessing.Pipe(duplex=False)
        process = multiprocessing.get_context("fork").Process(target=_serve, args=(repos, projects, send), daemon=True)
        started = time.perf_counter()
        process.start()
        api = receive.recv()
        self.stdout.write(
            f"sandbox with {repos} repositories in {projects} projects ready in "
            f"{time.perf_counter() - started:.2f}s at {api}"
        )
        slugs: list[str] = []
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {SANDBOX_WORKSPACE_TOKEN}"
        try:
            for label, params in (
                ("full objects", {"pagelen": 100}),
                ("portal fields", {"pagelen": 100, "fields": PORTAL_FIELDS}),
            ):
                for round_number in range(1, rounds + 1):
                    latencies, pages, seen = [], 0, 0
                    begin = time.perf_counter()
                    url, query = f"{api}/repositories/demo", params
                    while url:
                        t0 = time.perf_counter()
                        response = session.get(url, params=query, timeout=30)
                        response.raise_for_status()
                        body = response.json()
                        latencies.append(time.perf_counter() - t0)
                        pages, seen = pages + 1, seen + len(body["values"])
                        if round_number == 1 and label == "portal fields":
                            slugs += [v["slug"] for v in body["values"]]
                        url, query = body.get("next"), None
                    elapsed = time.perf_counter() - begin
                    latencies.sort()
                    self.stdout.write(
                        f"{label:>13} round {round_number}: {pages} pages, {seen} repositories in {elapsed:.2f}s = "
                        f"{pages / elapsed:.0f} pages/s; "
                        f"page latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
                        f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms"
                    )
            for threads in (8, 24):
                self._ref_reads(api, slugs[:ref_reads], threads)
        finally:
            process.terminate()
            process.join(5)

    def _ref_reads(self, api: str, slugs: list[str], threads: int) -> None:
        web = api.removesuffix("/2.0")
        local = threading.local()

        def read(slug: str) -> None:
            if not hasattr(local, "session"):
                local.session = requests.Session()
                local.session.auth = ("x-token-auth", SANDBOX_WORKSPACE_TOKEN)
            response = local.session.get(
                f"{web}/demo/{slug}.git/info/refs", params={"service": "git-upload-pack"}, timeout=60
            )
            response.raise_for_status()

        begin = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(read, slugs))
        elapsed = time.perf_counter() - begin
        self.stdout.write(
            f"git ref reads on {threads:>2} threads: {len(slugs)} in {elapsed:.2f}s = {len(slugs) / elapsed:.0f}/s"
        )
