"""The deny list as one set of rules, matched the same way wherever a package appears:
pull-request scans, the overview, package search and the project page."""

from __future__ import annotations

from dataclasses import dataclass

from packaging.specifiers import SpecifierSet

from common.versions import comparable_version, version_range


def package_name_normal(name: str, ecosystem: str = "") -> str:
    name = name.strip().lower()
    return name.replace("_", "-").replace(".", "-") if ecosystem in ("pypi", "") else name


@dataclass(frozen=True)
class DenyRule:
    name: str  # normalised
    text: str  # the range as written ("" for every version)
    spec: SpecifierSet | None

    def why(self, version: str) -> str | None:
        """Why ``version`` is denied by this rule, or None when it is not (a version that
        cannot be compared is treated as affected, and said so)."""
        if self.spec is None:
            return "is denied"
        parsed = comparable_version(version)
        if parsed is not None and not self.spec.contains(parsed, prereleases=True):
            return None
        why = f"is denied in range {self.text}"
        if parsed is None:
            why += f" (version '{version}' cannot be compared, so it is treated as affected)"
        return why


def deny_rules(denied: list[dict], warnings: list[str] | None = None) -> list[DenyRule]:
    """The integration's ``deny_packages`` entries as rules; an entry whose range cannot be
    read is skipped (and said in ``warnings``)."""
    rules = []
    for entry in denied or []:
        try:
            spec = version_range(entry.get("range", ""))
        except ValueError as exc:
            if warnings is not None:
                warnings.append(f"Deny list entry '{entry.get('name')}' skipped: {exc}")
            continue
        rules.append(DenyRule(package_name_normal(entry.get("name", "")), entry.get("range", ""), spec))
    return rules


def denied_by(rules: list[DenyRule], name: str, ecosystem: str, version: str) -> tuple[DenyRule, str] | None:
    """The first rule that denies this package version, with why."""
    names = {package_name_normal(name), package_name_normal(name, ecosystem)}
    for rule in rules:
        if rule.name in names:
            why = rule.why(version)
            if why is not None:
                return rule, why
    return None
