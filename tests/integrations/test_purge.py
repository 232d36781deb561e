"""Deleting an integration removes its whole subtree, bottom-up, restartably."""

from unittest import mock

import pytest

from integrations import selectors, services
from integrations.models import AuditEvent, Integration, IntegrationStatus, Namespace, Project, Reference
from scanning.models import ScanRun
from synclogs.models import SyncLog
from tests.factories import NamespaceFactory, ProjectFactory, ReferenceFactory, make_integration

CHILDREN, REPOS_PER_CHILD = 24, 50  # 1,200 projects, 2,400 references, thousands of rows in all


def build_tree(tenant, superuser):
    integration = make_integration(tenant=tenant, name="Big")
    root = integration.root_namespace
    children = Namespace.objects.bulk_create(
        [
            Namespace(
                tenant=tenant,
                parent=root,
                name=f"Project {i}",
                slug=f"p-{i}",
                managed=True,
                integration=integration,
                remote_uuid=f"{{p{i}}}",
            )
            for i in range(CHILDREN)
        ]
    )
    # Hand-made namespaces under managed ones, two levels deep, with a project.
    hand = services.namespace_create(tenant=tenant, parent=children[0], name="Hand made", actor=superuser)
    deeper = services.namespace_create(tenant=tenant, parent=hand, name="Deeper", actor=superuser)
    projects = Project.objects.bulk_create(
        [
            Project(
                namespace=child,
                integration=integration,
                name=f"r{c}-{r}",
                slug=f"r{c}-{r}",
                full_name=f"big/r{c}-{r}",
                remote_uuid=f"{{r{c}-{r}}}",
            )
            for c, child in enumerate(children)
            for r in range(REPOS_PER_CHILD)
        ]
    )
    projects.append(ProjectFactory(namespace=deeper, integration=None))
    Reference.objects.bulk_create(
        [
            Reference(project=p, name=name, is_default=(name == "main"), head_commit="a" * 40)
            for p in projects
            for name in ("main", "develop")
        ]
    )
    runs = ScanRun.objects.bulk_create(
        [ScanRun(integration=integration, trigger="schedule", status="succeeded") for _ in range(3)]
    )
    SyncLog.objects.bulk_create(
        [
            SyncLog(integration=integration, project=projects[i], category="unexpected", operation="sync", message="x")
            for i in range(10)
        ]
        + [SyncLog(integration=integration, category="rate_limited", operation="sync", message="y")]
    )
    return integration, runs


@pytest.fixture
def bystander(tenant):
    """Another integration in the same tenant, and a project outside the subtree."""
    other = make_integration(tenant=tenant, name="Other")
    ReferenceFactory(project=ProjectFactory(namespace=other.root_namespace, integration=other))
    return other


def _counts():
    return {m.__name__: m.objects.count() for m in (Namespace, Project, Reference, ScanRun, SyncLog, Integration)}


@pytest.mark.slow
def test_preview_then_chunked_purge_removes_everything_and_nothing_else(
    tenant, superuser, bystander, django_capture_on_commit_callbacks
):
    integration, _ = build_tree(tenant, superuser)
    outside = ProjectFactory(namespace=NamespaceFactory(tenant=tenant), integration=integration)
    before = _counts()

    preview = selectors.integration_delete_preview(integration=integration)
    core = {
        "namespaces": 1 + CHILDREN + 2,
        "projects": CHILDREN * REPOS_PER_CHILD + 1,
        "references": 2 * (CHILDREN * REPOS_PER_CHILD + 1),
        "scan runs": 3,
        "sync logs": 11,
    }
    assert {k: preview[k] for k in core} == core
    # Every other table hanging off the integration (members, scanner results, webhooks...) is listed, empty here.
    assert {"members", "dependency packages", "posture findings"} <= set(preview)
    assert all(n == 0 for kind, n in preview.items() if kind not in core)

    with (
        mock.patch("integrations.services.lifecycle.enqueue") as enqueue,
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.integration_delete_request(integration=integration, actor=superuser)
    enqueue.assert_called_once_with("scanning.tasks.integration_teardown_task", integration.pk)
    integration.refresh_from_db()
    assert integration.status == IntegrationStatus.DELETING
    assert integration not in selectors.integration_list(tenant=tenant)
    assert AuditEvent.objects.get(action="integration.delete").details["preview"] == preview

    assert services.integration_purge(integration_id=integration.pk, chunk_size=250) is True
    after = _counts()
    assert after == {
        "Namespace": before["Namespace"] - preview["namespaces"],
        "Project": before["Project"] - preview["projects"],
        "Reference": before["Reference"] - preview["references"],
        "ScanRun": before["ScanRun"] - 3,
        "SyncLog": before["SyncLog"] - 11,
        "Integration": before["Integration"] - 1,
    }
    # The project outside the subtree outlives the integration that it borrowed.
    outside.refresh_from_db()
    assert outside.integration is None
    assert Project.objects.filter(integration=bystander).count() == 1
    assert AuditEvent.objects.get(action="integration.purged").details["removed"]["projects"] == preview["projects"]
    # Running it again is a no-op.
    assert services.integration_purge(integration_id=integration.pk) is False


@pytest.mark.slow
def test_purge_killed_half_way_finishes_on_the_next_run_with_no_orphans(tenant, superuser, bystander):
    integration, _ = build_tree(tenant, superuser)
    services.integration_delete_request(integration=integration, actor=superuser)
    expected_left = _counts()
    preview = selectors.integration_delete_preview(integration=integration)

    from django.db.models.query import QuerySet

    real_delete, real_raw_delete = QuerySet.delete, QuerySet._raw_delete
    calls = {"n": 0}

    def count_or_die(queryset):
        if queryset.model is Project:
            calls["n"] += 1
            if calls["n"] == 4:  # three batches of 100 projects are gone; dies deleting the 4th
                raise KeyboardInterrupt("worker killed")

    def killed_mid_way(self):
        count_or_die(self)
        return real_delete(self)

    def raw_killed_mid_way(self, using):
        count_or_die(self)
        return real_raw_delete(self, using)

    with (
        mock.patch.object(QuerySet, "delete", killed_mid_way),
        mock.patch.object(QuerySet, "_raw_delete", raw_killed_mid_way),
    ):
        with pytest.raises(KeyboardInterrupt):
            services.integration_purge(integration_id=integration.pk, chunk_size=100)
    assert Project.objects.filter(integration=integration).count() == CHILDREN * REPOS_PER_CHILD - 300

    # Half-done: still marked deleting, still hidden, nothing dangling.
    integration.refresh_from_db()
    assert integration.status == IntegrationStatus.DELETING
    assert not Reference.objects.filter(project__isnull=True).exists()

    assert services.integration_purge(integration_id=integration.pk, chunk_size=100) is True
    left = _counts()
    assert left["Namespace"] == expected_left["Namespace"] - preview["namespaces"]
    assert left["Project"] == expected_left["Project"] - preview["projects"]
    assert left["Reference"] == expected_left["Reference"] - preview["references"]
    assert not Integration.objects.filter(pk=integration.pk).exists()
    assert not Namespace.objects.filter(integration_id=integration.pk).exists()
    assert not SyncLog.objects.filter(integration_id=integration.pk).exists()


def test_purge_command_finishes_pending_deletions(tenant, superuser, capsys):
    from django.core.management import call_command

    integration = make_integration(tenant=tenant)
    Integration.objects.filter(pk=integration.pk).update(status=IntegrationStatus.DELETING)
    call_command("purge_integrations")
    assert not Integration.objects.filter(pk=integration.pk).exists()
    call_command("purge_integrations")
    assert "No integrations are waiting" in capsys.readouterr().out


def test_purge_ignores_integrations_not_marked_for_deletion(tenant):
    integration = make_integration(tenant=tenant)
    assert services.integration_purge(integration_id=integration.pk) is False
    assert Integration.objects.filter(pk=integration.pk).exists()


def test_deletion_task_runs_through_the_queue(tenant, superuser, django_capture_on_commit_callbacks):
    """Q_CLUSTER['sync'] is on in tests: the enqueued task runs at commit."""
    integration = make_integration(tenant=tenant)
    root_id = integration.root_namespace_id
    with django_capture_on_commit_callbacks(execute=True):
        services.integration_delete_request(integration=integration, actor=superuser)
    assert not Integration.objects.filter(pk=integration.pk).exists()
    assert not Namespace.objects.filter(pk=root_id).exists()
