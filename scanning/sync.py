"""The org sync: Bitbucket projects, repositories, branch heads and members into the
inventory, as one scan run.

Budget: Bitbucket allows 1,000 REST requests an hour for an API-token user, and a
repository listing carries no head commits. So:

* discovery streams ``/repositories/{workspace}`` 100 at a time with ``fields=`` (one
  request per 100 repositories) and compares each page with what is stored;
* only repositories that are new or whose ``updated_on`` (or name, project, privacy,
  main branch) changed cost anything more: their heads are read from git's
  smart-HTTP ref advertisement, which counts against git's own 60,000/hour, with
  bounded concurrency; REST ``refs/branches`` is the fallback where git is refused;
* writes are bulk upserts of just the changed rows, so an unchanged workspace writes
  nothing;
* reconciliation (removing what disappeared) happens only after a complete listing.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from common.db import statistics_refresh
from integrations.bitbucket import client as bb
from integrations.bitbucket.budget import GIT
from integrations.models import Integration, Member, Namespace, Project, Reference
from integrations.services import integration_feature_refused, projects_purge, references_sync
from integrations.slugs import assign_slugs, slugify_name, unique_slug
from scanning.models import ScanRun, ScanStatus
from scanning.scanners import due, merge_counts, scanners_pass, scanners_paused_record, selected_scanners
from synclogs.classify import Classified
from synclogs.models import Category, Level, Operation
from synclogs.services import sync_log_record

logger = logging.getLogger(__name__)

PROJECT_COMPARED = (
    "namespace_id",
    "name",
    "slug",
    "full_name",
    "is_private",
    "language",
    "main_branch",
    "web_url",
    "remote_updated_on",
)


MEMBERS = "members"  # the key in Integration.refused_features


class ScanAbandoned(Exception):
    """The scan is no longer running in the database (the dispatcher ended it as stale):
    this worker stops at once, writing nothing more."""


class Heartbeat:
    """A running scan's sign of life: ``ScanRun.heartbeat_at``, written at most every
    ``SCAN_HEARTBEAT_SECONDS`` from the scan's own thread (before Bitbucket requests and
    after each page), so a scan whose worker died goes quiet and the dispatcher can tell.
    If the row is no longer ``running`` the dispatcher gave up on this worker: stop."""

    def __init__(self, run_id: int) -> None:
        self.run_id, self.owner, self.last = run_id, threading.get_ident(), 0.0

    def __call__(self, force: bool = False) -> None:
        now = time.monotonic()
        if threading.get_ident() != self.owner or (not force and now - self.last < settings.SCAN_HEARTBEAT_SECONDS):
            return
        self.last = now
        self.touch(timezone.now())

    def touch(self, moment) -> None:
        """Write the sign of life, or raise :class:`ScanAbandoned`."""
        if not ScanRun.objects.filter(pk=self.run_id, status=ScanStatus.RUNNING).update(heartbeat_at=moment):
            raise ScanAbandoned(f"Scan #{self.run_id} was ended while this worker ran it.")


class ListingIncomplete(Exception):
    """The listing failed part-way: nothing may be removed."""


@dataclass
class Counts:
    data: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, kind: str, action: str, n: int = 1) -> None:
        if n:
            bucket = self.data.setdefault(kind, {"created": 0, "updated": 0, "removed": 0})
            bucket[action] += n


@dataclass
class Outcome:
    complete: bool = False
    problems: int = 0  # per-repository failures that make a scan partial
    git_fallbacks: list[str] = field(default_factory=list)
    scanners_deferred: int = 0  # scanner runs left for the next scan (the account's hour is spent)
    resume_after: float | None = None  # seconds until the account's budget has room again
    chunked_refs: list[int] = field(default_factory=list)  # scanner work handed to chunks, in order


class OrgSync:
    def __init__(
        self,
        scan_run: ScanRun | None = None,
        *,
        integration: Integration | None = None,
        client: bb.BitbucketClient | None = None,
    ) -> None:
        """With a scan run for a scan; with just an integration for :meth:`refresh_repository`."""
        self.run = scan_run
        self.integration: Integration = integration or scan_run.integration
        self.client = client or bb.client_for(self.integration)
        self.heartbeat = Heartbeat(scan_run.pk) if scan_run is not None else None
        if self.heartbeat is not None:
            self.client.before_request = self.heartbeat
        self.counts = Counts()
        self.outcome = Outcome()
        self.ws = self.integration.workspace

    # --- Entry ---------------------------------------------------------------------------
    def execute(self) -> Outcome:
        namespaces = self._sync_namespaces()
        seen = self._sync_repositories(namespaces)
        self.outcome.complete = True
        created = self.counts.data.get("projects", {}).get("created", 0)
        statistics_refresh(Project, Reference, Namespace, rows_written=created * 2)
        self._remove_missing(seen)
        self._sync_members()
        self._run_scanners()
        if self.outcome.git_fallbacks:
            names = ", ".join(self.outcome.git_fallbacks[:10]) + ("..." if len(self.outcome.git_fallbacks) > 10 else "")
            sync_log_record(
                integration=self.integration,
                operation=Operation.SYNC,
                level=Level.WARNING,
                classified=Classified(
                    Category.INSUFFICIENT_PERMISSIONS,
                    f"git access was refused for {len(self.outcome.git_fallbacks)} repositories ({names}); "
                    "their head commits were read over REST instead.",
                    "Reading heads over REST spends the hourly REST budget (one request per repository). Give the "
                    "credential repository read access over git (access tokens need the repository scope; API "
                    "tokens read:repository:bitbucket) so scans use git's separate limit.",
                ),
            )
        return self.outcome

    def refresh_repository(self, full_name: str) -> str | None:
        """Bring one repository up to date (a ``repo:*`` webhook): one REST read and, if it
        changed, one git ref read, through the same comparison and writes as a full scan.
        Returns what happened, or None when only a full scan can tell (the repository left
        this integration's scope, or sits in a Bitbucket project the portal has not seen)."""
        try:
            repo = self.client.repository(full_name)
        except bb.NotFound:
            return None  # gone, renamed again or moved away: a complete listing decides
        workspace = (repo.get("full_name") or full_name).partition("/")[0]
        project_key = (repo.get("project") or {}).get("key")
        if workspace != self.ws or (self.integration.project_key and project_key != self.integration.project_key):
            return None
        namespace_by_key = dict(
            Namespace.objects.filter(integration=self.integration, managed=True)
            .exclude(remote_key="")
            .values_list("remote_key", "pk")
        )
        if project_key and project_key not in namespace_by_key:
            return None
        existing = self._existing_projects(remote_uuid=repo["uuid"])
        namespace_id = namespace_by_key.get(project_key, self.integration.root_namespace_id)
        taken = {
            namespace_id: set(
                Project.objects.filter(namespace_id=namespace_id)
                .exclude(remote_uuid=repo["uuid"])
                .values_list("slug", flat=True)
            )
        }
        row = self._desired(repo, namespace_by_key, existing.get(repo["uuid"]), taken)
        if row is None:
            return f"{full_name} unchanged"
        self._apply([(repo, row)], existing)
        return f"{'updated' if existing else 'added'} {row['full_name']}"

    # --- Projects -> managed child namespaces ----------------------------------------------
    def _remote_projects(self) -> list[dict]:
        if self.integration.project_key:
            return [self.client.project(self.ws, self.integration.project_key)]
        return list(self.client.projects(self.ws))

    def _sync_namespaces(self) -> dict[str, int]:
        """Managed child namespaces for each Bitbucket project; returns {project key: namespace id}."""
        root = self.integration.root_namespace
        remote = self._remote_projects()
        existing = {
            ns.remote_uuid: ns
            for ns in Namespace.objects.filter(integration=self.integration, parent=root).exclude(remote_uuid="")
        }
        taken = set(Namespace.objects.filter(parent=root).values_list("slug", flat=True))
        new = [p for p in remote if p["uuid"] not in existing]
        slugs = assign_slugs([(p["uuid"], p.get("name") or p["key"]) for p in new], taken=taken)
        to_create = [
            Namespace(
                tenant_id=root.tenant_id,
                parent=root,
                name=p.get("name") or p["key"],
                slug=slugs[p["uuid"]],
                managed=True,
                integration=self.integration,
                remote_uuid=p["uuid"],
                remote_key=p["key"],
                description=p.get("description") or "",
            )
            for p in new
        ]
        to_update = []
        for p in remote:
            ns = existing.get(p["uuid"])
            if ns is None:
                continue
            name, description = p.get("name") or p["key"], p.get("description") or ""
            if (ns.name, ns.remote_key, ns.description) != (name, p["key"], description):
                ns.name, ns.remote_key, ns.description = name, p["key"], description
                to_update.append(ns)
        with transaction.atomic():
            Namespace.objects.bulk_create(to_create)
            if to_update:
                Namespace.objects.bulk_update(to_update, ["name", "remote_key", "description", "updated_at"])
        self.counts.add("namespaces", "created", len(to_create))
        self.counts.add("namespaces", "updated", len(to_update))
        self._remote_project_uuids = {p["uuid"] for p in remote}
        by_uuid = {
            ns.remote_uuid: ns.pk
            for ns in Namespace.objects.filter(integration=self.integration, parent=root).exclude(remote_uuid="")
        }
        return {p["key"]: by_uuid[p["uuid"]] for p in remote}

    # --- Repositories -> projects and references -----------------------------------------------
    def _sync_repositories(self, namespace_by_key: dict[str, int]) -> set[str]:
        # Slugs taken in each namespace, kept current as repositories are placed.
        taken: dict[int, set[str]] = {}
        for ns_id, slug in Project.objects.filter(
            namespace_id__in=set(namespace_by_key.values()) | {self.integration.root_namespace_id}
        ).values_list("namespace_id", "slug"):
            taken.setdefault(ns_id, set()).add(slug)
        seen: set[str] = set()
        done = 0
        try:
            for page in self.client.repository_pages(self.ws, self.integration.project_key):
                values = page.get("values", [])
                if done == 0 and page.get("size") is not None:
                    ScanRun.objects.filter(pk=self.run.pk).update(progress_total=page["size"])
                changed = []
                # What is stored for this page's repositories only (one query a page): memory
                # stays flat however large the workspace.
                existing = self._existing_projects(remote_uuid__in=[repo["uuid"] for repo in values])
                for repo in values:
                    seen.add(repo["uuid"])
                    row = self._desired(repo, namespace_by_key, existing.get(repo["uuid"]), taken)
                    if row is not None:
                        changed.append((repo, row))
                if changed:
                    self._apply(changed, existing)
                done += len(values)
                self.heartbeat()
                ScanRun.objects.filter(pk=self.run.pk).update(
                    progress_done=done, rest_requests=self.client.stats.rest, git_requests=self.client.stats.git
                )
        except bb.BitbucketError as exc:
            raise ListingIncomplete(str(exc)) from exc
        return seen

    def _existing_projects(self, **filters) -> dict[str, tuple]:
        """{remote uuid: (pk, *PROJECT_COMPARED)}: what ``_desired`` compares against."""
        return {
            row[0]: row[1:]
            for row in Project.objects.filter(integration=self.integration, **filters).values_list(
                "remote_uuid", "pk", *PROJECT_COMPARED
            )
        }

    def _desired(
        self, repo: dict, namespace_by_key: dict[str, int], old: tuple | None, taken: dict[int, set[str]]
    ) -> dict | None:
        """The row this repository should be, or None when nothing changed."""
        project_key = (repo.get("project") or {}).get("key")
        namespace_id = namespace_by_key.get(project_key, self.integration.root_namespace_id)
        updated_on = parse_datetime(repo["updated_on"]) if repo.get("updated_on") else None
        fields = {
            "namespace_id": namespace_id,
            "name": repo.get("name") or repo["slug"],
            "full_name": repo.get("full_name") or f"{self.ws}/{repo['slug']}",
            "is_private": bool(repo.get("is_private")),
            "language": repo.get("language") or "",
            "main_branch": (repo.get("mainbranch") or {}).get("name") or "",
            "web_url": ((repo.get("links") or {}).get("html") or {}).get("href", ""),
            "remote_updated_on": updated_on,
        }
        if old is not None:
            old_fields = dict(zip(PROJECT_COMPARED, old[1:], strict=True))
            base = slugify_name(repo["slug"])
            slug = old_fields["slug"]
            if old_fields["namespace_id"] != namespace_id or not (slug == base or slug.startswith(base + "-")):
                taken.get(old_fields["namespace_id"], set()).discard(slug)
                slug = unique_slug(repo["slug"], taken.setdefault(namespace_id, set()))
                taken[namespace_id].add(slug)
            fields["slug"] = slug
            if all(old_fields[k] == fields[k] for k in PROJECT_COMPARED):
                return None
        else:
            fields["slug"] = unique_slug(repo["slug"], taken.setdefault(namespace_id, set()))
            taken[namespace_id].add(fields["slug"])
        return fields

    def _apply(self, changed: list[tuple[dict, dict]], existing: dict[str, tuple]) -> None:
        heads = self._read_heads([repo["slug"] for repo, _ in changed])
        now = timezone.now()
        objs = [
            Project(integration=self.integration, remote_uuid=repo["uuid"], last_scanned_at=now, **row)
            for repo, row in changed
        ]
        with transaction.atomic():
            Project.objects.bulk_create(
                objs,
                update_conflicts=True,
                unique_fields=["integration", "remote_uuid"],
                update_fields=[*[f for f in PROJECT_COMPARED], "last_scanned_at", "updated_at"],
            )
            ids = dict(
                Project.objects.filter(
                    integration=self.integration, remote_uuid__in=[repo["uuid"] for repo, _ in changed]
                ).values_list("remote_uuid", "pk")
            )
            created = sum(1 for repo, _ in changed if repo["uuid"] not in existing)
            self.counts.add("projects", "created", created)
            self.counts.add("projects", "updated", len(changed) - created)
            self._write_references(
                [(ids[repo["uuid"]], row["main_branch"], heads.get(repo["slug"])) for repo, row in changed]
            )
        for repo, row in changed:
            existing[repo["uuid"]] = (ids[repo["uuid"]], *[row[k] for k in PROJECT_COMPARED])

    def _read_heads(self, slugs: list[str]) -> dict[str, dict[str, str] | None]:
        """Branch heads per repository: git ref advertisement, REST where git is refused.
        None for a repository whose heads could not be read (its references stay as they are)."""

        def read(slug: str) -> tuple[str, dict[str, str] | None, BaseException | None, bool]:
            try:
                with self.client.budget.joined(batch):  # paid for below, at once
                    refs = self.client.git_refs(self.ws, slug)
                return (
                    slug,
                    {n[len("refs/heads/") :]: h for n, h in refs.items() if n.startswith("refs/heads/")},
                    None,
                    False,
                )
            except (bb.Unauthorized, bb.Forbidden):
                return slug, None, None, True  # refused: read over REST below
            except bb.BitbucketError as exc:
                return slug, None, exc, False

        def read_rest(slug: str) -> tuple[str, dict[str, str] | None, BaseException | None, bool]:
            try:
                return (
                    slug,
                    {b["name"]: b["target"]["hash"] for b in self.client.branches(f"{self.ws}/{slug}")},
                    None,
                    True,
                )
            except bb.BitbucketError as exc:
                return slug, None, exc, True

        # The git reads run on threads, paid for at once from the account's git budget; REST
        # fallbacks (git refused) follow here, one by one, from the scan's own REST budget.
        with self.client.budget.batch(GIT, len(slugs)) as batch:
            with ThreadPoolExecutor(max_workers=max(1, settings.BITBUCKET_GIT_CONCURRENCY)) as pool:
                read_by_git = list(pool.map(read, slugs))
        results: dict[str, dict[str, str] | None] = {}
        for slug, heads, error, refused in read_by_git:
            slug, heads, error, fell_back = read_rest(slug) if refused else (slug, heads, error, False)
            results[slug] = heads
            if fell_back:
                self.outcome.git_fallbacks.append(slug)
            if error is not None:
                self.outcome.problems += 1
                project = Project.objects.filter(integration=self.integration, full_name=f"{self.ws}/{slug}").first()
                sync_log_record(
                    integration=self.integration,
                    operation=Operation.SYNC,
                    exc=error,
                    project=project,
                    level=Level.WARNING,
                    message=f"Could not read the branches of {self.ws}/{slug}: {error}",
                )
        return results

    def _write_references(self, rows: list[tuple[int, str, dict[str, str] | None]]) -> None:
        """Default branch (and tracked branches) for each changed project: the references service."""
        for action, n in references_sync(rows=rows, tracked=self.integration.tracked_branches).items():
            self.counts.add("references", action, n)

    # --- Reconciliation (complete listings only) --------------------------------------------
    def _remove_missing(self, seen: set[str]) -> None:
        # Compared in Python: a list of every seen UUID would make a huge IN clause.
        ids = [
            pk
            for pk, uuid in Project.objects.filter(integration=self.integration, namespace__managed=True)
            .values_list("pk", "remote_uuid")
            .iterator(chunk_size=2000)  # streamed: memory stays flat
            if uuid not in seen
        ]
        self.counts.add("projects", "removed", projects_purge(project_ids=ids))
        # Namespaces of projects that disappeared: removed when empty.
        root = self.integration.root_namespace
        stale_ns = (
            Namespace.objects.filter(integration=self.integration, parent=root)
            .exclude(remote_uuid="")
            .exclude(remote_uuid__in=self._remote_project_uuids)
        )
        for ns in stale_ns:
            if ns.children.exists() or ns.projects.exists():
                sync_log_record(
                    integration=self.integration,
                    operation=Operation.SYNC,
                    level=Level.WARNING,
                    classified=Classified(
                        Category.UNEXPECTED,
                        f"Bitbucket project {ns.remote_key} is gone, but namespace '{ns.name}' still "
                        "holds namespaces or projects added by hand, so it was kept.",
                        "Move or delete what was added by hand; the next scan removes the namespace.",
                    ),
                )
                continue
            ns.delete()
            self.counts.add("namespaces", "removed")

    # --- Scanners -------------------------------------------------------------------------------
    def _run_scanners(self) -> None:
        """Scanner work that is due, in order of what matters. Up to ``SCAN_CHUNK_SIZE``
        repositories run here; more are cut into chunks any task cluster may take
        (``scanning/chunks.py``), and the scan ends when the last chunk does."""
        selected = selected_scanners(self.integration)
        if not selected:
            return
        refs = list(
            Reference.objects.filter(project__integration=self.integration, is_default=True)
            .exclude(head_commit="")
            .select_related("project")
            .order_by("project__full_name")
        )
        pending = due(refs, selected)
        ordered = list(dict.fromkeys(ref.pk for ref, _ in pending))
        if self.run is not None and len(ordered) > settings.SCAN_CHUNK_SIZE:
            self.outcome.chunked_refs = ordered
            return
        done = scanners_pass(integration=self.integration, pending=pending, client=self.client)
        merge_counts(self.counts.data, done.counts)
        if done.paused is not None:
            self.outcome.scanners_deferred = done.deferred
            self.outcome.resume_after = scanners_paused_record(
                integration=self.integration, remaining=done.deferred, reason=done.paused
            )

    # --- Members ------------------------------------------------------------------------------
    def _sync_members(self) -> None:
        """Workspace members. A credential that cannot read them (a project or repository
        access token never can) is asked once: the refusal is remembered and the next scans
        skip the call until the credentials change."""
        if MEMBERS in self.integration.refused_features:
            return
        try:
            remote = {
                m["user"]["uuid"]: m["user"] for m in self.client.members(self.ws) if m.get("user", {}).get("uuid")
            }
        except (bb.Forbidden, bb.Unauthorized, bb.NotFound) as exc:
            integration_feature_refused(integration=self.integration, feature=MEMBERS, reason=str(exc))
            sync_log_record(
                integration=self.integration,
                operation=Operation.SYNC,
                exc=exc,
                level=Level.WARNING,
                message=f"Workspace members were not read: {exc} The rest of the scan went on; members "
                "are not asked for again until the credentials change.",
            )
            return
        current = {m.uuid: m for m in Member.objects.filter(integration=self.integration)}
        changed = [
            Member(
                integration=self.integration,
                uuid=u,
                account_id=d.get("account_id") or "",
                display_name=d.get("display_name") or "",
                nickname=d.get("nickname") or "",
            )
            for u, d in remote.items()
            if u not in current
            or (current[u].account_id, current[u].display_name, current[u].nickname)
            != (d.get("account_id") or "", d.get("display_name") or "", d.get("nickname") or "")
        ]
        gone = [u for u in current if u not in remote]
        with transaction.atomic():
            if changed:
                Member.objects.bulk_create(
                    changed,
                    update_conflicts=True,
                    unique_fields=["integration", "uuid"],
                    update_fields=["account_id", "display_name", "nickname", "updated_at"],
                )
            if gone:
                Member.objects.filter(integration=self.integration, uuid__in=gone).delete()
        created = sum(1 for m in changed if m.uuid not in current)
        self.counts.add("members", "created", created)
        self.counts.add("members", "updated", len(changed) - created)
        self.counts.add("members", "removed", len(gone))
