"""One request budget per Bitbucket account, shared by every worker of every task cluster.

Bitbucket counts requests per user over a rolling hour: 1,000 an hour on
``/2.0/repositories/*`` for an API-token user or an OAuth consumer (access tokens of large
paid workspaces up to 10,000) and 60,000 git operations. Two integrations with the same
account share that hour, and so do three task clusters working on one integration. So the
portal keeps the count itself, in one place every process sees, and asks before it spends:

* the **account** is a digest of what Bitbucket counts by (the API-token user's email, the
  OAuth consumer's key, the access token itself), never the credential;
* the count is kept in 61 slices of a minute (Redis counters when ``REDIS_URL`` is set,
  else ``RequestBucket`` rows); the last 61 slices cover the rolling hour with a minute to
  spare, so the estimate errs on the safe side;
* :meth:`RequestBudget.take` counts a request *before* it is sent and refuses one that does
  not fit with :class:`BudgetSpent` (a ``RateLimited``, saying when there is room again);
  background work (scanners) leaves ``BITBUCKET_REST_RESERVE`` requests to listings,
  webhooks and people's clicks;
* :meth:`RequestBudget.observe` learns from Bitbucket's answers: ``X-RateLimit-Limit``
  gives the real allowance (scaled access tokens), ``X-RateLimit-Remaining`` and
  ``X-RateLimit-NearLimit`` reveal requests spent elsewhere (another tool using the same
  account), and a 429 fills the hour so every worker stops asking.

Only ``/2.0/repositories/*`` (Bitbucket's ``api/repositories`` resource) and git are
counted: other endpoints have limits Bitbucket does not publish and the portal calls them a
few times per scan.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum
from django.db.models.functions import Greatest

from integrations.bitbucket.credentials import Credentials
from integrations.bitbucket.errors import RateLimited
from integrations.models import RequestAllowance, RequestBucket

REST, GIT = "repositories", "git"
RESOURCES = (REST, GIT)
SLICES = 60  # the window is cut in 60 slices; 61 are counted (the current one is partial)


class BudgetSpent(RateLimited):
    """The account's hourly allowance is spent (by the portal or, as Bitbucket told us,
    elsewhere): nothing was sent. ``retry_after``: seconds until there is room again;
    ``resource``: which allowance ("repositories" or "git")."""

    def __init__(self, message: str, *, resource: str, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.resource = resource


def account_key(credentials: Credentials, api_url: str) -> str:
    """The budget's key, as a digest: the whole credential (method, identity and secret).

    Bitbucket counts an API token's requests by its user and an OAuth consumer's by the
    consumer, but an email or a consumer key alone is typed, not proven: keyed by it, a tenant
    could spend (or watch) another tenant's budget by typing the same email. So integrations
    share a budget when they use the same credential; two tokens of one user count apart,
    and Bitbucket's ``X-RateLimit-*`` headers and 429s bring the portal's count in line."""
    material = "\0".join([credentials.method, credentials.identity.lower(), credentials.secret, api_url.rstrip("/")])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:40]


def published_limit(resource: str) -> int:
    return settings.BITBUCKET_REST_PER_HOUR if resource == REST else settings.BITBUCKET_GIT_PER_HOUR


def _slice_seconds() -> float:
    return settings.BITBUCKET_RATE_WINDOW_SECONDS / SLICES


@dataclass(frozen=True)
class Standing:
    """Where an account stands for one resource (what the integration page and API show)."""

    resource: str
    limit: int
    learned: bool  # the limit came from Bitbucket's X-RateLimit-Limit, not the published figure
    used: int
    left: int
    resets_at: datetime | None  # when the oldest counted requests leave the window (None: nothing used)

    def as_dict(self) -> dict:
        return {
            "limit": self.limit,
            "limit_source": "bitbucket" if self.learned else "published",
            "used": self.used,
            "left": self.left,
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
        }


# --- Stores: Redis counters, or database rows ----------------------------------------------------


class _DatabaseStore:
    def add(self, account: str, resource: str, slot: int, n: int) -> None:
        rows = RequestBucket.objects.filter(account=account, resource=resource, slot=slot)
        if rows.update(used=Greatest(F("used") + n, 0)) or n < 0:  # never below zero
            return
        try:
            with transaction.atomic():
                RequestBucket.objects.create(account=account, resource=resource, slot=slot, used=n)
        except IntegrityError:  # another worker created it first
            rows.update(used=F("used") + n)
            return
        # A new slice: forget the ones that left the window (a few rows per account at most).
        RequestBucket.objects.filter(account=account, resource=resource, slot__lt=slot - 2 * SLICES).delete()

    def take(self, account: str, resource: str, first: int, last: int, n: int, ceiling: int) -> bool:
        """Count ``n`` in slot ``last`` unless the window would pass ``ceiling``. Counted
        first and taken back when over, so concurrent takers see each other (under a race
        both may step back: never more than the ceiling, sometimes a request less)."""
        self.add(account, resource, last, n)
        if sum(self.counts(account, resource, first, last).values()) <= ceiling:
            return True
        self.add(account, resource, last, -n)
        return False

    def counts(self, account: str, resource: str, first: int, last: int) -> dict[int, int]:
        return dict(
            RequestBucket.objects.filter(account=account, resource=resource, slot__gte=first, slot__lte=last)
            .values_list("slot")
            .annotate(n=Sum("used"))
            .values_list("slot", "n")
        )

    def limit(self, account: str, resource: str) -> int | None:
        return (
            RequestAllowance.objects.filter(account=account, resource=resource).values_list("limit", flat=True).first()
        )

    def learn(self, account: str, resource: str, limit: int) -> None:
        RequestAllowance.objects.update_or_create(account=account, resource=resource, defaults={"limit": limit})


class _RedisStore:
    _clients: dict[str, object] = {}
    _lock = threading.Lock()

    def __init__(self, url: str) -> None:
        import redis  # noqa: PLC0415 - only where Redis is configured

        with self._lock:
            if url not in self._clients:
                self._clients[url] = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            self.redis = self._clients[url]

    @staticmethod
    def _ttl() -> int:
        """Slices are kept a little over two windows (the window, and the one before it)."""
        return math.ceil(settings.BITBUCKET_RATE_WINDOW_SECONDS * 2.1)

    @staticmethod
    def _key(account: str, resource: str, slot: int | str) -> str:
        return f"portal:budget:{account}:{resource}:{slot}"

    def add(self, account: str, resource: str, slot: int, n: int) -> None:
        key = self._key(account, resource, slot)
        pipe = self.redis.pipeline(transaction=False)
        pipe.incrby(key, n)
        pipe.expire(key, self._ttl())
        pipe.execute()

    # Sum the window and count n only if it fits, atomically (one round trip, exact).
    TAKE = """
        local used = 0
        for i = 1, #KEYS do
            local v = redis.call('GET', KEYS[i])
            if v then used = used + tonumber(v) end
        end
        if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
        redis.call('INCRBY', KEYS[#KEYS], ARGV[1])
        redis.call('EXPIRE', KEYS[#KEYS], ARGV[3])
        return 1
    """

    def take(self, account: str, resource: str, first: int, last: int, n: int, ceiling: int) -> bool:
        keys = [self._key(account, resource, s) for s in range(first, last + 1)]
        return bool(self.redis.eval(self.TAKE, len(keys), *keys, n, ceiling, self._ttl()))

    def counts(self, account: str, resource: str, first: int, last: int) -> dict[int, int]:
        slots = list(range(first, last + 1))
        values = self.redis.mget([self._key(account, resource, s) for s in slots])
        return {s: int(v) for s, v in zip(slots, values, strict=True) if v is not None and int(v) > 0}

    def limit(self, account: str, resource: str) -> int | None:
        value = self.redis.get(self._key(account, resource, "limit"))
        return int(value) if value is not None else None

    def learn(self, account: str, resource: str, limit: int) -> None:
        self.redis.set(self._key(account, resource, "limit"), limit, ex=7 * 24 * 3600)


def _store() -> _DatabaseStore | _RedisStore:
    return _RedisStore(settings.REDIS_URL) if settings.REQUEST_BUDGET_STORE == "redis" else _DatabaseStore()


# --- The budget --------------------------------------------------------------------------------


@dataclass
class Batch:
    """Requests paid for at once (:meth:`RequestBudget.batch`) and spent by worker threads
    that joined it (:meth:`RequestBudget.joined`): they never touch the store; what they
    owe, retried and saw is settled when the batch ends, in the caller's thread. Threads
    that did not join (the caller's own requests) are counted as usual."""

    prepaid: dict[str, int]
    owed: dict[str, int]
    seen: list[tuple[str, tuple]]
    slot: int = 0  # where the prepaid requests were counted: unused ones are handed back there


class RequestBudget:
    """One account's budget, as one client sees it. Thread-safe; the counts themselves live
    in the shared store, so every process and thread agrees."""

    LIMIT_MEMO_SECONDS = 60.0

    def __init__(self, account: str) -> None:
        self.account = account
        self.store = _store()
        self._lock = threading.Lock()
        self._local = threading.local()  # .batch: the Batch this thread joined, if any
        self._limits: dict[str, tuple[int, bool, float]] = {}

    # What the allowance is.
    def limit(self, resource: str) -> tuple[int, bool]:
        """(requests an hour, learned from Bitbucket?)."""
        memo = self._limits.get(resource)
        if memo is not None and memo[2] > time.monotonic():
            return memo[0], memo[1]
        learned = self.store.limit(self.account, resource)
        value = (learned, True) if learned else (published_limit(resource), False)
        self._limits[resource] = (*value, time.monotonic() + self.LIMIT_MEMO_SECONDS)
        return value

    def _window(self, now: float | None = None) -> tuple[int, int]:
        current = int((now or time.time()) // _slice_seconds())
        return current - SLICES, current

    def used(self, resource: str) -> tuple[int, dict[int, int]]:
        first, last = self._window()
        counts = self.store.counts(self.account, resource, first, last)
        return sum(counts.values()), counts

    # Spending.
    def _joined(self) -> Batch | None:
        return getattr(self._local, "batch", None)

    def take(self, resource: str, n: int = 1, *, reserve: int = 0) -> None:
        """Count ``n`` requests before they are sent, or raise :class:`BudgetSpent` (nothing
        counted) when they would leave fewer than ``reserve`` for others. A thread that
        joined a batch uses its prepaid requests (and owes any beyond them)."""
        batch = self._joined()
        if batch is not None:
            with self._lock:
                prepaid = min(batch.prepaid[resource], n)
                batch.prepaid[resource] -= prepaid
                batch.owed[resource] += n - prepaid
            return
        self._take(resource, n, reserve)

    def _take(self, resource: str, n: int, reserve: int) -> None:
        first, last = self._window()
        limit, _ = self.limit(resource)
        if self.store.take(self.account, resource, first, last, n, limit - reserve):
            return
        used, counts = self.used(resource)
        need = max(n, reserve + n, limit // 20)
        wait = self._room_in(counts, used, limit, need)
        raise BudgetSpent(
            f"The Bitbucket account's hourly allowance for {resource} is spent ({used} of {limit} "
            f"used in the last hour); there is room again in about {_minutes(wait)}.",
            retry_after=wait,
            resource=resource,
        )

    @contextmanager
    def batch(self, resource: str, n: int, *, reserve: int = 0) -> Iterator[Batch]:
        """Take ``n`` at once (one store round trip instead of ``n``; :class:`BudgetSpent`
        when they do not fit) for requests worker threads are about to send; they spend it
        inside :meth:`joined`. On leaving, settled here in the caller's thread: what was not
        used is handed back to the slice it was counted in, what was owed (retries, requests
        beyond the prepaid) is counted, and what the threads saw is learned from."""
        slot = self._window()[1]
        if n > 0:
            self._take(resource, n, reserve)
        prepaid = dict.fromkeys(RESOURCES, 0)
        prepaid[resource] = max(n, 0)
        batch = Batch(prepaid=prepaid, owed=dict.fromkeys(RESOURCES, 0), seen=[], slot=slot)
        try:
            yield batch
        finally:
            with self._lock:
                unused, owed, seen = dict(batch.prepaid), dict(batch.owed), list(batch.seen)
                batch.prepaid, batch.owed, batch.seen = dict.fromkeys(RESOURCES, 0), dict.fromkeys(RESOURCES, 0), []
            now = self._window()[1]
            for name in RESOURCES:
                if owed[name]:
                    self.store.add(self.account, name, now, owed[name])
                if unused[name]:
                    self.store.add(self.account, name, batch.slot, -unused[name])
            for name, signal in seen:
                self._learn(name, *signal)

    @contextmanager
    def joined(self, batch: Batch) -> Iterator[None]:
        """Within this, the current (worker) thread spends from ``batch``."""
        self._local.batch = batch
        try:
            yield
        finally:
            self._local.batch = None

    def spend(self, resource: str, n: int = 1) -> None:
        """Count requests that were sent without asking (a retry urllib3 made)."""
        batch = self._joined()
        if batch is not None:
            with self._lock:
                batch.owed[resource] += n
            return
        if n > 0:
            self.store.add(self.account, resource, self._window()[1], n)

    def _room_in(self, counts: dict[int, int], used: int, limit: int, need: int) -> float:
        """Seconds until ``need`` requests fit, as the oldest slices leave the window."""
        free, now = limit - used, time.time()
        if free >= need:
            return 1.0
        slot = self._window()[1]
        for slot in sorted(counts):
            free += counts[slot]
            if free >= need:
                break
        return max(1.0, (slot + SLICES + 1) * _slice_seconds() - now)

    # Learning from Bitbucket.
    def observe(self, resource: str, status: int, headers) -> None:
        """Learn from an answer: the real allowance, requests spent elsewhere, a 429."""
        signal = (
            status,
            _int(headers.get("X-RateLimit-Limit")),
            _int(headers.get("X-RateLimit-Remaining")),
            str(headers.get("X-RateLimit-NearLimit", "")).lower() == "true",
            _int(headers.get("Retry-After")),
        )
        batch = self._joined()
        if batch is not None:
            with self._lock:
                batch.seen.append((resource, signal))
            return
        self._learn(resource, *signal)

    def _learn(
        self,
        resource: str,
        status: int,
        header_limit: int | None,
        remaining: int | None,
        near: bool,
        retry_after: int | None = None,
    ) -> None:
        limit, learned = self.limit(resource)
        if header_limit and (header_limit != limit or not learned):
            self.store.learn(self.account, resource, header_limit)
            self._limits[resource] = (header_limit, True, time.monotonic() + self.LIMIT_MEMO_SECONDS)
            limit = header_limit
        floor = 0
        if status == 429:
            used, _ = self.used(resource)
            if limit > used:
                # Full until Bitbucket said to come back: counted in the slice that leaves the
                # window then (the whole hour when it did not say).
                first, last = self._window()
                slot = last if retry_after is None else first - 1 + math.ceil(retry_after / _slice_seconds())
                self.store.add(self.account, resource, min(last, max(first, slot)), limit - used)
            return
        if remaining is not None:
            floor = limit - remaining
        elif near:
            floor = math.ceil(limit * 0.8)  # Bitbucket's "near the limit" is under 20% left
        if floor:
            used, _ = self.used(resource)
            if floor > used:
                self.spend(resource, floor - used)

    def standing(self, resource: str) -> Standing:
        used, counts = self.used(resource)
        limit, learned = self.limit(resource)
        resets = (min(counts) + SLICES + 1) * _slice_seconds() if counts else None
        return Standing(
            resource=resource,
            limit=limit,
            learned=learned,
            used=used,
            left=max(0, limit - used),
            resets_at=datetime.fromtimestamp(resets, tz=UTC) if resets else None,
        )


def _int(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _minutes(seconds: float) -> str:
    return f"{math.ceil(seconds / 60)} minute(s)" if seconds >= 60 else f"{math.ceil(seconds)} second(s)"


def budget_for(credentials: Credentials, api_url: str) -> RequestBudget:
    return RequestBudget(account_key(credentials, api_url))
