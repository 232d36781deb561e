"""The scanner catalogue: what each scanner is called, what it does, the scopes it needs
and how verification checks them. The one source for settings validation, the forms,
verification probes, the scopes shown to people and the docs; ``scanning/scanners.py``
implements exactly these (it checks so at import)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScannerInfo:
    name: str
    description: str
    # Scopes per auth family: Atlassian API tokens ("api_token") use granular names,
    # access tokens and OAuth consumers ("other") the older ones.
    scopes: dict[str, tuple[str, ...]]
    # The client method verification calls on one repository to prove the scopes
    # (beyond listing, which every scanner needs); "" when listing is enough.
    probe: str = ""

    def scopes_for(self, auth_method: str) -> tuple[str, ...]:
        return self.scopes["api_token" if auth_method == "api_token" else "other"]


CATALOGUE: dict[str, ScannerInfo] = {
    s.name: s
    for s in (
        ScannerInfo(
            "dependencies",
            "Dependency inventory: packages from manifests and lock files",
            {"api_token": ("read:repository:bitbucket",), "other": ("repository",)},
        ),
        ScannerInfo(
            "posture",
            "Repository posture: branch restrictions, approvals, visibility",
            {
                "api_token": ("admin:repository:bitbucket", "read:pullrequest:bitbucket"),
                "other": ("repository:admin", "pullrequest"),
            },
            probe="branch_restrictions_first_page",
        ),
    )
}
