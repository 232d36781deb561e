"""Validation of an integration's settings (scanners, pull-request policy, interval, labels,
branch patterns), shared by create and update."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError

from common.packages import range_problem
from common.scanners import CATALOGUE
from integrations.models import (
    default_pr_settings,
)

MIN_SCAN_INTERVAL = timedelta(hours=1)
MAX_SCAN_INTERVAL = timedelta(days=30)


def _pr_settings_problem(pr: dict) -> str:
    """What is wrong with pull-request settings (types, deny list entries), or ''."""
    for key in (
        "enabled",
        "post_build_status",
        "post_summary_comment",
        "status_per_scanner",
        "require_lockfile_update",
    ):
        if not isinstance(pr[key], bool):
            return f"pr_settings.{key} must be true or false."
    if not isinstance(pr["target_branches"], list) or not all(
        isinstance(p, str) and p.strip() for p in pr["target_branches"]
    ):
        return "pr_settings.target_branches must be a list of branch patterns such as main or release/*."
    if pr["vulnerabilities"] not in ("off", "warn", "fail"):
        return "pr_settings.vulnerabilities must be off, warn or fail."
    if pr["vulnerability_min_severity"] not in ("low", "medium", "high", "critical"):
        return "pr_settings.vulnerability_min_severity must be low, medium, high or critical."
    if not isinstance(pr["deny_packages"], list):
        return "pr_settings.deny_packages must be a list of {name, range} objects."
    for number, entry in enumerate(pr["deny_packages"], start=1):
        if not isinstance(entry, dict) or not str(entry.get("name", "")).strip() or set(entry) - {"name", "range"}:
            return (
                f"pr_settings.deny_packages[{number}]: give a package name and an optional range, e.g. "
                '{"name": "lodash", "range": "<4.17.21"}.'
            )
        problem = range_problem(str(entry.get("range") or ""))
        if problem:
            return f"pr_settings.deny_packages[{number}] ({entry['name']}): {problem}"
    return ""


def clean_settings(
    *,
    scanners: Iterable[str] | None = None,
    pr_settings: dict | None = None,
    scan_interval: timedelta | None = None,
    labels: Iterable[str] | None = None,
    tracked_branches: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Validate the editable settings; returns only those given."""
    cleaned: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if scanners is not None:
        scanners = [s.strip() for s in scanners if s and s.strip()]
        known = set(CATALOGUE)
        unknown = [s for s in scanners if s not in known]
        if unknown:
            errors["scanners"] = f"Unknown scanner(s): {', '.join(unknown)}. Available: {', '.join(sorted(known))}."
        cleaned["scanners"] = sorted(set(scanners))
    if pr_settings is not None:
        if not isinstance(pr_settings, dict):
            errors["pr_settings"] = "Pull-request settings must be an object."
        else:
            allowed = default_pr_settings()
            unknown = sorted(set(pr_settings) - set(allowed))
            if unknown:
                errors["pr_settings"] = f"Unknown pull-request setting(s): {', '.join(unknown)}."
            cleaned["pr_settings"] = {**allowed, **{k: v for k, v in pr_settings.items() if k in allowed}}
            problem = _pr_settings_problem(cleaned["pr_settings"])
            if problem and "pr_settings" not in errors:
                errors["pr_settings"] = problem
    if scan_interval is not None:
        if not isinstance(scan_interval, timedelta) or not MIN_SCAN_INTERVAL <= scan_interval <= MAX_SCAN_INTERVAL:
            errors["scan_interval"] = "The scan interval must be between 1 hour and 30 days."
        cleaned["scan_interval"] = scan_interval
    if labels is not None:
        labels = [str(label).strip() for label in labels if str(label).strip()]
        too_long = [label for label in labels if len(label) > 64]
        if too_long:
            errors["labels"] = f"Labels may have at most 64 characters: '{too_long[0][:20]}...'."
        cleaned["labels"] = sorted(set(labels))
    if tracked_branches is not None:
        patterns = [str(p).strip() for p in tracked_branches if str(p).strip()]
        if any(len(p) > 200 or any(c in p for c in " \t\n~^:\\") for p in patterns):
            errors["tracked_branches"] = "Branch patterns are globs like release/* (no spaces, ~, ^, : or \\)."
        cleaned["tracked_branches"] = sorted(set(patterns))
    if errors:
        raise ValidationError(errors)
    return cleaned
