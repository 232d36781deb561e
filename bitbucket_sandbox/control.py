"""The control endpoint, ``/_sandbox/...``: a small JSON surface for demos and
out-of-process tests (the fault-injection test, benchmarks, a developer with curl).

GET  /_sandbox/requests[?since=N]      recorded requests (no secrets)
GET  /_sandbox/requests/count[?since=N]  how many, by kind (rest, git, oauth)
DELETE /_sandbox/requests               forget them
GET  /_sandbox/credentials             the sandbox's test credentials
POST /_sandbox/faults                   {"status": 503, "count": 2, "path": "regex"} |
                                        {"delay": 2.5, "count": 1} | {"drop": 1}
DELETE /_sandbox/faults                 clear faults
POST /_sandbox/credentials/expire       {"secret": "..."}
POST /_sandbox/credentials/restore      {"secret": "..."}
POST /_sandbox/credentials/revoke-scope {"secret": "...", "scope": "..."}
POST /_sandbox/credentials/grant-scope  {"secret": "...", "scope": "..."}
POST /_sandbox/repos/delete             {"workspace", "slug"}
POST /_sandbox/repos/rename             {"workspace", "slug", "name"?, "new_slug"?, "project_key"?}
POST /_sandbox/repos/push               {"workspace", "slug", "branch", "files"?, "delete"?, "message"?}
POST /_sandbox/pullrequests             {"workspace", "slug", "source", "destination"?, "title"?}
POST /_sandbox/pullrequests/state       {"workspace", "slug", "id", "event", "user"?, "comment"?}
POST /_sandbox/rate-limit               {"limit": 1000, "window": 3600}
GET  /_sandbox/deliveries              webhook delivery attempts

A new action is one function here, registered with ``@action(method, name)``; it gets
the sandbox, the JSON body (``{}`` unless POST) and the request, and returns what is
sent back as JSON. A missing key in the body answers 404 ``Not found: 'key'``.
``name/*`` catches the actions of a family that no exact registration serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from bitbucket_sandbox.data import Credential
from bitbucket_sandbox.http import ApiError, Request, Response

if TYPE_CHECKING:
    from bitbucket_sandbox.app import Sandbox

Action = Callable[["Sandbox", dict, Request], Any]
ACTIONS: dict[tuple[str, str], Action] = {}
PULLREQUEST_EVENTS = ("approved", "unapproved", "fulfilled", "rejected", "updated", "comment_created")


def action(method: str, name: str) -> Callable[[Action], Action]:
    def register(fn: Action) -> Action:
        ACTIONS[(method, name)] = fn
        return fn

    return register


def action_name(request: Request) -> str:
    return request.path[len("/_sandbox/") :].strip("/")


def control(sandbox: Sandbox, request: Request) -> Response:
    name = action_name(request)
    try:
        body = request.json() if request.method == "POST" else {}
        handler = ACTIONS.get((request.method, name))
        family, slash, _ = name.partition("/")
        if handler is None and slash:
            handler = ACTIONS.get((request.method, f"{family}/*"))
        if handler is None:
            raise ApiError(404, f"Unknown sandbox control action: {request.method} {name}")
        result = handler(sandbox, body, request)
    except ApiError as exc:
        return exc.response()
    except KeyError as exc:
        return ApiError(404, f"Not found: {exc}").response()
    return Response.of_json(200, result)


# --- Recorded requests and test credentials ------------------------------------------------
@action("GET", "requests")
def requests_list(sandbox: Sandbox, body: dict, request: Request) -> list[dict]:
    since = int(request.arg("since", "0"))
    return [vars(r) for r in list(sandbox.requests)[since:]]


@action("GET", "requests/count")
def requests_count(sandbox: Sandbox, body: dict, request: Request) -> dict:
    """How many requests were recorded (after ``since``), by kind: for benchmarks that must not
    hold every recorded request in their own memory while they measure it."""
    since = int(request.arg("since", "0"))
    recorded = list(sandbox.requests)[since:]
    by_kind: dict[str, int] = {}
    for r in recorded:
        by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
    return {"total": since + len(recorded), "since": since, "by_kind": by_kind}


@action("DELETE", "requests")
def requests_clear(sandbox: Sandbox, body: dict, request: Request) -> dict:
    sandbox.requests.clear()
    return {"cleared": True}


@action("GET", "credentials")
def credentials_list(sandbox: Sandbox, body: dict, request: Request) -> list[dict]:
    return [
        {
            "label": c.label,
            "kind": c.kind,
            "email": c.email,
            "key": c.key,
            "secret": c.secret,
            "scopes": c.scopes,
            "expired": c.expired,
        }
        for c in sandbox.world.credentials
    ]


# --- Faults ----------------------------------------------------------------------------------
@action("DELETE", "faults")
def faults_clear(sandbox: Sandbox, body: dict, request: Request) -> dict:
    with sandbox.lock:
        sandbox.faults.clear()
    return {"cleared": True}


@action("POST", "faults")
def faults_add(sandbox: Sandbox, body: dict, request: Request) -> dict:
    with sandbox.lock:
        if "drop" in body:
            sandbox.faults.drops.append({"count": int(body["drop"]), "path": body.get("path", "")})
        elif "delay" in body:
            sandbox.faults.delays.append(
                {"seconds": float(body["delay"]), "count": int(body.get("count", 1)), "path": body.get("path", "")}
            )
        else:
            sandbox.faults.errors.append(
                {
                    "status": int(body.get("status", 503)),
                    "count": int(body.get("count", 1)),
                    "path": body.get("path", ""),
                }
            )
    return {"ok": True}


# --- Credentials -----------------------------------------------------------------------------
def _credential(sandbox: Sandbox, body: dict) -> Credential:
    credential = sandbox.world.find_credential(body.get("secret", ""))
    if credential is None:
        raise ApiError(404, "No such credential")
    return credential


def _credential_state(credential: Credential) -> dict:
    return {"label": credential.label, "scopes": credential.scopes, "expired": credential.expired}


@action("POST", "credentials/expire")
def credential_expire(sandbox: Sandbox, body: dict, request: Request) -> dict:
    """Expired, with the OAuth tokens issued for it: they stop working at once."""
    credential = _credential(sandbox, body)
    with sandbox.lock:
        credential.expired = True
        for token, (c, _) in list(sandbox.oauth_tokens.items()):
            if c is credential:
                del sandbox.oauth_tokens[token]
    return _credential_state(credential)


@action("POST", "credentials/restore")
def credential_restore(sandbox: Sandbox, body: dict, request: Request) -> dict:
    credential = _credential(sandbox, body)
    with sandbox.lock:
        credential.expired = False
    return _credential_state(credential)


@action("POST", "credentials/revoke-scope")
def credential_revoke_scope(sandbox: Sandbox, body: dict, request: Request) -> dict:
    credential = _credential(sandbox, body)
    with sandbox.lock:
        credential.scopes = [s for s in credential.scopes if s != body.get("scope")]
    return _credential_state(credential)


@action("POST", "credentials/grant-scope")
def credential_grant_scope(sandbox: Sandbox, body: dict, request: Request) -> dict:
    credential = _credential(sandbox, body)
    with sandbox.lock:
        if body.get("scope") not in credential.scopes:
            credential.scopes.append(body["scope"])
    return _credential_state(credential)


@action("POST", "credentials/*")
def credential_unknown(sandbox: Sandbox, body: dict, request: Request) -> dict:
    """An unknown change to a credential: 404, after the credential itself is looked up."""
    _credential(sandbox, body)
    raise ApiError(404, f"Unknown action {action_name(request)}")


# --- Repositories and pull requests (each fires its webhooks) ----------------------------------
@action("POST", "repos/delete")
def repo_delete(sandbox: Sandbox, body: dict, request: Request) -> dict:
    sandbox.delete_repo(body["workspace"], body["slug"])
    return {"deleted": f"{body['workspace']}/{body['slug']}"}


@action("POST", "repos/rename")
def repo_rename(sandbox: Sandbox, body: dict, request: Request) -> dict:
    repo = sandbox.rename_repo(
        body["workspace"],
        body["slug"],
        name=body.get("name"),
        new_slug=body.get("new_slug"),
        project_key=body.get("project_key"),
    )
    return {"full_name": repo.full_name, "project_key": repo.project_key}


@action("POST", "repos/push")
def repo_push(sandbox: Sandbox, body: dict, request: Request) -> dict:
    return {
        "commit": sandbox.push(
            body["workspace"],
            body["slug"],
            body["branch"],
            files=body.get("files"),
            delete=body.get("delete"),
            message=body.get("message", "Sandbox push"),
        )
    }


@action("POST", "pullrequests")
def pullrequest_open(sandbox: Sandbox, body: dict, request: Request) -> dict:
    return {
        "id": sandbox.open_pullrequest(
            body["workspace"],
            body["slug"],
            source=body["source"],
            destination=body.get("destination"),
            title=body.get("title", "Change"),
        )
    }


@action("POST", "pullrequests/state")
def pullrequest_state(sandbox: Sandbox, body: dict, request: Request) -> dict:
    if body.get("event") not in PULLREQUEST_EVENTS:
        raise ApiError(400, "event: one of approved, unapproved, fulfilled, rejected, updated, comment_created")
    sandbox.set_pullrequest_state(
        body["workspace"],
        body["slug"],
        int(body["id"]),
        body["event"],
        user=body.get("user"),
        comment=body.get("comment", ""),
    )
    return {"ok": True}


# --- Rate limits and webhook deliveries ----------------------------------------------------------
@action("POST", "rate-limit")
def rate_limit_set(sandbox: Sandbox, body: dict, request: Request) -> dict:
    """New limits, with every window emptied."""
    with sandbox.lock:
        sandbox.rate_limit = int(body.get("limit", sandbox.rate_limit))
        sandbox.rate_window = float(body.get("window", sandbox.rate_window))
        sandbox.rate_windows.clear()
    return {"limit": sandbox.rate_limit, "window": sandbox.rate_window}


@action("GET", "deliveries")
def deliveries_list(sandbox: Sandbox, body: dict, request: Request) -> list[dict]:
    return sandbox.deliveries
