"""API views for tenants, integrations, namespaces, projects and references.

Every queryset is limited to the requesting user's tenants (staff: all), so another
tenant's id is a 404. Writes call the services.
"""

from __future__ import annotations

import django_filters
from django.db.models import Count, Prefetch, Q
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from integrations import services
from integrations.api import serializers as s
from integrations.api.filters import IdFilter
from integrations.api.permissions import TenantRole
from integrations.models import Integration, IntegrationStatus, Namespace, Project, Reference, Role, Tenant
from integrations.selectors import (
    has_role,
    integration_delete_preview,
    integration_list,
    integrations_with_health,
    tenants_visible,
)

ERRORS = {
    400: OpenApiResponse(description="Invalid input: `{error: {code, message, fields}}`"),
    401: OpenApiResponse(description="Not authenticated"),
    403: OpenApiResponse(description="Your role in this tenant does not allow it"),
    404: OpenApiResponse(description="Not found in your tenants"),
}


def _pick_tenant(request, slug: str | None, minimum: str) -> Tenant:
    """The tenant a create goes to: named by slug, or the user's only one."""
    visible = tenants_visible(user=request.user)
    if slug:
        tenant = visible.filter(slug=slug).first()
        if tenant is None:
            raise ValidationError({"tenant": [f"No tenant '{slug}' among yours."]})
    else:
        tenants = list(visible[:2])
        if len(tenants) != 1:
            raise ValidationError({"tenant": ["Give the tenant's slug: you belong to several (or none)."]})
        tenant = tenants[0]
    if not has_role(user=request.user, tenant=tenant, minimum=minimum):
        raise PermissionDenied(f"You need the {minimum} role in {tenant.slug} to do this.")
    return tenant


class TenantScoped:
    """A viewset over rows that belong to a tenant through ``tenant_path`` (a query path
    such as ``project__namespace__tenant``): lists show only the user's tenants, and the
    role check reads the tenant of one object along the same path."""

    permission_classes = [TenantRole]
    tenant_path = "tenant"
    # The path to the integration the rows belong to, if any: rows of an integration that is
    # being deleted are gone for the API at once, as they are for the pages.
    integration_path: str | None = None

    def tenant_of(self, obj) -> int:
        *hops, last = self.tenant_path.split("__")
        for hop in hops:
            obj = getattr(obj, hop)
        return getattr(obj, f"{last}_id")

    def visible_tenant_ids(self) -> list[int] | None:
        user = self.request.user
        if getattr(self, "swagger_fake_view", False) or not user.is_authenticated:
            return []  # schema generation: the model matters, not the rows
        return None if user.is_staff else list(tenants_visible(user=user).values_list("pk", flat=True))

    def visible(self, queryset):
        ids = self.visible_tenant_ids()
        if self.integration_path:
            queryset = queryset.exclude(**{f"{self.integration_path}__status": IntegrationStatus.DELETING})
        return queryset if ids is None else queryset.filter(**{f"{self.tenant_path}_id__in": ids})


def get_visible(request, queryset, pk: int, *, tenant_path: str = "tenant"):
    """One object for an action view: 404 outside the user's tenants (staff see all)."""
    if not request.user.is_staff:
        queryset = queryset.filter(**{f"{tenant_path}__in": tenants_visible(user=request.user).values("pk")})
    return get_object_or_404(queryset, pk=pk)


@extend_schema_view(
    list=extend_schema(summary="Your tenants and your role in each", responses={200: s.TenantSerializer, **ERRORS}),
    retrieve=extend_schema(summary="One of your tenants", responses={200: s.TenantSerializer, **ERRORS}),
)
class TenantViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.TenantSerializer
    filter_backends = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Tenant.objects.none()
        return tenants_visible(user=self.request.user).order_by("name")

    def tenant_of(self, obj) -> int:
        return obj.pk


class IntegrationFilter(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug")
    status = django_filters.ChoiceFilter(choices=IntegrationStatus.choices)

    class Meta:
        model = Integration
        fields = ["tenant", "status", "auth_method", "workspace"]


@extend_schema_view(
    list=extend_schema(summary="List integrations", responses={200: s.IntegrationSerializer, **ERRORS}),
    retrieve=extend_schema(summary="Get an integration", responses={200: s.IntegrationSerializer, **ERRORS}),
)
class IntegrationViewSet(TenantScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = s.IntegrationSerializer
    filterset_class = IntegrationFilter

    def get_queryset(self):
        qs = integrations_with_health(integration_list())
        return self.visible(qs).order_by("name", "id")

    @extend_schema(
        summary="Connect a workspace or project (verified against Bitbucket first)",
        request=s.IntegrationCreateSerializer,
        responses={201: s.IntegrationSerializer, **ERRORS},
    )
    def create(self, request):
        data = s.IntegrationCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        tenant = _pick_tenant(request, values.get("tenant"), Role.ADMIN)
        parent = Namespace.objects.filter(tenant=tenant, pk=values["parent"]).first()
        if parent is None:
            raise ValidationError({"parent": [f"No namespace {values['parent']} in {tenant.slug}."]})
        integration = services.integration_create(
            tenant=tenant,
            parent=parent,
            name=values["name"],
            auth_method=values["auth_method"],
            credentials=data.credentials(),
            bitbucket_url=values.get("bitbucket_url", ""),
            workspace=values.get("workspace", ""),
            project_key=values.get("project_key", ""),
            actor=request.user,
            **data.settings_values(),
        )
        return Response(
            s.IntegrationSerializer(self.get_queryset().get(pk=integration.pk)).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        summary="Edit settings (applies from the next scan)",
        description=(
            "New scanners, or pull-request scans turned on, are checked against Bitbucket first: a credential "
            "that lacks what they need is refused with the report (400 `verification_failed`) unless `confirm` "
            "is true. The response carries the report of the checks that ran (`verification`, null when none)."
        ),
        request=s.IntegrationUpdateSerializer,
        responses={200: s.IntegrationUpdatedSerializer, **ERRORS},
    )
    def partial_update(self, request, pk=None):
        integration = self.get_object()
        data = s.IntegrationUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        report = services.integration_update(
            integration=integration,
            actor=request.user,
            confirmed=data.validated_data["confirm"],
            **data.settings_values(),
        )
        return Response(
            s.IntegrationUpdatedSerializer(
                self.get_queryset().get(pk=integration.pk), context={"verification": report}
            ).data
        )

    @extend_schema(
        summary="Delete (or preview with ?dry_run=1)",
        parameters=[OpenApiParameter("dry_run", bool, description="Only show what would be deleted.")],
        responses={200: s.DeletePreviewSerializer, 202: s.DeletePreviewSerializer, **ERRORS},
    )
    def destroy(self, request, pk=None):
        integration = self.get_object()
        if request.query_params.get("dry_run") in ("1", "true", "yes"):
            return Response({"dry_run": True, "preview": integration_delete_preview(integration=integration)})
        preview = services.integration_delete_request(integration=integration, actor=request.user)
        return Response({"dry_run": False, "preview": preview}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Replace the credentials (write-only; never returned), verified first",
        description=(
            "The new credentials are verified against Bitbucket for everything this integration's scanners and "
            "pull-request settings need, as on create. A failing required check refuses the change with the "
            "report (400 `verification_failed`) unless `confirm` is true; `rescan` starts a scan once saved. "
            "The response carries the report (`verification`)."
        ),
        request=s.CredentialsUpdateSerializer,
        responses={200: s.CredentialsResultSerializer, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def credentials(self, request, pk=None):
        integration = self.get_object()
        data = s.CredentialsUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        report = services.credentials_update(
            integration=integration,
            auth_method=data.validated_data["auth_method"],
            credentials=data.credentials(),
            actor=request.user,
            confirmed=data.validated_data["confirm"],
            rescan=data.validated_data["rescan"],
        )
        integration.refresh_from_db()
        return Response(s.CredentialsResultSerializer(integration, context={"verification": report}).data)


class NamespaceFilter(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug")
    parent = IdFilter(field_name="parent_id")
    top = django_filters.BooleanFilter(field_name="parent", lookup_expr="isnull", label="Top-level only")

    class Meta:
        model = Namespace
        fields = ["tenant", "parent", "managed", "integration"]


@extend_schema_view(
    list=extend_schema(summary="List namespaces", responses={200: s.NamespaceSerializer, **ERRORS}),
    retrieve=extend_schema(summary="Get a namespace", responses={200: s.NamespaceSerializer, **ERRORS}),
)
class NamespaceViewSet(TenantScoped, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = s.NamespaceSerializer
    filterset_class = NamespaceFilter
    integration_path = "integration"

    def get_queryset(self):
        qs = Namespace.objects.select_related("tenant").annotate(
            children_count=Count("children", distinct=True), projects_count=Count("projects", distinct=True)
        )
        return self.visible(qs).order_by("tenant__name", "parent_id", "slug")

    @extend_schema(
        summary="Create a namespace (not inside managed ones)",
        request=s.NamespaceWriteSerializer,
        responses={201: s.NamespaceSerializer, **ERRORS},
    )
    def create(self, request):
        data = s.NamespaceWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        tenant = _pick_tenant(request, values.get("tenant"), Role.ADMIN)
        parent = None
        if values.get("parent") is not None:
            parent = Namespace.objects.filter(tenant=tenant, pk=values["parent"]).first()
            if parent is None:
                raise ValidationError({"parent": [f"No namespace {values['parent']} in {tenant.slug}."]})
        namespace = services.namespace_create(
            tenant=tenant,
            parent=parent,
            name=values.get("name", ""),
            slug=values.get("slug", ""),
            description=values.get("description", ""),
            actor=request.user,
        )
        return Response(
            s.NamespaceSerializer(self.get_queryset().get(pk=namespace.pk)).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        summary="Rename or describe (not managed ones)",
        request=s.NamespaceWriteSerializer,
        responses={200: s.NamespaceSerializer, **ERRORS},
    )
    def partial_update(self, request, pk=None):
        namespace = self.get_object()
        data = s.NamespaceWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        services.namespace_update(
            namespace=namespace,
            actor=request.user,
            name=values.get("name"),
            slug=values.get("slug"),
            description=values.get("description"),
        )
        return Response(s.NamespaceSerializer(self.get_queryset().get(pk=namespace.pk)).data)

    @extend_schema(summary="Delete an empty, unmanaged namespace", responses={204: None, **ERRORS})
    def destroy(self, request, pk=None):
        services.namespace_delete(namespace=self.get_object(), actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProjectFilter(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="namespace__tenant__slug")
    search = django_filters.CharFilter(method="filter_search", label="Name or full name contains")

    class Meta:
        model = Project
        fields = ["tenant", "namespace", "integration", "is_private", "language"]

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(full_name__icontains=value))


@extend_schema_view(
    list=extend_schema(summary="List projects (repositories)", responses={200: s.ProjectSerializer, **ERRORS}),
    retrieve=extend_schema(summary="Get a project", responses={200: s.ProjectSerializer, **ERRORS}),
)
class ProjectViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.ProjectSerializer
    filterset_class = ProjectFilter

    tenant_path = "namespace__tenant"
    integration_path = "integration"

    def get_queryset(self):
        qs = Project.objects.select_related("namespace").prefetch_related(
            Prefetch("references", queryset=Reference.objects.filter(is_default=True), to_attr="default_references")
        )
        return self.visible(qs).order_by("full_name", "id")


class ReferenceFilter(django_filters.FilterSet):
    project = IdFilter(field_name="project_id")

    class Meta:
        model = Reference
        fields = ["project", "kind", "is_default"]


@extend_schema_view(
    list=extend_schema(summary="List references (tracked branches)", responses={200: s.ReferenceSerializer, **ERRORS}),
    retrieve=extend_schema(summary="Get a reference", responses={200: s.ReferenceSerializer, **ERRORS}),
)
class ReferenceViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.ReferenceSerializer
    filterset_class = ReferenceFilter

    tenant_path = "project__namespace__tenant"
    integration_path = "project__integration"

    def get_queryset(self):
        return self.visible(Reference.objects.select_related("project__namespace")).order_by("project_id", "name")


def get_visible_integration(request, pk: int) -> Integration:
    """For other apps' integration actions: 404 outside the user's tenants."""
    return get_visible(request, integration_list(), pk)
