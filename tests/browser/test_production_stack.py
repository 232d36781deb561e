"""The production stack in a real browser: gunicorn with ``DEBUG=false``, static files
collected and served by whitenoise. Every page and the admin are styled (their CSS answers
200 and applies), Swagger UI loads without a CDN, and no static request fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.browser.test_flow import ARTIFACTS, CHROMIUM, launch, playwright_api  # noqa: F401 - skips as that module does

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.browser, pytest.mark.slow]
PASSWORD = "production-stack-password-42"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def production_server(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "false",
        "SECRET_KEY": "production-stack-test-secret-key-0123456789",
        "FIELD_ENCRYPTION_KEYS": "paguwMV_2smqTOIgj2MQcCPjPsh1yCKGA1Uj-OYCbOE=",
        "DATA_DIR": str(tmp_path),
        "STATIC_ROOT": str(tmp_path / "static"),
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECURE_HSTS_SECONDS": "0",
        "PORTAL_DEV_TOOLS": "false",
        "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
    }
    env.pop("DATABASE_URL")

    def manage(*args):
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True)

    manage("migrate", "--no-input", "-v", "0")
    manage("collectstatic", "--no-input", "-v", "0")
    manage("createsuperuser", "--no-input", "--username", "boss", "--email", "boss@example.com")
    manage("init_portal")  # the demo organisation: staff see every tenant
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "1",
            "--threads",
            "2",
            "--worker-class",
            "gthread",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"{base}/healthz", timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.3)
    yield base
    server.terminate()
    server.wait(10)


def test_pages_and_the_admin_are_styled_under_debug_false(production_server, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20000)
        page.on(
            "response",
            lambda r: failed.append(f"{r.status} {r.url}") if "/static/" in r.url and r.status >= 400 else None,
        )
        # A request the next navigation aborted (a favicon still loading) is not a missing
        # file: those answer 404 above.
        page.on(
            "requestfailed",
            lambda r: None if "ERR_ABORTED" in (r.failure or "") else failed.append(f"failed {r.url}: {r.failure}"),
        )
        page.goto(f"{production_server}/accounts/login/")
        # portal.css sets the page background (var(--bg) = #f5f6f8); unstyled it is white.
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(245, 246, 248)"
        page.fill("input[name=username]", "boss")
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.click("button[type=submit]")
        for path in ("/integrations/", "/projects/", "/namespaces/", "/sync-logs/", "/account/"):
            page.goto(f"{production_server}{path}")
            display = page.evaluate(
                "(() => { const bar = document.querySelector('.topbar');"
                " return bar ? getComputedStyle(bar).display : 'no top bar on ' + location.pathname + ': '"
                " + document.title + ' ' + document.body.innerText.slice(0, 200) })()"
            )
            assert display == "flex", path
        page.screenshot(path=str(ARTIFACTS / "production-integrations.png"))
        page.goto(f"{production_server}/admin/")
        # The admin's own CSS: its header is not the default transparent block.
        assert page.evaluate("getComputedStyle(document.querySelector('#header')).backgroundColor") not in (
            "rgba(0, 0, 0, 0)",
            "transparent",
        )
        page.screenshot(path=str(ARTIFACTS / "production-admin.png"))
        page.goto(f"{production_server}/api/docs/")
        page.wait_for_selector(".swagger-ui", state="attached")
        browser.close()
    assert failed == [], f"static files that did not load: {failed}"
