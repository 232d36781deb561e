"""The client under attack and on a bad network: OAuth tokens never shared across
credentials, transport failures classified by their cause, retries counted, nothing
of a query string or a secret in what is stored."""

from __future__ import annotations

import socket
import threading

import pytest
import responses

from integrations.bitbucket import client as bb
from integrations.bitbucket.client import BitbucketClient
from integrations.bitbucket.credentials import Credentials
from synclogs.classify import classify
from synclogs.models import Category
from tests.integrations.test_client import API, WEB, quick  # noqa: F401 - the client tests' settings, autouse

# Every client counts its requests in the shared request budget, kept in the database here.
pytestmark = pytest.mark.django_db


def _token_endpoint(request):
    """Bitbucket's token endpoint: one consumer, one secret."""
    import base64

    header = request.headers.get("Authorization", "")
    user, _, password = base64.b64decode(header.split(" ", 1)[1]).decode().partition(":")
    if (user, password) == ("shared-key", "tenant-a-secret"):
        return 200, {}, '{"access_token": "token-of-a", "expires_in": 7200}'
    return 400, {}, '{"error": "invalid_client", "error_description": "Invalid client secret"}'


@responses.activate
def test_a_wrong_secret_for_a_known_consumer_key_never_gets_the_cached_token():
    responses.add_callback(responses.POST, f"{WEB}/site/oauth2/access_token", callback=_token_endpoint)
    responses.get(f"{API}/user", json={})
    # Tenant A's integration (id 1) fetches and caches its token.
    a = BitbucketClient(Credentials("oauth", "shared-key", "tenant-a-secret"), token_cache_scope=1)
    a.get("user")
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer token-of-a"
    # Tenant B types A's (public) key with a wrong secret: as an integration's client...
    b = BitbucketClient(Credentials("oauth", "shared-key", "wrong-secret-of-b"), token_cache_scope=2)
    with pytest.raises(bb.Unauthorized):
        b.get("user")
    # ...and with the same integration id but another secret.
    with pytest.raises(bb.Unauthorized):
        BitbucketClient(Credentials("oauth", "shared-key", "wrong-secret-of-b"), token_cache_scope=1).get("user")
    assert not any(
        c.request.headers.get("Authorization") == "Bearer token-of-a"
        for c in responses.calls[3:]
        if c.request.url.startswith(API)
    )


@responses.activate
def test_verification_never_trusts_a_cached_token():
    from integrations.bitbucket.urls import parse_target
    from integrations.bitbucket.verify import verify_connection

    responses.add_callback(responses.POST, f"{WEB}/site/oauth2/access_token", callback=_token_endpoint)
    responses.get(f"{API}/user", json={})
    BitbucketClient(Credentials("oauth", "shared-key", "tenant-a-secret")).get("user")  # cached, no scope
    token_calls = len([c for c in responses.calls if "access_token" in c.request.url])
    report = verify_connection(
        target=parse_target(workspace="acme"), credentials=Credentials("oauth", "shared-key", "tenant-a-secret")
    )
    # The right secret still asks Bitbucket (one token for the whole run), and verification
    # itself leaves nothing in the shared cache.
    assert len([c for c in responses.calls if "access_token" in c.request.url]) == token_calls + 1
    assert report.checks  # it went on to check the workspace with that fresh token
    bad = verify_connection(
        target=parse_target(workspace="acme"), credentials=Credentials("oauth", "shared-key", "not-the-secret")
    )
    assert not bad.ok
    assert bad.checks[0].error is not None
    assert isinstance(bad.checks[0].error, bb.Unauthorized)


@responses.activate
def test_every_request_that_reached_bitbucket_is_counted_retries_included():
    responses.get(f"{API}/x", status=503, json={"type": "error", "error": {"message": "down"}})
    client = BitbucketClient(Credentials("access_token", "", "ATCTT3xToken123"))
    with pytest.raises(bb.ServerError):
        client.get("x")
    assert len(responses.calls) == 4
    assert client.stats.rest == 4


def _server(behaviour: str) -> tuple[str, threading.Event]:
    """A loopback server that accepts and then drops the connection, or never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        held = []
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.recv(65536)
            if behaviour == "drop":
                conn.close()
            else:
                held.append(conn)  # silent until the client gives up
        for conn in held:
            conn.close()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", stop


@pytest.mark.parametrize("behaviour, error_type", [("drop", bb.ConnectionDropped), ("silent", bb.Timeout)])
def test_timeouts_and_dropped_connections_are_unavailable_not_invalid_host(settings, behaviour, error_type):
    url, stop = _server(behaviour)
    settings.BITBUCKET_RETRIES = 1
    try:
        client = BitbucketClient(
            Credentials("access_token", "", "ATCTT3xToken123"), api_url=f"{url}/2.0", web_url=url, timeout=(1, 0.3)
        )
        with pytest.raises(error_type) as excinfo:
            client.get("repositories/acme", pagelen=100, fields="values.slug")
    finally:
        stop.set()
    classified = classify(excinfo.value, auth_method="access_token")
    assert classified.category == Category.UNAVAILABLE
    assert "DNS" not in classified.hint
    stored = " ".join([classified.message, classified.remote_message, classified.path])
    assert "pagelen" not in stored
    assert "?" not in stored


def test_a_refused_connection_is_still_an_invalid_host(settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    settings.BITBUCKET_RETRIES = 0
    client = BitbucketClient(Credentials("access_token", "", "ATCTT3xToken123"), api_url=f"http://127.0.0.1:{port}/2.0")
    with pytest.raises(bb.HostUnreachable) as excinfo:
        client.get("repositories/acme", pagelen=100)
    classified = classify(excinfo.value)
    assert classified.category == Category.INVALID_HOST
    assert "pagelen" not in classified.remote_message


def test_a_404_is_not_found_not_an_invalid_host():
    exc = bb.NotFound("Bitbucket answered 404", status=404, method="GET", path="/2.0/repositories/a/b/refs/branches/x")
    assert classify(exc).category == Category.NOT_FOUND


@responses.activate
def test_non_ascii_identities_are_sent_as_utf8():
    responses.get(f"{API}/user", json={})
    BitbucketClient(Credentials("api_token", "zoë@example.com", "ATATT3xToken")).get("user")
    import base64

    header = responses.calls[-1].request.headers["Authorization"]
    assert base64.b64decode(header.split()[1]) == "zoë@example.com:ATATT3xToken".encode()
