"""The portal's recurring tasks, kept equal to the settings.

django-q2 stores schedules in its database, so a setting read only when they were first
created (``SCAN_DISPATCH_MINUTES``) would never change again. ``schedules_ensure`` writes
them from the settings; it runs after every ``migrate`` and whenever a task cluster
starts (``manage.py qcluster``), so a changed setting takes effect on restart.
"""

from __future__ import annotations

from django.conf import settings
from django_q.models import Schedule


def schedules_ensure() -> list[str]:
    """Create or correct the schedules; returns the names that changed."""
    wanted = {
        "dispatch-due-scans": {
            "func": "scanning.tasks.dispatch_due_scans_task",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.SCAN_DISPATCH_MINUTES,
            "repeats": -1,
        },
        "prune-sync-logs": {
            "func": "scanning.tasks.prune_sync_logs_task",
            "schedule_type": Schedule.DAILY,
            "minutes": None,
            "repeats": -1,
        },
        "refresh-advisories": {
            "func": "scanning.tasks.advisories_refresh_task",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.OSV_REFRESH_HOURS * 60,
            "repeats": -1,
        },
    }
    changed = []
    for name, fields in wanted.items():
        current = Schedule.objects.filter(name=name).values(*fields).first()
        if current != fields:
            Schedule.objects.update_or_create(name=name, defaults=fields)
            changed.append(name)
    return changed
