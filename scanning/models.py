"""Scan runs: one scan of one integration."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from integrations.models import Integration


class Trigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual"
    API = "api", "API"
    CLI = "cli", "Command line"
    WEBHOOK = "webhook", "Webhook"


class ScanStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIAL = "partial", "Partial"
    FAILED = "failed", "Failed"


ACTIVE_SCAN_STATUSES = (ScanStatus.QUEUED, ScanStatus.RUNNING)


class ScanRun(models.Model):
    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="scan_runs")
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
    )
    status = models.CharField(max_length=16, choices=ScanStatus.choices, default=ScanStatus.QUEUED)
    queued_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    # {"namespaces": {"created": n, "updated": n, "removed": n}, "projects": {...}, ...}
    counts = models.JSONField(default=dict, blank=True)
    rest_requests = models.PositiveIntegerField(default=0)
    git_requests = models.PositiveIntegerField(default=0)
    summary = models.TextField(blank=True)

    class Meta:
        ordering = ["-queued_at", "-id"]
        constraints = [
            # Two scans of one integration never run at once, even under a race.
            models.UniqueConstraint(
                fields=["integration"], condition=Q(status__in=["queued", "running"]),
                name="scanrun_one_active_per_integration",
                violation_error_message="A scan of this integration is already queued or running.",
            ),
            models.CheckConstraint(condition=Q(trigger__in=Trigger.values), name="scanrun_trigger_valid"),
            models.CheckConstraint(condition=Q(status__in=ScanStatus.values), name="scanrun_status_valid"),
        ]

    def __str__(self) -> str:
        return f"Scan #{self.pk} of {self.integration} ({self.status})"

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None
