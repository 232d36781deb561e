"""What ships: the production wheel holds the product apps only, and the development
pieces stay separable (the sandbox is Django-free; product code imports neither it
nor the dev tools)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("config", "integrations", "scanning", "synclogs", "common")
SANDBOX_MAY_IMPORT = {"cryptography", "requests", "bitbucket_sandbox"}


def _imports(folder: Path) -> list[tuple[Path, str]]:
    """(file, top-level module) for every absolute import in the .py files under ``folder``."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found += [(path, alias.name.split(".")[0]) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((path, node.module.split(".")[0]))
    return found


def _why_no_wheel() -> str | None:
    """Why ``pip wheel --no-build-isolation`` cannot run with this interpreter, if it cannot."""
    if find_spec("pip") is None:
        return "pip is not installed in this environment"
    for text in tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]:
        requirement = Requirement(text)
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            return f"the build backend {text!r} (pyproject.toml's build-system) is not installed"
        if not requirement.specifier.contains(version, prereleases=True):
            return f"{requirement.name} {version} is installed; pyproject.toml's build-system requires {text!r}"
    if Version(metadata.version("setuptools")) < Version("70.1") and find_spec("wheel") is None:
        return "setuptools before 70.1 builds wheels only with the 'wheel' package, which is not installed"
    return None


def test_the_wheel_holds_neither_the_sandbox_nor_the_dev_tools(tmp_path):
    reason = _why_no_wheel()
    if reason:
        pytest.skip(f"cannot build the wheel: {reason}")
    # Built from a copy, so the working tree gets no build/ or .egg-info.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "data", "test-artifacts", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    assert (source / "bitbucket_sandbox").is_dir()
    assert (source / "devtools").is_dir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ".",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(tmp_path / "dist"),
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(name.startswith("scanning/") for name in names)
    assert [name for name in names if "sandbox" in name or "devtools" in name] == []


def test_the_sandbox_is_django_free():
    imports = _imports(ROOT / "bitbucket_sandbox")
    assert imports
    assert [(str(path.relative_to(ROOT)), module) for path, module in imports if module == "django"] == []
    allowed = set(sys.stdlib_module_names) | SANDBOX_MAY_IMPORT
    assert [(str(path.relative_to(ROOT)), module) for path, module in imports if module not in allowed] == []


def test_product_code_imports_neither_the_sandbox_nor_the_dev_tools():
    imports = [found for app in PRODUCT if (ROOT / app).is_dir() for found in _imports(ROOT / app)]
    assert imports
    assert [
        (str(path.relative_to(ROOT)), module) for path, module in imports if module in ("bitbucket_sandbox", "devtools")
    ] == []
