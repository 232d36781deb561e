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


_GEM_PLATFORM = re.compile(r"^(\d[0-9A-Za-z.]*)-(x86|x64|arm|aarch64|java|universal|mingw|mswin|darwin|linux)")


def gem_version(version: str) -> str:
    """A RubyGems platform gem (``1.13.10-x86_64-linux``) is that version built for a platform."""
    match = _GEM_PLATFORM.match(version)
    return match[1] if match else version


def _strip_platform(ecosystem: str, version: str) -> str:
    return gem_version(version) if ecosystem == "gem" else version


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


# Ecosystems whose native range syntax univers reads: npm ^ ~ x-ranges, PEP 440 specifiers,
# Maven [1.0,2.0), RubyGems ~>, Cargo, Composer, NuGet.
_UNIVERS_SCHEMES = {
    "npm": "npm",
    "pypi": "pypi",
    "maven": "maven",
    "gem": "gem",
    "cargo": "cargo",
    "composer": "composer",
    "nuget": "nuget",
}
_COMPARISON = re.compile(r"^(<=|>=|<|>|==|=|!=)?\s*v?([0-9][^\s,|]*)$")


def range_check(ecosystem: str, text: str):
    """A deny-list range, in the package's ecosystem's own syntax, as a predicate on that
    ecosystem's versions; ``None`` for an empty range (every version). Raises ``ValueError``
    with a message a person can act on."""
    text = (text or "").strip()
    if not text:
        return None
    return _range_check(ecosystem, text)


@lru_cache(maxsize=4096)
def _range_check(ecosystem: str, text: str):
    from univers.version_range import RANGE_CLASS_BY_SCHEMES  # noqa: PLC0415 - heavy, needed only here

    scheme = _UNIVERS_SCHEMES.get(ecosystem)
    if scheme is not None:
        try:
            native = RANGE_CLASS_BY_SCHEMES[scheme].from_native(text)
        except Exception:  # noqa: BLE001 - univers raises several kinds for unreadable ranges
            native = None
        if native is not None and "None" not in str(native):  # (univers' Maven reads anything)
            return lambda version: version in native
    # Go and the rest: plain comparisons joined by commas or spaces (``>=1.2.0, <1.4.0``).
    bounds = []
    for part in re.split(r"[,\s]+(?=[<>=!v0-9])", text):
        match = _COMPARISON.match(part.strip())
        bound = parse_version(ecosystem, match[2]) if match else None
        if bound is None:
            raise ValueError(
                f"'{text}' is not a version range for {ecosystem}; write it as the ecosystem does "
                "(npm ^4.17.0 or <4.17.21, PyPI >=1.0,<2.0, Maven [1.0,2.0), RubyGems ~> 1.2, Go <0.17.0)."
            )
        bounds.append((match[1] or "=", bound))
    ops = {
        "<": lambda v, b: v < b,
        "<=": lambda v, b: v <= b,
        ">": lambda v, b: v > b,
        ">=": lambda v, b: v >= b,
        "=": lambda v, b: v == b,
        "==": lambda v, b: v == b,
        "!=": lambda v, b: v != b,
    }
    return lambda version: all(ops[op](version, bound) for op, bound in bounds)


def range_problem(text: str) -> str:
    """Why a deny-list range can be read in no ecosystem's syntax ("" when some reads it)."""
    text = (text or "").strip()
    if not text:
        return ""
    for ecosystem in ("npm", "pypi", "maven", "gem", "go"):
        try:
            range_check(ecosystem, text)
            return ""
        except ValueError:
            continue
    return (
        f"'{text}' is not a version range in any ecosystem's syntax; write it as the package's ecosystem does "
        "(npm ^4.17.0 or <4.17.21, PyPI >=1.0,<2.0, Maven [1.0,2.0), RubyGems ~> 1.2, Go <0.17.0)."
    )


def comparable(ecosystem: str, text: str):
    """A version to compare by its ecosystem's rules, from an exact version or the lower bound
    of a simple range (``^4.17.20`` -> 4.17.20); None when it cannot be read."""
    candidate = re.sub(r"^[\^~>=<v\s]*", "", (text or "").split(",")[0].split(" ")[0]).strip()
    return parse_version(ecosystem, candidate) if candidate else None
