from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from bitbucket_sandbox import SandboxServer, World, generate


class Command(BaseCommand):
    help = (
        "Run a local Bitbucket Cloud sandbox (REST 2.0 under /2.0, git ref advertisement, OAuth token "
        "endpoint, webhooks, and a /_sandbox/ control endpoint) on loopback. Point the portal at it with "
        "BITBUCKET_API_URL=http://127.0.0.1:PORT/2.0 and BITBUCKET_WEB_URL=http://127.0.0.1:PORT."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8111)
        parser.add_argument("--host", default="127.0.0.1", help="Loopback address to bind (127.0.0.1 or ::1).")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--workspaces", type=int, default=1)
        parser.add_argument("--projects", type=int, default=4, help="Projects per workspace.")
        parser.add_argument("--repos", type=int, default=24, help="Repositories per workspace.")
        parser.add_argument("--branches", type=int, default=3, help="Branches per repository (at most 6).")
        parser.add_argument("--data", type=Path, help="Load the world from this JSON fixture instead.")
        parser.add_argument("--dump", type=Path, help="Write the generated world to this JSON file and exit.")
        parser.add_argument("--rate-limit", type=int, default=1000, help="Requests per window to /repositories/*.")
        parser.add_argument("--rate-window", type=float, default=3600.0, help="Rate-limit window in seconds.")
        parser.add_argument("--tls", action="store_true", help="Serve HTTPS with a self-signed certificate.")
        parser.add_argument("--verbose", action="store_true", help="Log every request.")

    def handle(self, *args, **opts):
        if opts["data"]:
            try:
                world = World.from_json(opts["data"].read_text())
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise CommandError(f"Cannot load {opts['data']}: {exc}") from exc
        else:
            for name in ("workspaces", "projects", "repos"):
                if opts[name] < 1:
                    raise CommandError(f"--{name} must be at least 1.")
            world = generate(
                seed=opts["seed"],
                workspaces=opts["workspaces"],
                projects=opts["projects"],
                repos=opts["repos"],
                branches=max(1, min(6, opts["branches"])),
            )
        if opts["dump"]:
            opts["dump"].write_text(world.to_json())
            self.stdout.write(f"Wrote {opts['dump']}")
            return
        try:
            server = SandboxServer(
                world,
                host=opts["host"],
                port=opts["port"],
                tls=opts["tls"],
                verbose=opts["verbose"],
                rate_limit=opts["rate_limit"],
                rate_window=opts["rate_window"],
            )
        except (OSError, ValueError) as exc:
            raise CommandError(f"Cannot start the sandbox: {exc}") from exc
        repos = sum(len(ws.repos) for ws in world.workspaces.values())
        self.stdout.write(
            self.style.SUCCESS(
                f"Bitbucket sandbox on {server.web_url} ({len(world.workspaces)} workspace(s), {repos} repositories)"
            )
        )
        self.stdout.write(f"  BITBUCKET_API_URL={server.api_url}\n  BITBUCKET_WEB_URL={server.web_url}")
        self.stdout.write("  Workspaces: " + ", ".join(world.workspaces))
        self.stdout.write("  Credentials (sandbox-only values):")
        for c in world.credentials:
            who = f"{c.email} + " if c.email else f"key {c.key} + " if c.key else ""
            self.stdout.write(f"    {c.label}: {who}{c.secret}")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            self.stdout.write("Stopping the sandbox.")
        finally:
            server.httpd.server_close()
