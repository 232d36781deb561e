from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError

from integrations import services
from integrations.models import AuditEvent, Integration, Namespace
from tests.factories import NamespaceFactory, ProjectFactory, TenantFactory, UserFactory, make_integration

TOKEN = "ATCTT3xVerySecretValue0001"


@pytest.fixture
def actor(db):
    return UserFactory(username="alice")


def test_create_makes_a_managed_root_under_the_chosen_parent(tenant, actor):
    parent = NamespaceFactory(tenant=tenant)
    integration = services.integration_create(
        tenant=tenant,
        parent=parent,
        name="Acme",
        bitbucket_url="https://bitbucket.org/acme",
        auth_method="access_token",
        credentials={"token": TOKEN},
        actor=actor,
        scanners=["posture"],
        labels=["prod", "prod", " team-a "],
        verify=False,
    )
    root = integration.root_namespace
    assert root.parent == parent
    assert root.managed
    assert root.integration == integration
    assert root.slug == "acme"
    assert root.tenant == tenant
    assert integration.workspace == "acme"
    assert integration.scope == "workspace"
    assert integration.labels == ["prod", "team-a"]
    assert integration.scan_interval == timedelta(hours=24)
    assert integration.created_by == actor
    event = AuditEvent.objects.get(action="integration.create")
    assert event.actor == actor
    assert event.tenant == tenant
    assert TOKEN not in str(event.details)


def test_several_integrations_share_a_parent_with_their_own_roots(tenant):
    parent = NamespaceFactory(tenant=tenant)
    a = make_integration(tenant=tenant, parent=parent, workspace="acme", project_key="WEB")
    b = make_integration(tenant=tenant, parent=parent, workspace="acme", project_key="CORE")
    assert a.root_namespace != b.root_namespace
    assert {a.root_namespace.slug, b.root_namespace.slug} == {"acme", "acme-2"}
    assert b.scope == "project"
    assert b.bitbucket_url.endswith("/acme/workspace/projects/CORE")


def test_create_reports_every_bad_field_and_saves_nothing(tenant):
    managed_parent = make_integration(tenant=tenant).root_namespace
    with pytest.raises(ValidationError) as e:
        services.integration_create(
            tenant=tenant,
            parent=managed_parent,
            name=" ",
            bitbucket_url="https://github.com/acme",
            auth_method="api_token",
            credentials={"email": "nope", "token": ""},
            actor=None,
            scanners=["nonsense"],
            scan_interval=timedelta(minutes=1),
            verify=False,
        )
    assert set(e.value.message_dict) >= {
        "name",
        "parent",
        "bitbucket_url",
        "email",
        "token",
        "scanners",
        "scan_interval",
    }
    assert Integration.objects.count() == 1


def test_same_workspace_twice_in_a_tenant_is_refused(tenant):
    make_integration(tenant=tenant, workspace="acme", name="Acme")
    with pytest.raises(ValidationError) as e:
        make_integration(tenant=tenant, workspace="ACME")
    message = e.value.message_dict["bitbucket_url"][0]
    assert "Workspace acme is already connected as integration 'Acme'" in message
    assert "Edit 'Acme'" in message


def test_overlapping_scopes_are_refused_naming_the_integration_and_what_to_do(tenant):
    """A project inside a connected workspace, or a workspace around connected projects,
    would inventory the same repositories twice; other tenants and other projects may."""
    make_integration(tenant=tenant, workspace="acme", name="Acme all")
    with pytest.raises(ValidationError) as e:
        make_integration(tenant=tenant, workspace="acme", project_key="CORE")
    message = e.value.message_dict["bitbucket_url"][0]
    assert "Project CORE is already covered by integration 'Acme all'" in message
    assert "twice" in message
    assert "delete it" in message

    make_integration(tenant=tenant, workspace="beta", project_key="CORE", name="Beta core")
    make_integration(tenant=tenant, workspace="beta", project_key="WEB", name="Beta web")  # another project: fine
    with pytest.raises(ValidationError) as e:
        make_integration(tenant=tenant, workspace="beta")
    message = e.value.message_dict["bitbucket_url"][0]
    assert "Workspace beta already has projects connected: 'Beta core' (project CORE), 'Beta web' (project WEB)" in (
        message
    )
    assert "Delete those integrations first" in message
    with pytest.raises(ValidationError) as e:
        make_integration(tenant=tenant, workspace="beta", project_key="core")
    assert "already connected as integration 'Beta core'" in e.value.message_dict["bitbucket_url"][0]

    # Another tenant may connect the same workspace; an integration being deleted no longer counts.
    make_integration(workspace="acme")
    doomed = Integration.objects.get(name="Acme all")
    services.integration_delete_request(integration=doomed, actor=None)
    assert make_integration(tenant=tenant, workspace="acme", project_key="CORE").scope == "project"


def test_bitbucket_url_cannot_change(tenant, actor):
    integration = make_integration(tenant=tenant, workspace="acme")
    with pytest.raises(ValidationError) as e:
        services.integration_update(integration=integration, actor=actor, bitbucket_url="https://bitbucket.org/other")
    assert "delete this integration and create a new one" in e.value.message_dict["bitbucket_url"][0]
    with pytest.raises(ValidationError):
        services.integration_update(integration=integration, actor=actor, workspace="other")
    integration.refresh_from_db()
    assert integration.workspace == "acme"


def test_update_settings_records_what_changed(tenant, actor):
    integration = make_integration(tenant=tenant)
    services.integration_update(
        integration=integration,
        actor=actor,
        verify=False,  # the scopes a change needs: tests/integrations/test_verify_on_change.py
        scanners=["dependencies"],
        scan_interval=timedelta(hours=6),
        status="paused",
        pr_settings={"enabled": True, "deny_packages": [{"name": "lodash", "range": "<4.17.21"}]},
    )
    integration.refresh_from_db()
    assert integration.scanners == ["dependencies"]
    assert integration.status == "paused"
    assert integration.pr_settings["enabled"] is True
    assert integration.pr_settings["post_build_status"] is True
    event = AuditEvent.objects.filter(action="integration.update").get()
    assert event.details["changed"] == ["pr_settings", "scan_interval", "scanners", "status"]
    with pytest.raises(ValidationError):
        services.integration_update(integration=integration, actor=actor, status="deleting")
    with pytest.raises(ValidationError):
        services.integration_update(integration=integration, actor=actor, pr_settings={"surprise": 1})


def test_credentials_update_switches_method_and_never_logs_the_secret(tenant, actor):
    integration = make_integration(tenant=tenant)
    services.credentials_update(
        integration=integration,
        auth_method="api_token",
        actor=actor,
        credentials={"email": "ops@example.com", "token": "ATATT3xNEWSECRET99"},
        verify=False,  # verification of new credentials: tests/integrations/test_verify_on_change.py
    )
    loaded = Integration.objects.get(pk=integration.pk)
    assert loaded.auth_method == "api_token"
    assert loaded.credential_identity == "ops@example.com"
    assert "NEWSECRET" not in loaded.credentials.ciphertext
    for event in AuditEvent.objects.all():
        assert "NEWSECRET" not in str(event.details)


def test_webhook_secret_rotates(tenant, actor):
    integration = make_integration(tenant=tenant)
    before = Integration.objects.get(pk=integration.pk).webhook_secret.reveal()
    services.webhook_secret_rotate(integration=integration, actor=actor)
    after = Integration.objects.get(pk=integration.pk).webhook_secret.reveal()
    assert before != after
    assert len(after) >= 32


def test_audit_scrubs_secret_looking_keys(tenant):
    event = services.audit(
        actor=None,
        action="x",
        target=tenant,
        tenant=tenant,
        details={"token": "abc", "nested": {"client_secret": "def"}, "ok": 1},
    )
    assert event.details == {"token": "[redacted]", "nested": {"client_secret": "[redacted]"}, "ok": 1}
    assert event.actor_repr == "system"


# --- Managed namespaces ---------------------------------------------------------------


def test_managed_namespaces_cannot_be_renamed_deleted_or_added_to(tenant, actor):
    integration = make_integration(tenant=tenant, name="Acme BB")
    root = integration.root_namespace
    with pytest.raises(ValidationError, match="managed by integration 'Acme BB'"):
        services.namespace_update(namespace=root, actor=actor, name="Renamed")
    with pytest.raises(ValidationError, match="cannot be deleted"):
        services.namespace_delete(namespace=root, actor=actor)
    with pytest.raises(ValidationError, match="given new namespaces"):
        services.namespace_create(tenant=tenant, parent=root, name="Mine", actor=actor)
    with pytest.raises(ValidationError, match="given new projects"):
        services.project_create(namespace=root, name="repo", actor=actor)
    project = ProjectFactory(namespace=root, integration=integration)
    with pytest.raises(ValidationError, match="managed"):
        services.project_delete(project=project, actor=actor)


def test_superuser_may_add_by_hand_inside_a_managed_namespace(tenant, superuser):
    root = make_integration(tenant=tenant).root_namespace
    child = services.namespace_create(tenant=tenant, parent=root, name="Hand made", actor=superuser)
    assert child.managed is False
    assert child.parent == root


def test_unmanaged_namespaces_follow_the_rules(tenant, actor):
    top = services.namespace_create(tenant=tenant, name="Platform Team", actor=actor)
    assert top.slug == "platform-team"
    again = services.namespace_create(tenant=tenant, name="Platform team!", actor=actor)
    assert again.slug == "platform-team-2"
    with pytest.raises(ValidationError) as e:
        services.namespace_create(tenant=tenant, name="X", slug="Bad Slug", actor=actor)
    assert "slug" in e.value.message_dict
    services.namespace_update(namespace=again, actor=actor, name="Renamed", slug="renamed")
    child = services.namespace_create(tenant=tenant, parent=top, name="child", actor=actor)
    with pytest.raises(ValidationError, match="not empty"):
        services.namespace_delete(namespace=top, actor=actor)
    services.namespace_delete(namespace=child, actor=actor)
    services.namespace_delete(namespace=top, actor=actor)
    assert not Namespace.objects.filter(pk=top.pk).exists()


def test_parent_from_another_tenant_is_refused(tenant, actor):
    foreign = NamespaceFactory(tenant=TenantFactory())
    with pytest.raises(ValidationError) as e:
        services.namespace_create(tenant=tenant, parent=foreign, name="x", actor=actor)
    assert "another organisation" in e.value.message_dict["parent"][0]
    with pytest.raises(ValidationError) as e:
        make_integration(tenant=tenant, parent=foreign)
    assert "parent" in e.value.message_dict
