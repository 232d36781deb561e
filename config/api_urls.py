"""``/api/v1/``: each app contributes its routes; the schema and docs cover them all."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from integrations.api import views as integrations
from scanning import api as scanning
from synclogs import api as synclogs

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("tenants", integrations.TenantViewSet, basename="tenant")
router.register("integrations", integrations.IntegrationViewSet, basename="integration")
router.register("namespaces", integrations.NamespaceViewSet, basename="namespace")
router.register("projects", integrations.ProjectViewSet, basename="project")
router.register("references", integrations.ReferenceViewSet, basename="reference")
router.register("scans", scanning.ScanRunViewSet, basename="scan")
router.register("sync-logs", synclogs.SyncLogViewSet, basename="synclog")
router.register("posture-findings", scanning.PostureFindingViewSet, basename="posturefinding")
router.register("pull-requests", scanning.PullRequestViewSet, basename="pullrequest")
router.register("pull-request-scans", scanning.PullRequestScanViewSet, basename="pullrequestscan")
router.register("vulnerabilities", scanning.VulnerabilityViewSet, basename="vulnerability")

urlpatterns = [
    path("integrations/<int:pk>/rescan/", scanning.RescanView.as_view(), name="integration-rescan"),
    path("integrations/<int:pk>/verify/", scanning.VerifyView.as_view(), name="integration-verify"),
    path("integrations/<int:pk>/inventory/", scanning.InventoryView.as_view(), name="integration-inventory"),
    path("packages/", scanning.PackageSearchView.as_view(), name="packages"),
    path("pull-requests/<int:pk>/rescan/", scanning.PullRequestRescanView.as_view(), name="pullrequest-rescan"),
    path("references/<int:pk>/sbom/", scanning.SbomView.as_view(), name="reference-sbom"),
    *router.urls,
]
