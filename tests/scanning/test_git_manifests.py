"""The dependency scanner reads manifests over git: a shallow fetch of the head commit, one
git request per repository, bounded; REST where git is refused or a pack is too large."""

from __future__ import annotations

import base64
import shutil
import subprocess

import pytest

from bitbucket_sandbox import generate
from bitbucket_sandbox.data import SANDBOX_API_TOKEN, SANDBOX_EMAIL
from integrations.bitbucket import client as bb
from integrations.bitbucket.credentials import Credentials
from integrations.models import AuthMethod, Reference
from scanning.models import DependencyPackage, ScannerState, ScanStatus
from synclogs.models import SyncLog
from tests import helpers


@pytest.fixture
def sandbox_world():
    return generate(seed=5, workspaces=1, projects=2, repos=8, branches=2)


def connect(name="Deps"):
    return helpers.connect(name=name, scanners=["dependencies"])


def inventory(integration) -> set[tuple]:
    return set(
        DependencyPackage.objects.filter(reference__project__integration=integration).values_list(
            "reference__project__full_name", "manifest_path", "ecosystem", "name", "version", "direct", "dev"
        )
    )


def requests_since(sandbox, before: int) -> list:
    return list(sandbox.requests)[before:]


def test_manifests_come_from_one_shallow_git_fetch_per_repository_and_match_rest(bitbucket, settings):
    integration = connect()
    before = len(bitbucket.sandbox.requests)
    run = helpers.scan(integration)
    assert run.status == ScanStatus.SUCCEEDED, run.summary
    sent = requests_since(bitbucket.sandbox, before)
    fetches = [r for r in sent if r.path.endswith("/git-upload-pack")]
    assert len(fetches) == 8  # one per repository
    assert not [r for r in sent if "/src/" in r.path]  # no REST source reads
    assert set(ScannerState.objects.values_list("via", flat=True)) == {"git"}
    assert run.counts["dependencies scanner"]["git_bytes"] > 0
    by_git = inventory(integration)
    assert by_git
    # The REST path finds exactly the same packages.
    settings.SCANNER_GIT_MANIFESTS = False
    other = helpers.connect(name="Deps over REST", scanners=["dependencies"])
    helpers.scan(other)
    assert inventory(other) == by_git
    assert set(ScannerState.objects.filter(reference__project__integration=other).values_list("via", flat=True)) == {
        "rest"
    }


def test_a_repository_over_the_git_bound_is_read_over_rest_and_said_once(bitbucket, settings):
    settings.SCANNER_GIT_MAX_MB = 0
    integration = connect()
    helpers.scan(integration)
    assert set(ScannerState.objects.values_list("via", flat=True)) == {"rest:over-0MB"}
    assert DependencyPackage.objects.exists()
    said = SyncLog.objects.filter(integration=integration, message__contains="larger than 0 MB")
    assert said.count() == 8
    # The next change is read over REST straight away, without saying it again.
    bitbucket.sandbox.push(
        "demo",
        "api",
        bitbucket.sandbox.world.workspaces["demo"].repos["api"].mainbranch,
        files={"requirements.txt": "flask==3.0.0\n"},
        fire=False,
    )
    before = len(bitbucket.sandbox.requests)
    helpers.scan(integration)
    assert not [r for r in requests_since(bitbucket.sandbox, before) if r.path.endswith("/git-upload-pack")]
    assert said.count() == 8
    assert DependencyPackage.objects.filter(name="flask", version="3.0.0").exists()
    # Raising the bound brings it back to git.
    settings.SCANNER_GIT_MAX_MB = 50
    bitbucket.sandbox.push(
        "demo",
        "api",
        bitbucket.sandbox.world.workspaces["demo"].repos["api"].mainbranch,
        files={"requirements.txt": "flask==3.0.1\n"},
        fire=False,
    )
    helpers.scan(integration)
    api = Reference.objects.get(project__full_name="demo/api", is_default=True)
    assert ScannerState.objects.get(reference=api).via == "git"


def test_where_git_is_refused_manifests_are_read_over_rest(bitbucket):
    integration = connect()
    original = bitbucket.sandbox._git

    def refuse(request):
        auth, response = original(request)
        if request.path.endswith("/git-upload-pack"):
            response.status, response.body = 403, b"git access denied"
        return auth, response

    bitbucket.sandbox._git = refuse
    run = helpers.scan(integration)
    assert run.status == ScanStatus.SUCCEEDED
    assert set(ScannerState.objects.values_list("via", flat=True)) == {"rest"}
    assert DependencyPackage.objects.exists()


def test_a_head_that_was_forced_away_is_left_for_the_next_scan(bitbucket):
    client = bb.BitbucketClient(Credentials(AuthMethod.API_TOKEN, SANDBOX_EMAIL, SANDBOX_API_TOKEN))
    repo = next(r for r in bitbucket.sandbox.world.workspaces["demo"].repos.values() if not r.tags)
    old = repo.branches[repo.mainbranch]
    bitbucket.sandbox.push("demo", repo.slug, repo.mainbranch, files={"x.txt": "x"}, fire=False)
    # Pushed on top: the old head is still reachable, and git serves it (stateless RPC).
    snapshot = client.git_fetch_commit("demo", repo.slug, old, max_bytes=1 << 20, timeout=10)
    assert "x.txt" not in {f.path for f in snapshot.files()}
    # Force-pushed away: "not our ref".
    bitbucket.sandbox.world.workspaces["demo"].repos[repo.slug].commits[repo.branches[repo.mainbranch]].parents = []
    with pytest.raises(bb.HeadMoved):
        client.git_fetch_commit("demo", repo.slug, old, max_bytes=1 << 20, timeout=10)


def test_a_small_pack_that_inflates_past_the_bound_is_read_over_rest(bitbucket, settings):
    """A few KB on the wire, megabytes in memory: refused before it is inflated."""
    settings.SCANNER_GIT_MAX_MB = 1
    repo = bitbucket.sandbox.world.workspaces["demo"].repos["api"]
    bitbucket.sandbox.push("demo", "api", repo.mainbranch, files={"assets/blank.bin": "0" * (3 << 20)}, fire=False)
    integration = connect()
    helpers.scan(integration)
    api = Reference.objects.get(project__full_name="demo/api", is_default=True)
    assert ScannerState.objects.get(reference=api).via == "rest:over-1MB"
    assert SyncLog.objects.filter(integration=integration, message__contains="inflates to more than 1 MB").exists()
    assert DependencyPackage.objects.filter(reference=api).exists()


def test_dependency_scans_over_git_go_on_when_posture_has_spent_the_rest_hour(bitbucket, settings):
    bitbucket.sandbox.rate_limit = 12
    settings.BITBUCKET_REST_RESERVE = 2
    integration = helpers.connect(name="Both", scanners=["dependencies", "posture"])
    run = helpers.scan(integration)
    assert "Scanners paused" in run.summary  # posture waits for the REST hour
    assert run.counts["dependencies scanner"]["references"] == 8  # git's hour has room: all done
    assert run.counts["posture scanner"]["references"] < 8
    assert not [r for r in bitbucket.sandbox.requests if r.status == 429]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command line")
def test_the_sandbox_speaks_real_git(sandbox, tmp_path):
    """git itself fetches a head from the sandbox, and the objects are sound."""
    repo = sandbox.sandbox.world.workspaces["demo"].repos["api"]
    head = repo.branches[repo.mainbranch]
    basic = base64.b64encode(f"x-bitbucket-api-token-auth:{SANDBOX_API_TOKEN}".encode()).decode()
    env = {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    subprocess.run(["git", "init", "-q", "--bare", str(tmp_path / "r")], check=True, env=env)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path / "r"),
            "fetch",
            "-q",
            "--depth=1",
            "--no-tags",
            f"{sandbox.web_url}/demo/api.git",
            head,
        ],
        check=True,
        env=env,
        timeout=60,
    )
    listed = subprocess.run(
        ["git", "-C", str(tmp_path / "r"), "ls-tree", "-r", "--name-only", head],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert sorted(listed) == sorted(repo.commits[head].files)
    subprocess.run(
        ["git", "-C", str(tmp_path / "r"), "fsck", "--no-dangling"], check=True, env=env, capture_output=True
    )
