"""Verification: can these credentials do what this integration needs?

Run before an integration is saved, and later as "Test configuration". Each check
calls Bitbucket once; a failing required check (credentials rejected, workspace or
project not found, repositories or projects not listable, a scope that a selected
scanner or pull-request scanning needs) fails verification and names the missing
scopes for the chosen auth method. Members and git access are reported as warnings:
the scan goes on without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import ValidationError

from common.scanners import CATALOGUE
from integrations.bitbucket import client as bb
from integrations.bitbucket.credentials import (
    APP_PASSWORD_REMOVED,
    EXPIRED_HELP,
    SCOPE_HELP,
    Credentials,
    clean_credentials,
)
from integrations.bitbucket.urls import BitbucketTarget, parse_target

# Scopes, as Bitbucket names them for each auth method, per feature (for messages when
# Bitbucket's 403 does not name them). Scanners' scopes come from the catalogue.
NEEDS = {
    "repositories": {"api_token": "read:repository:bitbucket", "other": "repository"},
    "projects": {"api_token": "read:project:bitbucket", "other": "project"},
    "members": {"api_token": "read:workspace:bitbucket", "other": "account"},
    "pullrequests": {"api_token": "read:pullrequest:bitbucket", "other": "pullrequest"},
    "webhooks": {"api_token": "write:webhook:bitbucket", "other": "webhook"},
    "statuses": {"api_token": "read:repository:bitbucket", "other": "repository"},
    "comments": {"api_token": "read:pullrequest:bitbucket", "other": "pullrequest"},
}


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    required: bool = True
    missing_scopes: list[str] = field(default_factory=list)
    error: bb.BitbucketError | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "ok": self.ok,
            "required": self.required,
            "message": self.message,
            "missing_scopes": self.missing_scopes,
        }


@dataclass
class VerificationReport:
    checks: list[Check] = field(default_factory=list)
    repositories_seen: int | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.required)

    @property
    def missing_scopes(self) -> list[str]:
        return sorted({s for c in self.checks for s in c.missing_scopes})

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and c.required]

    def warnings(self) -> list[Check]:
        return [c for c in self.checks if not c.ok and not c.required]

    def summary_lines(self) -> list[str]:
        return [f"{c.name}: {c.message}" for c in self.failures()]

    def as_dict(self) -> dict:
        return {"ok": self.ok, "missing_scopes": self.missing_scopes, "checks": [c.as_dict() for c in self.checks]}


WHERE_TO_CREATE = {
    "access_token": "Workspace settings > Security > Access tokens (or the project's or repository's settings, "
    "for a narrower token). A token's scopes cannot be changed later.",
    "api_token": "Atlassian account settings > Security > API tokens > Create API token with scopes > Bitbucket. "
    "Use the email of that account with it.",
    "oauth": "Workspace settings > Apps and features > OAuth consumers > Add consumer: private, with "
    "client credentials, and the permissions below.",
}


def scopes_guide() -> dict[str, dict]:
    """Per auth method, the scopes to tick before creating the credential: what every
    integration needs, what each scanner and pull-request scans add, and where to create it
    (shown on the Add page before anyone makes a token)."""
    guide = {}
    for method in ("access_token", "api_token", "oauth"):
        guide[method] = {
            "where": WHERE_TO_CREATE[method],
            "required": sorted({_scopes(f, method)[0] for f in ("repositories", "projects")}),
            "optional": _scopes("members", method),
            "scanners": {name: list(CATALOGUE[name].scopes_for(method)) for name in CATALOGUE},
            "pull_requests": sorted(
                {_scopes(f, method)[0] for f in ("pullrequests", "webhooks", "statuses", "comments")}
            ),
        }
    return guide


def _scopes(feature: str, method: str) -> list[str]:
    if feature in CATALOGUE:
        return list(CATALOGUE[feature].scopes_for(method))
    return [NEEDS[feature]["api_token" if method == "api_token" else "other"]]


def _failed(name: str, exc: bb.BitbucketError, method: str, *, required: bool, feature: str | None) -> Check:
    if isinstance(exc, bb.Forbidden):
        missing = exc.missing_scopes or (_scopes(feature, method) if feature else [])
        help_text = SCOPE_HELP.get(method, "")
        return Check(name, False, f"missing scope(s) {', '.join(missing)}. {help_text}".strip(), required, missing, exc)
    if isinstance(exc, bb.AppPasswordRejected):
        return Check(name, False, APP_PASSWORD_REMOVED, required, error=exc)
    if isinstance(exc, bb.Unauthorized):
        return Check(name, False, EXPIRED_HELP.get(method, exc.message), required, error=exc)
    return Check(name, False, exc.message, required, error=exc)


def verify_connection(
    *,
    target: BitbucketTarget,
    credentials: Credentials,
    scanners: list[str] | tuple = (),
    pr_enabled: bool = False,
    client: bb.BitbucketClient | None = None,
) -> VerificationReport:
    client = client or bb.BitbucketClient(credentials, use_token_cache=False)  # a cached token proves nothing
    method = credentials.method
    report = VerificationReport()
    ws, key = target.workspace, target.project_key

    # 1. The workspace or project is there, and projects can be listed.
    try:
        if key:
            project = client.project(ws, key)
            report.checks.append(
                Check("Project reachable", True, f"{ws}/{project.get('key', key)} ({project.get('name', '')})")
            )
        else:
            page = client.projects_first_page(ws)
            report.checks.append(Check("Projects listable", True, f"{page.get('size', '?')} project(s) in {ws}"))
    except bb.NotFound as exc:
        what = f"project {key} in workspace {ws}" if key else f"workspace {ws}"
        report.checks.append(
            Check(
                "Workspace reachable",
                False,
                f"Bitbucket has no {what} visible to these "
                "credentials. Check the URL, and that the credential belongs to that workspace.",
                error=exc,
            )
        )
        return report
    except bb.BitbucketError as exc:
        report.checks.append(
            _failed("Project reachable" if key else "Projects listable", exc, method, required=True, feature="projects")
        )
        if isinstance(exc, (bb.Unauthorized, bb.HostUnreachable, bb.CertificateError, bb.Timeout)):
            return report

    # 2. Repositories can be listed (the heart of the sync).
    first_repo = None
    try:
        page = client.repositories_first_page(ws, key)
        report.repositories_seen = page.get("size")
        first_repo = (page.get("values") or [{}])[0].get("slug")
        report.checks.append(Check("Repositories listable", True, f"{page.get('size', '?')} repositories visible"))
    except bb.BitbucketError as exc:
        report.checks.append(_failed("Repositories listable", exc, method, required=True, feature="repositories"))
        return report

    # 3. Optional: workspace members.
    try:
        client.members_first_page(ws)
        report.checks.append(Check("Members listable", True, "workspace members can be read", required=False))
    except bb.BitbucketError as exc:
        report.checks.append(_failed("Members listable", exc, method, required=False, feature="members"))

    if first_repo:
        # 4. git ref reads (head commits without spending REST budget); REST is the fallback.
        try:
            client.git_refs(ws, first_repo)
            report.checks.append(
                Check(
                    "Git access",
                    True,
                    "head commits and dependency manifests are read over git (git's own hourly limit)",
                    required=False,
                )
            )
        except bb.BitbucketError as exc:
            check = _failed("Git access", exc, method, required=False, feature="repositories")
            check.message = (
                f"git refused ({exc.message}); head commits and dependency manifests will be read over REST "
                "instead, which spends the hourly REST allowance (about 2.5 requests per repository)."
            )
            report.checks.append(check)
        # 5. What the selected scanners and pull-request scanning need (reads, then writes
        #    probed so that nothing changes).
        repo = f"{ws}/{first_repo}"
        probes = [
            (f"{name.capitalize()} scanner", getattr(client, CATALOGUE[name].probe), name)
            for name in scanners
            if name in CATALOGUE and CATALOGUE[name].probe
        ]
        if pr_enabled:
            probes += [
                ("Pull-request scans", client.pull_requests_first_page, "pullrequests"),
                ("Webhook registration", client.may_manage_hooks, "webhooks"),
                ("Build statuses", client.may_post_build_statuses, "statuses"),
                ("Pull-request comments", client.may_comment, "comments"),
            ]
        for name, call, feature in probes:
            try:
                call(repo)
                report.checks.append(Check(name, True, "allowed"))
            except bb.BitbucketError as exc:
                report.checks.append(_failed(name, exc, method, required=True, feature=feature))
    return report


def verify_draft(
    *,
    auth_method: str,
    credentials: dict,
    bitbucket_url: str = "",
    workspace: str = "",
    project_key: str = "",
    scanners: list[str] | tuple = (),
    pr_enabled: bool = False,
):
    """Verify what a person typed before anything is saved (the Add page's Verify step).

    Raises ``ValidationError`` keyed by field for input that cannot be checked at all.
    Returns ``(target, credentials, report)``.
    """

    errors: dict = {}
    target = creds = None
    try:
        target = parse_target(url=bitbucket_url, workspace=workspace, project_key=project_key)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        creds = clean_credentials(auth_method, credentials)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    return target, creds, verify_connection(target=target, credentials=creds, scanners=scanners, pr_enabled=pr_enabled)
