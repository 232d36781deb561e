from django.contrib import admin

from scanning.models import ScanRun


@admin.register(ScanRun)
class ScanRunAdmin(admin.ModelAdmin):
    """Scan runs are a record: read-only."""

    list_display = ["id", "integration", "trigger", "status", "queued_at", "started_at", "finished_at",
                    "progress_done", "progress_total", "rest_requests", "git_requests"]
    list_filter = ["status", "trigger"]
    list_select_related = ["integration"]
    search_fields = ["integration__name"]
    date_hierarchy = "queued_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
