"""API for sync logs, with the same filters as the pages."""

from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets

from integrations.api.filters import MAX_DAYS, DaysFilter, IdFilter
from integrations.api.views import ERRORS, TenantScoped
from integrations.models import Integration
from synclogs.models import Category, Operation, SyncLog
from synclogs.selectors import sync_log_list


class SyncLogSerializer(serializers.ModelSerializer):
    is_open = serializers.BooleanField(read_only=True)

    class Meta:
        model = SyncLog
        fields = [
            "id",
            "integration",
            "project",
            "created_at",
            "level",
            "category",
            "operation",
            "message",
            "status_code",
            "method",
            "path",
            "remote_message",
            "hint",
            "resolved_at",
            "resolved_by_scan_id",
            "is_open",
        ]
        read_only_fields = fields


class SyncLogFilter(django_filters.FilterSet):
    category = django_filters.ChoiceFilter(choices=Category.choices)
    operation = django_filters.ChoiceFilter(choices=Operation.choices)
    state = django_filters.ChoiceFilter(choices=[("open", "Open"), ("resolved", "Resolved")], method="filter_state")
    days = DaysFilter(method="filter_days", label="Only the last N days (default 7; 0 = all; at most 3650)")
    integration = IdFilter(field_name="integration_id")

    class Meta:
        model = SyncLog
        fields = ["integration", "category", "operation", "level"]

    def filter_state(self, queryset, name, value):
        return queryset.filter(resolved_at__isnull=(value == "open"))

    def filter_days(self, queryset, name, value):
        return queryset  # applied in get_queryset, where the default lives


@extend_schema_view(
    list=extend_schema(
        summary="List sync log entries (last 7 days unless ?days=)", responses={200: SyncLogSerializer, **ERRORS}
    ),
    retrieve=extend_schema(summary="Get a sync log entry", responses={200: SyncLogSerializer, **ERRORS}),
)
class SyncLogViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = SyncLogSerializer
    filterset_class = SyncLogFilter

    tenant_path = "integration__tenant"
    integration_path = "integration"

    def get_queryset(self):
        days = self.request.query_params.get("days", "7")
        # Out of range or not a number: the filter answers 400; here only the window is chosen.
        days = int(days) if days.isascii() and days.isdigit() and len(days) <= 4 else 7
        days = min(days, MAX_DAYS)
        ids = self.visible_tenant_ids()
        integration_ids = None
        if ids is not None:
            integration_ids = Integration.objects.filter(tenant_id__in=ids).values("pk")
        window = None if self.action == "retrieve" else (days or None)
        return sync_log_list(integration_ids=integration_ids, days=window).order_by("-created_at", "-id")
