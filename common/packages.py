"""Package identities and versions, per ecosystem, by well-kept libraries: one package URL
for a package wherever it is named (SBOMs, the API, CSV, vulnerability matching), names
normalised by each ecosystem's rules, versions compared by each ecosystem's rules
(packageurl-python, univers)."""

from __future__ import annotations

import re
from functools import lru_cache

from packageurl import PackageURL
from univers import versions as uv

# The portal's ecosystems -> package URL types, OSV ecosystem names and univers version classes.
PURL_TYPES = {
    "npm": "npm",
    "pypi": "pypi",
    "maven": "maven",
    "go": "golang",
    "cargo": "cargo",
    "gem": "gem",
    "composer": "composer",
    "nuget": "nuget",
}
OSV_ECOSYSTEMS = {
    "npm": "npm",
    "pypi": "PyPI",
    "maven": "Maven",
    "go": "Go",
    "cargo": "crates.io",
    "gem": "RubyGems",
    "composer": "Packagist",
    "nuget": "NuGet",
}
VERSION_CLASSES: dict[str, type[uv.Version]] = {
    "npm": uv.SemverVersion,
    "pypi": uv.PypiVersion,
    "maven": uv.MavenVersion,
    "go": uv.GolangVersion,
    "cargo": uv.SemverVersion,
    "gem": uv.RubygemsVersion,
    "composer": uv.ComposerVersion,
    "nuget": uv.NugetVersion,
}
_RANGE_START = ("^", "~", ">", "<", "=", "*", "!")
_PEP503 = re.compile(r"[-_.]+")


def normalise_name(ecosystem: str, name: str) -> str:
    """A package's name as its ecosystem compares names: PyPI by PEP 503 (``Flask_Cors`` is
    ``flask-cors``), npm, Cargo, RubyGems-insensitive registries lower-cased where the
    registry is case-insensitive; Maven ``group:artifact``; Go module paths as written."""
    name = (name or "").strip()
    if ecosystem == "pypi":
        return _PEP503.sub("-", name).lower()
    if ecosystem in ("npm", "composer", "nuget", "cargo"):
        return name.lower()
    return name


def exact_version(ecosystem: str, version: str) -> str:
    """The version a row pins, or "" when it is a range or cannot be read by its
    ecosystem's rules (``^4.17.0``, ``>=1,<2``, ``latest``, a git URL)."""
    version = (version or "").strip()
    if not version or version.startswith(_RANGE_START) or " " in version or "," in version:
        return ""
    return version if parse_version(ecosystem, version) is not None else ""


def parse_version(ecosystem: str, version: str) -> uv.Version | None:
    """``version`` by its ecosystem's rules (Maven ``5.3.0.RELEASE``, Go pseudo-versions,
    Ruby platform gems without their platform), or None when it cannot be read."""
    cls = VERSION_CLASSES.get(ecosystem)
    if cls is None or not version:
        return None
    return _parse(cls, _strip_platform(ecosystem, version.strip()))


@lru_cache(maxsize=65536)
def _parse(cls: type[uv.Version], text: str) -> uv.Version | None:
    try:
        return cls(text)
    except Exception:  # noqa: BLE001 - univers raises several kinds for unreadable versions
        return None


def _strip_platform(ecosystem: str, version: str) -> str:
    """RubyGems platform gems (``1.13.10-x86_64-linux``) are that version for that platform."""
    if ecosystem == "gem" and "-" in version:
        return version.split("-", 1)[0]
    return version


def package_url(ecosystem: str, name: str, version: str = "") -> str:
    """The package URL of a package (with its version when the row pins one)."""
    kind = PURL_TYPES.get(ecosystem, ecosystem)
    namespace, short = None, normalise_name(ecosystem, name)
    if ecosystem == "maven" and ":" in short:
        namespace, short = short.split(":", 1)
    elif ecosystem in ("npm", "composer", "golang", "go") and "/" in short:
        namespace, short = short.rsplit("/", 1)
    pinned = exact_version(ecosystem, version)
    if ecosystem == "gem" and pinned:
        pinned = _strip_platform(ecosystem, pinned)
    return PackageURL(type=kind, namespace=namespace, name=short, version=pinned or None).to_string()
