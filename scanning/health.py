"""``/healthz`` and ``/readyz`` for a load balancer or an orchestrator.

Unauthenticated, and they reveal nothing but the state of each part: ``/healthz`` says
the web process answers (liveness); ``/readyz`` says whether it can do its work: the
database answers, the task broker answers (Redis, or the database for the ORM broker),
and a task cluster ran the dispatcher recently (it runs every ``SCAN_DISPATCH_MINUTES``
and records when). 503 when any part is not ready.
"""

from __future__ import annotations

from datetime import timedelta

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_q.status import Stat

from scanning.models import QueueFlag

CLUSTER_FLAG = "cluster-heartbeat"


def live_workers() -> int:
    """Workers of the task clusters alive now, as django-q2's cluster stats say (kept in
    Redis; 0 where the broker keeps none, as the ORM broker)."""
    try:
        return sum(len(stat.workers) for stat in Stat.get_all())
    except Exception:  # noqa: BLE001 - a broker that cannot say: the caller falls back
        return 0


def cluster_heartbeat() -> None:
    """Called by the dispatcher task: a cluster is alive and running schedules."""
    QueueFlag.objects.update_or_create(name=CLUSTER_FLAG, defaults={"touched_at": timezone.now()})


@require_GET
@never_cache
def healthz(request):
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request):
    parts = {"database": _database(), "broker": _broker()}
    parts["task_cluster"] = _cluster() if parts["database"] == "ok" else "unknown"
    ready = all(state == "ok" for state in parts.values())
    return JsonResponse({"status": "ok" if ready else "not ready", **parts}, status=200 if ready else 503)


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except DatabaseError:
        return "down"


def _broker() -> str:
    if not settings.REDIS_URL:
        return _database()  # the ORM broker is the database
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1).ping()
        return "ok"
    except redis.RedisError:
        return "down"


def _cluster() -> str:
    touched = QueueFlag.objects.filter(name=CLUSTER_FLAG).values_list("touched_at", flat=True).first()
    if touched is None:
        return "never seen"
    # The dispatcher runs every SCAN_DISPATCH_MINUTES; the scheduler itself ticks every ~30 s.
    allowed = timedelta(minutes=settings.SCAN_DISPATCH_MINUTES * 3, seconds=60)
    return "ok" if timezone.now() - touched <= allowed else "stale"
