"""Every endpoint the sandbox serves answers as the published OpenAPI spec says.

The ``sandbox`` fixture validates each response at teardown; this module makes sure
every route, and its error shapes, is exercised at least once. Skips (visibly) when
../shared/bitbucket is absent.
"""

import re

import pytest
import requests

from bitbucket_sandbox.app import Sandbox
from bitbucket_sandbox.data import SANDBOX_API_TOKEN_NO_ADMIN, SANDBOX_EMAIL, SANDBOX_WORKSPACE_TOKEN
from tests import contract

pytestmark = pytest.mark.skipif(not contract.spec_available(), reason=contract.ABSENT_REASON)


def test_every_route_and_its_errors_match_the_spec(sandbox):
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {SANDBOX_WORKSPACE_TOKEN}"
    api = sandbox.api_url
    world = sandbox.sandbox.world.workspaces["demo"]
    repo = world.repos["api"]
    head = repo.branches[repo.mainbranch]
    key = next(iter(world.projects))
    pr_id = sandbox.sandbox.open_pullrequest(
        "demo", "api", source=[b for b in repo.branches if b != repo.mainbranch][0]
    )
    responses = [
        s.get(f"{api}/user"),
        s.get(f"{api}/user/workspaces"),
        s.get(f"{api}/workspaces/demo"),
        s.get(f"{api}/workspaces/demo/members"),
        s.get(f"{api}/workspaces/demo/projects"),
        s.get(f"{api}/workspaces/demo/projects/{key}"),
        s.get(f"{api}/repositories/demo"),
        s.get(f"{api}/repositories/demo/api"),
        s.get(f"{api}/repositories/demo/api/refs/branches"),
        s.get(f"{api}/repositories/demo/api/src"),
        s.get(f"{api}/repositories/demo/api/src/{head}/", params={"max_depth": 4}),
        s.get(f"{api}/repositories/demo/api/src/{head}/README.md", params={"format": "meta"}),
        s.get(f"{api}/repositories/demo/api/branch-restrictions"),
        s.get(f"{api}/repositories/demo/api/default-reviewers"),
        s.get(f"{api}/repositories/demo/api/pullrequests"),
        s.get(f"{api}/repositories/demo/api/pullrequests/{pr_id}"),
        s.get(f"{api}/repositories/demo/api/pullrequests/{pr_id}/diffstat"),
        s.post(f"{api}/repositories/demo/api/pullrequests/{pr_id}/comments", json={"content": {"raw": "hi"}}),
        s.get(f"{api}/repositories/demo/api/pullrequests/{pr_id}/comments"),
        s.post(
            f"{api}/repositories/demo/api/commit/{head}/statuses/build",
            json={"key": "K", "state": "SUCCESSFUL", "url": "http://x/1"},
        ),
        s.get(f"{api}/repositories/demo/api/commit/{head}/statuses"),
        s.get(f"{api}/repositories/demo/api/commit/{head}/statuses/build/K"),
        s.post(f"{api}/repositories/demo/api/hooks", json={"url": "http://127.0.0.1:9/h", "events": ["repo:push"]}),
        s.get(f"{api}/repositories/demo/api/hooks"),
        s.post(f"{api}/workspaces/demo/hooks", json={"url": "http://127.0.0.1:9/h", "events": ["repo:push"]}),
        s.get(f"{api}/workspaces/demo/hooks"),
        # Error shapes.
        s.get(f"{api}/repositories"),
        s.get(f"{api}/workspaces"),
        s.get(f"{api}/repositories/demo/nope"),
        s.get(f"{api}/repositories/demo", params={"pagelen": 500}),
        requests.get(
            f"{api}/repositories/demo/api/branch-restrictions", auth=(SANDBOX_EMAIL, SANDBOX_API_TOKEN_NO_ADMIN)
        ),
        requests.get(f"{api}/user"),
        requests.get(f"{api}/repositories/demo", headers={"Authorization": "Bearer wrong"}),
    ]
    comment_id = responses[17].json()["id"]
    hook_id = responses[22].json()["uuid"]
    ws_hook_id = responses[24].json()["uuid"]
    responses += [
        s.put(
            f"{api}/repositories/demo/api/pullrequests/{pr_id}/comments/{comment_id}", json={"content": {"raw": "x"}}
        ),
        s.get(f"{api}/repositories/demo/api/pullrequests/{pr_id}/comments/{comment_id}"),
        s.get(f"{api}/repositories/demo/api/hooks/{hook_id}"),
        s.delete(f"{api}/repositories/demo/api/hooks/{hook_id}"),
        s.get(f"{api}/workspaces/demo/hooks/{ws_hook_id}"),
        s.delete(f"{api}/workspaces/demo/hooks/{ws_hook_id}"),
    ]
    statuses = [r.status_code for r in responses]
    assert statuses[:26] == [200] * 17 + [201, 200, 201, 200, 200, 201, 200, 201, 200]
    assert statuses[26:33] == [410, 410, 404, 400, 403, 401, 401]
    assert statuses[33:] == [200, 200, 200, 204, 200, 204]
    # The fixture validates each of these against the spec when the test ends.


def test_route_scopes_agree_with_the_spec():
    """The sandbox's own route table names the same scopes as the spec, per operation."""
    spec = contract.load_spec()
    sandbox = Sandbox.__new__(Sandbox)
    checked = 0
    for name in dir(Sandbox):
        route = getattr(getattr(Sandbox, name), "_route", None)
        if route is None or name.startswith("gone_"):
            continue
        method, pattern, legacy, granular, _ = route
        template = pattern.pattern.strip("^$").removesuffix("/?")
        template = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: "{" + m.group(1) + "}", template)
        matches = [
            (path, item)
            for path, item in spec["paths"].items()
            if re.sub(r"\{\w+\}", "{}", path) == re.sub(r"\{\w+\}", "{}", template)
        ]
        assert matches, f"{method} {template} is not in the spec"
        operation = matches[0][1][method.lower()]
        spec_granular = {s for entry in operation.get("x-atlassian-oauth2-scopes", []) for s in entry["scopes"]}
        spec_legacy = {s for entry in operation.get("security", []) for s in entry.get("oauth2", [])}
        assert set(granular) == spec_granular, f"{method} {template}: API-token scopes"
        assert set(legacy) <= spec_legacy | {"account"}, f"{method} {template}: access-token scopes"
        checked += 1
    assert checked >= 30
    del sandbox
