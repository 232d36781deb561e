"""Refreshing the portal's copy of the OSV database: one archive per ecosystem (a zip of
OSV-format JSON files), downloaded only when it changed (ETag / Last-Modified), read entry
by entry (never the whole archive in memory), written in batches. A download or archive
that cannot be read leaves the previous copy as it was and says why."""

from __future__ import annotations

import json
import logging
import tempfile
import zipfile
from dataclasses import dataclass, field

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from advisories.cvss import base_score, rating
from advisories.models import Advisory, AffectedPackage, OsvFeed
from advisories.ranges import intervals
from common.packages import OSV_ECOSYSTEMS, normalise_name

logger = logging.getLogger(__name__)

BATCH = 1000
DATABASE_SEVERITY = {"critical": "critical", "high": "high", "moderate": "medium", "medium": "medium", "low": "low"}


class FeedError(Exception):
    """The archive could not be fetched or read; the previous copy is kept."""


@dataclass
class Refresh:
    ecosystem: str
    changed: bool = False
    advisories: int = 0
    removed: int = 0
    git_ranges_ignored: int = 0
    names: set[tuple[str, str]] = field(default_factory=set)  # (ecosystem, name) to match again
    error: str = ""


def feed_url(ecosystem: str) -> str:
    return settings.OSV_URL.format(ecosystem=OSV_ECOSYSTEMS[ecosystem])


def osv_refresh(*, ecosystem: str, session: requests.Session | None = None) -> Refresh:
    """Bring one ecosystem's copy up to date. Returns what changed (the package names whose
    advisories changed, for matching again); a failure is recorded on the feed, not raised."""
    if ecosystem not in OSV_ECOSYSTEMS:
        raise ValueError(f"Unknown ecosystem {ecosystem!r}; known: {', '.join(sorted(OSV_ECOSYSTEMS))}.")
    url = feed_url(ecosystem)
    feed, _ = OsvFeed.objects.get_or_create(ecosystem=ecosystem, defaults={"url": url})
    result = Refresh(ecosystem)
    headers = {}
    if feed.url == url:  # a changed source is read afresh
        if feed.etag:
            headers["If-None-Match"] = feed.etag
        if feed.last_modified:
            headers["If-Modified-Since"] = feed.last_modified
    session = session or requests.Session()
    try:
        with tempfile.TemporaryFile() as archive:
            response = session.get(url, headers=headers, stream=True, timeout=settings.OSV_TIMEOUT)
            with response:
                if response.status_code == 304:
                    OsvFeed.objects.filter(pk=feed.pk).update(checked_at=timezone.now(), error="")
                    return result
                if response.status_code != 200:
                    raise FeedError(f"{url} answered {response.status_code}.")
                _download(response, archive)
            _import(feed, archive, result)
    except (FeedError, requests.RequestException, zipfile.BadZipFile) as exc:
        result.error = (
            f"OSV {ecosystem}: {exc}"
            if isinstance(exc, FeedError)
            else f"OSV {ecosystem}: {exc.__class__.__name__}: {exc}"
        )
        OsvFeed.objects.filter(pk=feed.pk).update(checked_at=timezone.now(), error=result.error[:2000])
        logger.warning("%s (the previous copy is kept)", result.error)
        return result
    OsvFeed.objects.filter(pk=feed.pk).update(
        url=url,
        etag=response.headers.get("ETag", ""),
        last_modified=response.headers.get("Last-Modified", ""),
        checked_at=timezone.now(),
        imported_at=timezone.now(),
        advisories=result.advisories,
        git_ranges_ignored=result.git_ranges_ignored,
        error="",
    )
    return result


def _download(response: requests.Response, archive) -> None:
    limit = settings.OSV_MAX_MB * 1024 * 1024
    size = 0
    for chunk in response.iter_content(chunk_size=1 << 20):
        size += len(chunk)
        if size > limit:
            raise FeedError(f"the archive is larger than OSV_MAX_MB ({settings.OSV_MAX_MB} MB).")
        archive.write(chunk)
    archive.seek(0)


def _import(feed: OsvFeed, archive, result: Refresh) -> None:
    """Every advisory of the archive, in batches; advisories no longer in it are removed."""
    ecosystem = feed.ecosystem
    known = dict(Advisory.objects.filter(ecosystem=ecosystem).values_list("osv_id", "modified"))
    seen: set[str] = set()
    batch: list[tuple[Advisory, list[AffectedPackage]]] = []
    with zipfile.ZipFile(archive) as zipped:
        bad = zipped.testzip()
        if bad is not None:
            raise FeedError(f"the archive is damaged ({bad}).")
        for info in zipped.infolist():
            if info.is_dir() or not info.filename.endswith(".json"):
                continue
            try:
                data = json.loads(zipped.read(info))
            except (ValueError, UnicodeDecodeError) as exc:
                raise FeedError(f"{info.filename} is not OSV JSON ({exc}).") from exc
            parsed = _advisory(ecosystem, data, result)
            if parsed is None:
                continue
            advisory, affected = parsed
            seen.add(advisory.osv_id)
            if advisory.osv_id in known and known[advisory.osv_id] == advisory.modified:
                continue  # unchanged
            batch.append(parsed)
            result.names |= {(a.ecosystem, a.name) for a in affected}
            if len(batch) >= BATCH:
                _write(batch)
                batch = []
    if not seen:
        raise FeedError("the archive holds no advisory.")
    _write(batch)
    gone = set(known) - seen
    if gone:
        result.names |= set(
            AffectedPackage.objects.filter(advisory__osv_id__in=gone).values_list("ecosystem", "name").distinct()
        )
        result.removed = Advisory.objects.filter(osv_id__in=gone).delete()[1].get(Advisory._meta.label, 0)
    result.advisories = len(seen)
    result.changed = bool(result.names) or bool(gone)


def _advisory(ecosystem: str, data: dict, result: Refresh) -> tuple[Advisory, list[AffectedPackage]] | None:
    osv_id = str(data.get("id") or "")[:64]
    if not osv_id:
        return None
    affected = []
    for entry in data.get("affected") or []:
        package = entry.get("package") or {}
        if package.get("ecosystem", "").split(":")[0] != OSV_ECOSYSTEMS[ecosystem]:
            continue
        spans = []
        for span in entry.get("ranges") or []:
            if span.get("type") == "GIT":
                result.git_ranges_ignored += 1
                continue
            spans += intervals(span.get("events") or [])
        fixed = sorted(
            {str(e["fixed"]) for span in entry.get("ranges") or [] for e in span.get("events") or [] if "fixed" in e}
        )
        affected.append(
            AffectedPackage(
                ecosystem=ecosystem,
                name=normalise_name(ecosystem, str(package.get("name", "")))[:255],
                ranges=spans,
                versions=[str(v) for v in entry.get("versions") or []][:5000],
                fixed=fixed,
            )
        )
    if not affected:
        return None
    scores = [base_score(str(s.get("score", ""))) for s in data.get("severity") or []]
    score = max((s for s in scores if s is not None), default=None)
    label = DATABASE_SEVERITY.get(str((data.get("database_specific") or {}).get("severity", "")).lower())
    advisory = Advisory(
        osv_id=osv_id,
        ecosystem=ecosystem,
        aliases=[str(a) for a in data.get("aliases") or []][:50],
        summary=str(data.get("summary") or data.get("details") or "")[:500],
        severity=label or rating(score),
        score=score,
        modified=parse_datetime(str(data.get("modified") or "")),
        withdrawn=parse_datetime(str(data.get("withdrawn") or "")),
        url=_link(data),
    )
    return advisory, affected


def _link(data: dict) -> str:
    for ref in data.get("references") or []:
        if ref.get("type") == "ADVISORY" and str(ref.get("url", "")).startswith("https://"):
            return str(ref["url"])[:500]
    return f"https://osv.dev/vulnerability/{data.get('id')}"


def _write(batch: list[tuple[Advisory, list[AffectedPackage]]]) -> None:
    if not batch:
        return
    with transaction.atomic():
        Advisory.objects.bulk_create(
            [a for a, _ in batch],
            update_conflicts=True,
            unique_fields=["osv_id"],
            update_fields=["ecosystem", "aliases", "summary", "severity", "score", "modified", "withdrawn", "url"],
        )
        ids = dict(Advisory.objects.filter(osv_id__in=[a.osv_id for a, _ in batch]).values_list("osv_id", "pk"))
        AffectedPackage.objects.filter(advisory_id__in=ids.values()).delete()
        rows = []
        for advisory, affected in batch:
            for entry in affected:
                entry.advisory_id = ids[advisory.osv_id]
                rows.append(entry)
        AffectedPackage.objects.bulk_create(rows, batch_size=2000)
