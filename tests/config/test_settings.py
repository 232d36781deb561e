import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from config.checks import check_encryption_keys, check_task_queue

ROOT = Path(__file__).resolve().parents[2]
SAFE = {"name": "x", "timeout": 60, "retry": 90, "max_attempts": 3, "catch_up": False, "ack_failures": True}


def ids(errors):
    return sorted(e.id for e in errors)


def test_the_configured_queue_passes(settings):
    assert check_task_queue() == []
    conf = settings.Q_CLUSTER
    assert conf["timeout"] < conf["retry"]
    assert conf["max_attempts"] > 0
    assert conf["catch_up"] is False
    assert conf["ack_failures"] is True


@pytest.mark.parametrize(
    "override,error_id",
    [
        ({"timeout": None}, "portal.E001"),
        ({"retry": 60}, "portal.E002"),
        ({"retry": 30}, "portal.E002"),
        ({"max_attempts": 0}, "portal.E003"),
        ({"catch_up": True}, "portal.E004"),
        ({"ack_failures": False}, "portal.E005"),
    ],
)
def test_each_unsafe_queue_setting_is_an_error(settings, override, error_id):
    settings.Q_CLUSTER = {**SAFE, **override}
    assert error_id in ids(check_task_queue())


def test_django_q_defaults_fail_the_check(settings):
    settings.Q_CLUSTER = {"name": "defaults"}
    assert ids(check_task_queue()) == ["portal.E001", "portal.E002", "portal.E003", "portal.E004", "portal.E005"]


def test_missing_encryption_keys_is_an_error(settings):
    settings.FIELD_ENCRYPTION_KEYS = []
    assert ids(check_encryption_keys()) == ["portal.E010"]


def _manage(*args, **env):
    leaky = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")
    base = {k: v for k, v in os.environ.items() if k not in leaky}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        timeout=120,
    )


def test_production_settings_pass_check_deploy(tmp_path):
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="portal.example.com",
        FIELD_ENCRYPTION_KEYS=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        DATA_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_start_up_fails_on_an_unsafe_queue(tmp_path):
    result = _manage(
        "check",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        DATA_DIR=str(tmp_path),
        FIELD_ENCRYPTION_KEYS=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        Q_RETRY="10",
        Q_TIMEOUT="60",
    )
    assert result.returncode != 0
    assert "portal.E002" in result.stderr


def test_without_secret_key_start_up_explains_what_to_do(tmp_path):
    result = _manage("check", SECRET_KEY="", DATA_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_database_and_queue_urls_switch_backends(tmp_path):
    code = (
        "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE']); "
        "print(s.Q_CLUSTER.get('redis', 'orm'))"
    )
    result = _manage(
        "shell",
        "-c",
        code,
        SECRET_KEY="k" * 50,
        DATA_DIR=str(tmp_path),
        DATABASE_URL="postgres://u@127.0.0.1:5432/db",
        REDIS_URL="redis://127.0.0.1:6379/1",
    )
    assert result.stdout.split()[-2:] == ["django.db.backends.postgresql", "redis://127.0.0.1:6379/1"], result.stderr
    result = _manage("shell", "-c", code, SECRET_KEY="k" * 50, DATA_DIR=str(tmp_path))
    assert result.stdout.split()[-2:] == ["django.db.backends.sqlite3", "orm"], result.stderr


@pytest.mark.parametrize(
    "env,installed",
    [
        ({"DEBUG": "false"}, False),
        ({"DEBUG": "true"}, True),
        ({"DEBUG": "false", "PORTAL_DEV_TOOLS": "true"}, True),
        ({"DEBUG": "true", "PORTAL_DEV_TOOLS": "false"}, False),
    ],
)
def test_development_tools_come_with_debug_or_on_request(tmp_path, env, installed):
    """The sandbox and benchmark commands (the ``devtools`` app) are not in a production install."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE", "PORTAL_DEV_TOOLS")
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "help", "--commands"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **keep,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": "k" * 50,
            "DATA_DIR": str(tmp_path),
            "FIELD_ENCRYPTION_KEYS": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            **env,
        },
    )
    assert result.returncode == 0, result.stderr
    commands = set(result.stdout.split())
    tools = {"bitbucket_sandbox", "sandbox_demo", "bench_sandbox", "bench_sync", "bench_webhooks"}
    assert "rescan_org" in commands
    assert tools & commands == (tools if installed else set())
