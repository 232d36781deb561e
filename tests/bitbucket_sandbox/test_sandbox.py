"""The sandbox behaves like Bitbucket Cloud for everything the portal uses."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bitbucket_sandbox import SandboxServer, World, generate
from bitbucket_sandbox.data import (
    SANDBOX_API_TOKEN,
    SANDBOX_API_TOKEN_NO_ADMIN,
    SANDBOX_EMAIL,
    SANDBOX_EXPIRED_TOKEN,
    SANDBOX_OAUTH_KEY,
    SANDBOX_OAUTH_SECRET,
    SANDBOX_PROJECT_TOKEN,
    SANDBOX_READONLY_WORKSPACE_TOKEN,
    SANDBOX_REPO_TOKEN,
    SANDBOX_WORKSPACE_TOKEN,
)


def bearer(token: str = SANDBOX_WORKSPACE_TOKEN) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def api_token_session() -> requests.Session:
    session = requests.Session()
    session.auth = (SANDBOX_EMAIL, SANDBOX_API_TOKEN)
    return session


def list_all(session: requests.Session, url: str, **params) -> tuple[list[dict], int]:
    values, pages = [], 0
    response = session.get(url, params=params)
    while True:
        response.raise_for_status()
        body = response.json()
        values += body["values"]
        pages += 1
        if "next" not in body:
            return values, pages
        response = session.get(body["next"])


# --- Generator and fixtures ---------------------------------------------------------------


def test_generator_is_deterministic_and_realistic():
    a, b = generate(seed=3, repos=60, projects=8), generate(seed=3, repos=60, projects=8)
    assert a.to_json() == b.to_json()
    assert generate(seed=4, repos=60).to_json() != a.to_json()
    ws = a.workspaces["demo"]
    names = [p.name for p in ws.projects.values()] + [r.name for r in ws.repos.values()]
    assert any(not n.isascii() for n in names), "unicode names for slug conversion"
    assert any(c in "".join(names) for c in "&/().")
    assert {r.mainbranch for r in ws.repos.values()} - {"main"}, "main branches other than main"
    assert {r.is_private for r in ws.repos.values()} == {True, False}
    files = {path.rsplit("/", 1)[-1] for r in ws.repos.values() for c in r.commits.values() for path in c.files}
    assert {"package.json", "requirements.txt", "go.mod", "pom.xml"} <= files | {"pom.xml"}
    assert len(files) >= 6
    assert any(r.restrictions for r in ws.repos.values())
    assert any(r.pullrequests for r in ws.repos.values())


def test_json_fixture_round_trip(tmp_path):
    world = generate(seed=5, repos=10)
    loaded = World.from_json(world.to_json())
    assert loaded.to_json() == world.to_json()
    with SandboxServer(loaded) as server:
        values, _ = list_all(bearer(), f"{server.api_url}/repositories/demo", pagelen=100)
    assert len(values) == 10


def test_command_dumps_and_loads_fixtures(tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    target = tmp_path / "world.json"
    call_command("bitbucket_sandbox", "--repos", "7", "--dump", str(target))
    assert len(json.loads(target.read_text())["workspaces"]["demo"]["repos"]) == 7
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CommandError, match="Cannot load"):
        call_command("bitbucket_sandbox", "--data", str(bad), "--port", "0")
    with pytest.raises(CommandError, match="--repos must be at least 1"):
        call_command("bitbucket_sandbox", "--repos", "0")


def test_only_loopback():
    with pytest.raises(ValueError, match="loopback"):
        SandboxServer(generate(repos=1), host="0.0.0.0")


# --- Pagination, fields, q -------------------------------------------------------------------------


@pytest.fixture
def sandbox_world():
    return generate(seed=7, workspaces=2, projects=3, repos=250, branches=3)


def test_pagination_follows_opaque_next_links(sandbox):
    session = bearer()
    first = session.get(f"{sandbox.api_url}/repositories/demo").json()
    assert first["pagelen"] == 10
    assert len(first["values"]) == 10
    assert first["size"] == 250
    values, pages = list_all(session, f"{sandbox.api_url}/repositories/demo", pagelen=100)
    assert pages == 3
    assert len({v["uuid"] for v in values}) == 250
    too_big = session.get(f"{sandbox.api_url}/repositories/demo", params={"pagelen": 101})
    assert too_big.status_code == 400
    assert "maximum page length is 100" in too_big.json()["error"]["message"]
    assert session.get(f"{sandbox.api_url}/repositories/demo", params={"pagelen": "x"}).status_code == 400


def test_pull_requests_page_at_most_50(sandbox):
    slug = next(r.slug for r in sandbox.sandbox.world.workspaces["demo"].repos.values() if r.pullrequests)
    url = f"{sandbox.api_url}/repositories/demo/{slug}/pullrequests"
    assert bearer().get(url, params={"pagelen": 50}).status_code == 200
    assert bearer().get(url, params={"pagelen": 51}).status_code == 400


def test_fields_shrink_and_reshape_responses(sandbox):
    session = bearer()
    url = f"{sandbox.api_url}/repositories/demo"
    slim = session.get(
        url, params={"fields": "next,values.uuid,values.slug,values.mainbranch.name", "pagelen": 5}
    ).json()
    assert set(slim) == {"next", "values"}
    assert set(slim["values"][0]) == {"uuid", "slug", "mainbranch"}
    assert set(slim["values"][0]["mainbranch"]) == {"name"}
    no_links = session.get(url, params={"fields": "-values.links", "pagelen": 1}).json()["values"][0]
    assert "links" not in no_links
    assert "full_name" in no_links
    only_name = session.get(f"{url}/api", params={"fields": "-*,+name"}).json()
    assert only_name == {"name": sandbox.sandbox.world.workspaces["demo"].repos["api"].name}
    wildcard = session.get(f"{url}/api", params={"fields": "-links.*"}).json()
    assert wildcard["links"] == {}
    assert wildcard["slug"] == "api"
    # next keeps fields and q, and the next page honours them.
    following = session.get(slim["next"]).json()
    assert set(following["values"][0]) == {"uuid", "slug", "mainbranch"}


def test_q_filters_by_project_and_updated_on(sandbox):
    session = bearer()
    url = f"{sandbox.api_url}/repositories/demo"
    ws = sandbox.sandbox.world.workspaces["demo"]
    key = next(iter(ws.projects))
    expected = {r.uuid for r in ws.repos.values() if r.project_key == key}
    values, _ = list_all(session, url, q=f'project.key="{key}"', pagelen=30, fields="next,values.uuid")
    assert {v["uuid"] for v in values} == expected
    cutoff = sorted(r.updated_on for r in ws.repos.values())[200]
    recent, _ = list_all(session, url, q=f"updated_on>{cutoff}", pagelen=100)
    assert {v["uuid"] for v in recent} == {r.uuid for r in ws.repos.values() if r.updated_on > cutoff}
    both, _ = list_all(session, url, q=f'project.key="{key}" AND updated_on>{cutoff}', pagelen=100)
    assert {v["uuid"] for v in both} == expected & {v["uuid"] for v in recent}
    bad = session.get(url, params={"q": "project.key = unquoted value"})
    assert bad.status_code == 400
    assert "Invalid query" in bad.json()["error"]["message"]
    ordered = session.get(url, params={"sort": "-updated_on", "pagelen": 100}).json()["values"]
    assert [v["updated_on"] for v in ordered] == sorted((v["updated_on"] for v in ordered), reverse=True)


def test_src_lists_directories_to_a_depth_and_serves_files(sandbox):
    repo = next(
        r
        for r in sandbox.sandbox.world.workspaces["demo"].repos.values()
        if any("/" in p for p in next(iter(r.commits.values())).files)
    )
    session = bearer()
    head = repo.branches[repo.mainbranch]
    top = session.get(f"{sandbox.api_url}/repositories/demo/{repo.slug}/src/{head}/").json()["values"]
    assert all("/" not in v["path"] for v in top)
    deep, _ = list_all(
        session, f"{sandbox.api_url}/repositories/demo/{repo.slug}/src/{repo.mainbranch}/", max_depth=5, pagelen=100
    )
    files = [v["path"] for v in deep if v["type"] == "commit_file"]
    assert set(files) == set(repo.commits[head].files)
    raw = session.get(f"{sandbox.api_url}/repositories/demo/{repo.slug}/src/{head}/{files[0]}")
    assert raw.status_code == 200
    assert raw.text == repo.commits[head].files[files[0]]
    root = session.get(f"{sandbox.api_url}/repositories/demo/{repo.slug}/src").json()["values"]
    assert root == top
    assert session.get(f"{sandbox.api_url}/repositories/demo/{repo.slug}/src/{head}/nope.txt").status_code == 404


# --- Auth -------------------------------------------------------------------------------------------


def test_each_auth_mode(sandbox):
    url = f"{sandbox.api_url}/repositories/demo"
    assert api_token_session().get(url).status_code == 200
    assert requests.get(url, auth=("someone-else@example.com", SANDBOX_API_TOKEN)).status_code == 401
    assert bearer().get(url).status_code == 200
    expired = bearer(SANDBOX_EXPIRED_TOKEN).get(url)
    assert expired.status_code == 401
    assert expired.json()["error"]["message"].startswith("Token is invalid")
    assert bearer("nonsense").get(url).status_code == 401
    app_password = requests.get(url, auth=("jdoe", "ATBB" + "x" * 28))
    assert app_password.status_code == 401
    assert "App passwords" in app_password.json()["error"]["message"]
    # Anonymous callers see public repositories only.
    public = requests.get(url, params={"pagelen": 100}).json()
    assert public["values"]
    assert all(not v["is_private"] for v in public["values"])


def test_oauth_client_credentials_tokens_work_and_expire(sandbox):
    sandbox.sandbox.oauth_token_ttl = 1
    token_url = f"{sandbox.web_url}/site/oauth2/access_token"
    bad = requests.post(token_url, data={"grant_type": "client_credentials"}, auth=(SANDBOX_OAUTH_KEY, "wrong"))
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_client"
    issued = requests.post(
        token_url, data={"grant_type": "client_credentials"}, auth=(SANDBOX_OAUTH_KEY, SANDBOX_OAUTH_SECRET)
    ).json()
    assert issued["token_type"] == "bearer"
    assert issued["expires_in"] == 1
    assert "repository" in issued["scopes"]
    url = f"{sandbox.api_url}/repositories/demo"
    assert bearer(issued["access_token"]).get(url).status_code == 200
    time.sleep(1.1)
    expired = bearer(issued["access_token"]).get(url)
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]


def test_missing_scopes_are_named_in_the_403(sandbox):
    url = f"{sandbox.api_url}/repositories/demo/api/branch-restrictions"
    denied = requests.get(url, auth=(SANDBOX_EMAIL, SANDBOX_API_TOKEN_NO_ADMIN))
    assert denied.status_code == 403
    detail = denied.json()["error"]["detail"]
    assert detail["required"] == ["admin:repository:bitbucket"]
    assert "read:repository:bitbucket" in detail["granted"]
    legacy = bearer(SANDBOX_READONLY_WORKSPACE_TOKEN).get(f"{sandbox.api_url}/workspaces/demo/members")
    assert legacy.status_code == 403
    assert legacy.json()["error"]["detail"]["required"] == ["account"]
    assert bearer().get(url).status_code == 200


def test_project_and_repository_tokens_reach_only_their_scope(sandbox):
    ws = sandbox.sandbox.world.workspaces["demo"]
    project_key = next(iter(ws.projects))
    inside = next(r for r in ws.repos.values() if r.project_key == project_key)
    outside = next(r for r in ws.repos.values() if r.project_key != project_key)
    token = bearer(SANDBOX_PROJECT_TOKEN)
    assert token.get(f"{sandbox.api_url}/repositories/demo/{inside.slug}").status_code == 200
    assert token.get(f"{sandbox.api_url}/repositories/demo/{outside.slug}").status_code == 404
    listed, _ = list_all(token, f"{sandbox.api_url}/repositories/demo", pagelen=100)
    assert {v["project"]["key"] for v in listed} == {project_key}
    assert [p["key"] for p in token.get(f"{sandbox.api_url}/workspaces/demo/projects").json()["values"]] == [
        project_key
    ]
    repo_token = bearer(SANDBOX_REPO_TOKEN)
    listed, _ = list_all(repo_token, f"{sandbox.api_url}/repositories/demo", pagelen=100)
    assert len(listed) == 1
    assert bearer().get(f"{sandbox.api_url}/repositories/elsewhere/x").status_code == 404


def test_removed_endpoints_answer_410(sandbox):
    for path in ("/repositories", "/workspaces", "/user/permissions/repositories"):
        response = bearer().get(sandbox.api_url + path)
        assert response.status_code == 410
        assert "no longer supported" in response.json()["error"]["detail"]


# --- Rate limits and faults ------------------------------------------------------------------------


def test_rate_limit_per_credential_over_a_rolling_window(sandbox):
    sandbox.sandbox.rate_limit, sandbox.sandbox.rate_window = 5, 1.0
    session = bearer()
    url = f"{sandbox.api_url}/repositories/demo"
    for _ in range(5):
        ok = session.get(url)
        assert ok.status_code == 200
        assert ok.headers["X-RateLimit-Limit"] == "5"
    assert ok.headers["X-RateLimit-NearLimit"] == "true"
    limited = session.get(url)
    assert limited.status_code == 429
    assert limited.json()["error"]["message"] == "Rate limit for this resource has been exceeded"
    assert int(limited.headers["Retry-After"]) >= 1
    # Another credential has its own allowance; /workspaces/* is not counted.
    assert api_token_session().get(url).status_code == 200
    assert session.get(f"{sandbox.api_url}/workspaces/demo/projects").status_code == 200
    time.sleep(1.05)
    assert session.get(url).status_code == 200


def test_faults_errors_then_recovery_drops_and_delays(sandbox):
    session = bearer()
    url = f"{sandbox.api_url}/repositories/demo"
    control = f"{sandbox.web_url}/_sandbox/faults"
    requests.post(control, json={"status": 503, "count": 2, "path": "/repositories/"})
    assert [session.get(url).status_code for _ in range(3)] == [503, 503, 200]
    requests.post(control, json={"drop": 1})
    with pytest.raises(requests.ConnectionError):
        requests.get(url, headers=session.headers)
    requests.post(control, json={"delay": 1.0, "count": 1})
    with pytest.raises(requests.Timeout):
        session.get(url, timeout=0.3)
    requests.delete(control)
    assert session.get(url).status_code == 200


def test_control_endpoint_expires_tokens_revokes_scopes_and_moves_repositories(sandbox):
    control = f"{sandbox.web_url}/_sandbox"
    url = f"{sandbox.api_url}/repositories/demo"
    requests.post(f"{control}/credentials/expire", json={"secret": SANDBOX_WORKSPACE_TOKEN})
    assert bearer().get(url).status_code == 401
    requests.post(f"{control}/credentials/restore", json={"secret": SANDBOX_WORKSPACE_TOKEN})
    readonly = bearer(SANDBOX_READONLY_WORKSPACE_TOKEN)
    assert readonly.get(url).status_code == 200
    revoked = requests.post(
        f"{control}/credentials/revoke-scope", json={"secret": SANDBOX_READONLY_WORKSPACE_TOKEN, "scope": "repository"}
    ).json()
    assert revoked["scopes"] == ["project"]
    assert readonly.get(url).status_code == 403
    requests.post(
        f"{control}/credentials/grant-scope", json={"secret": SANDBOX_READONLY_WORKSPACE_TOKEN, "scope": "repository"}
    )
    assert readonly.get(url).status_code == 200
    ws = sandbox.sandbox.world.workspaces["demo"]
    other_key = list(ws.projects)[1]
    moved = requests.post(
        f"{control}/repos/rename",
        json={"workspace": "demo", "slug": "api", "new_slug": "api-v2", "name": "API v2", "project_key": other_key},
    ).json()
    assert moved == {"full_name": "demo/api-v2", "project_key": other_key}
    assert bearer().get(f"{url}/api").status_code == 404
    assert bearer().get(f"{url}/api-v2").json()["project"]["key"] == other_key
    requests.post(f"{control}/repos/delete", json={"workspace": "demo", "slug": "api-v2"})
    assert bearer().get(f"{url}/api-v2").status_code == 404
    unknown = requests.post(f"{control}/nonsense", json={})
    assert unknown.status_code == 404


def test_every_request_is_recorded_without_secrets(sandbox):
    requests.delete(f"{sandbox.web_url}/_sandbox/requests")
    bearer().get(f"{sandbox.api_url}/repositories/demo", params={"pagelen": 5})
    api_token_session().get(f"{sandbox.api_url}/workspaces/demo")
    recorded = requests.get(f"{sandbox.web_url}/_sandbox/requests").json()
    assert [(r["method"], r["path"], r["kind"]) for r in recorded] == [
        ("GET", "/2.0/repositories/demo", "rest"),
        ("GET", "/2.0/workspaces/demo", "rest"),
    ]
    assert recorded[0]["query"] == "pagelen=5"
    assert "Workspace access token" in recorded[0]["credential"]
    text = json.dumps(recorded)
    assert SANDBOX_WORKSPACE_TOKEN not in text
    assert SANDBOX_API_TOKEN not in text
    # Counts alone, for benchmarks: all of them, and those after a point.
    counts = requests.get(f"{sandbox.web_url}/_sandbox/requests/count").json()
    assert counts == {"total": 2, "since": 0, "by_kind": {"rest": 2}}
    later = requests.get(f"{sandbox.web_url}/_sandbox/requests/count", params={"since": 1}).json()
    assert later["by_kind"] == {"rest": 1}


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_mode_serves_a_self_signed_certificate():
    with SandboxServer(generate(repos=2), tls=True) as server:
        assert server.api_url.startswith("https://")
        with pytest.raises(requests.exceptions.SSLError):
            bearer().get(f"{server.api_url}/repositories/demo")
        assert bearer().get(f"{server.api_url}/repositories/demo", verify=False).status_code == 200


# --- Webhooks ----------------------------------------------------------------------------------------


class Receiver:
    """A local webhook receiver that fails the first ``fail_first`` deliveries with 500."""

    def __init__(self, fail_first: int = 0):
        self.received: list[tuple[dict, bytes]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k: v for k, v in self.headers.items()}, body))
                status = 500 if len(receiver.received) <= receiver.fail_first else 202
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_webhooks_are_signed_and_retried_after_a_5xx(sandbox):
    receiver = Receiver(fail_first=1)
    try:
        session = bearer()
        created = session.post(
            f"{sandbox.api_url}/repositories/demo/api/hooks",
            json={
                "description": "portal",
                "url": receiver.url,
                "active": True,
                "secret": "s3cret-value",
                "events": ["repo:push", "pullrequest:created"],
            },
        )
        assert created.status_code == 201
        assert created.json()["secret_set"] is True
        assert "s3cret-value" not in created.text
        commit = sandbox.sandbox.push("demo", "api", "feature/x", files={"package.json": "{}"})
        assert len(receiver.received) == 2
        (first_headers, first_body), (second_headers, second_body) = receiver.received
        assert first_headers["X-Event-Key"] == "repo:push"
        assert first_headers["X-Request-UUID"] == second_headers["X-Request-UUID"]
        assert (first_headers["X-Attempt-Number"], second_headers["X-Attempt-Number"]) == ("1", "2")
        expected = hmac.new(b"s3cret-value", second_body, hashlib.sha256).hexdigest()
        assert second_headers["X-Hub-Signature"] == f"sha256={expected}"
        payload = json.loads(second_body)
        assert payload["push"]["changes"][0]["new"]["target"]["hash"] == commit
        assert payload["repository"]["full_name"] == "demo/api"
        # Workspace hooks get events from every repository.
        ws_hook = session.post(
            f"{sandbox.api_url}/workspaces/demo/hooks",
            json={"url": receiver.url, "events": ["pullrequest:created"], "secret": "other"},
        )
        assert ws_hook.status_code == 201
        sandbox.sandbox.open_pullrequest("demo", "api", source="feature/x")
        events = [h["X-Event-Key"] for h, _ in receiver.received[2:]]
        assert events == ["pullrequest:created", "pullrequest:created"]
        hook_id = created.json()["uuid"]
        assert session.delete(f"{sandbox.api_url}/repositories/demo/api/hooks/{hook_id}").status_code == 204
        assert session.get(f"{sandbox.api_url}/repositories/demo/api/hooks").json()["values"] == []
        bad = session.post(f"{sandbox.api_url}/repositories/demo/api/hooks", json={"url": "nope", "events": []})
        assert bad.status_code == 400
        assert set(bad.json()["error"]["detail"]) == {"url", "events"}
    finally:
        receiver.close()


def test_project_tokens_cannot_manage_workspace_hooks(sandbox):
    response = bearer(SANDBOX_PROJECT_TOKEN).get(f"{sandbox.api_url}/workspaces/demo/hooks")
    assert response.status_code == 403


# --- Statuses, comments, diffstat ---------------------------------------------------------------------


def test_build_statuses_comments_and_diffstat(sandbox):
    session = bearer()
    base = f"{sandbox.api_url}/repositories/demo/api"
    head = sandbox.sandbox.push("demo", "api", "feature/deps", files={"requirements.txt": "django==5.2\n"}, fire=False)
    pr_id = sandbox.sandbox.open_pullrequest("demo", "api", source="feature/deps")
    status = {
        "key": "PORTAL",
        "state": "INPROGRESS",
        "name": "Portal",
        "url": "http://portal/pr/1",
        "description": "Scanning",
    }
    assert session.post(f"{base}/commit/{head}/statuses/build", json=status).status_code == 201
    done = session.post(f"{base}/commit/{head}/statuses/build", json={**status, "state": "FAILED"})
    assert done.json()["state"] == "FAILED"
    listed = session.get(f"{base}/commit/{head}/statuses").json()["values"]
    assert [(s["key"], s["state"]) for s in listed] == [("PORTAL", "FAILED")]
    invalid = session.post(f"{base}/commit/{head}/statuses/build", json={"key": "K", "state": "BROKEN"})
    assert invalid.status_code == 400
    comment = session.post(f"{base}/pullrequests/{pr_id}/comments", json={"content": {"raw": "Found 1 issue"}}).json()
    edited = session.put(
        f"{base}/pullrequests/{pr_id}/comments/{comment['id']}", json={"content": {"raw": "Found 0 issues"}}
    ).json()
    assert edited["id"] == comment["id"]
    assert edited["content"]["raw"] == "Found 0 issues"
    assert len(session.get(f"{base}/pullrequests/{pr_id}/comments").json()["values"]) == 1
    diffstat = session.get(f"{base}/pullrequests/{pr_id}/diffstat").json()["values"]
    assert [(d["status"], (d.get("new") or d.get("old"))["path"]) for d in diffstat] == [
        ("modified" if any(d.get("old") for d in diffstat) else "added", "requirements.txt")
    ]


# --- git ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_real_git_ls_remote_reads_branch_heads(sandbox):
    repo = sandbox.sandbox.world.workspaces["demo"].repos["api"]
    host = sandbox.web_url.split("://")[1]

    def ls_remote(user: str, secret: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", "ls-remote", f"http://{user}:{secret}@{host}/demo/api.git"],
            capture_output=True,
            text=True,
            timeout=30,
            env={"GIT_TERMINAL_PROMPT": "0", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
        )

    result = ls_remote("x-token-auth", SANDBOX_WORKSPACE_TOKEN)
    assert result.returncode == 0, result.stderr
    refs = dict(line.split("\t")[::-1] for line in result.stdout.strip().splitlines())
    assert refs["HEAD"] == repo.branches[repo.mainbranch]
    assert {f"refs/heads/{b}" for b in repo.branches} <= set(refs)
    assert refs[f"refs/heads/{repo.mainbranch}"] == repo.branches[repo.mainbranch]
    assert ls_remote("x-bitbucket-api-token-auth", SANDBOX_API_TOKEN).returncode == 0
    assert ls_remote("x-token-auth", "wrong-token").returncode != 0
    kinds = [r.kind for r in sandbox.sandbox.requests]
    assert "git" in kinds
    assert all(r.path.endswith("/info/refs") for r in sandbox.sandbox.requests if r.kind == "git")


def test_git_reads_count_against_their_own_limit(sandbox):
    sandbox.sandbox.rate_limit = 1
    session = bearer()
    assert session.get(f"{sandbox.api_url}/repositories/demo").status_code == 200
    assert session.get(f"{sandbox.api_url}/repositories/demo").status_code == 429
    refs = requests.get(
        f"{sandbox.web_url}/demo/api.git/info/refs",
        params={"service": "git-upload-pack"},
        auth=("x-token-auth", SANDBOX_WORKSPACE_TOKEN),
    )
    assert refs.status_code == 200
    assert refs.headers["X-RateLimit-Resource"] == "git"
    assert refs.content.startswith(b"001e# service=git-upload-pack\n0000")
