"""Database constraints hold even when the services are bypassed."""

import pytest
from django.db import DataError, IntegrityError, transaction

from integrations.models import Integration, IntegrationStatus, Membership, Namespace, Reference
from scanning.models import ScanRun
from tests.factories import (
    NamespaceFactory,
    ProjectFactory,
    ReferenceFactory,
    TenantFactory,
    UserFactory,
    make_integration,
)


def _violates(fn):
    # PostgreSQL reports an over-long value as DataError, SQLite's CHECK as IntegrityError.
    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        fn()


def test_slug_format_is_checked_by_the_database(tenant):
    _violates(lambda: Namespace.objects.create(tenant=tenant, name="x", slug="Not Valid"))
    _violates(lambda: Namespace.objects.create(tenant=tenant, name="x", slug="a" * 65))
    _violates(lambda: ProjectFactory(slug="has.dot"))


def test_sibling_slugs_are_unique_at_every_level(tenant):
    top = NamespaceFactory(tenant=tenant, slug="top")
    _violates(lambda: NamespaceFactory(tenant=tenant, slug="top"))
    NamespaceFactory(tenant=tenant, parent=top, slug="child")
    _violates(lambda: NamespaceFactory(tenant=tenant, parent=top, slug="child"))
    # The same slug is fine under another parent and in another tenant.
    NamespaceFactory(tenant=tenant, parent=NamespaceFactory(tenant=tenant), slug="child")
    NamespaceFactory(tenant=TenantFactory(), slug="top")


def test_managed_flag_requires_an_integration(tenant):
    _violates(lambda: Namespace.objects.create(tenant=tenant, name="x", slug="x", managed=True))
    integration = make_integration(tenant=tenant)
    _violates(lambda: Namespace.objects.create(tenant=tenant, name="y", slug="y", integration=integration))


def test_one_membership_per_user_and_tenant_and_valid_roles(tenant):
    user = UserFactory()
    Membership.objects.create(user=user, tenant=tenant, role="owner")
    _violates(lambda: Membership.objects.create(user=user, tenant=tenant, role="viewer"))
    _violates(lambda: Membership.objects.create(user=UserFactory(), tenant=tenant, role="god"))


def test_one_project_per_remote_uuid_per_integration(tenant):
    integration = make_integration(tenant=tenant)
    ns = integration.root_namespace
    ProjectFactory(namespace=ns, integration=integration, remote_uuid="{u1}", slug="a")
    _violates(lambda: ProjectFactory(namespace=ns, integration=integration, remote_uuid="{u1}", slug="b"))
    # Another integration may see the same repository.
    other = make_integration(tenant=tenant)
    ProjectFactory(namespace=other.root_namespace, integration=other, remote_uuid="{u1}", slug="a")


def test_references_unique_one_default_and_hex_commits(db):
    project = ProjectFactory()
    ReferenceFactory(project=project, name="main", is_default=True)
    _violates(lambda: ReferenceFactory(project=project, name="main", is_default=False))
    _violates(lambda: ReferenceFactory(project=project, name="develop", is_default=True))
    _violates(lambda: ReferenceFactory(project=project, name="bad", is_default=False, head_commit="zzzz"))
    _violates(lambda: Reference.objects.create(project=project, name="v1", kind="tag", is_default=True))


def test_integration_constraints(tenant):
    integration = make_integration(tenant=tenant, name="Main", workspace="acme")
    _violates(lambda: Integration.objects.filter(pk=integration.pk).update(auth_method="app_password"))
    _violates(lambda: Integration.objects.filter(pk=integration.pk).update(status="sleeping"))
    from datetime import timedelta

    _violates(lambda: Integration.objects.filter(pk=integration.pk).update(scan_interval=timedelta(minutes=5)))
    # Name and scope are unique per tenant, except for integrations being deleted.
    clone = Integration(
        tenant=tenant,
        name="Main",
        workspace="other",
        auth_method="access_token",
        bitbucket_url="https://bitbucket.org/other",
    )
    _violates(clone.save)
    Integration.objects.filter(pk=integration.pk).update(status=IntegrationStatus.DELETING)
    clone.pk = None
    clone.save()


def test_only_one_active_scan_per_integration(tenant):
    integration = make_integration(tenant=tenant)
    ScanRun.objects.create(integration=integration, trigger="manual", status="running")
    _violates(lambda: ScanRun.objects.create(integration=integration, trigger="manual", status="queued"))
    ScanRun.objects.create(integration=integration, trigger="manual", status="succeeded")
