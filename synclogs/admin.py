from django.contrib import admin

from synclogs.models import SyncLog


@admin.register(SyncLog)
class SyncLogAdmin(admin.ModelAdmin):
    """Sync logs are a record: read-only."""

    list_display = ["created_at", "integration", "level", "category", "operation", "message", "status_code",
                    "path", "resolved_at"]
    list_filter = ["category", "operation", "level", "integration"]
    list_select_related = ["integration", "project"]
    search_fields = ["message", "remote_message", "path", "integration__name"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
