"""The portal pages (namespace ``portal``)."""

from django.urls import path

from integrations import views as pages
from scanning import views as scan_pages

app_name = "portal"

urlpatterns = [
    path("", scan_pages.overview, name="home"),
    path("tenant/", pages.tenant_switch, name="tenant_switch"),
    path("account/", pages.account, name="account"),
    path("integrations/", pages.integrations_index, name="integrations"),
    path("integrations/bitbucket/", pages.bitbucket_manage, name="bitbucket_manage"),
    path("integrations/bitbucket/add/", pages.bitbucket_add, name="bitbucket_add"),
    path("integrations/bitbucket/rescan/", scan_pages.rescan_all, name="rescan_all"),
    path("integrations/bitbucket/<int:pk>/", scan_pages.integration_detail, name="integration_detail"),
    path("integrations/bitbucket/<int:pk>/test/", scan_pages.integration_test, name="integration_test"),
    path("integrations/bitbucket/<int:pk>/credentials/", pages.bitbucket_credentials, name="bitbucket_credentials"),
    path("integrations/bitbucket/<int:pk>/edit/", pages.bitbucket_edit, name="bitbucket_edit"),
    path(
        "integrations/bitbucket/<int:pk>/webhook-secret/", pages.webhook_secret_rotate, name="bitbucket_webhook_secret"
    ),
    path("integrations/bitbucket/<int:pk>/delete/", pages.bitbucket_delete, name="bitbucket_delete"),
    path("integrations/bitbucket/<int:pk>/rescan/", scan_pages.rescan, name="rescan"),
    path("integrations/bitbucket/<int:pk>/sync-log/", scan_pages.sync_log, name="sync_log"),
    path("sync-logs/", scan_pages.sync_log, name="sync_logs"),
    path("scans/progress/", scan_pages.scan_progress, name="scan_progress"),
    path("scans/<int:pk>/", scan_pages.scan_detail, name="scan_detail"),
    path("namespaces/", pages.namespaces, name="namespaces"),
    path("namespaces/<int:pk>/delete/", pages.namespace_delete, name="namespace_delete"),
    path("projects/", pages.projects, name="projects"),
    path("projects/add/", pages.project_import, name="project_import"),
    path("projects/<int:pk>/", scan_pages.project_detail, name="project_detail"),
    path("packages/", scan_pages.packages, name="packages"),
    path("references/<int:pk>/sbom/", scan_pages.reference_sbom_download, name="reference_sbom"),
    path("sbom/", scan_pages.tenant_sbom_download, name="tenant_sbom"),
    path("posture/", scan_pages.posture, name="posture"),
    path("vulnerabilities/", scan_pages.vulnerabilities, name="vulnerabilities"),
    path("pull-request-scans/", scan_pages.pull_request_scans, name="pull_request_scans"),
    path("pull-request-scans/<int:pk>/", scan_pages.pr_scan_detail, name="pr_scan_detail"),
    path("pull-requests/<int:pk>/rescan/", scan_pages.pr_rescan, name="pr_rescan"),
]
