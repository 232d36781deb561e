"""API serializers. Secrets are write-only; the encrypted fields are never read."""

from __future__ import annotations

from datetime import timedelta

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from integrations.bitbucket.credentials import APP_PASSWORD_REMOVED
from integrations.models import AuthMethod, Integration, IntegrationStatus, Namespace, Project, Reference, Tenant
from integrations.selectors import membership_role


class TenantSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = ["id", "name", "slug", "role"]

    def get_role(self, obj) -> str | None:
        return membership_role(user=self.context["request"].user, tenant=obj)


class IntegrationSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    scope = serializers.CharField(read_only=True)
    scan_interval_hours = serializers.SerializerMethodField()
    open_errors = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = Integration
        fields = [
            "id",
            "uuid",
            "name",
            "tenant",
            "scope",
            "bitbucket_url",
            "workspace",
            "project_key",
            "root_namespace",
            "auth_method",
            "credential_identity",
            "credentials_updated_at",
            "scanners",
            "pr_settings",
            "scan_interval_hours",
            "labels",
            "tracked_branches",
            "description",
            "status",
            "last_scan_at",
            "next_scan_at",
            "open_errors",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_scan_interval_hours(self, obj) -> int:
        return int(obj.scan_interval.total_seconds() // 3600)


class CredentialFields(serializers.Serializer):
    auth_method = serializers.ChoiceField(choices=AuthMethod.choices)
    email = serializers.CharField(
        required=False, allow_blank=True, write_only=True, help_text="API tokens: the Atlassian account email."
    )
    token = serializers.CharField(
        required=False,
        allow_blank=True,
        write_only=True,
        trim_whitespace=False,
        help_text="Access token or API token. Write-only.",
        style={"input_type": "password"},
    )
    key = serializers.CharField(required=False, allow_blank=True, write_only=True, help_text="OAuth consumer key.")
    secret = serializers.CharField(
        required=False,
        allow_blank=True,
        write_only=True,
        trim_whitespace=False,
        help_text="OAuth consumer secret. Write-only.",
        style={"input_type": "password"},
    )

    def to_internal_value(self, data):
        # App passwords get the guidance on what to use instead, not "not a valid choice".
        if isinstance(data, dict) and data.get("auth_method") == "app_password":
            raise serializers.ValidationError({"auth_method": [APP_PASSWORD_REMOVED]})
        return super().to_internal_value(data)

    def credentials(self) -> dict[str, str]:
        return {k: self.validated_data.get(k, "") for k in ("email", "token", "key", "secret")}


class SettingsFields(serializers.Serializer):
    scanners = serializers.ListField(child=serializers.CharField(), required=False)
    pr_settings = serializers.DictField(required=False)
    scan_interval_hours = serializers.IntegerField(min_value=1, max_value=720, required=False)
    labels = serializers.ListField(child=serializers.CharField(max_length=64), required=False)
    tracked_branches = serializers.ListField(child=serializers.CharField(max_length=200), required=False)
    description = serializers.CharField(required=False, allow_blank=True)

    def settings_values(self) -> dict:
        data = dict(self.validated_data)
        values = {
            k: data[k] for k in ("scanners", "pr_settings", "labels", "tracked_branches", "description") if k in data
        }
        if "scan_interval_hours" in data:
            values["scan_interval"] = timedelta(hours=data["scan_interval_hours"])
        return values


class IntegrationCreateSerializer(SettingsFields, CredentialFields):
    tenant = serializers.SlugField(required=False, help_text="Tenant slug; optional if you belong to one tenant.")
    parent = serializers.IntegerField(help_text="Id of the (unmanaged) namespace the workspace goes under.")
    name = serializers.CharField(max_length=200)
    bitbucket_url = serializers.CharField(required=False, allow_blank=True)
    workspace = serializers.CharField(required=False, allow_blank=True)
    project_key = serializers.CharField(required=False, allow_blank=True)


class IntegrationUpdateSerializer(SettingsFields):
    confirm = serializers.BooleanField(
        default=False,
        help_text="Save although the credentials lack a scope the new scanners or PR settings need.",
    )
    name = serializers.CharField(max_length=200, required=False)
    status = serializers.ChoiceField(choices=[IntegrationStatus.ACTIVE, IntegrationStatus.PAUSED], required=False)
    bitbucket_url = serializers.CharField(required=False, help_text="Immutable: changing it is refused.")

    def settings_values(self) -> dict:
        values = super().settings_values()
        for key in ("name", "status", "bitbucket_url"):
            if key in self.validated_data:
                values[key] = self.validated_data[key]
        return values


class VerificationCheckSerializer(serializers.Serializer):
    name = serializers.CharField()
    ok = serializers.BooleanField()
    required = serializers.BooleanField()
    message = serializers.CharField()
    missing_scopes = serializers.ListField(child=serializers.CharField())


class VerificationSerializer(serializers.Serializer):
    """A verification report: every check against Bitbucket, and the scopes missing."""

    ok = serializers.BooleanField()
    missing_scopes = serializers.ListField(child=serializers.CharField())
    checks = VerificationCheckSerializer(many=True)


class VerifiedChange:
    """``verification``: the report of the checks a change ran (None when it needed none),
    passed in the serializer's context by the view."""

    @extend_schema_field(VerificationSerializer(allow_null=True))
    def get_verification(self, obj) -> dict | None:
        report = self.context.get("verification")
        return report.as_dict() if report is not None else None


class CredentialsUpdateSerializer(CredentialFields):
    confirm = serializers.BooleanField(
        default=False,
        help_text="Save although a required check failed (after reading the report of a refused attempt).",
    )
    rescan = serializers.BooleanField(default=False, help_text="Start a scan once saved.")


class IntegrationUpdatedSerializer(VerifiedChange, IntegrationSerializer):
    verification = serializers.SerializerMethodField()

    class Meta(IntegrationSerializer.Meta):
        fields = [*IntegrationSerializer.Meta.fields, "verification"]
        read_only_fields = fields


class CredentialsResultSerializer(VerifiedChange, serializers.ModelSerializer):
    verification = serializers.SerializerMethodField()

    class Meta:
        model = Integration
        fields = ["auth_method", "credential_identity", "credentials_updated_at", "verification"]
        read_only_fields = fields


class DeletePreviewSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    preview = serializers.DictField(child=serializers.IntegerField())


class NamespaceSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    children_count = serializers.IntegerField(read_only=True, default=0)
    projects_count = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = Namespace
        fields = [
            "id",
            "tenant",
            "parent",
            "name",
            "slug",
            "description",
            "managed",
            "integration",
            "remote_key",
            "children_count",
            "projects_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class NamespaceWriteSerializer(serializers.Serializer):
    tenant = serializers.SlugField(required=False)
    parent = serializers.IntegerField(required=False, allow_null=True)
    name = serializers.CharField(max_length=255, required=False)
    slug = serializers.CharField(max_length=64, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)


class ReferenceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Reference
        fields = ["id", "project", "kind", "name", "head_commit", "is_default", "updated_at"]
        read_only_fields = fields


class DefaultReferenceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Reference
        fields = ["name", "head_commit"]


class ProjectSerializer(serializers.ModelSerializer):
    default_reference = serializers.SerializerMethodField()
    # Empty for projects added by hand: a plain string, not format "uri".
    web_url = serializers.CharField(read_only=True, help_text="The repository's page in Bitbucket, or empty.")

    class Meta:
        model = Project
        fields = [
            "id",
            "namespace",
            "integration",
            "name",
            "slug",
            "full_name",
            "is_private",
            "language",
            "main_branch",
            "web_url",
            "remote_updated_on",
            "last_scanned_at",
            "default_reference",
        ]
        read_only_fields = fields

    @extend_schema_field(DefaultReferenceSerializer(allow_null=True))
    def get_default_reference(self, obj) -> dict | None:
        defaults = getattr(obj, "default_references", None)
        if defaults is None:
            defaults = list(obj.references.filter(is_default=True))
        return DefaultReferenceSerializer(defaults[0]).data if defaults else None
