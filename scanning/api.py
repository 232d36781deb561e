"""API for scans: list and progress, Rescan Org, and Test configuration."""

from __future__ import annotations

import django_filters
from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from advisories.models import Severity
from integrations.api.errors import Conflict
from integrations.api.filters import IdFilter
from integrations.api.permissions import TenantRole
from integrations.api.serializers import VerificationSerializer
from integrations.api.views import ERRORS, TenantScoped, _pick_tenant, get_visible, get_visible_integration
from integrations.models import Reference, Role
from integrations.selectors import has_role
from scanning import services
from scanning.models import (
    PackageVulnerability,
    PostureFinding,
    PullRequest,
    PullRequestScan,
    ScanRun,
    ScanStatus,
    Trigger,
)
from scanning.pullrequests import PrScanNotQueued, pr_scan_request
from scanning.sbom import reference_sbom
from scanning.selectors import (
    inventory_status,
    package_search,
    pull_requests_with_latest_scan,
    purl,
    vulnerabilities_live,
    worst_first,
)


class ProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField()
    total = serializers.IntegerField()
    percent = serializers.IntegerField(allow_null=True)


class ScanRunSerializer(serializers.ModelSerializer):
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = ScanRun
        fields = [
            "id",
            "integration",
            "trigger",
            "requested_by",
            "status",
            "queued_at",
            "started_at",
            "finished_at",
            "progress",
            "counts",
            "rest_requests",
            "git_requests",
            "summary",
        ]
        read_only_fields = fields

    @staticmethod
    @extend_schema_field(ProgressSerializer)
    def get_progress(obj) -> dict:
        percent = round(100 * obj.progress_done / obj.progress_total) if obj.progress_total else None
        return {"done": obj.progress_done, "total": obj.progress_total, "percent": percent}


class ScanFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=ScanStatus.choices)
    integration = IdFilter(field_name="integration_id")

    class Meta:
        model = ScanRun
        fields = ["integration", "status", "trigger"]


@extend_schema_view(
    list=extend_schema(summary="List scans", responses={200: ScanRunSerializer, **ERRORS}),
    retrieve=extend_schema(summary="Get a scan with its progress", responses={200: ScanRunSerializer, **ERRORS}),
)
class ScanRunViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = ScanRunSerializer
    filterset_class = ScanFilter

    tenant_path = "integration__tenant"
    integration_path = "integration"

    def get_queryset(self):
        return self.visible(ScanRun.objects.select_related("integration", "requested_by")).order_by("-queued_at", "-id")


class RescanView(APIView):
    permission_classes = [TenantRole]

    @extend_schema(
        summary="Rescan Org now",
        request=None,
        responses={
            202: ScanRunSerializer,
            409: OpenApiResponse(description="A scan is already queued or running"),
            **ERRORS,
        },
    )
    def post(self, request, pk: int):
        integration = get_visible_integration(request, pk)
        if not has_role(user=request.user, tenant=integration.tenant_id, minimum=Role.MEMBER):
            self.permission_denied(request, "Viewers cannot start scans.")
        try:
            run = services.org_rescan_request(integration=integration, trigger=Trigger.API, actor=request.user)
        except services.ScanAlreadyRunning as exc:
            raise Conflict(str(exc), code="scan_running") from None
        return Response(ScanRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class VerifyView(APIView):
    permission_classes = [TenantRole]

    @extend_schema(
        summary="Test configuration: verify the stored credentials against Bitbucket",
        request=None,
        responses={
            200: VerificationSerializer,
            **ERRORS,
        },
    )
    def post(self, request, pk: int):
        integration = get_visible_integration(request, pk)
        if not has_role(user=request.user, tenant=integration.tenant_id, minimum=Role.ADMIN):
            self.permission_denied(request, "Only admins and owners can test credentials.")
        report = services.integration_test_configuration(integration=integration, actor=request.user)
        return Response(report.as_dict())


class BudgetSerializer(serializers.Serializer):
    limit = serializers.IntegerField(help_text="Requests an hour this account may make.")
    limit_source = serializers.ChoiceField(
        choices=["bitbucket", "published"], help_text="Bitbucket's X-RateLimit-Limit, or the published figure."
    )
    used = serializers.IntegerField(help_text="Spent in the rolling hour, by every worker and integration.")
    left = serializers.IntegerField()
    resets_at = serializers.DateTimeField(allow_null=True, help_text="When the oldest counted requests roll off.")


class InventoryView(APIView):
    permission_classes = [TenantRole]

    @extend_schema(
        summary="The inventory's coverage, its ETA and the Bitbucket account's request budget",
        description="The account's hourly allowance is shared by every integration using the same Bitbucket "
        "account and by every task cluster; a first inventory of a large workspace is bound by it.",
        responses={
            200: inline_serializer(
                "Inventory",
                {
                    "budget": inline_serializer(
                        "Budgets", {"repositories": BudgetSerializer(), "git": BudgetSerializer()}
                    ),
                    "scanners": serializers.DictField(
                        child=serializers.DictField(), help_text="covered, total, requests_per_repository"
                    ),
                    "requests_needed": serializers.DictField(child=serializers.IntegerField()),
                    "complete": serializers.BooleanField(),
                    "eta": serializers.DateTimeField(allow_null=True),
                    "eta_bitbucket_hours": serializers.FloatField(allow_null=True),
                },
            ),
            **ERRORS,
        },
    )
    def get(self, request, pk: int):
        integration = get_visible_integration(request, pk)
        return Response(inventory_status(integration=integration))


class PackageSerializer(serializers.Serializer):
    repository = serializers.CharField(source="reference.project.full_name")
    project = serializers.IntegerField(source="reference.project_id")
    reference = serializers.IntegerField(source="reference_id")
    ecosystem = serializers.CharField()
    name = serializers.CharField()
    version = serializers.CharField()
    direct = serializers.BooleanField()
    dev = serializers.BooleanField()
    manifest_path = serializers.CharField()


class PackageSearchView(APIView):
    permission_classes = [TenantRole]

    @extend_schema(
        summary="Which repositories use a package (below a version)?",
        parameters=[
            OpenApiParameter("tenant", str, description="Tenant slug (default: your only tenant)."),
            OpenApiParameter("name", str, description="Package name (case-insensitive)."),
            OpenApiParameter("ecosystem", str, description="npm, pypi, maven, go, cargo, gem, composer, nuget."),
            OpenApiParameter("below", str, description="Only versions lower than this one."),
        ],
        responses={200: PackageSerializer(many=True), **ERRORS},
    )
    def get(self, request):

        tenant = _pick_tenant(request, request.query_params.get("tenant"), Role.VIEWER)
        params = {k: request.query_params.get(k, "") for k in ("name", "ecosystem", "below")}
        if not params["name"] and not params["ecosystem"]:
            raise ValidationError({"name": ["Give a package name or an ecosystem."]})
        try:
            rows = package_search(tenant=tenant, **params)
        except ValueError as exc:
            raise ValidationError({"below": [str(exc)]}) from None
        rows = list(rows[:5000]) if not isinstance(rows, list) else rows[:5000]
        return Response(PackageSerializer(rows, many=True).data)


class SbomView(APIView):
    permission_classes = [TenantRole]

    @extend_schema(
        summary="CycloneDX 1.6 JSON SBOM of a reference (dependency graph, known vulnerabilities)",
        responses={200: OpenApiResponse(description="A CycloneDX document"), **ERRORS},
    )
    def get(self, request, pk: int):
        reference = get_visible(
            request, Reference.objects.select_related("project"), pk, tenant_path="project__namespace__tenant"
        )
        return Response(reference_sbom(reference=reference))


class PostureFindingSerializer(serializers.ModelSerializer):
    class Meta:
        model = PostureFinding
        fields = ["id", "project", "rule", "details", "first_seen_at", "resolved_at"]
        read_only_fields = fields


class PostureFindingFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=[("open", "Open"), ("resolved", "Resolved")], method="filter_state")

    class Meta:
        model = PostureFinding
        fields = ["project", "rule"]

    def filter_state(self, queryset, name, value):
        return queryset.filter(resolved_at__isnull=(value == "open"))


@extend_schema_view(
    list=extend_schema(summary="Posture findings", responses={200: PostureFindingSerializer, **ERRORS}),
    retrieve=extend_schema(summary="A posture finding", responses={200: PostureFindingSerializer, **ERRORS}),
)
class PostureFindingViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = PostureFindingSerializer
    filterset_class = PostureFindingFilter

    tenant_path = "project__namespace__tenant"
    integration_path = "project__integration"

    def get_queryset(self):
        return self.visible(PostureFinding.objects.select_related("project__namespace")).order_by(
            "-first_seen_at", "-id"
        )


# --- Known vulnerabilities ---------------------------------------------------------------------------


class VulnerabilitySerializer(serializers.ModelSerializer):
    advisory = serializers.CharField(source="advisory.osv_id", read_only=True)
    aliases = serializers.ListField(source="advisory.aliases", child=serializers.CharField(), read_only=True)
    severity = serializers.CharField(source="advisory.severity", read_only=True)
    score = serializers.FloatField(source="advisory.score", read_only=True, allow_null=True)
    summary = serializers.CharField(source="advisory.summary", read_only=True)
    url = serializers.CharField(source="advisory.url", read_only=True)
    package = serializers.CharField(source="package.name", read_only=True)
    ecosystem = serializers.CharField(source="package.ecosystem", read_only=True)
    version = serializers.CharField(source="package.version", read_only=True)
    purl = serializers.SerializerMethodField()
    manifest = serializers.CharField(source="package.manifest_path", read_only=True)
    project = serializers.IntegerField(source="package.reference.project_id", read_only=True)
    repository = serializers.CharField(source="package.reference.project.full_name", read_only=True)
    reference = serializers.IntegerField(source="package.reference_id", read_only=True)

    class Meta:
        model = PackageVulnerability
        fields = [
            "id",
            "advisory",
            "aliases",
            "severity",
            "score",
            "summary",
            "url",
            "package",
            "ecosystem",
            "version",
            "purl",
            "fixed_version",
            "manifest",
            "project",
            "repository",
            "reference",
        ]
        read_only_fields = fields

    @staticmethod
    def get_purl(obj) -> str:
        return purl(obj.package)


class VulnerabilityFilter(django_filters.FilterSet):
    severity = django_filters.ChoiceFilter(field_name="advisory__severity", choices=Severity.choices)
    advisory = django_filters.CharFilter(field_name="advisory__osv_id")
    package = django_filters.CharFilter(field_name="package__name", lookup_expr="iexact")
    ecosystem = django_filters.CharFilter(field_name="package__ecosystem")
    project = django_filters.NumberFilter(field_name="package__reference__project_id")
    integration = django_filters.NumberFilter(field_name="package__reference__project__integration_id")

    class Meta:
        model = PackageVulnerability
        fields = ["severity", "advisory", "package", "ecosystem", "project", "integration"]


@extend_schema_view(
    list=extend_schema(
        summary="Known vulnerabilities of default branches (OSV, matched locally), worst first",
        responses={200: VulnerabilitySerializer, **ERRORS},
    ),
    retrieve=extend_schema(summary="A known vulnerability", responses={200: VulnerabilitySerializer, **ERRORS}),
)
class VulnerabilityViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = VulnerabilitySerializer
    filterset_class = VulnerabilityFilter

    tenant_path = "package__reference__project__namespace__tenant"
    integration_path = "package__reference__project__integration"

    def get_queryset(self):
        return worst_first(
            self.visible(vulnerabilities_live().select_related("advisory", "package__reference__project__namespace"))
        )


# --- Pull requests and their scans ------------------------------------------------------------------


class PullRequestScanSerializer(serializers.ModelSerializer):
    project = serializers.IntegerField(source="pull_request.project_id", read_only=True)
    page_url = serializers.SerializerMethodField()

    class Meta:
        model = PullRequestScan
        fields = [
            "id",
            "pull_request",
            "project",
            "trigger",
            "status",
            "description",
            "source_commit",
            "destination_commit",
            "queued_at",
            "started_at",
            "finished_at",
            "added",
            "removed",
            "changed",
            "violations",
            "warnings",
            "statuses_posted",
            "rest_requests",
            "page_url",
        ]
        read_only_fields = fields

    @staticmethod
    def get_page_url(obj) -> str:
        return reverse("portal:pr_scan_detail", args=[obj.pk])


class PullRequestSerializer(serializers.ModelSerializer):
    latest_scan = serializers.SerializerMethodField()

    class Meta:
        model = PullRequest
        fields = [
            "id",
            "project",
            "remote_id",
            "title",
            "author",
            "state",
            "source_branch",
            "source_commit",
            "destination_branch",
            "destination_commit",
            "web_url",
            "approved_by",
            "comment_count",
            "last_event",
            "last_event_at",
            "latest_scan",
        ]
        read_only_fields = fields

    @staticmethod
    @extend_schema_field(
        inline_serializer(
            "LatestPullRequestScan",
            {
                "id": serializers.IntegerField(),
                "status": serializers.CharField(),
                "description": serializers.CharField(),
            },
            allow_null=True,
        )
    )
    def get_latest_scan(obj) -> dict | None:
        if not getattr(obj, "latest_scan_id", None):
            return None
        return {"id": obj.latest_scan_id, "status": obj.latest_status, "description": obj.latest_description}


class PullRequestFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=PullRequest.State.choices)
    project = IdFilter(field_name="project_id")

    class Meta:
        model = PullRequest
        fields = ["project", "state"]


class PullRequestScanFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=PullRequestScan.Status.choices)
    project = IdFilter(field_name="pull_request__project_id")
    pull_request = IdFilter(field_name="pull_request_id")

    class Meta:
        model = PullRequestScan
        fields = ["pull_request", "status"]


@extend_schema_view(
    list=extend_schema(
        summary="Pull requests seen through webhooks, with their latest scan",
        responses={200: PullRequestSerializer, **ERRORS},
    ),
    retrieve=extend_schema(summary="A pull request", responses={200: PullRequestSerializer, **ERRORS}),
)
class PullRequestViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = PullRequestSerializer
    filterset_class = PullRequestFilter

    tenant_path = "project__namespace__tenant"
    integration_path = "project__integration"

    def get_queryset(self):
        return self.visible(pull_requests_with_latest_scan().select_related("project__namespace"))


@extend_schema_view(
    list=extend_schema(summary="Pull-request scans", responses={200: PullRequestScanSerializer, **ERRORS}),
    retrieve=extend_schema(
        summary="A pull-request scan: dependency changes and policy violations",
        responses={200: PullRequestScanSerializer, **ERRORS},
    ),
)
class PullRequestScanViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = PullRequestScanSerializer
    filterset_class = PullRequestScanFilter

    tenant_path = "pull_request__project__namespace__tenant"
    integration_path = "pull_request__project__integration"

    def get_queryset(self):
        return self.visible(PullRequestScan.objects.select_related("pull_request__project__namespace")).order_by(
            "-queued_at", "-id"
        )


class PullRequestRescanView(APIView):
    permission_classes = [TenantRole]

    @extend_schema(
        summary="Scan a pull request's current source commit again",
        request=None,
        responses={
            202: PullRequestScanSerializer,
            409: OpenApiResponse(description="Not scannable: PR scans off, closed, or not a target branch"),
            **ERRORS,
        },
    )
    def post(self, request, pk: int):
        pr = get_visible(
            request,
            PullRequest.objects.select_related("project__integration", "project__namespace"),
            pk,
            tenant_path="project__namespace__tenant",
        )
        if not has_role(user=request.user, tenant=pr.project.namespace.tenant_id, minimum=Role.MEMBER):
            self.permission_denied(request, "Viewers cannot start scans.")
        try:
            scan = pr_scan_request(pull_request=pr, trigger=Trigger.API, actor=request.user, force=True)
        except PrScanNotQueued as exc:
            raise Conflict(f"Not scanned: {exc}.", code="not_scannable") from None
        return Response(PullRequestScanSerializer(scan).data, status=status.HTTP_202_ACCEPTED)
