"""Factories shared by the test suite. Objects are built through the services
where a service owns the invariants (integrations, namespaces)."""

from __future__ import annotations

import itertools

import factory
from django.contrib.auth import get_user_model

from integrations import services
from integrations.models import Namespace, Project, Reference, Role, Tenant

_counter = itertools.count(1)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("pw")


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class NamespaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Namespace

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"Namespace {n}")
    slug = factory.Sequence(lambda n: f"ns-{n}")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    namespace = factory.SubFactory(NamespaceFactory)
    name = factory.Sequence(lambda n: f"repo-{n}")
    slug = factory.LazyAttribute(lambda o: o.name)
    full_name = factory.LazyAttribute(lambda o: f"acme/{o.name}")
    remote_uuid = factory.Sequence(lambda n: f"{{00000000-0000-0000-0000-{n:012d}}}")


class ReferenceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Reference

    project = factory.SubFactory(ProjectFactory)
    name = "main"
    is_default = True
    head_commit = factory.Sequence(lambda n: f"{n:040x}")


def make_integration(
    *,
    tenant: Tenant | None = None,
    parent: Namespace | None = None,
    actor=None,
    name: str | None = None,
    workspace: str | None = None,
    project_key: str = "",
    auth_method: str = "access_token",
    credentials: dict | None = None,
    **kwargs,
):
    n = next(_counter)
    tenant = tenant or TenantFactory()
    parent = parent or NamespaceFactory(tenant=tenant)
    return services.integration_create(
        tenant=tenant,
        parent=parent,
        name=name or f"Integration {n}",
        workspace=workspace or f"ws-{n}",
        project_key=project_key,
        auth_method=auth_method,
        credentials=credentials or {"token": f"ATCTT3xTestToken{n:08d}"},
        actor=actor,
        verify=kwargs.pop("verify", False),
        **kwargs,
    )


def member(tenant: Tenant, role: str = Role.MEMBER, **kwargs):
    user = UserFactory(**kwargs)
    services.membership_set(tenant=tenant, user=user, role=role, actor=None)
    return user
