"""What an attacker tried, answered: sign-in lockout, API throttles, token guessing,
hashed tokens, open redirects, existence oracles, CSV formulas, cached secrets, the
rows of an integration being deleted, and bad input that used to give 500s."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from integrations.models import Integration, IntegrationStatus, Role
from integrations.services import api_token_create
from scanning.models import DependencyPackage
from tests.factories import ProjectFactory, ReferenceFactory, TenantFactory, UserFactory, make_integration, member


@pytest.fixture
def world(db):
    a, b = TenantFactory(slug="alpha"), TenantFactory(slug="beta")
    owner = member(a, Role.OWNER, username="owner-a")
    integration = make_integration(tenant=a, name="Alpha BB", workspace="demo")
    project = ProjectFactory(
        namespace=integration.root_namespace, integration=integration, name="api", full_name="demo/api"
    )
    reference = ReferenceFactory(project=project)
    other = make_integration(tenant=b, name="Beta BB", workspace="beta")
    other_project = ProjectFactory(namespace=other.root_namespace, integration=other)
    return {
        "a": a,
        "b": b,
        "owner": owner,
        "integration": integration,
        "project": project,
        "reference": reference,
        "other": other,
        "other_project": other_project,
    }


def api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user, actor=user)}")
    return client


# --- Sign-in and API throttling ------------------------------------------------------------------


def test_sign_in_locks_out_after_repeated_wrong_passwords_even_for_the_right_one(client, db, settings):
    settings.AXES_FAILURE_LIMIT = 5
    UserFactory(username="victim", password="the-right-password-42")
    url = reverse("login")
    answers = [client.post(url, {"username": "victim", "password": "wrong"}).status_code for _ in range(5)]
    assert answers == [200, 200, 200, 200, 429]  # the fifth failure locks the pair out
    locked = client.post(url, {"username": "victim", "password": "the-right-password-42"})
    assert locked.status_code == 429
    assert b"Sign-in paused" in locked.content
    assert "_auth_user_id" not in client.session
    # Someone else (another address) is not locked out by it.
    other = client.post(url, {"username": "victim", "password": "the-right-password-42"}, REMOTE_ADDR="10.0.0.8")
    assert other.status_code == 302


def test_the_admin_sign_in_is_locked_out_too(client, db, settings):
    settings.AXES_FAILURE_LIMIT = 3
    UserFactory(username="boss", password="right-password-1234", is_staff=True, is_superuser=True)
    for _ in range(3):
        client.post("/admin/login/", {"username": "boss", "password": "nope"})
    assert client.post("/admin/login/", {"username": "boss", "password": "right-password-1234"}).status_code == 429


def test_guessing_api_tokens_gets_429_before_any_token_is_checked(client, db, settings):
    settings.API_TOKEN_FAILURES_PER_MINUTE = 10
    answers = []
    for _ in range(30):
        guesser = APIClient()
        guesser.credentials(HTTP_AUTHORIZATION=f"Token bbp_{uuid.uuid4().hex}")
        answers.append(guesser.get("/api/v1/tenants/").status_code)
    assert answers[:10] == [401] * 10
    assert set(answers[10:]) == {429}
    body = guesser.get("/api/v1/tenants/").json()
    assert body["error"]["code"] == "throttled"


def test_api_users_are_throttled(world, settings):
    settings.API_THROTTLE_USER = "20/minute"
    client = api(world["owner"])
    answers = [client.get("/api/v1/projects/").status_code for _ in range(30)]
    assert answers[:20] == [200] * 20
    assert set(answers[20:]) == {429}
    settings.API_THROTTLE_ANON = "5/minute"
    anon = [APIClient().get("/api/v1/projects/").status_code for _ in range(8)]
    assert anon[:5] == [401] * 5
    assert set(anon[5:]) == {429}


def test_api_tokens_are_stored_hashed_and_odd_headers_are_refused_cleanly(world):
    from knox.models import AuthToken

    token = api_token_create(user=world["owner"], actor=world["owner"])
    (stored,) = AuthToken.objects.filter(user=world["owner"]).values_list("digest", "token_key")
    assert token not in stored
    assert hashlib.sha512(token.encode()).hexdigest() == stored[0]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token bbp_\xe9\xe8")  # not ASCII
    assert client.get("/api/v1/tenants/").status_code == 401


def test_plaintext_tokens_from_before_are_moved_to_hashes(transactional_db):
    """The migration that retires DRF's plaintext table keeps existing tokens working."""
    import importlib

    from django.db import connection
    from knox.models import AuthToken

    user = UserFactory(username="legacy")
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, user_id bigint, created timestamp)")
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, CURRENT_TIMESTAMP)", ["a" * 40, user.pk])
    migration = importlib.import_module("integrations.migrations.0004_api_tokens_hashed")
    from django.apps import apps

    with connection.schema_editor() as editor:
        migration.move_tokens(apps, editor)
    assert "authtoken_token" not in connection.introspection.table_names()
    assert AuthToken.objects.filter(user=user).count() == 1
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "a" * 40)
    assert client.get("/api/v1/tenants/").status_code == 200


# --- Small leaks ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["https://evil.example", "//evil.example", "/\\evil.example", "javascript:alert(1)", "https:/evil.example"],
)
def test_the_tenant_switch_never_redirects_off_site(client, world, target):
    client.force_login(world["owner"])
    response = client.post(reverse("portal:tenant_switch"), {"tenant": world["a"].pk, "next": target})
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:integrations")
    kept = client.post(reverse("portal:tenant_switch"), {"tenant": world["a"].pk, "next": "/projects/?page=2"})
    assert kept["Location"] == "/projects/?page=2"


@pytest.mark.parametrize("tenant", ["abc", "", "1e9", "9" * 40, "-1"])
def test_the_tenant_switch_answers_a_bad_tenant_id_with_400_or_404(client, world, tenant):
    client.force_login(world["owner"])
    assert client.post(reverse("portal:tenant_switch"), {"tenant": tenant}).status_code in (400, 404)


@pytest.mark.parametrize(
    "path, param, own",
    [
        ("/api/v1/references/", "project", "project"),
        ("/api/v1/scans/", "integration", "integration"),
        ("/api/v1/sync-logs/", "integration", "integration"),
        ("/api/v1/pull-requests/", "project", "project"),
        ("/api/v1/pull-request-scans/", "project", "project"),
        ("/api/v1/namespaces/", "parent", None),
    ],
)
def test_a_filter_by_another_tenants_id_answers_like_a_missing_one(world, path, param, own):
    client = api(world["owner"])
    foreign = world["other_project"].pk if param == "project" else world["other"].pk
    if param == "parent":
        foreign = world["other"].root_namespace_id
    theirs = client.get(path, {param: foreign})
    missing = client.get(path, {param: 10**12})
    assert theirs.status_code == missing.status_code == 200
    assert theirs.json()["count"] == missing.json()["count"] == 0
    assert client.get(path, {param: "abc"}).status_code == 400
    assert client.get(path, {param: 10**30}).status_code == 400


def test_csv_cells_that_look_like_formulas_are_neutralised(client, world):
    DependencyPackage.objects.create(
        reference=world["reference"],
        ecosystem="npm",
        name='=HYPERLINK("http://x")',
        version="@SUM(1)",
        manifest_path="+cmd|package.json",
    )
    client.force_login(world["owner"])
    response = client.get(reverse("portal:packages"), {"name": '=HYPERLINK("http://x")', "format": "csv"})
    body = b"".join(response.streaming_content).decode()
    assert "'=HYPERLINK" in body
    assert "'@SUM(1)" in body
    assert "'+cmd|package.json" in body
    assert ",=HYPERLINK" not in body
    assert '"=HYPERLINK' not in body


def test_pages_and_api_answers_for_signed_in_users_are_never_cached(client, world):
    client.force_login(world["owner"])
    edit = client.get(reverse("portal:bitbucket_edit", args=[world["integration"].pk]))
    assert edit.status_code == 200
    assert "no-store" in edit["Cache-Control"]
    assert "no-store" in api(world["owner"]).get("/api/v1/integrations/")["Cache-Control"]


def test_rows_of_an_integration_being_deleted_leave_the_api_at_once(world):
    client = api(world["owner"])
    assert client.get("/api/v1/projects/").json()["count"] == 1
    Integration.objects.filter(pk=world["integration"].pk).update(status=IntegrationStatus.DELETING)
    for path in ("/api/v1/projects/", "/api/v1/references/", "/api/v1/scans/", "/api/v1/sync-logs/?days=0"):
        assert client.get(path).json()["count"] == 0, path
    namespaces = {n["id"] for n in client.get("/api/v1/namespaces/").json()["results"]}
    assert world["integration"].root_namespace_id not in namespaces
    assert world["integration"].root_namespace.parent_id in namespaces  # the tenant's own parent stays
    assert client.get(f"/api/v1/projects/{world['project'].pk}/").status_code == 404


# --- Bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["/sync-logs/?days=1000000000", "/sync-logs/?days=" + "9" * 5000, "/sync-logs/?days=%C2%B2"]
)
def test_sync_log_page_days_out_of_range_is_400(client, world, url):
    client.force_login(world["owner"])
    assert client.get(url).status_code == 400


@pytest.mark.parametrize("query", ["days=1000000000", "days=-5", "days=abc"])
def test_sync_log_api_days_out_of_range_is_400(world, query):
    response = api(world["owner"]).get(f"/api/v1/sync-logs/?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


@pytest.mark.parametrize(
    "url",
    [
        "/projects/?search=a%00b",
        "/packages/?name=lo%00dash",
        "/packages/?name=x%00&format=csv",
        "/sync-logs/?category=%00",
    ],
)
def test_nul_in_a_page_query_is_400(client, world, url):
    client.force_login(world["owner"])
    assert client.get(url).status_code == 400


@pytest.mark.parametrize(
    "url", ["/api/v1/projects/?search=a%00b", "/api/v1/packages/?name=a%00", "/api/v1/integrations/?tenant=%00"]
)
def test_nul_in_an_api_query_is_400(world, url):
    assert api(world["owner"]).get(url).status_code == 400


def test_nul_in_a_form_field_is_400(client, world):
    client.force_login(world["owner"])
    response = client.post(reverse("portal:namespaces"), {"name": "bad\x00name", "slug": "bad"})
    assert response.status_code == 400


def test_deep_json_and_nul_in_json_are_400(world):
    client = api(world["owner"])
    deep = client.generic("POST", "/api/v1/namespaces/", "[" * 100_000, content_type="application/json")
    assert deep.status_code == 400
    nul = client.post("/api/v1/namespaces/", {"tenant": world["a"].pk, "name": "x\x00y"}, format="json")
    assert nul.status_code == 400


@pytest.mark.parametrize("token", ["ATCTT3x€uro-token-42", "ATCTT3x-token-\u4e2d\u6587-42", "ATCTT3x\x07bell-token"])
def test_tokens_with_characters_bitbucket_never_uses_are_refused_clearly(world, token):
    response = api(world["owner"]).post(
        "/api/v1/integrations/",
        {
            "tenant": "alpha",
            "name": "Odd",
            "bitbucket_url": "https://bitbucket.org/odd",
            "parent": world["integration"].root_namespace.parent_id,
            "auth_method": "access_token",
            "token": token,
        },
        format="json",
    )
    assert response.status_code == 400
    assert "token" in response.json()["error"]["fields"]


def test_app_passwords_through_the_api_get_the_guidance(world):
    response = api(world["owner"]).post(
        "/api/v1/integrations/",
        {
            "tenant": "alpha",
            "name": "Old",
            "bitbucket_url": "https://bitbucket.org/old",
            "auth_method": "app_password",
            "token": "ATBBsomething123",
        },
        format="json",
    )
    assert response.status_code == 400
    assert "removed on 2026-07-28" in response.json()["error"]["fields"]["auth_method"][0]


def test_a_nul_byte_in_a_signed_webhook_body_is_400(client, world):
    integration = Integration.objects.get(pk=world["integration"].pk)

    def deliver(raw: bytes):
        signature = "sha256=" + hmac.new(integration.webhook_secret.reveal().encode(), raw, hashlib.sha256).hexdigest()
        return client.post(
            f"/webhooks/bitbucket/{integration.uuid}/",
            raw,
            content_type="application/json",
            HTTP_X_EVENT_KEY="repo:push",
            HTTP_X_REQUEST_UUID=str(uuid.uuid4()),
            HTTP_X_HUB_SIGNATURE=signature,
        )

    response = deliver(b'{"repository": {"uuid": "{x}"}, "x": "a\x00b"}')
    assert response.status_code == 400
    assert b"NUL" in response.content
    # An escaped \u0000 inside a string is valid JSON: accepted, then rejected when processed
    # (no column can hold it), never a crash.
    from scanning.models import WebhookDelivery
    from scanning.webhooks import delivery_process

    raw = json.dumps({"repository": {"uuid": "{x}"}, "push": {"changes": [{"new": {"name": "a\x00b"}}]}}).encode()
    accepted = deliver(raw)
    assert accepted.status_code == 202
    delivery_process(delivery_id=accepted.json()["delivery"])
    assert WebhookDelivery.objects.get(pk=accepted.json()["delivery"]).state == "rejected"


@pytest.mark.parametrize(
    "path",
    ["/projects/99999999999999999999999/", "/scans/99999999999999999999/", "/api/v1/projects/99999999999999999999999/"],
)
def test_huge_ids_in_paths_are_not_500(client, world, path):
    client.force_login(world["owner"])
    assert client.get(path).status_code in (400, 404)
