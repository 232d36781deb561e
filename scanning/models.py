"""Scan runs: one scan of one integration."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper

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
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    status = models.CharField(max_length=16, choices=ScanStatus.choices, default=ScanStatus.QUEUED)
    queued_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Written while the scan runs; a running scan whose heartbeat is older than
    # SCAN_STALE_SECONDS lost its worker and is ended by the dispatcher.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    # {"namespaces": {"created": n, "updated": n, "removed": n}, "projects": {...}, ...}
    counts = models.JSONField(default=dict, blank=True)
    rest_requests = models.PositiveIntegerField(default=0)
    git_requests = models.PositiveIntegerField(default=0)
    summary = models.TextField(blank=True)
    # Repositories that could not be read completely (a scan with any is partial).
    problems = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-queued_at", "-id"]
        constraints = [
            # Two scans of one integration never run at once, even under a race.
            models.UniqueConstraint(
                fields=["integration"],
                condition=Q(status__in=["queued", "running"]),
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


class ScanChunk(models.Model):
    """A slice of a scan's scanner work (up to ``SCAN_CHUNK_SIZE`` repositories) that any task
    cluster may take, so a large workspace uses every worker. The scan stays ``running`` (one
    per integration, by its constraint) until its last chunk ends; a chunk whose worker died
    goes quiet and the dispatcher hands it out again (scanner rows are idempotent, and work
    already done at the same head is not done twice)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    scan_run = models.ForeignKey(ScanRun, on_delete=models.CASCADE, related_name="chunks")
    number = models.PositiveIntegerField()
    reference_ids = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=100, blank=True, help_text="host:pid that ran it last")
    queued_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)  # running: sign of life; queued: last handed out
    finished_at = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    deferred = models.PositiveIntegerField(default=0)  # scanner runs left: the account's hour was spent
    resume_after = models.FloatField(null=True, blank=True)
    rest_requests = models.PositiveIntegerField(default=0)
    git_requests = models.PositiveIntegerField(default=0)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["scan_run", "number"]
        constraints = [models.UniqueConstraint(fields=["scan_run", "number"], name="scanchunk_unique")]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"Chunk {self.number} of scan #{self.scan_run_id} ({self.status})"


class ScannerState(models.Model):
    """What each scanner last scanned on a reference: a head that has not moved is not
    scanned again, and a scan interrupted half-way resumes where it stopped."""

    reference = models.ForeignKey("integrations.Reference", on_delete=models.CASCADE, related_name="scanner_states")
    scanner = models.CharField(max_length=32)
    commit = models.CharField(max_length=64)
    scanned_at = models.DateTimeField(auto_now=True)
    ok = models.BooleanField(default=True)
    message = models.TextField(blank=True)
    # How the scanner read the repository: "git", "rest", or "rest:over-<N>MB" when its git
    # pack passed SCANNER_GIT_MAX_MB=N (it stays on REST until that bound is raised).
    via = models.CharField(max_length=32, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["reference", "scanner"], name="scannerstate_unique")]


class DependencyPackage(models.Model):
    """One package a manifest or lock file declares, at a reference's head."""

    reference = models.ForeignKey("integrations.Reference", on_delete=models.CASCADE, related_name="packages")
    ecosystem = models.CharField(max_length=16)
    name = models.CharField(max_length=255)
    version = models.CharField(max_length=255, blank=True, help_text="Exact, or the declared range.")
    manifest_path = models.CharField(max_length=500)
    direct = models.BooleanField(default=True)
    dev = models.BooleanField(default=False)
    requires = models.JSONField(
        default=list, blank=True, help_text='The packages it depends on ("name version"), where its lock file says so.'
    )

    class Meta:
        ordering = ["ecosystem", "name", "version"]
        indexes = [
            models.Index(fields=["ecosystem", "name"]),
            models.Index(fields=["name"]),
            # Names compared case aside (deny lists, advisories' packages): scanning/policy.spelled_as.
            models.Index(Upper("name"), name="dependencypackage_name_upper"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["reference", "manifest_path", "ecosystem", "name", "version"], name="dependencypackage_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.ecosystem}:{self.name}@{self.version}"


class PostureRule(models.TextChoices):
    FORCE_PUSH = "force_push_allowed", "Default branch allows force pushes"
    BRANCH_DELETABLE = "branch_deletable", "Default branch can be deleted"
    FEW_APPROVALS = "few_approvals", "Merges need fewer approvals than required"
    BUILDS_NOT_REQUIRED = "builds_not_required", "Merges do not require passing builds"
    PUBLIC = "public_repository", "Repository is public"
    NO_DEFAULT_REVIEWERS = "no_default_reviewers", "No default reviewers"


# Each rule as what passes (the overview and the posture page count passing repositories).
POSTURE_CHECKS = {
    PostureRule.FORCE_PUSH: "Default branch refuses force pushes",
    PostureRule.BRANCH_DELETABLE: "Default branch cannot be deleted",
    PostureRule.FEW_APPROVALS: "Merges need the required approvals",
    PostureRule.BUILDS_NOT_REQUIRED: "Merges require passing builds",
    PostureRule.PUBLIC: "Repository is private",
    PostureRule.NO_DEFAULT_REVIEWERS: "Default reviewers are set",
}


class PostureFinding(models.Model):
    """A failed posture rule on a project; resolved (not deleted) when it passes again."""

    project = models.ForeignKey("integrations.Project", on_delete=models.CASCADE, related_name="posture_findings")
    rule = models.CharField(max_length=32, choices=PostureRule.choices)
    details = models.CharField(max_length=500, blank=True)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-first_seen_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "rule"],
                condition=Q(resolved_at__isnull=True),
                name="posturefinding_one_open_per_rule",
            ),
            models.CheckConstraint(condition=Q(rule__in=PostureRule.values), name="posturefinding_rule_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.project}: {self.get_rule_display()}"


class WebhookDelivery(models.Model):
    """One signed delivery from Bitbucket, kept so retries are not processed twice."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROCESSED = "processed", "Processed"
        IGNORED = "ignored", "Ignored"
        REJECTED = "rejected", "Rejected (payload does not fit its event)"
        FAILED = "failed", "Failed"

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="webhook_deliveries")
    request_uuid = models.CharField(max_length=64, help_text="X-Request-UUID: the same on every retry.")
    event_key = models.CharField(max_length=64)
    hook_uuid = models.CharField(max_length=64, blank=True)
    attempt = models.PositiveSmallIntegerField(default=1)
    body = models.TextField(help_text="The verified raw payload (at most 256 KB).")
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.TextField(blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["integration", "request_uuid"], name="webhookdelivery_unique_request")
        ]

    def __str__(self) -> str:
        return f"{self.event_key} {self.request_uuid}"


class WebhookRegistration(models.Model):
    """A webhook the portal registered in Bitbucket (a workspace hook, or one per repository)."""

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="webhook_registrations")
    subject = models.CharField(max_length=16, choices=[("workspace", "Workspace"), ("repository", "Repository")])
    repository = models.CharField(max_length=255, blank=True, help_text="workspace/slug, for repository hooks")
    hook_uuid = models.CharField(max_length=64)
    # What Bitbucket was last given: a changed PORTAL_BASE_URL or a rotated secret updates it.
    url = models.CharField(max_length=500, blank=True)
    secret_rotated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["integration", "subject", "repository"], name="webhookregistration_unique")
        ]

    def __str__(self) -> str:
        return f"{self.subject} hook {self.hook_uuid} of {self.integration_id}"


class PullRequest(models.Model):
    """A Bitbucket pull request as the portal last heard of it (from webhooks)."""

    class State(models.TextChoices):
        OPEN = "OPEN", "Open"
        MERGED = "MERGED", "Merged"
        DECLINED = "DECLINED", "Declined"
        SUPERSEDED = "SUPERSEDED", "Superseded"

    project = models.ForeignKey("integrations.Project", on_delete=models.CASCADE, related_name="pull_requests")
    remote_id = models.PositiveIntegerField(help_text="The pull request's number in its repository.")
    title = models.CharField(max_length=500, blank=True)
    author = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    source_branch = models.CharField(max_length=255)
    source_commit = models.CharField(max_length=64, blank=True)
    # ``workspace/slug`` of the source when it is a fork (its commits live there); blank
    # when the source branch is in the pull request's own repository.
    source_repository = models.CharField(max_length=255, blank=True)
    destination_branch = models.CharField(max_length=255)
    destination_commit = models.CharField(max_length=64, blank=True)
    web_url = models.URLField(max_length=500, blank=True)
    approved_by = models.JSONField(default=list, blank=True, help_text="Display names of current approvers.")
    comment_count = models.PositiveIntegerField(default=0)
    last_event = models.CharField(max_length=64, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)
    # The pull request's own ``updated_on`` from the newest event applied: a retried, older
    # delivery that arrives late never overwrites a newer state.
    remote_updated_on = models.DateTimeField(null=True, blank=True)
    # The portal's own summary comment, edited on later runs rather than duplicated.
    summary_comment_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "remote_id"], name="pullrequest_unique_per_project"),
            models.CheckConstraint(
                condition=Q(state__in=["OPEN", "MERGED", "DECLINED", "SUPERSEDED"]), name="pullrequest_state_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project} #{self.remote_id}"


class PullRequestScan(models.Model):
    """One scan of a pull request: the dependency inventory of its source commit against
    its destination branch, and the policy's verdict."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed (policy)"
        ERROR = "error", "Error (could not finish)"

    pull_request = models.ForeignKey(PullRequest, on_delete=models.CASCADE, related_name="scans")
    trigger = models.CharField(max_length=64, help_text="The webhook event (or 'rerun').")
    source_commit = models.CharField(max_length=64)
    destination_commit = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    queued_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # [{"ecosystem", "name", "before": [...], "after": [...], "manifests": [...]}]
    added = models.JSONField(default=list, blank=True)
    removed = models.JSONField(default=list, blank=True)
    changed = models.JSONField(default=list, blank=True)
    # [{"rule": "deny_list" | "lockfile", "message": "...", "path": "..."}]
    violations = models.JSONField(default=list, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    description = models.CharField(max_length=255, blank=True, help_text="The one line sent with the build status.")
    statuses_posted = models.JSONField(default=list, blank=True, help_text="Build status keys posted.")
    rest_requests = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-queued_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "passed", "failed", "error"]),
                name="pullrequestscan_status_valid",
            )
        ]

    def __str__(self) -> str:
        return f"PR scan #{self.pk} of {self.pull_request} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.PASSED, self.Status.FAILED, self.Status.ERROR)


class QueueFlag(models.Model):
    """A shared "work is queued" flag (the webhook drain): set by whoever queues the task,
    cleared by the task as it starts, so a delivery recorded after the clear always
    queues a new drain, whatever the interleaving, across processes. The same table holds
    the task cluster's heartbeat (``touched_at``)."""

    name = models.CharField(max_length=64, primary_key=True)
    pending = models.BooleanField(default=False)
    # For a heartbeat row (the task cluster's, read by /readyz): when it last beat.
    touched_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name}: {'pending' if self.pending else 'idle'}"


class PackageVulnerability(models.Model):
    """A package row of the inventory that a known advisory affects (matched locally,
    ``scanning/vulnerabilities.py``)."""

    package = models.ForeignKey(DependencyPackage, on_delete=models.CASCADE, related_name="vulnerabilities")
    advisory = models.ForeignKey("advisories.Advisory", on_delete=models.CASCADE, related_name="matches")
    fixed_version = models.CharField(max_length=255, blank=True, help_text="The lowest release that fixes it.")

    class Meta:
        verbose_name_plural = "package vulnerabilities"
        constraints = [
            models.UniqueConstraint(fields=["package", "advisory"], name="package_vulnerability_unique"),
        ]
