"""Django admin for the integrations app: staff see and manage every tenant.

Writes go through the services; secrets are never rendered (the encrypted fields are
not editable, and credential forms use write-only inputs).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from integrations import services
from integrations.forms import (
    CredentialsUpdateForm,
    DeleteConfirmForm,
    IntegrationCreateForm,
    IntegrationSettingsForm,
    apply_service_errors,
)
from integrations.models import (
    AuditEvent,
    Integration,
    IntegrationStatus,
    Membership,
    Namespace,
    Project,
    Reference,
    Tenant,
)
from integrations.selectors import delete_preview_in_words, integration_delete_preview

sensitive = method_decorator(sensitive_post_parameters("token", "secret"))


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records (audit events, scan runs, sync logs, scanner results): view only."""

    # Links shown are Bitbucket's, always https (and Django 6's default for URL form fields).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        try:
            created = services.tenant_create(name=obj.name, slug=obj.slug, actor=request.user)
        except ValidationError as exc:
            raise PermissionDenied("; ".join(exc.messages)) from exc
        obj.pk = created.pk


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant"]
    list_select_related = ["user", "tenant"]
    search_fields = ["user__username", "user__email", "tenant__name"]
    autocomplete_fields = ["user", "tenant"]


@admin.register(Namespace)
class NamespaceAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "tenant", "parent", "managed", "integration"]
    list_filter = ["managed", "tenant"]
    list_select_related = ["tenant", "parent", "integration"]
    search_fields = ["name", "slug", "tenant__name"]
    autocomplete_fields = ["tenant", "parent"]
    readonly_fields = ["managed", "integration", "remote_uuid", "remote_key", "created_at", "updated_at"]
    actions = ["delete_namespaces"]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.managed:
            return [f.name for f in obj._meta.fields]
        if obj is not None:
            return [*self.readonly_fields, "tenant", "parent"]
        return self.readonly_fields

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deletion goes through the service
        return actions

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.managed:
            return False
        return super().has_delete_permission(request, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is not None and obj.managed:
            self.message_user(
                request,
                (
                    f"This namespace is managed by integration '{obj.integration}' and is read-only: "
                    "it follows Bitbucket. Delete the integration to remove it."
                ),
                messages.WARNING,
            )
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        try:
            if change:
                services.namespace_update(
                    namespace=Namespace.objects.get(pk=obj.pk),
                    actor=request.user,
                    name=obj.name,
                    slug=obj.slug,
                    description=obj.description,
                )
            else:
                created = services.namespace_create(
                    tenant=obj.tenant,
                    parent=obj.parent,
                    name=obj.name,
                    slug=obj.slug,
                    description=obj.description,
                    actor=request.user,
                )
                obj.pk = created.pk
        except ValidationError as exc:
            raise PermissionDenied("; ".join(exc.messages)) from exc

    def delete_model(self, request, obj):
        services.namespace_delete(namespace=obj, actor=request.user)

    def delete_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is not None and request.method == "POST":
            try:
                services.namespace_delete(namespace=obj, actor=request.user)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
                return HttpResponseRedirect(reverse("admin:integrations_namespace_change", args=[obj.pk]))
            self.message_user(request, f"Deleted namespace '{obj}'.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:integrations_namespace_changelist"))
        return super().delete_view(request, object_id, extra_context)

    @admin.action(description="Delete selected namespaces (empty, unmanaged ones only)", permissions=["delete"])
    def delete_namespaces(self, request, queryset: QuerySet[Namespace]):
        deleted, refused = 0, []
        for namespace in queryset.select_related("integration"):
            try:
                services.namespace_delete(namespace=namespace, actor=request.user)
                deleted += 1
            except ValidationError as exc:
                refused.append(" ".join(exc.messages))
        if deleted:
            self.message_user(request, f"Deleted {deleted} namespace(s).", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, reason, messages.ERROR)


class ReferenceInline(admin.TabularInline):
    model = Reference
    extra = 0
    fields = ["kind", "name", "head_commit", "is_default", "updated_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "full_name",
        "namespace",
        "tenant_name",
        "integration",
        "is_private",
        "main_branch",
        "last_scanned_at",
    ]
    list_filter = ["is_private", "namespace__tenant", "integration"]
    list_select_related = ["namespace__tenant", "integration"]
    search_fields = ["name", "full_name", "slug"]
    autocomplete_fields = ["namespace", "integration"]
    inlines = [ReferenceInline]
    actions = ["delete_projects"]

    @admin.display(description="Tenant", ordering="namespace__tenant__name")
    def tenant_name(self, obj: Project) -> str:
        return obj.namespace.tenant.name

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.namespace.managed:
            return [f.name for f in obj._meta.fields]
        return ["remote_updated_on", "last_scanned_at", "created_at", "updated_at"]

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.namespace.managed:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            if obj.namespace.managed:
                raise PermissionDenied("Projects in managed namespaces follow Bitbucket and are read-only.")
            super().save_model(request, obj, form, change)
            return
        try:
            created = services.project_create(
                namespace=obj.namespace,
                name=obj.name,
                slug=obj.slug,
                full_name=obj.full_name,
                integration=obj.integration,
                remote_uuid=obj.remote_uuid,
                is_private=obj.is_private,
                web_url=obj.web_url,
                actor=request.user,
            )
        except ValidationError as exc:
            raise PermissionDenied("; ".join(exc.messages)) from exc
        obj.pk = created.pk

    def delete_model(self, request, obj):
        services.project_delete(project=obj, actor=request.user)

    @admin.action(description="Delete selected projects (unmanaged namespaces only)", permissions=["delete"])
    def delete_projects(self, request, queryset: QuerySet[Project]):
        deleted, refused = 0, 0
        for project in queryset.select_related("namespace__integration"):
            try:
                services.project_delete(project=project, actor=request.user)
                deleted += 1
            except ValidationError:
                refused += 1
        if deleted:
            self.message_user(request, f"Deleted {deleted} project(s).", messages.SUCCESS)
        if refused:
            self.message_user(
                request, f"Refused {refused} project(s) in managed namespaces: they follow Bitbucket.", messages.ERROR
            )


@admin.register(Reference)
class ReferenceAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "project", "head_commit", "is_default", "updated_at"]
    list_filter = ["kind", "is_default"]
    list_select_related = ["project"]
    search_fields = ["name", "project__full_name", "head_commit"]
    readonly_fields = ["project", "kind", "name", "head_commit", "is_default", "updated_at"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_repr", "action", "target_repr", "tenant"]
    list_filter = ["action", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["actor_repr", "action", "target_repr"]
    date_hierarchy = "created_at"


@admin.register(Integration)
class IntegrationAdmin(admin.ModelAdmin):
    """Add, Edit Integration, Update Credentials and Delete Integration are pages of
    their own, each a form over one service."""

    list_display = ["name", "tenant", "scope", "scope_label", "auth_method", "status", "last_scan_at", "next_scan_at"]
    list_filter = ["status", "auth_method", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name", "workspace", "project_key", "description"]
    actions = ["pause", "resume"]

    def get_queryset(self, request):
        # Integrations being deleted are hidden at once.
        return super().get_queryset(request).exclude(status=IntegrationStatus.DELETING)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def get_urls(self):
        info = self.model._meta.app_label, self.model._meta.model_name
        return [
            path(
                "<int:object_id>/credentials/",
                self.admin_site.admin_view(self.credentials_view),
                name="%s_%s_credentials" % info,
            ),
            path(
                "<int:object_id>/rotate-webhook-secret/",
                self.admin_site.admin_view(self.rotate_secret_view),
                name="%s_%s_rotate_secret" % info,
            ),
            *super().get_urls(),
        ]

    def _render(self, request: HttpRequest, template: str, context: dict) -> HttpResponse:
        base = {**self.admin_site.each_context(request), "opts": self.model._meta}
        return TemplateResponse(request, template, {**base, **context})

    def _parent_queryset(self):
        return Namespace.objects.filter(managed=False).select_related("tenant").order_by("tenant__name", "name")

    @sensitive
    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = IntegrationCreateForm(request.POST or None, parent_queryset=self._parent_queryset())
        report = None
        if request.method == "POST" and form.is_valid():
            parent = form.cleaned_data["parent"]
            data = form.cleaned_data
            try:
                integration = services.integration_create(
                    tenant=parent.tenant,
                    parent=parent,
                    name=data["name"],
                    auth_method=data["auth_method"],
                    credentials=form.credentials(),
                    bitbucket_url=data["bitbucket_url"],
                    workspace=data["workspace"],
                    project_key=data["project_key"],
                    actor=request.user,
                    **form.settings_values(),
                )
            except services.VerificationFailed as exc:
                report = exc.report
                form.add_error(None, "Bitbucket verification failed; nothing was saved. See the checks below.")
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                self.message_user(
                    request,
                    f"Connected {integration.bitbucket_url} as '{integration}'. The first scan has started.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:integrations_integration_change", args=[integration.pk]))
        return self._render(
            request,
            "admin/integrations/integration/form.html",
            {
                "title": "Add Bitbucket Cloud integration",
                "form": form,
                "submit_label": "Verify, save and scan",
                "report": report,
            },
        )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Edit Integration: settings only. The Bitbucket URL is shown read-only."""
        integration = self._get(request, object_id)
        if not self.has_change_permission(request, integration):
            raise PermissionDenied
        form = IntegrationSettingsForm(request.POST or None, initial=IntegrationSettingsForm.initial_from(integration))
        report = None
        if request.method == "POST" and form.is_valid():
            saved, report = form.save_to(integration, actor=request.user)
            if saved:
                failed = report is not None and not report.ok
                self.message_user(
                    request,
                    "Saved although the credentials lack what the new settings need."
                    if failed
                    else "Saved. Changes apply from the next scan.",
                    messages.WARNING if failed else messages.SUCCESS,
                )
                return HttpResponseRedirect(request.path)
        return self._render(
            request,
            "admin/integrations/integration/form.html",
            {
                "title": f"Edit integration: {integration}",
                "form": form,
                "integration": integration,
                "original": integration,
                "submit_label": "Save",
                "report": report,
                "show_tools": True,
                "note": "Changes to scanners and settings apply from the next scan; a rescan applies them now.",
                **self.extra_integration_context(request, integration),
            },
        )

    def extra_integration_context(self, request, integration: Integration) -> dict:
        """Hook for apps that add to the integration page (scanning adds scan state)."""
        return {}

    @sensitive
    def credentials_view(self, request, object_id):
        integration = self._get(request, object_id)
        if not self.has_change_permission(request, integration):
            raise PermissionDenied
        form = CredentialsUpdateForm(request.POST or None, initial=CredentialsUpdateForm.initial_for(integration))
        report = None
        if request.method == "POST" and form.is_valid():
            saved, report, _ = form.save_to(integration, actor=request.user)  # the admin asks for the secret again
            if saved:
                failed = report is not None and not report.ok
                self.message_user(
                    request,
                    "Credentials saved although verification failed." if failed else "Credentials verified and saved.",
                    messages.WARNING if failed else messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:integrations_integration_change", args=[integration.pk]))
        return self._render(
            request,
            "admin/integrations/integration/form.html",
            {
                "title": f"Update credentials: {integration}",
                "form": form,
                "integration": integration,
                "original": integration,
                "submit_label": "Verify and save",
                "report": report,
                "note": (
                    "The current secret is never shown. Enter a new one to replace it: it is verified against "
                    "Bitbucket before it is saved."
                ),
            },
        )

    def rotate_secret_view(self, request, object_id):
        integration = self._get(request, object_id)
        if not self.has_change_permission(request, integration):
            raise PermissionDenied
        if request.method == "POST" and request.POST.get("confirm") != "1":
            self.message_user(
                request, "Tick the box to confirm: webhooks signed with the old secret will be refused.", messages.ERROR
            )
        elif request.method == "POST":
            services.webhook_secret_rotate(integration=integration, actor=request.user)
            self.message_user(
                request, "Webhook secret rotated; update it in Bitbucket's webhook settings.", messages.SUCCESS
            )
        return HttpResponseRedirect(reverse("admin:integrations_integration_change", args=[integration.pk]))

    def delete_view(self, request, object_id, extra_context=None):
        integration = self._get(request, object_id)
        if not self.has_delete_permission(request, integration):
            raise PermissionDenied
        preview = integration_delete_preview(integration=integration)
        form = DeleteConfirmForm(request.POST or None, integration=integration)
        if request.method == "POST" and form.is_valid():
            services.integration_delete_request(integration=integration, actor=request.user)
            self.message_user(
                request,
                (
                    f"Deleting '{integration}': "
                    + ", ".join(delete_preview_in_words(preview))
                    + " are being removed in the background."
                ),
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:integrations_integration_changelist"))
        return self._render(
            request,
            "admin/integrations/integration/delete.html",
            {
                "title": f"Delete integration: {integration}",
                "form": form,
                "integration": integration,
                "original": integration,
                "preview": delete_preview_in_words(preview),
            },
        )

    def _get(self, request, object_id) -> Integration:
        # The base queryset, not the changelist's annotated one.
        return get_object_or_404(
            Integration.objects.exclude(status=IntegrationStatus.DELETING).select_related("tenant", "root_namespace"),
            pk=object_id,
        )

    @admin.action(description="Pause selected integrations (no scheduled scans)", permissions=["change"])
    def pause(self, request, queryset):
        self._set_status(request, queryset, IntegrationStatus.PAUSED, "Paused")

    @admin.action(description="Resume selected integrations", permissions=["change"])
    def resume(self, request, queryset):
        self._set_status(request, queryset, IntegrationStatus.ACTIVE, "Resumed")

    def _set_status(self, request, queryset, status, verb):
        changed = 0
        for integration in queryset.exclude(status=status):
            services.integration_update(integration=integration, actor=request.user, status=status)
            changed += 1
        self.message_user(request, f"{verb} {changed} integration(s).", messages.SUCCESS)
