"""Unit tests of the one Bitbucket client, with ``responses``."""

from __future__ import annotations

import base64
import time

import pytest
import requests
import responses

from integrations.bitbucket import client as bb
from integrations.bitbucket.client import BitbucketClient, parse_ref_advertisement
from integrations.bitbucket.credentials import Credentials

# Every client counts its requests in the shared request budget, kept in the database here.
pytestmark = pytest.mark.django_db

API = "https://api.bitbucket.org/2.0"
WEB = "https://bitbucket.org"
SECRET = "ATCTT3xTopSecretToken42"


@pytest.fixture(autouse=True)
def quick(settings):
    settings.BITBUCKET_API_URL, settings.BITBUCKET_WEB_URL = API, WEB
    settings.BITBUCKET_RETRIES, settings.BITBUCKET_BACKOFF_FACTOR, settings.BITBUCKET_BACKOFF_MAX = 3, 0.01, 0.02
    settings.BITBUCKET_MAX_RETRY_AFTER = 2
    bb.oauth_tokens._tokens.clear()


def access(secret=SECRET):
    return BitbucketClient(Credentials("access_token", "", secret))


def error(message, detail=None):
    body = {"type": "error", "error": {"message": message}}
    if detail is not None:
        body["error"]["detail"] = detail
    return body


@responses.activate
def test_auth_headers_for_each_method():
    responses.get(f"{API}/user", json={"ok": True})
    access().get("user")
    assert responses.calls[-1].request.headers["Authorization"] == f"Bearer {SECRET}"
    BitbucketClient(Credentials("api_token", "dev@example.com", "ATATT3xToken")).get("user")
    expected = base64.b64encode(b"dev@example.com:ATATT3xToken").decode()
    assert responses.calls[-1].request.headers["Authorization"] == f"Basic {expected}"


@responses.activate
def test_oauth_token_is_fetched_cached_and_refreshed_before_expiry():
    responses.post(f"{WEB}/site/oauth2/access_token", json={"access_token": "tok-1", "expires_in": 7200})
    responses.get(f"{API}/user", json={})
    client = BitbucketClient(Credentials("oauth", "consumer-key", "consumer-secret"))
    client.get("user")
    client.get("user")
    token_calls = [c for c in responses.calls if c.request.url.endswith("access_token")]
    assert len(token_calls) == 1
    assert "grant_type=client_credentials" in token_calls[0].request.body
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer tok-1"
    # A token about to expire is replaced before use.
    bb.oauth_tokens.put(client._token_key, "tok-old", 0.01)
    client._private_token = None
    time.sleep(0.02)
    responses.replace(
        responses.POST, f"{WEB}/site/oauth2/access_token", json={"access_token": "tok-2", "expires_in": 7200}
    )
    client.get("user")
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer tok-2"


@responses.activate
def test_oauth_rejected_consumer_is_unauthorized():
    responses.post(
        f"{WEB}/site/oauth2/access_token",
        status=400,
        json={"error": "invalid_client", "error_description": "Bad secret"},
    )
    with pytest.raises(bb.Unauthorized) as excinfo:
        BitbucketClient(Credentials("oauth", "k", "consumer-secret-value")).get("user")
    assert excinfo.value.remote_message == "Bad secret"
    assert "consumer-secret-value" not in str(excinfo.value)


@responses.activate
def test_pagination_follows_next_verbatim_and_asks_for_what_it_needs():
    responses.get(
        f"{API}/repositories/acme",
        json={"values": [{"slug": "a"}], "next": "https://elsewhere.example/opaque?cursor=xyz"},
    )
    responses.get("https://elsewhere.example/opaque", json={"values": [{"slug": "b"}]})
    slugs = [v["slug"] for v in access().iterate("repositories/acme", fields="values.slug", q='project.key="P"')]
    assert slugs == ["a", "b"]
    first, second = responses.calls[0].request, responses.calls[1].request
    assert "pagelen=100" in first.url
    assert "fields=next%2Csize%2Cvalues.slug" in first.url
    assert "q=project.key" in first.url
    assert second.url == "https://elsewhere.example/opaque?cursor=xyz"


@responses.activate
@pytest.mark.parametrize(
    "status,body,exc_type",
    [
        (401, error("Token is invalid"), bb.Unauthorized),
        (401, error("App passwords are no longer supported"), bb.AppPasswordRejected),
        (404, error("Repository not found"), bb.NotFound),
        (400, error("Bad request"), bb.UnexpectedResponse),
    ],
)
def test_statuses_become_typed_errors_and_are_not_retried(status, body, exc_type):
    responses.get(f"{API}/repositories/acme/r", status=status, json=body)
    with pytest.raises(exc_type) as excinfo:
        access().get("repositories/acme/r")
    assert len(responses.calls) == 1
    err = excinfo.value
    assert (err.status, err.method, err.path) == (status, "GET", "/2.0/repositories/acme/r")
    assert err.remote_message == body["error"]["message"]
    assert SECRET not in str(err)
    assert SECRET not in repr(err.__dict__)


@responses.activate
def test_forbidden_names_the_missing_scopes():
    responses.get(
        f"{API}/repositories/acme/r/branch-restrictions",
        status=403,
        json=error(
            "Your credentials lack one or more required privilege scopes.",
            {"required": ["repository:admin"], "granted": ["repository", "account"]},
        ),
    )
    with pytest.raises(bb.Forbidden) as excinfo:
        access().get("repositories/acme/r/branch-restrictions")
    assert excinfo.value.missing_scopes == ["repository:admin"]
    assert excinfo.value.granted_scopes == ["repository", "account"]
    assert len(responses.calls) == 1


@responses.activate
def test_5xx_is_retried_then_raised_as_server_error():
    responses.get(f"{API}/x", status=503, json=error("Service Unavailable"))
    with pytest.raises(bb.ServerError):
        access().get("x")
    assert len(responses.calls) == 4  # the first try and three retries


@responses.activate
def test_429_honours_a_short_retry_after_and_succeeds():
    responses.get(f"{API}/x", status=429, headers={"Retry-After": "1"}, json=error("Rate limit"))
    responses.get(f"{API}/x", json={"ok": True})
    assert access().get("x") == {"ok": True}
    assert len(responses.calls) == 2


@responses.activate
def test_429_asking_for_a_long_wait_is_raised_at_once_with_the_wait():
    responses.get(f"{API}/x", status=429, headers={"Retry-After": "3600"}, json=error("Rate limit exceeded"))
    with pytest.raises(bb.RateLimited) as excinfo:
        access().get("x")
    assert excinfo.value.retry_after == 3600
    assert len(responses.calls) == 1


@responses.activate
def test_transport_failures_are_typed():
    responses.get(f"{API}/tls", body=requests.exceptions.SSLError("certificate verify failed"))
    responses.get(f"{API}/down", body=requests.exceptions.ConnectionError("Name or service not known"))
    responses.get(f"{API}/slow", body=requests.exceptions.ReadTimeout("read timed out"))
    client = access()
    with pytest.raises(bb.CertificateError):
        client.get("tls")
    with pytest.raises(bb.HostUnreachable):
        client.get("down")
    with pytest.raises(bb.Timeout):
        client.get("slow")


@responses.activate
def test_non_json_answers_point_at_the_api_url():
    responses.get(f"{API}/x", body="<html>login</html>", content_type="text/html")
    with pytest.raises(bb.UnexpectedResponse, match="BITBUCKET_API_URL"):
        access().get("x")


@responses.activate
def test_git_refs_use_git_credentials_and_count_separately():
    def pkt(line: bytes) -> bytes:
        return f"{len(line) + 4:04x}".encode() + line

    body = (
        pkt(b"# service=git-upload-pack\n")
        + b"0000"
        + pkt(b"a" * 40 + b" HEAD\0multi_ack symref=HEAD:refs/heads/main agent=git/2\n")
        + pkt(b"a" * 40 + b" refs/heads/main\n")
        + pkt(b"b" * 40 + b" refs/tags/v1\n")
        + pkt(b"c" * 40 + b" refs/tags/v1^{}\n")
        + b"0000"
    )
    responses.get(f"{WEB}/acme/api.git/info/refs", body=body)
    client = BitbucketClient(Credentials("api_token", "dev@example.com", "ATATT3xTok"))
    refs = client.git_refs("acme", "api")
    assert refs == {"HEAD": "a" * 40, "refs/heads/main": "a" * 40, "refs/tags/v1": "b" * 40}
    header = responses.calls[0].request.headers["Authorization"]
    assert base64.b64decode(header.split()[1]).decode() == "x-bitbucket-api-token-auth:ATATT3xTok"
    assert (client.stats.rest, client.stats.git) == (0, 1)
    assert access().git_auth() == ("x-token-auth", SECRET)


def test_malformed_ref_advertisement():
    with pytest.raises(bb.UnexpectedResponse):
        parse_ref_advertisement(b"zzzz not pkt lines")
