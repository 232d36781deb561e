from datetime import timedelta

from django.contrib import admin
from django.utils import timezone

from integrations.admin import ReadOnlyAdmin
from synclogs.models import SyncLog


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("open", "Open"), ("resolved", "Resolved")]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


class PeriodFilter(admin.SimpleListFilter):
    """Time window; the last 7 days unless another is chosen."""

    title = "time"
    parameter_name = "period"
    default = "7"

    def lookups(self, request, model_admin):
        return [
            ("1", "Last 24 hours"),
            ("7", "Last 7 days"),
            ("30", "Last 30 days"),
            ("90", "Last 90 days"),
            ("all", "All time"),
        ]

    def value(self):
        return super().value() or self.default

    def choices(self, changelist):
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        value = self.value()
        if value == "all" or not value.isdigit():
            return queryset
        return queryset.filter(created_at__gte=timezone.now() - timedelta(days=int(value)))


@admin.register(SyncLog)
class SyncLogAdmin(ReadOnlyAdmin):
    """Sync logs are a record: read-only."""

    list_display = [
        "created_at",
        "integration",
        "level",
        "category",
        "operation",
        "message",
        "status_code",
        "method",
        "path",
        "resolved_at",
    ]
    list_filter = [PeriodFilter, StateFilter, "category", "operation", "level", "integration"]
    list_select_related = ["integration", "project"]
    search_fields = ["message", "remote_message", "path", "integration__name"]
    readonly_fields = [
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
    ]
