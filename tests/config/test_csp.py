"""A strict Content-Security-Policy on every answer, and nothing inline left for it to
refuse: no inline script, style attribute or event handler in any page or admin page."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from integrations.models import Integration, Role
from tests.factories import member
from tests.helpers import connect, scan

pytestmark = pytest.mark.django_db

INLINE = (
    re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I),
    re.compile(r"<style[\s>]", re.I),
    re.compile(r"\sstyle=\"", re.I),
    re.compile(r"\son[a-z]+=\"", re.I),
)


def _assert_strict(response, where: str) -> None:
    policy = response.headers.get("Content-Security-Policy", "")
    assert "script-src 'self'" in policy, where
    assert "style-src 'self'" in policy, where
    assert "unsafe-inline" not in policy, where
    body = response.content.decode()
    for pattern in INLINE:
        found = pattern.search(body)
        assert found is None, f"{where}: {found and body[max(0, found.start() - 80) : found.end() + 80]}"


def test_every_page_is_strict_and_has_nothing_inline(client, admin_client, bitbucket):
    integration = connect(scanners=["dependencies", "posture"])
    run = scan(integration)
    owner = member(integration.tenant, Role.OWNER, username="csp-owner")
    client.force_login(owner)
    project = integration.projects.first()
    pages = [
        reverse("portal:home"),
        reverse("portal:integrations"),
        reverse("portal:bitbucket_manage"),
        reverse("portal:bitbucket_add"),
        reverse("portal:integration_detail", args=[integration.pk]),
        reverse("portal:bitbucket_edit", args=[integration.pk]),
        reverse("portal:bitbucket_credentials", args=[integration.pk]),
        reverse("portal:bitbucket_delete", args=[integration.pk]),
        reverse("portal:sync_log", args=[integration.pk]),
        reverse("portal:sync_logs"),
        reverse("portal:scan_detail", args=[run.pk]),
        reverse("portal:namespaces"),
        reverse("portal:projects"),
        reverse("portal:project_detail", args=[project.pk]),
        reverse("portal:project_import"),
        reverse("portal:packages") + "?name=lodash",
        reverse("portal:posture"),
        reverse("portal:pull_request_scans"),
        reverse("portal:account"),
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        _assert_strict(response, url)
    for url in (
        reverse("admin:index"),
        reverse("admin:integrations_integration_changelist"),
        reverse("admin:integrations_integration_change", args=[integration.pk]),
        reverse("admin:integrations_integration_add"),
        "/api/docs/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        _assert_strict(response, url)
    client.logout()
    for url in ("/accounts/login/", reverse("admin:login")):
        response = client.get(url)
        assert response.status_code == 200, url
        _assert_strict(response, url)


def test_rotating_the_webhook_secret_in_the_admin_needs_a_confirmation(admin_client, bitbucket):
    integration = connect()
    before = Integration.objects.get(pk=integration.pk).webhook_secret.reveal()
    url = reverse("admin:integrations_integration_rotate_secret", args=[integration.pk])
    admin_client.post(url)
    assert Integration.objects.get(pk=integration.pk).webhook_secret.reveal() == before
    admin_client.post(url, {"confirm": "1"})
    assert Integration.objects.get(pk=integration.pk).webhook_secret.reveal() != before
