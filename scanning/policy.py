"""The deny list as one set of rules, matched the same way wherever a package appears:
pull-request scans, the overview, package search and the project page."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Q
from django.db.models.functions import Upper
from django.db.models.lookups import In

from common.packages import comparable, range_check, range_problem


def package_name_normal(name: str, ecosystem: str = "") -> str:
    name = name.strip().lower()
    return name.replace("_", "-").replace(".", "-") if ecosystem in ("pypi", "") else name


def spelled_as(names: Iterable[str], *, separators: bool = True) -> Q:
    """Package rows whose name is one of ``names`` (normalised), case aside, and, with
    ``separators``, with ``_`` or ``.`` where the normal form has ``-`` (PyPI's spellings).
    One ``UPPER(name) IN (...)``, which the expression index on ``UPPER(name)`` answers."""
    variants = set()
    for name in names:
        variants |= {name, name.replace("-", "_"), name.replace("-", ".")} if separators else {name}
    return Q(In(Upper("name"), sorted(v.upper() for v in variants)))


@dataclass(frozen=True)
class DenyRule:
    name: str  # normalised
    text: str  # the range as written, in the ecosystem's own syntax ("" for every version)

    def why(self, version: str, ecosystem: str = "") -> str | None:
        """Why ``version`` is denied by this rule, or None when it is not. The range is read
        in the package's ecosystem's syntax and compared by its version rules (npm ``^4.17.0``,
        PEP 440, Maven ``[1.0,2.0)``, ``~> 1.2``...); a version that cannot be compared (or a
        range this ecosystem cannot read) is treated as affected, and said so."""
        if not self.text.strip():
            return "is denied"
        ecosystem = ecosystem or "npm"
        try:
            check = range_check(ecosystem, self.text)
        except ValueError:
            check = None
        parsed = comparable(ecosystem, version)
        if check is not None and parsed is not None and not check(parsed):
            return None
        why = f"is denied in range {self.text}"
        if check is None:
            why += f" (the range cannot be read as a {ecosystem} range, so it is treated as affected)"
        elif parsed is None:
            why += f" (version '{version}' cannot be compared, so it is treated as affected)"
        return why


def deny_rules(denied: list[dict], warnings: list[str] | None = None) -> list[DenyRule]:
    """The integration's ``deny_packages`` entries as rules; an entry whose range no
    ecosystem can read is skipped (and said in ``warnings``)."""
    rules = []
    for entry in denied or []:
        problem = range_problem(entry.get("range", ""))
        if problem:
            if warnings is not None:
                warnings.append(f"Deny list entry '{entry.get('name')}' skipped: {problem}")
            continue
        rules.append(DenyRule(package_name_normal(entry.get("name", "")), entry.get("range", "")))
    return rules


def denied_by(rules: list[DenyRule], name: str, ecosystem: str, version: str) -> tuple[DenyRule, str] | None:
    """The first rule that denies this package version, with why."""
    names = {package_name_normal(name), package_name_normal(name, ecosystem)}
    for rule in rules:
        if rule.name in names:
            why = rule.why(version, ecosystem)
            if why is not None:
                return rule, why
    return None
