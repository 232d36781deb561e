"""The two recurring tasks: dispatch due scans, prune old sync logs."""

from django.conf import settings
from django.db import migrations


def create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="dispatch-due-scans",
        defaults={"func": "scanning.tasks.dispatch_due_scans_task", "schedule_type": "I",
                  "minutes": settings.SCAN_DISPATCH_MINUTES, "repeats": -1})
    Schedule.objects.update_or_create(
        name="prune-sync-logs",
        defaults={"func": "scanning.tasks.prune_sync_logs_task", "schedule_type": "D", "repeats": -1})


def remove(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name__in=["dispatch-due-scans", "prune-sync-logs"]).delete()


class Migration(migrations.Migration):
    dependencies = [("scanning", "0001_initial"), ("django_q", "__latest__")]
    operations = [migrations.RunPython(create, remove)]
