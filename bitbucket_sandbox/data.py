"""The sandbox's world: users, workspaces, projects, repositories, commits, credentials.

Built by a deterministic generator (same seed, same world) or loaded from a JSON
fixture. Plain dataclasses, no Django: the sandbox runs in a thread or on its own.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import uuid as uuidlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

from bitbucket_sandbox.gitobjects import commit_id

EPOCH = datetime(2024, 1, 15, 9, 0, tzinfo=timezone.utc)

# Granular scopes of Atlassian API tokens, and the older scope names of access
# tokens and OAuth consumers. See the spec's x-atlassian-oauth2-scopes and
# security.oauth2 entries.
API_TOKEN_SCOPES_ALL = (
    "read:user:bitbucket",
    "read:workspace:bitbucket",
    "read:project:bitbucket",
    "read:repository:bitbucket",
    "write:repository:bitbucket",
    "admin:repository:bitbucket",
    "read:pullrequest:bitbucket",
    "write:pullrequest:bitbucket",
    "read:webhook:bitbucket",
    "write:webhook:bitbucket",
    "delete:webhook:bitbucket",
)
LEGACY_SCOPES_ALL = (
    "account",
    "project",
    "repository",
    "repository:write",
    "repository:admin",
    "pullrequest",
    "pullrequest:write",
    "webhook",
)


def stable_uuid(*parts: str) -> str:
    digest = hashlib.sha256("/".join(parts).encode()).digest()[:16]
    return "{" + str(uuidlib.UUID(bytes=digest, version=4)) + "}"


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat()


def repo_slug_from_name(name: str) -> str:
    """Bitbucket keeps a-z 0-9 - _ . in repository slugs, lower-cased."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-")
    return slug or "repo"


@dataclass
class User:
    uuid: str
    account_id: str
    display_name: str
    nickname: str
    email: str


@dataclass
class Commit:
    hash: str
    message: str
    date: str
    parents: list[str]
    files: dict[str, str]  # path -> content at this commit


@dataclass
class Comment:
    id: int
    raw: str
    author: str  # user uuid
    created_on: str
    updated_on: str


@dataclass
class PullRequest:
    id: int
    title: str
    author: str
    source_branch: str
    destination_branch: str
    state: str = "OPEN"
    created_on: str = ""
    updated_on: str = ""
    comments: dict[int, Comment] = field(default_factory=dict)
    approvals: list[str] = field(default_factory=list)
    merge_commit: str = ""
    comment_seq: int = 0


@dataclass
class Hook:
    uuid: str
    url: str
    description: str
    events: list[str]
    active: bool
    secret: str | None
    created_at: str


@dataclass
class Repo:
    uuid: str
    slug: str
    name: str
    workspace: str
    project_key: str
    is_private: bool
    language: str
    description: str
    mainbranch: str
    created_on: str
    updated_on: str
    size: int
    branches: dict[str, str] = field(default_factory=dict)  # name -> head hash
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    restrictions: list[dict] = field(default_factory=list)
    default_reviewers: list[str] = field(default_factory=list)
    pullrequests: dict[int, PullRequest] = field(default_factory=dict)
    hooks: dict[str, Hook] = field(default_factory=dict)
    statuses: dict[str, dict] = field(default_factory=dict)  # "hash/key" -> status

    @property
    def full_name(self) -> str:
        return f"{self.workspace}/{self.slug}"


@dataclass
class Project:
    uuid: str
    key: str
    name: str
    description: str
    is_private: bool
    created_on: str
    updated_on: str


@dataclass
class Workspace:
    uuid: str
    slug: str
    name: str
    is_private: bool
    created_on: str
    members: list[str] = field(default_factory=list)  # user uuids
    projects: dict[str, Project] = field(default_factory=dict)
    repos: dict[str, Repo] = field(default_factory=dict)
    hooks: dict[str, Hook] = field(default_factory=dict)


@dataclass
class Credential:
    """One secret the sandbox accepts.

    kind: ``api_token`` (Basic, email + token), ``access_token`` (Bearer; reach set
    by workspace / project_key / repo_slug), ``oauth_consumer`` (client credentials).
    """

    kind: str
    secret: str
    scopes: list[str]
    label: str
    email: str = ""
    key: str = ""
    user: str = ""  # user uuid acting
    workspace: str = ""
    project_key: str = ""
    repo_slug: str = ""
    expired: bool = False


@dataclass
class World:
    users: dict[str, User] = field(default_factory=dict)
    workspaces: dict[str, Workspace] = field(default_factory=dict)
    credentials: list[Credential] = field(default_factory=list)

    # --- JSON fixtures -------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "World":
        raw = json.loads(text)
        world = cls()
        world.users = {k: User(**v) for k, v in raw.get("users", {}).items()}
        world.credentials = [Credential(**c) for c in raw.get("credentials", [])]
        for slug, ws in raw.get("workspaces", {}).items():
            repos = {}
            for rslug, r in ws.pop("repos", {}).items():
                r["commits"] = {h: Commit(**c) for h, c in r.get("commits", {}).items()}
                r["hooks"] = {h: Hook(**x) for h, x in r.get("hooks", {}).items()}
                prs = {}
                for pid, pr in r.get("pullrequests", {}).items():
                    pr["comments"] = {int(cid): Comment(**c) for cid, c in pr.get("comments", {}).items()}
                    prs[int(pid)] = PullRequest(**pr)
                r["pullrequests"] = prs
                repos[rslug] = Repo(**r)
            ws["projects"] = {k: Project(**p) for k, p in ws.get("projects", {}).items()}
            ws["hooks"] = {h: Hook(**x) for h, x in ws.get("hooks", {}).items()}
            world.workspaces[slug] = Workspace(repos=repos, **ws)
        return world

    def find_credential(self, secret: str) -> Credential | None:
        for credential in self.credentials:
            if credential.secret == secret:
                return credential
        return None


# --- The generator ----------------------------------------------------------------------

WORKSPACE_NAMES = ["Acme Engineering", "Globex Labs", "Initech Platform", "Umbrella R&D", "Soylent Data"]
PROJECT_WORDS = [
    "Platform",
    "Payments",
    "Données Clients",
    "Mobile",
    "Infra / Ops",
    "Zürich Team",
    "日本語チーム",
    "Growth & Marketing",
    "Security",
    "Data.Science",
    "Core API",
    "Edge (CDN)",
    "Back Office",
    "ML",
]
REPO_WORDS = [
    "api",
    "gateway",
    "web",
    "worker",
    "billing",
    "auth",
    "search",
    "ingest",
    "ledger",
    "notify",
    "admin",
    "catalog",
    "checkout",
    "reports",
    "sdk",
    "cli",
    "infra",
    "terraform",
    "mobile",
    "ios",
    "android",
    "frontend",
    "backend",
    "pipeline",
    "etl",
    "café",
    "übersicht",
    "docs",
    "ui-kit",
    "scheduler",
]
MAIN_BRANCHES = ["main", "main", "main", "master", "master", "develop", "trunk"]
LANGUAGES = ["python", "javascript", "typescript", "go", "java", "rust", "ruby", "php", "c#"]
FIRST = ["Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Edsger", "Radia", "Zoë", "José"]
LAST = [
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Müller",
    "Núñez",
]
NPM = [
    ("express", "4.18.2"),
    ("lodash", "4.17.20"),
    ("react", "18.2.0"),
    ("axios", "1.6.2"),
    ("left-pad", "1.3.0"),
    ("moment", "2.29.4"),
    ("jest", "29.7.0"),
    ("typescript", "5.3.3"),
    ("event-stream", "3.3.6"),
]
PYPI = [
    ("django", "4.2.8"),
    ("requests", "2.31.0"),
    ("pyyaml", "6.0.1"),
    ("celery", "5.3.6"),
    ("numpy", "1.26.2"),
    ("pytest", "7.4.3"),
    ("jinja2", "3.1.2"),
]
GO = [
    ("github.com/gin-gonic/gin", "v1.9.1"),
    ("github.com/stretchr/testify", "v1.8.4"),
    ("golang.org/x/crypto", "v0.17.0"),
    ("github.com/sirupsen/logrus", "v1.9.3"),
]
MAVEN = [
    ("org.springframework", "spring-core", "6.1.2"),
    ("com.fasterxml.jackson.core", "jackson-databind", "2.16.0"),
    ("org.apache.logging.log4j", "log4j-core", "2.14.1"),
    ("junit", "junit", "4.13.2"),
]
CARGO = [("serde", "1.0.193"), ("tokio", "1.35.1"), ("regex", "1.10.2"), ("anyhow", "1.0.76")]
GEMS = [("rails", "7.1.2"), ("rack", "3.0.8"), ("nokogiri", "1.15.5"), ("puma", "6.4.0")]

# Known credentials of a generated world, for the demo and the tests. They are
# sandbox-only values: they mean nothing to Bitbucket itself.
SANDBOX_EMAIL = "sandbox-admin@example.com"
SANDBOX_API_TOKEN = "ATATT3xSandboxFullAccessToken0001"
SANDBOX_API_TOKEN_NO_ADMIN = "ATATT3xSandboxNoRepoAdminToken002"
SANDBOX_WORKSPACE_TOKEN = "ATCTT3xSandboxWorkspaceToken0003"
SANDBOX_READONLY_WORKSPACE_TOKEN = "ATCTT3xSandboxReadOnlyToken00004"
SANDBOX_PROJECT_TOKEN = "ATCTT3xSandboxProjectToken000005"
SANDBOX_REPO_TOKEN = "ATCTT3xSandboxRepositoryToken006"
SANDBOX_EXPIRED_TOKEN = "ATCTT3xSandboxExpiredToken000007"
SANDBOX_NO_WEBHOOK_TOKEN = "ATCTT3xSandboxNoWebhookToken0009"
SANDBOX_OAUTH_KEY = "SandboxConsumerKey8"
SANDBOX_OAUTH_SECRET = "SandboxConsumerSecret000000000008"


def _manifests(rng: random.Random, language: str) -> dict[str, str]:
    files: dict[str, str] = {"README.md": "# Service\n\nGenerated by the Bitbucket sandbox.\n"}
    ecosystems = {
        "javascript": "npm",
        "typescript": "npm",
        "python": "pypi",
        "go": "go",
        "java": "maven",
        "rust": "cargo",
        "ruby": "gem",
    }.get(language)
    chosen = {ecosystems} if ecosystems else set()
    if rng.random() < 0.3:
        chosen.add(rng.choice(["npm", "pypi", "go"]))
    prefix = "" if rng.random() < 0.7 else rng.choice(["app/", "services/api/"])
    if "npm" in chosen:
        deps = rng.sample(NPM, 4)
        runtime, dev = deps[:3], deps[3:]
        files[f"{prefix}package.json"] = json.dumps(
            {
                "name": "service",
                "version": "1.0.0",
                "dependencies": {n: f"^{v}" for n, v in runtime},
                "devDependencies": {n: f"^{v}" for n, v in dev},
            },
            indent=2,
        )
        packages = {
            "": {
                "name": "service",
                "version": "1.0.0",
                "dependencies": {n: f"^{v}" for n, v in runtime},
                "devDependencies": {n: f"^{v}" for n, v in dev},
            }
        }
        for i, (n, v) in enumerate(deps):
            packages[f"node_modules/{n}"] = {
                "version": v,
                "resolved": f"https://registry.npmjs.org/{n}/-/{n}-{v}.tgz",
                **({"dev": True} if (n, v) in dev else {}),
                # The first runtime dependency needs ms, a transitive one (the SBOM's graph).
                **({"dependencies": {"ms": "^2.1.3"}} if i == 0 else {}),
            }
        packages["node_modules/ms"] = {"version": "2.1.3"}
        files[f"{prefix}package-lock.json"] = json.dumps(
            {"name": "service", "version": "1.0.0", "lockfileVersion": 3, "packages": packages}, indent=2
        )
        files[f"{prefix}node_modules/lodash/package.json"] = json.dumps({"name": "lodash", "version": "4.17.20"})
    if "pypi" in chosen:
        deps = rng.sample(PYPI, 4)
        files[f"{prefix}requirements.txt"] = "".join(
            f"{n}=={v}\n" if i % 2 == 0 else f"{n}>={v}\n" for i, (n, v) in enumerate(deps)
        )
    if "go" in chosen:
        deps = rng.sample(GO, 3)
        files[f"{prefix}go.mod"] = (
            "module example.com/service\n\ngo 1.21\n\nrequire (\n" + "".join(f"\t{n} {v}\n" for n, v in deps) + ")\n"
        )
        files[f"{prefix}go.sum"] = "".join(
            f"{n} {v} h1:{hashlib.sha256(n.encode()).hexdigest()[:43]}=\n" for n, v in deps
        )
    if "maven" in chosen:
        deps = rng.sample(MAVEN, 3)
        files[f"{prefix}pom.xml"] = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
            "  <modelVersion>4.0.0</modelVersion>\n  <groupId>com.example</groupId>\n"
            "  <artifactId>service</artifactId>\n  <version>1.0.0</version>\n  <dependencies>\n"
            + "".join(
                f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version>"
                f"</dependency>\n"
                for g, a, v in deps
            )
            + "  </dependencies>\n</project>\n"
        )
    if "cargo" in chosen:
        deps = rng.sample(CARGO, 3)
        files[f"{prefix}Cargo.lock"] = "version = 3\n\n" + "".join(
            f'[[package]]\nname = "{n}"\nversion = "{v}"\nsource = "registry+https://github.com/rust-lang/crates.io-index"\n\n'
            for n, v in deps
        )
    if "gem" in chosen:
        deps = rng.sample(GEMS, 3)
        files[f"{prefix}Gemfile.lock"] = (
            "GEM\n  remote: https://rubygems.org/\n  specs:\n"
            + "".join(f"    {n} ({v})\n" for n, v in deps)
            + "\nPLATFORMS\n  ruby\n\nDEPENDENCIES\n"
            + "".join(f"  {n}\n" for n, _ in deps)
        )
    return files


def _restrictions(rng: random.Random, mainbranch: str) -> list[dict]:
    rules: list[dict] = []
    next_id = 1
    for kind, chance in (
        ("force", 0.7),
        ("delete", 0.7),
        ("require_approvals_to_merge", 0.6),
        ("require_passing_builds_to_merge", 0.4),
    ):
        if rng.random() < chance:
            rule = {"id": next_id, "kind": kind, "pattern": mainbranch, "branch_match_kind": "glob"}
            if kind.startswith("require_"):
                rule["value"] = rng.choice([1, 1, 2]) if kind == "require_approvals_to_merge" else 1
            rules.append(rule)
            next_id += 1
    return rules


def generate(
    *,
    seed: int = 1,
    workspaces: int = 1,
    projects: int = 4,
    repos: int = 24,
    branches: int = 3,
    pullrequests: bool = True,
) -> World:
    """A deterministic world. ``repos`` and ``projects`` are per workspace."""
    rng = random.Random(seed)
    world = World()
    people = []
    for i in range(max(4, min(40, repos // 5 + 3))):
        name = f"{FIRST[i % len(FIRST)]} {LAST[(i * 7) % len(LAST)]}"
        nickname = repo_slug_from_name(name).replace(".", "")
        user = User(
            uuid=stable_uuid("user", str(seed), str(i)),
            account_id=f"5b{seed:04d}{i:06d}abcdef",
            display_name=name,
            nickname=f"{nickname}{i}",
            email=f"{nickname}{i}@example.com",
        )
        world.users[user.uuid] = user
        people.append(user.uuid)
    admin = User(
        uuid=stable_uuid("user", "sandbox-admin"),
        account_id="5b0000000000sandbox",
        display_name="Sandbox Admin",
        nickname="sandbox-admin",
        email=SANDBOX_EMAIL,
    )
    world.users[admin.uuid] = admin

    for w in range(workspaces):
        ws_name = WORKSPACE_NAMES[w % len(WORKSPACE_NAMES)] + ("" if w < len(WORKSPACE_NAMES) else f" {w}")
        ws_slug = "demo" if w == 0 else re.sub(r"[^a-z0-9]+", "-", ws_name.lower()).strip("-")
        created = EPOCH - timedelta(days=400 + w)
        ws = Workspace(
            uuid=stable_uuid("ws", str(seed), ws_slug),
            slug=ws_slug,
            name=ws_name,
            is_private=True,
            created_on=iso(created),
            members=[admin.uuid, *rng.sample(people, min(len(people), 8))],
        )
        keys_taken: set[str] = set()
        for p in range(projects):
            word = PROJECT_WORDS[p % len(PROJECT_WORDS)]
            name = word if p < len(PROJECT_WORDS) else f"{word} {p // len(PROJECT_WORDS) + 1}"
            key = re.sub(r"[^A-Z0-9]", "", name.upper().encode("ascii", "ignore").decode())[:6] or "PRJ"
            if not key[0].isalpha():
                key = "P" + key
            base, n = key, 2
            while key in keys_taken:
                key, n = f"{base}{n}", n + 1
            keys_taken.add(key)
            ws.projects[key] = Project(
                uuid=stable_uuid("project", ws.uuid, key),
                key=key,
                name=name,
                description=f"{name} repositories",
                is_private=rng.random() < 0.85,
                created_on=iso(created + timedelta(days=p)),
                updated_on=iso(created + timedelta(days=p + 10)),
            )
        project_keys = list(ws.projects)
        for r in range(repos):
            word = REPO_WORDS[r % len(REPO_WORDS)]
            suffix = "" if r < len(REPO_WORDS) else f"-{r // len(REPO_WORDS) + 1}"
            name = (word.capitalize() if r % 5 == 0 else word) + suffix + (" Service" if r % 7 == 3 else "")
            slug = repo_slug_from_name(name)
            while slug in ws.repos:
                slug += "-x"
            language = rng.choice(LANGUAGES)
            mainbranch = MAIN_BRANCHES[rng.randrange(len(MAIN_BRANCHES))]
            repo_created = created + timedelta(days=30 + r % 300, minutes=r)
            repo = Repo(
                uuid=stable_uuid("repo", ws.uuid, slug),
                slug=slug,
                name=name,
                workspace=ws.slug,
                project_key=project_keys[r % len(project_keys)] if project_keys else "",
                is_private=rng.random() < 0.8,
                language=language,
                description=f"The {name} repository",
                mainbranch=mainbranch,
                created_on=iso(repo_created),
                updated_on=iso(repo_created + timedelta(days=rng.randrange(1, 200))),
                size=rng.randrange(10_000, 9_000_000),
            )
            files = _manifests(rng, language)
            branch_names = [mainbranch] + [
                b for b in ("develop", "release/1.x", "feature/login", "hotfix/cve", "staging") if b != mainbranch
            ][: max(0, branches - 1)]
            for b in branch_names:
                message = f"Update {b} of {slug}"
                h = commit_id(files, message, repo.updated_on, [])  # a real git commit (gitobjects.py)
                repo.commits[h] = Commit(hash=h, message=message, date=repo.updated_on, parents=[], files=files)
                repo.branches[b] = h
            if rng.random() < 0.3:
                repo.tags["v1.0.0"] = repo.branches[mainbranch]
            repo.restrictions = _restrictions(rng, mainbranch)
            if rng.random() < 0.5:
                repo.default_reviewers = rng.sample(ws.members, 1)
            if pullrequests and len(branch_names) > 1 and rng.random() < 0.4:
                pr = PullRequest(
                    id=1,
                    title=f"Merge {branch_names[1]}",
                    author=rng.choice(ws.members),
                    source_branch=branch_names[1],
                    destination_branch=mainbranch,
                    created_on=repo.updated_on,
                    updated_on=repo.updated_on,
                )
                repo.pullrequests[1] = pr
            ws.repos[slug] = repo
        world.workspaces[ws.slug] = ws

    first = next(iter(world.workspaces.values()))
    first_project = next(iter(first.projects), "")
    first_repo = next(iter(first.repos), "")
    world.credentials = [
        Credential(
            kind="api_token",
            secret=SANDBOX_API_TOKEN,
            email=SANDBOX_EMAIL,
            user=admin.uuid,
            scopes=list(API_TOKEN_SCOPES_ALL),
            label="API token with every scope",
        ),
        Credential(
            kind="api_token",
            secret=SANDBOX_API_TOKEN_NO_ADMIN,
            email=SANDBOX_EMAIL,
            user=admin.uuid,
            scopes=[
                s for s in API_TOKEN_SCOPES_ALL if s not in ("admin:repository:bitbucket", "read:workspace:bitbucket")
            ],
            label="API token without admin:repository and read:workspace",
        ),
        Credential(
            kind="access_token",
            secret=SANDBOX_WORKSPACE_TOKEN,
            workspace=first.slug,
            scopes=list(LEGACY_SCOPES_ALL),
            label=f"Workspace access token for {first.slug}",
        ),
        Credential(
            kind="access_token",
            secret=SANDBOX_READONLY_WORKSPACE_TOKEN,
            workspace=first.slug,
            scopes=["repository", "project"],
            label=f"Workspace access token for {first.slug}, read-only",
        ),
        Credential(
            kind="access_token",
            secret=SANDBOX_PROJECT_TOKEN,
            workspace=first.slug,
            project_key=first_project,
            scopes=["project", "repository", "repository:admin", "pullrequest", "webhook"],
            label=f"Project access token for {first.slug}/{first_project}",
        ),
        Credential(
            kind="access_token",
            secret=SANDBOX_REPO_TOKEN,
            workspace=first.slug,
            repo_slug=first_repo,
            scopes=["repository", "pullrequest"],
            label=f"Repository access token for {first.slug}/{first_repo}",
        ),
        Credential(
            kind="access_token",
            secret=SANDBOX_NO_WEBHOOK_TOKEN,
            workspace=first.slug,
            scopes=[s for s in LEGACY_SCOPES_ALL if s != "webhook"],
            label=f"Workspace access token for {first.slug} without the webhook scope",
        ),
        Credential(
            kind="access_token",
            secret=SANDBOX_EXPIRED_TOKEN,
            workspace=first.slug,
            scopes=list(LEGACY_SCOPES_ALL),
            expired=True,
            label="Expired workspace access token",
        ),
        Credential(
            kind="oauth_consumer",
            key=SANDBOX_OAUTH_KEY,
            secret=SANDBOX_OAUTH_SECRET,
            user=admin.uuid,
            scopes=list(LEGACY_SCOPES_ALL),
            label="OAuth consumer",
        ),
    ]
    return world
