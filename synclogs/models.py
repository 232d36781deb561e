"""Classified sync log entries: why something failed and how to fix it."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from integrations.models import Integration, Project


class Category(models.TextChoices):
    INVALID_CREDENTIALS = "invalid_credentials", "Invalid or expired credentials"
    INSUFFICIENT_PERMISSIONS = "insufficient_permissions", "Insufficient permissions"
    CERTIFICATE = "certificate", "Certificate problem"
    INVALID_HOST = "invalid_host", "Invalid host or URL"
    NOT_FOUND = "not_found", "Not found in Bitbucket"
    RATE_LIMITED = "rate_limited", "Rate limited"
    UNAVAILABLE = "unavailable", "Bitbucket unavailable"
    APP_PASSWORD = "app_password", "App password no longer supported"
    UNEXPECTED = "unexpected", "Unexpected error"


class Operation(models.TextChoices):
    VERIFY = "verify", "Verify"
    SYNC = "sync", "Sync"
    WEBHOOK = "webhook", "Webhook"
    PR_SCAN = "pr_scan", "PR scan"


class Level(models.TextChoices):
    ERROR = "error", "Error"
    WARNING = "warning", "Warning"


class SyncLog(models.Model):
    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="sync_logs")
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.CASCADE, related_name="sync_logs")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.ERROR)
    category = models.CharField(max_length=32, choices=Category.choices)
    operation = models.CharField(max_length=16, choices=Operation.choices)
    message = models.TextField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    method = models.CharField(max_length=8, blank=True)
    # Path only: never a query string (which could carry a token).
    path = models.CharField(max_length=500, blank=True)
    remote_message = models.TextField(blank=True, help_text="Bitbucket's own error text.")
    hint = models.TextField(blank=True, help_text="How to fix it, for the person who must.")
    resolved_at = models.DateTimeField(null=True, blank=True)
    # The same open problem seen again (a flood of unsigned webhook deliveries) counts here
    # instead of adding a row each time.
    occurrences = models.PositiveIntegerField(default=1)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # The scan that resolved it. A plain id: synclogs does not depend on scanning.
    resolved_by_scan_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["integration", "resolved_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(category__in=Category.values), name="synclog_category_valid"),
            models.CheckConstraint(condition=Q(operation__in=Operation.values), name="synclog_operation_valid"),
            models.CheckConstraint(condition=Q(level__in=Level.values), name="synclog_level_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.get_category_display()}: {self.message[:60]}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None
