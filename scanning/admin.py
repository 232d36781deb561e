"""Scanning's part of the admin: scan runs, and scan actions on the integration admin.

The integration admin is extended here (scanning depends on integrations, never the
reverse): Rescan Org and Test configuration actions, and last scan / open error columns.
"""

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.middleware.csrf import get_token
from django.urls import path, reverse
from django.utils.html import format_html

from integrations.admin import IntegrationAdmin, ReadOnlyAdmin
from integrations.models import Integration
from integrations.selectors import integrations_with_health
from scanning import services
from scanning.models import (
    DependencyPackage,
    PostureFinding,
    PullRequest,
    PullRequestScan,
    ScannerState,
    ScanRun,
    Trigger,
    WebhookDelivery,
    WebhookRegistration,
)


@admin.register(ScanRun)
class ScanRunAdmin(ReadOnlyAdmin):
    """Scan runs are a record: read-only."""

    list_display = [
        "id",
        "integration",
        "trigger",
        "status",
        "queued_at",
        "started_at",
        "finished_at",
        "progress_done",
        "progress_total",
        "rest_requests",
        "git_requests",
    ]
    list_filter = ["status", "trigger"]
    list_select_related = ["integration"]
    search_fields = ["integration__name"]
    date_hierarchy = "queued_at"


admin.site.unregister(Integration)


@admin.register(Integration)
class IntegrationScanAdmin(IntegrationAdmin):
    list_display = [
        *IntegrationAdmin.list_display[:6],
        "last_scan_status",
        "open_errors",
        "last_scan_at",
        "next_scan_at",
    ]
    actions = [*IntegrationAdmin.actions, "rescan_org", "test_configuration"]

    def get_queryset(self, request):
        return integrations_with_health(super().get_queryset(request))

    @admin.display(description="Last scan", ordering="last_status")
    def last_scan_status(self, obj):
        return obj.last_status or "never"

    @admin.display(description="Open errors", ordering="open_errors")
    def open_errors(self, obj):
        if not obj.open_errors:
            return 0
        url = reverse("admin:synclogs_synclog_changelist") + f"?integration__id__exact={obj.pk}&state=open"
        return format_html('<a href="{}">{}</a>', url, obj.open_errors)

    def get_urls(self):
        return [
            path(
                "<int:object_id>/rescan/",
                self.admin_site.admin_view(self.rescan_view),
                name="integrations_integration_rescan",
            ),
            path(
                "<int:object_id>/test/",
                self.admin_site.admin_view(self.test_view),
                name="integrations_integration_test",
            ),
            *super().get_urls(),
        ]

    def extra_integration_context(self, request, integration):
        runs = list(ScanRun.objects.filter(integration=integration).order_by("-queued_at", "-id")[:5])
        return {
            "scan_tools": format_html(
                '<form method="post" action="{}" class="inline-form">'
                '<input type="hidden" name="csrfmiddlewaretoken" value="{}">'
                '<input type="submit" value="Rescan Org"></form> '
                '<form method="post" action="{}" class="inline-form">'
                '<input type="hidden" name="csrfmiddlewaretoken" value="{}">'
                '<input type="submit" value="Test configuration">'
                "</form> Recent scans: {}",
                reverse("admin:integrations_integration_rescan", args=[integration.pk]),
                get_token(request),
                reverse("admin:integrations_integration_test", args=[integration.pk]),
                get_token(request),
                ", ".join(f"#{r.pk} {r.status} ({r.progress_done}/{r.progress_total})" for r in runs) or "none",
            )
        }

    def rescan_view(self, request, object_id):
        integration = self._get(request, object_id)
        if request.method == "POST" and self.has_change_permission(request, integration):
            self._rescan(request, [integration])
        return HttpResponseRedirect(reverse("admin:integrations_integration_change", args=[integration.pk]))

    def test_view(self, request, object_id):
        integration = self._get(request, object_id)
        if request.method == "POST" and self.has_change_permission(request, integration):
            self._test(request, integration)
        return HttpResponseRedirect(reverse("admin:integrations_integration_change", args=[integration.pk]))

    def _rescan(self, request, integrations):
        queued, running = 0, []
        for integration in integrations:
            try:
                services.org_rescan_request(integration=integration, trigger=Trigger.MANUAL, actor=request.user)
                queued += 1
            except services.ScanAlreadyRunning:
                running.append(str(integration))
        if queued:
            self.message_user(request, f"Rescan queued for {queued} integration(s).", messages.SUCCESS)
        if running:
            self.message_user(request, f"Already running, nothing changed: {', '.join(running)}.", messages.WARNING)

    def _test(self, request, integration):
        report = services.integration_test_configuration(integration=integration, actor=request.user)
        if report.ok and not report.warnings():
            self.message_user(request, f"{integration}: every check passed.", messages.SUCCESS)
            return
        for check in report.failures() + report.warnings():
            level = messages.ERROR if check.required else messages.WARNING
            self.message_user(request, f"{integration}: {check.name}: {check.message}", level)

    @admin.action(description="Rescan Org (scan selected integrations now)", permissions=["change"])
    def rescan_org(self, request, queryset):
        self._rescan(request, list(queryset))

    @admin.action(description="Test configuration (verify credentials against Bitbucket)", permissions=["change"])
    def test_configuration(self, request, queryset):
        for integration in queryset:
            self._test(request, integration)


@admin.register(DependencyPackage)
class DependencyPackageAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "ecosystem", "direct", "dev", "manifest_path", "reference"]
    list_filter = ["ecosystem", "direct", "dev"]
    list_select_related = ["reference__project"]
    search_fields = ["name", "reference__project__full_name"]


@admin.register(PostureFinding)
class PostureFindingAdmin(ReadOnlyAdmin):
    list_display = ["project", "rule", "details", "first_seen_at", "resolved_at"]
    list_filter = ["rule"]
    list_select_related = ["project"]
    search_fields = ["project__full_name"]


@admin.register(ScannerState)
class ScannerStateAdmin(ReadOnlyAdmin):
    list_display = ["reference", "scanner", "commit", "ok", "scanned_at"]
    list_filter = ["scanner", "ok"]
    list_select_related = ["reference__project"]


@admin.register(PullRequest)
class PullRequestAdmin(ReadOnlyAdmin):
    list_display = [
        "project",
        "remote_id",
        "title",
        "state",
        "source_branch",
        "destination_branch",
        "last_event",
        "last_event_at",
    ]
    list_filter = ["state"]
    list_select_related = ["project"]
    search_fields = ["project__full_name", "title", "source_branch"]


@admin.register(PullRequestScan)
class PullRequestScanAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "pull_request",
        "status",
        "trigger",
        "source_commit",
        "description",
        "queued_at",
        "finished_at",
    ]
    list_filter = ["status"]
    list_select_related = ["pull_request__project"]
    search_fields = ["pull_request__project__full_name"]
    date_hierarchy = "queued_at"


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "integration", "event_key", "state", "attempt", "request_uuid", "outcome"]
    list_filter = ["state", "event_key"]
    list_select_related = ["integration"]
    search_fields = ["request_uuid", "integration__name"]
    date_hierarchy = "received_at"


@admin.register(WebhookRegistration)
class WebhookRegistrationAdmin(ReadOnlyAdmin):
    list_display = ["integration", "subject", "repository", "hook_uuid", "created_at"]
    list_select_related = ["integration"]
