"""API for scans: list and progress, Rescan Org, and Test configuration."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from integrations.api.errors import Conflict
from integrations.api.permissions import TenantRole
from integrations.api.views import ERRORS, TenantScoped, get_visible_integration
from integrations.models import Role
from integrations.selectors import has_role
from scanning import services
from scanning.models import ScanRun, ScanStatus, Trigger


class ProgressSerializer(serializers.Serializer):
    done = serializers.IntegerField()
    total = serializers.IntegerField()
    percent = serializers.IntegerField(allow_null=True)


class ScanRunSerializer(serializers.ModelSerializer):
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = ScanRun
        fields = ["id", "integration", "trigger", "requested_by", "status", "queued_at", "started_at", "finished_at",
                  "progress", "counts", "rest_requests", "git_requests", "summary"]
        read_only_fields = fields

    @staticmethod
    @extend_schema_field(ProgressSerializer)
    def get_progress(obj) -> dict:
        percent = round(100 * obj.progress_done / obj.progress_total) if obj.progress_total else None
        return {"done": obj.progress_done, "total": obj.progress_total, "percent": percent}


class ScanFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=ScanStatus.choices)

    class Meta:
        model = ScanRun
        fields = ["integration", "status", "trigger"]


@extend_schema_view(list=extend_schema(summary="List scans", responses={200: ScanRunSerializer, **ERRORS}),
                    retrieve=extend_schema(summary="Get a scan with its progress", responses={200: ScanRunSerializer, **ERRORS}))
class ScanRunViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = ScanRunSerializer
    filterset_class = ScanFilter

    def tenant_of(self, obj) -> int:
        return obj.integration.tenant_id

    def get_queryset(self):
        qs = ScanRun.objects.select_related("integration", "requested_by")
        ids = self.visible_tenant_ids()
        return (qs if ids is None else qs.filter(integration__tenant_id__in=ids)).order_by("-queued_at", "-id")


class RescanView(APIView):
    permission_classes = [TenantRole]

    @extend_schema(summary="Rescan Org now", request=None, responses={
        202: ScanRunSerializer, 409: OpenApiResponse(description="A scan is already queued or running"), **ERRORS})
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

    @extend_schema(summary="Test configuration: verify the stored credentials against Bitbucket", request=None,
                   responses={200: inline_serializer("Verification", {
                       "ok": serializers.BooleanField(), "missing_scopes": serializers.ListField(child=serializers.CharField()),
                       "checks": serializers.ListField(child=serializers.DictField())}), **ERRORS})
    def post(self, request, pk: int):
        integration = get_visible_integration(request, pk)
        if not has_role(user=request.user, tenant=integration.tenant_id, minimum=Role.ADMIN):
            self.permission_denied(request, "Only admins and owners can test credentials.")
        report = services.integration_test_configuration(integration=integration, actor=request.user)
        return Response(report.as_dict())
