"""Tenants, namespaces, Bitbucket Cloud integrations, projects and references.

Invariants live in the database as constraints wherever they can; the services in
``integrations/services.py`` are the only writers and add the rules a constraint
cannot express (managed namespaces are read-only, the Bitbucket URL is immutable).
"""

from __future__ import annotations

import fnmatch
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from integrations.crypto import EncryptedTextField
from integrations.slugs import SLUG_PATTERN

HEX_COMMIT_PATTERN = r"^([0-9a-f]{7,64})?$"


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Tenant(models.Model):
    name = models.CharField(max_length=200)
    slug = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(slug__regex=SLUG_PATTERN), name="tenant_slug_format"),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant__name", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class Namespace(models.Model):
    """A node of a tenant's tree. ``managed`` nodes belong to an integration."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="namespaces")
    # PROTECT: a subtree is only ever removed bottom-up by the purge service.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    name = models.CharField(max_length=255)
    slug = models.CharField(max_length=64)
    description = models.TextField(blank=True)
    managed = models.BooleanField(default=False)
    integration = models.ForeignKey(
        "Integration",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="managed_namespaces",
        help_text="The integration that manages this namespace (managed namespaces only).",
    )
    # For a namespace made from a Bitbucket project: its UUID and key.
    remote_uuid = models.CharField(max_length=64, blank=True)
    remote_key = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant__name", "slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "parent", "slug"],
                condition=Q(parent__isnull=False),
                name="namespace_unique_slug_among_siblings",
                violation_error_message="A namespace with this slug already exists here.",
            ),
            models.UniqueConstraint(
                fields=["tenant", "slug"],
                condition=Q(parent__isnull=True),
                name="namespace_unique_slug_at_top",
                violation_error_message="A top-level namespace with this slug already exists.",
            ),
            models.UniqueConstraint(
                fields=["integration", "remote_uuid"],
                condition=~Q(remote_uuid=""),
                name="namespace_unique_remote_per_integration",
            ),
            models.CheckConstraint(condition=Q(slug__regex=SLUG_PATTERN), name="namespace_slug_format"),
            models.CheckConstraint(
                condition=Q(managed=True, integration__isnull=False) | Q(managed=False, integration__isnull=True),
                name="namespace_managed_iff_integration",
            ),
            models.CheckConstraint(condition=~Q(parent=F("id")), name="namespace_not_own_parent"),
        ]
        indexes = [models.Index(fields=["tenant", "parent"])]

    def __str__(self) -> str:
        return self.name


class AuthMethod(models.TextChoices):
    ACCESS_TOKEN = "access_token", "Access token (workspace, project or repository)"
    API_TOKEN = "api_token", "Atlassian account email + API token"
    OAUTH = "oauth", "OAuth consumer (key + secret)"


class IntegrationStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PAUSED = "paused", "Paused"
    ERROR = "error", "Error"
    DELETING = "deleting", "Deleting"


def branch_matches(name: str, patterns) -> bool:
    """Whether a branch matches any glob pattern as people write them (``release/*``)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns or ())


def default_pr_settings() -> dict:
    return {
        "enabled": False,
        "target_branches": ["*"],
        "post_build_status": True,
        "post_summary_comment": False,
        "status_per_scanner": False,
        "deny_packages": [],
        "require_lockfile_update": False,
        # Known vulnerabilities a change brings in: "off", "warn" (in the summary) or "fail".
        "vulnerabilities": "warn",
        "vulnerability_min_severity": "high",
    }


class Integration(models.Model):
    """One connection to Bitbucket Cloud: a whole workspace, or one project by key."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="integrations")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # Fixed at creation; changing where an integration points means a new one.
    bitbucket_url = models.URLField(max_length=500, editable=False)
    workspace = models.CharField(max_length=64, editable=False)
    project_key = models.CharField(max_length=64, blank=True, editable=False)
    root_namespace = models.OneToOneField(
        Namespace,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="root_of",
    )
    auth_method = models.CharField(max_length=16, choices=AuthMethod.choices)
    # The non-secret half of a credential (account email, OAuth consumer key).
    credential_identity = models.CharField(max_length=254, blank=True)
    credentials = EncryptedTextField(help_text="Encrypted JSON; never shown.")
    credentials_updated_at = models.DateTimeField(null=True, blank=True)
    webhook_secret = EncryptedTextField(help_text="Encrypted; shown only to owners and admins.")
    # After a rotation Bitbucket may still sign with the previous secret until every hook
    # is updated: it is accepted until ``webhook_secret_previous_until`` (a short grace).
    webhook_secret_previous = EncryptedTextField(help_text="Encrypted; accepted until the grace period ends.")
    webhook_secret_previous_until = models.DateTimeField(null=True, blank=True)
    webhook_secret_rotated_at = models.DateTimeField(null=True, blank=True)
    # What Bitbucket refused these credentials ({"members": why, "webhooks": why}): not
    # asked again every scan; cleared when the credentials or the settings change.
    refused_features = models.JSONField(default=dict, blank=True)
    scanners = models.JSONField(default=list, blank=True)
    pr_settings = models.JSONField(default=default_pr_settings, blank=True)
    scan_interval = models.DurationField(default=timedelta(hours=24))
    labels = models.JSONField(default=list, blank=True)
    # Branches tracked besides each repository's main branch (glob patterns).
    tracked_branches = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=IntegrationStatus.choices, default=IntegrationStatus.ACTIVE)
    last_scan_at = models.DateTimeField(null=True, blank=True)
    next_scan_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                condition=~Q(status="deleting"),
                name="integration_unique_name_per_tenant",
                violation_error_message="An integration with this name already exists.",
            ),
            models.UniqueConstraint(
                fields=["tenant", "workspace", "project_key"],
                condition=~Q(status="deleting"),
                name="integration_unique_scope_per_tenant",
                violation_error_message="This workspace or project is already connected.",
            ),
            models.CheckConstraint(condition=~Q(workspace=""), name="integration_workspace_set"),
            models.CheckConstraint(
                condition=Q(auth_method__in=AuthMethod.values), name="integration_auth_method_valid"
            ),
            models.CheckConstraint(condition=Q(status__in=IntegrationStatus.values), name="integration_status_valid"),
            models.CheckConstraint(
                condition=Q(scan_interval__gte=timedelta(hours=1)) & Q(scan_interval__lte=timedelta(days=30)),
                name="integration_scan_interval_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def scope(self) -> str:
        return "project" if self.project_key else "workspace"

    @property
    def scope_label(self) -> str:
        return f"{self.workspace} / {self.project_key}" if self.project_key else self.workspace

    @property
    def pr_config(self) -> dict:
        """Pull-request settings, with the defaults of keys saved before they existed."""
        return {**default_pr_settings(), **(self.pr_settings or {})}

    def tracks_branch(self, name: str, *, main_branch: str) -> bool:
        """Scans keep a reference for each repository's main branch and tracked patterns."""
        return name == main_branch or branch_matches(name, self.tracked_branches)


class Project(models.Model):
    """One Bitbucket repository, placed under a namespace."""

    namespace = models.ForeignKey(Namespace, on_delete=models.PROTECT, related_name="projects")
    # SET_NULL: a repository added by hand to an unmanaged namespace outlives the
    # integration whose credentials it borrowed.
    integration = models.ForeignKey(
        Integration,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="projects",
    )
    remote_uuid = models.CharField(max_length=64, blank=True, help_text="Bitbucket repository UUID.")
    name = models.CharField(max_length=255)
    slug = models.CharField(max_length=64)
    full_name = models.CharField(max_length=255, blank=True, help_text="workspace/repository")
    is_private = models.BooleanField(default=True)
    language = models.CharField(max_length=64, blank=True)
    main_branch = models.CharField(max_length=255, blank=True)
    web_url = models.URLField(max_length=500, blank=True)
    remote_updated_on = models.DateTimeField(null=True, blank=True)
    last_scanned_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["full_name", "slug"]
        constraints = [
            # Unconditional, so the sync can upsert on it (ON CONFLICT needs a plain unique index).
            models.UniqueConstraint(
                fields=["integration", "remote_uuid"], name="project_unique_remote_per_integration"
            ),
            models.UniqueConstraint(
                fields=["namespace", "slug"],
                name="project_unique_slug_in_namespace",
                violation_error_message="A project with this slug already exists in the namespace.",
            ),
            models.CheckConstraint(condition=Q(slug__regex=SLUG_PATTERN), name="project_slug_format"),
        ]

    def __str__(self) -> str:
        return self.full_name or self.name


class ReferenceKind(models.TextChoices):
    BRANCH = "branch", "Branch"
    TAG = "tag", "Tag"


class Reference(models.Model):
    """A tracked branch (or tag) of a project with its head commit."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="references")
    kind = models.CharField(max_length=8, choices=ReferenceKind.choices, default=ReferenceKind.BRANCH)
    name = models.CharField(max_length=255)
    head_commit = models.CharField(max_length=64, blank=True)
    is_default = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project_id", "-is_default", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "kind", "name"], name="reference_unique_per_project"),
            models.UniqueConstraint(
                fields=["project"],
                condition=Q(is_default=True),
                name="reference_one_default_per_project",
            ),
            models.CheckConstraint(condition=Q(kind__in=ReferenceKind.values), name="reference_kind_valid"),
            models.CheckConstraint(
                condition=Q(is_default=False) | Q(kind=ReferenceKind.BRANCH),
                name="reference_default_is_branch",
            ),
            models.CheckConstraint(condition=Q(head_commit__regex=HEX_COMMIT_PATTERN), name="reference_commit_hex"),
        ]

    def __str__(self) -> str:
        return f"{self.project}@{self.name}"


class Member(models.Model):
    """A workspace member as Bitbucket lists it: the tenant's people inventory."""

    integration = models.ForeignKey(Integration, on_delete=models.CASCADE, related_name="members")
    uuid = models.CharField(max_length=64)
    account_id = models.CharField(max_length=128, blank=True)
    display_name = models.CharField(max_length=255, blank=True)
    nickname = models.CharField(max_length=255, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["display_name"]
        constraints = [models.UniqueConstraint(fields=["integration", "uuid"], name="member_unique_per_integration")]

    def __str__(self) -> str:
        return self.display_name or self.nickname or self.uuid


class AuditEvent(models.Model):
    """Who changed what, when. ``details`` never holds a secret (see services.audit)."""

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    actor_repr = models.CharField(max_length=150, help_text="The actor's username when it happened, or 'system'.")
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    target_repr = models.CharField(max_length=255)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor_repr} {self.action} {self.target_repr}"


class RequestBucket(models.Model):
    """Requests one Bitbucket account spent in one slice (1/60) of the rolling hour, for one
    rate-limited resource: the shared request budget's database store (Redis holds the same
    counters when ``REDIS_URL`` is set). Written only by ``integrations.bitbucket.budget``."""

    account = models.CharField(max_length=64)  # a digest of the credential's identity, never the credential
    resource = models.CharField(max_length=16)  # "repositories" (REST) or "git"
    slot = models.BigIntegerField()  # seconds since the epoch // slice length
    used = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "resource", "slot"], name="requestbucket_unique")]

    def __str__(self) -> str:
        return f"{self.account[:8]} {self.resource} @{self.slot}: {self.used}"


class RequestAllowance(models.Model):
    """What Bitbucket said an account's hourly allowance is (``X-RateLimit-Limit``): access
    tokens of large paid workspaces get up to 10,000. Written only by the budget."""

    account = models.CharField(max_length=64)
    resource = models.CharField(max_length=16)
    limit = models.PositiveIntegerField()
    learned_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "resource"], name="requestallowance_unique")]

    def __str__(self) -> str:
        return f"{self.account[:8]} {self.resource}: {self.limit}/h"
