"""Dependency manifests and lock files: which file is which, and what it declares.

Each parser takes the file's text and returns :class:`Package` records; a file that
cannot be read raises :class:`ManifestError` naming what is wrong (the scanner turns
that into a sync log warning with the file's path). Well-kept parsers do the heavy
lifting where they exist: ``packaging`` for requirement lines, ``tomllib`` for TOML,
``defusedxml`` (hardened against entity expansion) for ``pom.xml``, PyYAML's safe
loader for ``pnpm-lock.yaml``.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote

import yaml
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from packaging.requirements import InvalidRequirement, Requirement

from common.packages import gem_version

# Folders whose manifests belong to someone else's code.
VENDORED = {"node_modules", "vendor", "bower_components", ".git", "third_party", "site-packages", ".venv", "venv"}


class ManifestError(ValueError):
    """The file is not valid for its kind; the message says why."""


@dataclass(frozen=True)
class Package:
    ecosystem: str  # npm, pypi, maven, go, cargo, gem, composer, nuget
    name: str
    version: str  # exact version, or the declared range for unresolved manifests
    direct: bool = True
    dev: bool = False
    # What this package itself depends on, by name, where the lock file says so (the SBOM's graph).
    requires: tuple[str, ...] = ()


def _json(text: str, what: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{what} should be a JSON object")
    return data


def _toml(text: str, what: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{what} is not valid TOML: {exc}") from None


# --- npm ----------------------------------------------------------------------------------------


def parse_package_json(text: str) -> list[Package]:
    data = _json(text, "package.json")
    packages = []
    for section, dev in (("dependencies", False), ("devDependencies", True), ("optionalDependencies", False)):
        deps = data.get(section) or {}
        if not isinstance(deps, dict):
            raise ManifestError(f"package.json: '{section}' should be an object")
        packages += [Package("npm", name, str(spec), direct=True, dev=dev) for name, spec in deps.items()]
    return packages


def parse_package_lock(text: str) -> list[Package]:
    data = _json(text, "package-lock.json")
    root = (data.get("packages") or {}).get("", {})
    direct = set(root.get("dependencies", {})) | set(root.get("devDependencies", {}))
    packages = []
    if isinstance(data.get("packages"), dict):  # lockfileVersion 2 and 3
        for path, meta in data["packages"].items():
            if not path or not isinstance(meta, dict) or "version" not in meta or meta.get("link"):
                continue
            name = meta.get("name") or path.rsplit("node_modules/", 1)[-1]
            nested = path.count("node_modules/") > 1
            needs = tuple(sorted({**(meta.get("dependencies") or {}), **(meta.get("optionalDependencies") or {})}))
            packages.append(
                Package(
                    "npm",
                    name,
                    meta["version"],
                    direct=name in direct and not nested,
                    dev=bool(meta.get("dev")),
                    requires=needs,
                )
            )
    elif isinstance(data.get("dependencies"), dict):  # lockfileVersion 1

        def walk(deps: dict, top: bool):
            for name, meta in deps.items():
                packages.append(
                    Package(
                        "npm",
                        name,
                        str(meta.get("version", "")),
                        direct=top and not meta.get("dev") and name in (direct or deps),
                        dev=bool(meta.get("dev")),
                    )
                )
                walk(meta.get("dependencies") or {}, False)

        walk(data["dependencies"], True)
    else:
        raise ManifestError("package-lock.json has neither 'packages' nor 'dependencies'")
    return packages


_YARN_ENTRY = re.compile(r'^"?(?P<names>[^\s].*?)"?:\s*$')


def parse_yarn_lock(text: str) -> list[Package]:
    """Yarn v1 (``name@range:`` then ``  version "x"``) and Berry (YAML with ``version:`` and
    ``resolution:``). Berry's workspaces (the repository's own packages) are left out;
    aliases (``alias@npm:real@^1``) and patches (``name@patch:name@npm%3A...``) are the real
    package they resolve to."""
    packages: dict[tuple[str, str], Package] = {}
    block: dict = {}
    saw_entry = False

    def finish() -> None:
        specs, version = block.get("specs") or [], block.get("version", "")
        if not specs or specs == ["__metadata"]:
            return
        resolution = block.get("resolution", "")
        if resolution:
            name = _yarn_resolved_name(resolution)
            if name is not None:
                packages[(name, version)] = Package("npm", name, version, direct=False)
            return
        for spec in specs:
            name = _yarn_resolved_name(spec)
            if name is not None:
                packages[(name, version)] = Package("npm", name, version, direct=False)

    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            match = _YARN_ENTRY.match(line)
            if not match:
                raise ManifestError(f"yarn.lock line {number}: expected 'name@range:'")
            finish()
            block = {"specs": [n.strip().strip('"') for n in match["names"].split(",")]}
            saw_entry = True
            continue
        if not line.startswith("  ") or line.startswith("   "):
            continue  # nested mappings (dependencies, checksums...)
        key, _, value = line.strip().partition(" ")
        key = key.rstrip(":")
        if key in ("version", "resolution"):
            block[key] = value.lstrip(":").strip().strip('"')
    finish()
    if not saw_entry:
        raise ManifestError("yarn.lock has no entries")
    return list(packages.values())


_YARN_LOCAL = ("@workspace:", "@link:", "@portal:", "@file:", "@exec:")


def _yarn_resolved_name(spec: str) -> str | None:
    """The real package a Yarn spec or resolution names (None for the repository's own)."""
    spec = unquote(spec)
    if any(local in spec for local in _YARN_LOCAL):
        return None
    if "@patch:" in spec:
        spec = spec.split("@patch:", 1)[1].split("#", 1)[0]
    head = spec[1:] if spec.startswith("@") else spec
    name = spec[: head.index("@") + (1 if spec.startswith("@") else 0)] if "@" in head else spec
    rest = spec[len(name) + 1 :]
    if rest.startswith("npm:"):
        target = rest[len("npm:") :]
        inner = target[1:] if target.startswith("@") else target
        if "@" in inner and not target[:1].isdigit():  # an alias: npm:real-name@range
            return target[: inner.index("@") + (1 if target.startswith("@") else 0)]
    return name


def parse_pnpm_lock(text: str) -> list[Package]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"pnpm-lock.yaml is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError("pnpm-lock.yaml should be a mapping")
    direct: dict[str, bool] = {}
    importers = data.get("importers") or {".": data}
    for importer in importers.values():
        for section, dev in (("dependencies", False), ("devDependencies", True), ("optionalDependencies", False)):
            for name in (importer or {}).get(section) or {}:
                direct[name] = dev
    packages = []
    try:
        legacy = float(str(data.get("lockfileVersion", "6")).split(".")[0]) < 6
    except ValueError:
        legacy = False
    for key, meta in (data.get("packages") or {}).items():
        spec = key.lstrip("/").split("(", 1)[0]
        if legacy or "@" not in spec[1:]:
            # pnpm 5.x: /name/version, /@scope/name/version, with _peer@x suffixes
            if "/" not in spec:
                continue
            name, version = spec.split("_", 1)[0].rsplit("/", 1)
        else:
            name, version = spec.rsplit("@", 1)
        meta = meta or {}
        packages.append(
            Package("npm", name, version, direct=name in direct, dev=bool(meta.get("dev", direct.get(name, False))))
        )
    return packages


# --- Python ------------------------------------------------------------------------------------


def _requirement(line: str, where: str) -> Package:
    try:
        req = Requirement(line)
    except InvalidRequirement as exc:
        raise ManifestError(f"{where}: {exc}") from None
    specs = list(req.specifier)
    exact = specs[0].version if len(specs) == 1 and specs[0].operator in ("==", "===") else ""
    return Package("pypi", req.name.lower().replace("_", "-"), exact or str(req.specifier), direct=True)


def parse_requirements(text: str, path: str = "requirements.txt") -> list[Package]:
    packages = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-", "--")) or "://" in line:
            continue  # comments, options (-r, -e, --hash...), direct URLs
        # Per-requirement options on the same line (pip's --hash=..., --config-settings ...).
        line = re.split(r"\s+--?[A-Za-z]", line, maxsplit=1)[0].strip()
        packages.append(_requirement(line.rstrip("\\").strip(), f"{PurePosixPath(path).name} line {number}"))
    dev = bool(re.search(r"(dev|test|lint|doc)", PurePosixPath(path).name))
    return [Package(p.ecosystem, p.name, p.version, p.direct, dev) for p in packages]


def parse_pipfile_lock(text: str) -> list[Package]:
    data = _json(text, "Pipfile.lock")
    packages = []
    for section, dev in (("default", False), ("develop", True)):
        for name, meta in (data.get(section) or {}).items():
            version = str((meta or {}).get("version", "")).lstrip("=")
            packages.append(Package("pypi", name.lower(), version, direct=False, dev=dev))
    return packages


def parse_poetry_lock(text: str) -> list[Package]:
    data = _toml(text, "poetry.lock")
    packages = []
    for meta in data.get("package", []):
        if "name" not in meta or "version" not in meta:
            raise ManifestError("poetry.lock: a [[package]] lacks name or version")
        groups = meta.get("groups") or [meta.get("category", "main")]
        packages.append(
            Package(
                "pypi",
                meta["name"].lower(),
                meta["version"],
                direct=False,
                dev="main" not in groups,
                requires=tuple(sorted(n.lower() for n in meta.get("dependencies") or {})),
            )
        )
    return packages


def parse_pyproject(text: str) -> list[Package]:
    data = _toml(text, "pyproject.toml")
    packages = []
    project = data.get("project") or {}
    for line in project.get("dependencies") or []:
        packages.append(_requirement(line, "pyproject.toml [project].dependencies"))
    for group, lines in (project.get("optional-dependencies") or {}).items():
        for line in lines:
            p = _requirement(line, f"pyproject.toml optional-dependencies.{group}")
            packages.append(
                Package(p.ecosystem, p.name, p.version, True, dev=group in ("dev", "test", "tests", "lint"))
            )
    poetry = (data.get("tool") or {}).get("poetry") or {}
    for section, dev in (("dependencies", False), ("dev-dependencies", True)):
        for name, spec in (poetry.get(section) or {}).items():
            if name.lower() == "python":
                continue
            version = spec if isinstance(spec, str) else (spec or {}).get("version", "")
            packages.append(Package("pypi", name.lower(), str(version), True, dev))
    for group, meta in (poetry.get("group") or {}).items():
        for name, spec in (meta.get("dependencies") or {}).items():
            version = spec if isinstance(spec, str) else (spec or {}).get("version", "")
            packages.append(Package("pypi", name.lower(), str(version), True, dev=group != "main"))
    # PEP 735 dependency groups: development-time by definition (an entry may include another group).
    for group, lines in (data.get("dependency-groups") or {}).items():
        for line in lines:
            if isinstance(line, dict):  # {include-group = "..."}
                continue
            p = _requirement(str(line), f"pyproject.toml dependency-groups.{group}")
            packages.append(Package(p.ecosystem, p.name, p.version, True, dev=True))
    return packages


def parse_uv_lock(text: str) -> list[Package]:
    """uv's lock file: every resolved package, the project itself left out; a package only
    the project's dev groups (or optional extras named dev) reach is marked dev."""
    data = _toml(text, "uv.lock")
    entries = data.get("package") or []
    projects = [e for e in entries if (e.get("source") or {}).get("editable") or (e.get("source") or {}).get("virtual")]
    runtime, dev_only = set(), set()
    for project in projects:
        runtime |= {d.get("name", "").lower() for d in project.get("dependencies") or []}
        for deps in (project.get("dev-dependencies") or {}).values():
            dev_only |= {d.get("name", "").lower() for d in deps}
    graph = {
        str(e.get("name", "")).lower(): {str(d.get("name", "")).lower() for d in e.get("dependencies") or []}
        for e in entries
    }

    def reach(start: set[str]) -> set[str]:
        seen, todo = set(), list(start)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += graph.get(name, ())
        return seen

    needed_at_run_time = reach(runtime)
    packages = []
    roots = {p.get("name", "").lower() for p in projects}
    for meta in entries:
        name = str(meta.get("name", "")).lower()
        if not name or name in roots:
            continue
        if "version" not in meta:
            raise ManifestError(f"uv.lock: package {name} has no version")
        packages.append(
            Package(
                "pypi",
                name,
                str(meta["version"]),
                direct=name in runtime or name in dev_only,
                dev=bool(runtime or dev_only) and name not in needed_at_run_time,
                requires=tuple(sorted(graph.get(name, ()))),
            )
        )
    return packages


# --- JVM, Go, Rust, Ruby, PHP, .NET -------------------------------------------------------------


def parse_pom(text: str) -> list[Package]:
    try:
        root = ElementTree.fromstring(text.encode())
    except (ElementTree.ParseError, DefusedXmlException) as exc:
        raise ManifestError(f"pom.xml is not valid (or is unsafe) XML: {exc}") from None
    ns = {"m": root.tag[1:].split("}")[0]} if root.tag.startswith("{") else {}
    q = (lambda tag: f"m:{tag}") if ns else (lambda tag: tag)
    properties = {}
    props = root.find(q("properties"), ns)
    if props is not None:
        for prop in props:
            properties[prop.tag.split("}")[-1]] = (prop.text or "").strip()
    parent_version = (root.findtext(f"{q('parent')}/{q('version')}", default="", namespaces=ns) or "").strip()
    parent_group = (root.findtext(f"{q('parent')}/{q('groupId')}", default="", namespaces=ns) or "").strip()
    # A module without its own <version> (or groupId) inherits its parent's, as Maven does.
    project_version = (root.findtext(q("version"), default="", namespaces=ns) or "").strip() or parent_version
    project_group = (root.findtext(q("groupId"), default="", namespaces=ns) or "").strip() or parent_group
    properties.setdefault("project.version", project_version)
    properties.setdefault("pom.version", project_version)
    properties.setdefault("version", project_version)
    properties.setdefault("project.groupId", project_group)
    properties.setdefault("project.parent.version", parent_version)

    def resolve(value: str, depth: int = 0) -> str:
        """${...} replaced by properties (which may name other properties), as Maven does."""
        resolved = re.sub(r"\$\{([^}]+)\}", lambda m: properties.get(m.group(1), m.group(0)), value or "")
        return resolve(resolved, depth + 1) if "${" in resolved and resolved != value and depth < 10 else resolved

    def read(dep) -> tuple[str, str, str, str]:
        group = resolve(dep.findtext(q("groupId"), default="", namespaces=ns).strip())
        artifact = resolve(dep.findtext(q("artifactId"), default="", namespaces=ns).strip())
        version = resolve((dep.findtext(q("version"), default="", namespaces=ns) or "").strip())
        scope = (dep.findtext(q("scope"), default="", namespaces=ns) or "").strip()
        return group, artifact, version, scope

    # <dependencyManagement> pins versions (and scopes) that <dependencies> may leave out.
    managed = {}
    for dep in root.findall(f"{q('dependencyManagement')}/{q('dependencies')}/{q('dependency')}", ns):
        group, artifact, version, scope = read(dep)
        managed[(group, artifact)] = (version, scope)
    packages = []
    for dep in root.findall(f"{q('dependencies')}/{q('dependency')}", ns):
        group, artifact, version, scope = read(dep)
        if not group or not artifact:
            raise ManifestError("pom.xml: a <dependency> lacks groupId or artifactId")
        pinned, managed_scope = managed.get((group, artifact), ("", ""))
        version, scope = version or pinned, scope or managed_scope or "compile"
        packages.append(Package("maven", f"{group}:{artifact}", version, True, dev=scope == "test"))
    return packages


def parse_go_mod(text: str) -> list[Package]:
    """``require`` lines, as ``replace`` directives redirect them (the replacement module at
    its version is what the build uses; a local-path replacement keeps the module, without a
    version); ``exclude`` only forbids versions, which require lines do not then name."""
    packages, block, replaced = [], None, {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        for directive in ("require", "replace", "exclude"):
            if line.startswith(f"{directive} ("):
                block = directive
                break
        else:
            if block and line == ")":
                block = None
                continue
            directive, body = None, None
            for name in ("require", "replace", "exclude"):
                if line.startswith(f"{name} "):
                    directive, body = name, line[len(name) + 1 :]
            if directive is None and block:
                directive, body = block, line
            if not body or body.startswith("//") or directive == "exclude":
                continue
            if directive == "replace":
                left, _, right = body.partition("=>")
                old, new = left.split(), right.split()
                if old and new:
                    replaced[old[0]] = (new[0], new[1] if len(new) > 1 else "")
                continue
            parts = body.split()
            if len(parts) < 2:
                raise ManifestError(f"go.mod line {number}: expected 'module version'")
            packages.append(Package("go", parts[0], parts[1], direct="// indirect" not in body))
    result = []
    for p in packages:
        if p.name in replaced:
            module, version = replaced[p.name]
            if version:  # another module at a version
                p = Package("go", module, version, p.direct, p.dev)
            else:  # a local directory: the module's code is not that version any more
                p = Package("go", p.name, "", p.direct, p.dev)
        result.append(p)
    return result


def parse_go_sum(text: str) -> list[Package]:
    seen: dict[tuple[str, str], Package] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) != 3 or not parts[2].startswith("h1:"):
            raise ManifestError(f"go.sum line {number}: expected 'module version h1:hash'")
        version = parts[1].removesuffix("/go.mod")
        seen[(parts[0], version)] = Package("go", parts[0], version, direct=False)
    return list(seen.values())


def parse_cargo_lock(text: str) -> list[Package]:
    data = _toml(text, "Cargo.lock")
    return [
        Package(
            "cargo",
            p["name"],
            p["version"],
            direct=False,
            requires=tuple(sorted({str(d).split()[0] for d in p.get("dependencies") or []})),
        )
        for p in data.get("package", [])
        if "source" in p
    ]  # no source: the workspace's own crates


def parse_gemfile_lock(text: str) -> list[Package]:
    packages, section, direct = [], None, set()
    specs: list[tuple[str, str]] = []
    for raw in text.splitlines():
        if raw and not raw.startswith(" "):
            section = raw.strip()
            continue
        if section in ("GEM", "GIT", "PATH"):
            match = re.match(r"^ {4}([^\s(]+) \(([^)]+)\)$", raw)
            if match:
                specs.append((match[1], match[2]))
        elif section == "DEPENDENCIES" and raw.startswith("  "):
            direct.add(raw.strip().split()[0].rstrip("!"))
    if not specs and "GEM" not in text:
        raise ManifestError("Gemfile.lock has no GEM section")
    # A platform gem (``nokogiri (1.13.10-x86_64-linux)``) is that version built for a platform.
    packages = [Package("gem", name, gem_version(version), direct=name in direct) for name, version in specs]
    return list({(p.name, p.version): p for p in packages}.values())


def parse_composer_lock(text: str) -> list[Package]:
    data = _json(text, "composer.lock")
    return [
        Package("composer", p["name"], str(p.get("version", "")).lstrip("v"), direct=False, dev=dev)
        for section, dev in (("packages", False), ("packages-dev", True))
        for p in data.get(section) or []
        if isinstance(p, dict) and "name" in p
    ]


def parse_nuget_lock(text: str) -> list[Package]:
    data = _json(text, "packages.lock.json")
    frameworks = data.get("dependencies")
    if not isinstance(frameworks, dict):
        raise ManifestError("packages.lock.json: 'dependencies' should map target frameworks to packages")
    seen: dict[tuple[str, str], Package] = {}
    for deps in frameworks.values():
        for name, meta in (deps or {}).items():
            if (meta or {}).get("type") == "Project":
                continue
            version = str((meta or {}).get("resolved", ""))
            seen[(name, version)] = Package("nuget", name, version, direct=(meta or {}).get("type") == "Direct")
    return list(seen.values())


PARSERS: dict[str, Callable[[str], list[Package]]] = {
    "package.json": parse_package_json,
    "package-lock.json": parse_package_lock,
    "yarn.lock": parse_yarn_lock,
    "pnpm-lock.yaml": parse_pnpm_lock,
    "Pipfile.lock": parse_pipfile_lock,
    "poetry.lock": parse_poetry_lock,
    "uv.lock": parse_uv_lock,
    "pyproject.toml": parse_pyproject,
    "pom.xml": parse_pom,
    "go.mod": parse_go_mod,
    "go.sum": parse_go_sum,
    "Cargo.lock": parse_cargo_lock,
    "Gemfile.lock": parse_gemfile_lock,
    "composer.lock": parse_composer_lock,
    "packages.lock.json": parse_nuget_lock,
}
_REQUIREMENTS = re.compile(r"^requirements[\w.-]*\.txt$")
# A manifest and the lock file that should change with it.
LOCKFILES = {
    "package.json": ("package-lock.json", "yarn.lock", "pnpm-lock.yaml"),
    "Pipfile": ("Pipfile.lock",),
    "pyproject.toml": ("poetry.lock", "uv.lock"),
    "go.mod": ("go.sum",),
    "Cargo.toml": ("Cargo.lock",),
    "Gemfile": ("Gemfile.lock",),
    "composer.json": ("composer.lock",),
}


def is_vendored(path: str) -> bool:
    return any(part in VENDORED for part in PurePosixPath(path).parts[:-1])


def parser_for(path: str) -> Callable[[str], list[Package]] | None:
    """The parser for a repository path, or None if it is not a manifest we read."""
    if is_vendored(path):
        return None
    name = PurePosixPath(path).name
    if name in PARSERS:
        return PARSERS[name]
    if _REQUIREMENTS.match(name):
        return lambda text: parse_requirements(text, path)
    return None


def parse_manifest(path: str, text: str) -> list[Package]:
    parser = parser_for(path)
    if parser is None:
        raise ManifestError(f"{path} is not a manifest the portal reads")
    packages = parser(text)
    lock_files = {name for names in LOCKFILES.values() for name in names} | {"packages.lock.json"}
    if not packages and PurePosixPath(path).name in lock_files and len(text.strip()) > 200:
        # A lock file of real size that yields nothing is a format the parser missed: say so.
        raise ManifestError(f"{path}: no packages could be read from it (an unsupported format or version?)")
    return packages
