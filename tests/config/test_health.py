"""/healthz and /readyz: unauthenticated, minimal, and red when a part is down."""

from __future__ import annotations

from unittest import mock

from django.db import DatabaseError

from scanning.health import cluster_heartbeat


def test_liveness_needs_nothing(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readiness_reports_each_part_and_nothing_else(client, db, settings):
    settings.REDIS_URL = ""
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "database": "ok", "broker": "ok", "task_cluster": "never seen"}
    cluster_heartbeat()  # the dispatcher ran
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["task_cluster"] == "ok"
    assert "no-store" in ready["Cache-Control"]


def test_readiness_is_red_when_the_broker_or_the_database_is_down(client, db, settings):
    cluster_heartbeat()
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    broker_down = client.get("/readyz")
    assert broker_down.status_code == 503
    assert broker_down.json()["broker"] == "down"
    settings.REDIS_URL = ""
    with mock.patch("scanning.health.connection.cursor", side_effect=DatabaseError("gone")):
        db_down = client.get("/readyz")
    assert db_down.status_code == 503
    assert db_down.json()["database"] == "down"
