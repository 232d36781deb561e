"""The lock files dev.py installs from still cover what pyproject.toml asks for (refresh
them with the uv commands in the README after changing a dependency)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize("lock, extras", [("requirements.lock", ()), ("requirements-dev.lock", ("dev",))])
def test_every_dependency_is_pinned_with_hashes(lock, extras):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in extras:
        wanted |= {_name(r) for r in project["optional-dependencies"][extra]}
    text = (ROOT / lock).read_text()
    pinned = {m.lower().replace("_", "-") for m in re.findall(r"^([A-Za-z0-9_.\-]+)==", text, flags=re.M)}
    assert wanted - pinned == set(), f"{lock} is stale: refresh it (README, 'Dependencies')"
    lines = text.splitlines()
    unhashed = [
        line
        for i, line in enumerate(lines)
        if re.match(r"^\S+==\S+", line)
        and not (i + 1 < len(lines) and lines[i + 1].strip().startswith("--hash=sha256:"))
    ]
    assert unhashed == [], f"pinned without a hash in {lock}"
