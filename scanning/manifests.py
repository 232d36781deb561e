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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote

import yaml
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename

from common.packages import gem_version, normalise_name

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
    # What this package itself depends on, "name version", where the lock file says so (the
    # SBOM's graph). Parsers may give a bare name; parse_manifest resolves it within the file.
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
    """npm's lock file. Versions 2 and 3 list every installed folder (``packages``): the
    repository's own root and workspaces (folders outside ``node_modules``, and their links)
    are left out, their dependencies are the direct ones, and each package's dependencies
    are resolved the way Node.js finds them (its own ``node_modules``, then each folder
    above). Version 1 nests ``dependencies`` instead."""
    data = _json(text, "package-lock.json")
    if isinstance(data.get("packages"), dict):  # lockfileVersion 2 and 3
        return _npm_packages(data["packages"])
    if isinstance(data.get("dependencies"), dict):  # lockfileVersion 1
        root = data.get("packages", {}).get("", {}) if isinstance(data.get("packages"), dict) else {}
        direct = set(root.get("dependencies", {})) | set(root.get("devDependencies", {}))
        packages = []

        def walk(deps: dict, top: bool):
            for name, meta in deps.items():
                packages.append(
                    Package(
                        "npm",
                        name,
                        str(meta.get("version", "")),
                        direct=top and not meta.get("dev") and name in (direct or deps),
                        dev=bool(meta.get("dev")),
                        requires=tuple(sorted(meta.get("requires") or {})),
                    )
                )
                walk(meta.get("dependencies") or {}, False)

        walk(data["dependencies"], True)
        return packages
    raise ManifestError("package-lock.json has neither 'packages' nor 'dependencies'")


def _npm_packages(entries: dict) -> list[Package]:
    entries = {path: meta for path, meta in entries.items() if isinstance(meta, dict)}
    own = {path for path in entries if "node_modules/" not in path}
    links = {path for path, meta in entries.items() if meta.get("link")}

    def find(folder: str, name: str) -> str | None:
        """The folder Node.js loads ``name`` from, required from ``folder``."""
        while True:
            candidate = f"{folder}/node_modules/{name}" if folder else f"node_modules/{name}"
            if candidate in entries:
                return candidate
            if not folder:
                return None
            cut = folder.rfind("/node_modules/")
            folder = folder[:cut] if cut >= 0 else ""

    def needs(folder: str, meta: dict) -> list[str]:
        names = {**(meta.get("dependencies") or {}), **(meta.get("optionalDependencies") or {})}
        if folder in own:
            names.update(meta.get("devDependencies") or {})
        found = [find(folder, name) for name in names]
        return [path for path in found if path and path not in links and path not in own]

    def ident(path: str) -> str:
        meta = entries[path]
        return f"{meta.get('name') or path.rsplit('node_modules/', 1)[-1]} {meta['version']}"

    direct = {path for folder in own for path in needs(folder, entries[folder])}
    packages = []
    for path, meta in entries.items():
        if path in own or path in links or "version" not in meta:
            continue
        name, version = ident(path).split(" ")
        packages.append(
            Package(
                "npm",
                name,
                version,
                direct=path in direct,
                dev=bool(meta.get("dev")),
                requires=tuple(sorted({ident(p) for p in needs(path, meta) if "version" in entries[p]})),
            )
        )
    return packages


_YARN_ENTRY = re.compile(r'^"?(?P<names>[^\s].*?)"?:\s*$')


def parse_yarn_lock(text: str) -> list[Package]:
    """Yarn v1 (``name@range:`` then ``  version "x"``) and Berry (YAML with ``version:`` and
    ``resolution:``). Berry's workspaces (the repository's own packages) are left out and
    their dependencies are the direct ones; aliases (``alias@npm:real@^1``) and patches
    (``name@patch:name@npm%3A...``) are the real package they resolve to. Each entry's
    ``dependencies`` are resolved through the entries' own ranges (the lock file's graph).
    Neither format says which packages are development dependencies."""
    blocks: list[dict] = []
    block: dict = {"specs": [], "deps": []}  # lines indented before the first entry are no entry's
    sub = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            match = _YARN_ENTRY.match(line)
            if not match:
                raise ManifestError(f"yarn.lock line {number}: expected 'name@range:'")
            block = {"specs": [n.strip().strip('"') for n in match["names"].split(",")], "deps": []}
            blocks.append(block)
            continue
        if line.startswith("    ") and not line.startswith("     "):
            if sub in ("dependencies", "optionalDependencies"):
                block["deps"].append(_yarn_dependency(line.strip()))
            continue
        if line.startswith("  ") and not line.startswith("   "):
            key, _, value = line.strip().partition(" ")
            sub = key.rstrip(":")
            if sub in ("version", "resolution"):
                block[sub] = value.lstrip(":").strip().strip('"')
    real = [b for b in blocks if b["specs"] != ["__metadata"] and "version" in b]
    if not real and not any(b["specs"] == ["__metadata"] for b in blocks):
        raise ManifestError("yarn.lock has no entries")
    # Every range an entry answers for -> the package version it resolved to.
    resolved: dict[str, tuple[str, str] | None] = {}
    for b in real:
        b["name"] = _yarn_resolved_name(b.get("resolution") or b["specs"][0])
        for spec in b["specs"]:
            resolved[spec] = (b["name"], b["version"]) if b["name"] is not None else None
    direct = set()
    packages = []
    for b in real:
        # Yarn 2 and 3 write a dependency's range without the "npm:" its entry's key has.
        needs = {resolved.get(f"{dep}@{spec}", resolved.get(f"{dep}@npm:{spec}")) for dep, spec in b["deps"]}
        needs.discard(None)
        if b["name"] is None:  # a Berry workspace: its dependencies are the direct ones
            direct |= needs
            continue
        packages.append(
            Package("npm", b["name"], b["version"], direct=False, requires=tuple(sorted(f"{n} {v}" for n, v in needs)))
        )
    return [Package(p.ecosystem, p.name, p.version, (p.name, p.version) in direct, False, p.requires) for p in packages]


def _yarn_dependency(line: str) -> tuple[str, str]:
    """``name "range"`` (v1) or ``name: "npm:range"`` (Berry), names possibly quoted."""
    if line.startswith('"'):
        name, _, rest = line[1:].partition('"')
    else:
        name, rest = re.split(r":?\s", line, maxsplit=1) if " " in line else (line.rstrip(":"), "")
    return name.strip(), rest.lstrip(":").strip().strip('"')


# The repository's own code (a ``file:`` or ``exec:`` dependency is a package built from a folder).
_YARN_LOCAL = ("@workspace:", "@link:", "@portal:")


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
    """pnpm's lock file, formats 5.x (``/name/1.0.0_peer@2``), 6.0 (``/name@1.0.0(peer@2)``)
    and 9.0 (``name@1.0.0`` in ``packages``, the graph in ``snapshots``). Direct dependencies
    are the importers' (the root and each workspace project); a package is development-only
    when no importer's runtime dependencies reach it, which is how ``pnpm install --prod``
    decides."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"pnpm-lock.yaml is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError("pnpm-lock.yaml should be a mapping")
    try:
        legacy = float(str(data.get("lockfileVersion", "6")).split(".")[0]) < 6
    except ValueError:
        legacy = False
    # Format 9 keeps each package's dependencies in ``snapshots``; earlier formats in ``packages``.
    # A package installed for different peers is one key per peer set: the graph is walked on
    # those keys (each reaches its own dependencies), then told per package version.
    info = {str(key): meta or {} for key, meta in (data.get("packages") or {}).items()}
    entries = {str(key): meta or {} for key, meta in (data.get("snapshots") or {}).items()} or info
    slash = "/" if any(key.startswith("/") for key in entries) else ""

    def node(name: str, ref) -> str | None:
        """The key of the entry a dependency's reference names (None: the repository's own)."""
        ref = str(ref.get("version", "") if isinstance(ref, dict) else ref)  # 6.0+: {specifier, version}
        if not ref or ref.startswith(("link:", "workspace:")):
            return None
        head = ref.split("(", 1)[0]
        if slash:  # 5.x and 6.0: "/real/1.0.0" or "/real@1.0.0" (aliases, tarballs), "file:x", "github.com/..."
            return (
                ref
                if ref.startswith("/") or head.startswith("file:") or "/" in head
                else (f"/{name}{'/' if legacy else '@'}{ref}")
            )
        if _PNPM_ALIAS.match(head):  # 9.0: "real@1.0.0" (an alias or a tarball of the registry)
            return ref
        return f"{name}@{ref}"  # a version, or a non-registry reference (file:, git, a URL)

    def ident(key: str) -> tuple[str, str] | None:
        """(name, version) of an entry: its own name and version fields where it has them
        (packages from git, tarballs and folders), else read from the key."""
        meta = info.get(key.split("(", 1)[0]) or info.get(key) or {}
        if meta.get("name"):
            return str(meta["name"]), str(meta.get("version", ""))
        spec = key.split("(", 1)[0]
        if legacy:  # /name/version_peer@2 (a peer name's slash is written "+")
            if not spec.startswith("/") or "/" not in spec[1:]:
                return None
            name, version = spec[1:].rsplit("/", 1)
            return name, version.split("_", 1)[0]
        spec = spec.removeprefix("/")
        at = spec.find("@", 1)
        if at < 0:
            return None
        version = spec[at + 1 :]
        return spec[:at], "" if ":" in version else version  # file:, git+, https: are not versions

    direct, runtime = set(), set()
    importers = data.get("importers") or {".": data}
    for importer in importers.values():
        for section in ("dependencies", "optionalDependencies", "devDependencies"):
            for name, ref in ((importer or {}).get(section) or {}).items():
                key = node(str(name), ref)
                if key is not None:
                    direct.add(key)
                    if section != "devDependencies":
                        runtime.add(key)
    requires: dict[str, list[str]] = {
        key: [
            n
            for section in ("dependencies", "optionalDependencies")
            for name, ref in (meta.get(section) or {}).items()
            if (n := node(str(name), ref)) is not None
        ]
        for key, meta in entries.items()
    }
    todo = list(runtime)
    while todo:
        for key in requires.get(todo.pop(), ()):
            if key not in runtime:
                runtime.add(key)
                todo.append(key)
    packages = []
    for key, needs in requires.items():
        found = ident(key)
        if found is None:
            continue
        # 5.x and 6.0 say themselves whether a package is for development only.
        said = (info.get(key) or {}).get("dev")
        targets = {ident(n) for n in needs} - {None}
        packages.append(
            Package(
                "npm",
                *found,
                direct=key in direct,
                dev=said if isinstance(said, bool) else key not in runtime,
                requires=tuple(sorted(f"{n} {v}" for n, v in targets if v)),
            )
        )
    return packages  # peer-set copies are merged by parse_manifest


# A package key in pnpm 9: a name (scoped or not), "@", then its version.
_PNPM_ALIAS = re.compile(r"^(@[^/@:]+/)?[^/@:]+@[^/:]*$")


# --- Python ------------------------------------------------------------------------------------


def _pypi(name: str) -> str:
    return normalise_name("pypi", name)


def _requirement(line: str, where: str) -> Package:
    try:
        req = Requirement(line)
    except InvalidRequirement as exc:
        raise ManifestError(f"{where}: {exc}") from None
    specs = list(req.specifier)
    exact = specs[0].version if len(specs) == 1 and specs[0].operator in ("==", "===") else ""
    return Package("pypi", _pypi(req.name), exact or str(req.specifier), direct=True)


_EGG = re.compile(r"#(?:.*&)?egg=([A-Za-z0-9][\w.-]*)")
_COMMENT = re.compile(r"(^|\s+)#.*$")


def _pip_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, logical line) as pip's own reader makes them: a line ending in
    ``\\`` continues on the next, a comment line ends a continuation (and never continues
    itself), then comments are removed."""
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if not line.endswith("\\") or _COMMENT.match(line):
            if _COMMENT.match(line):
                line = " " + line  # a comment: removed below, with what it continued
            yield start, _COMMENT.sub("", "".join(pending) + line).strip()
            pending = []
        else:
            pending.append(line[:-1])
    if pending:
        yield start, _COMMENT.sub("", "".join(pending)).strip()


def _archive(path: str) -> tuple[str, str] | None:
    """(name, version) a wheel's or source archive's file name gives (PEP 427, PEP 625)."""
    filename = unquote(path.replace("\\", "/").rsplit("/", 1)[-1].split("#", 1)[0])
    try:
        if filename.endswith(".whl"):
            name, version, *_ = parse_wheel_filename(filename)
            return _pypi(name), str(version)
        if filename.endswith((".tar.gz", ".zip")):
            name, version = parse_sdist_filename(filename)
            return _pypi(name), str(version)
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return None


def parse_requirements(text: str, path: str = "requirements.txt") -> list[Package]:
    """A pip requirements file, read as pip reads it: one requirement per logical line
    (``\\`` continues a line), per-requirement options such as ``--hash`` dropped, editable
    and URL requirements by the name they give (``-e git+...#egg=name``, ``name @ url``; no
    version), local paths left out (they have no name until built). ``-r``/``-c`` lines
    name other files, which the scanner reads on their own; nothing outside this text is
    ever opened (requirements-parser, for one, opens ``-r`` paths on the reading machine)."""
    packages = []
    for number, line in _pip_lines(text):
        where = f"{PurePosixPath(path).name} line {number}"
        if line.startswith(("-e ", "--editable ", "--editable=")):
            egg = _EGG.search(line)
            if egg:
                packages.append(Package("pypi", _pypi(egg[1]), "", direct=True))
            continue
        if not line or line.startswith("-"):
            continue  # options (-r, -c, -i, --hash...)
        # Per-requirement options on the same line (pip's --hash=..., --config-settings ...).
        line = re.split(r"\s+--?[A-Za-z]", line, maxsplit=1)[0].strip()
        first = re.split(r"[\s;]", line, maxsplit=1)[0]
        archive = _archive(first)  # a wheel's or sdist's file name says what it is
        if archive:
            packages.append(Package("pypi", *archive, direct=True))
            continue
        if "://" in first or "@" not in line and ("/" in first or "\\" in first or first.startswith((".", "~"))):
            egg = _EGG.search(line)  # a URL or a path: only #egg= names it
            if egg:
                packages.append(Package("pypi", _pypi(egg[1]), "", direct=True))
            continue  # else a folder pip would build: it has no name until built
        package = _requirement(line, where)
        if "://" in line:  # name @ URL: a version only where the archive's file name gives one
            found = _archive(line.split("@", 1)[1].split(";", 1)[0].strip())
            package = Package("pypi", package.name, found[1] if found and found[0] == package.name else "")
        packages.append(package)
    dev = bool(re.search(r"(dev|test|lint|doc)", PurePosixPath(path).name))
    return [Package(p.ecosystem, p.name, p.version, p.direct, dev) for p in packages]


def parse_pipfile_lock(text: str) -> list[Package]:
    data = _json(text, "Pipfile.lock")
    packages = []
    for section, dev in (("default", False), ("develop", True)):
        for name, meta in (data.get(section) or {}).items():
            version = str((meta or {}).get("version", "")).lstrip("=")
            packages.append(Package("pypi", _pypi(name), version, direct=False, dev=dev))
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
                _pypi(meta["name"]),
                meta["version"],
                direct=False,
                dev="main" not in groups,
                requires=tuple(sorted(_pypi(n) for n in meta.get("dependencies") or {})),
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
            packages.append(Package("pypi", _pypi(name), str(version), True, dev))
    for group, meta in (poetry.get("group") or {}).items():
        for name, spec in (meta.get("dependencies") or {}).items():
            version = spec if isinstance(spec, str) else (spec or {}).get("version", "")
            packages.append(Package("pypi", _pypi(name), str(version), True, dev=group != "main"))
    # PEP 735 dependency groups: development-time by definition (an entry may include another group).
    for group, lines in (data.get("dependency-groups") or {}).items():
        for line in lines:
            if isinstance(line, dict):  # {include-group = "..."}
                continue
            p = _requirement(str(line), f"pyproject.toml dependency-groups.{group}")
            packages.append(Package(p.ecosystem, p.name, p.version, True, dev=True))
    return packages


def parse_uv_lock(text: str) -> list[Package]:
    """uv's lock file: every resolved package, the project itself left out. A package that
    only the project's development groups reach is marked dev (the project's optional
    extras are runtime dependencies, as ``uv export --all-extras --no-dev`` has them); an
    extra a dependency asks for (``requests[socks]``) brings that extra's dependencies, at
    run time only where a runtime path asks for it. A local package without a version (a
    folder whose version is dynamic) is the repository's own code and is left out."""
    data = _toml(text, "uv.lock")
    entries = [e for e in data.get("package") or [] if isinstance(e, dict)]

    def source(e: dict) -> dict:
        return e.get("source") if isinstance(e.get("source"), dict) else {}

    projects = [e for e in entries if source(e).get("editable") or source(e).get("virtual")]
    versions: dict[str, set[str]] = {}
    for e in entries:
        versions.setdefault(_pypi(str(e.get("name", ""))), set()).add(str(e.get("version", "")))

    def edges(deps) -> list[tuple[tuple[str, str], tuple[str, ...]]]:
        """((name, version), extras asked for) of each dependency entry; an entry names its
        version only where the lock holds several of that package."""
        found = []
        for d in deps or []:
            if isinstance(d, dict) and d.get("name"):
                name = _pypi(str(d["name"]))
                version = str(d.get("version", "")) or next(iter(sorted(versions.get(name, {""}))))
                found.append(((name, version), tuple(d.get("extra") or ())))
        return found

    by_ident = {(_pypi(str(e.get("name", ""))), str(e.get("version", ""))): e for e in entries}

    def needs(ident: tuple[str, str], extra: str | None):
        meta = by_ident.get(ident, {})
        if extra is None:
            return edges(meta.get("dependencies"))
        return edges((meta.get("optional-dependencies") or {}).get(extra))

    def reach(start: list) -> set[tuple[str, str]]:
        """Package versions reached from these edges, each extra followed only where asked."""
        seen: set = set()
        todo = list(start)
        while todo:
            ident, extras = todo.pop()
            for extra in (None, *extras):
                if (ident, extra) not in seen:
                    seen.add((ident, extra))
                    todo += needs(ident, extra)
        return {ident for ident, _ in seen}

    runtime_edges, dev_edges = [], []
    for project in projects:
        runtime_edges += edges(project.get("dependencies"))
        for deps in (project.get("optional-dependencies") or {}).values():
            runtime_edges += edges(deps)
        for deps in (project.get("dev-dependencies") or {}).values():
            dev_edges += edges(deps)
    runtime = {ident for ident, _ in runtime_edges}
    dev_only = {ident for ident, _ in dev_edges}
    needed_at_run_time = reach(runtime_edges)
    # The graph: what each package requires, with every extra anyone asks of it.
    asked: dict[tuple[str, str], set[str]] = {}
    for e in entries:
        every = [*(e.get("dependencies") or []), *(d for ds in (e.get("dev-dependencies") or {}).values() for d in ds)]
        every += [d for ds in (e.get("optional-dependencies") or {}).values() for d in ds]
        for ident, extras in edges(every):
            asked.setdefault(ident, set()).update(extras)
    roots = {_pypi(str(p.get("name", ""))) for p in projects}
    packages = []
    for meta in entries:
        name = _pypi(str(meta.get("name", "")))
        if not name or name in roots:
            continue
        if "version" not in meta:
            if source(meta).get("registry"):
                raise ManifestError(f"uv.lock: package {name} from a registry has no version")
            continue  # a local folder with a dynamic version: the repository's own code
        ident = (name, str(meta["version"]))
        requires = {t for t, _ in needs(ident, None)}
        for extra in asked.get(ident, ()):
            requires |= {t for t, _ in needs(ident, extra)}
        packages.append(
            Package(
                "pypi",
                name,
                ident[1],
                direct=ident in runtime or ident in dev_only,
                dev=bool(runtime or dev_only) and ident not in needed_at_run_time,
                requires=tuple(sorted(f"{n} {v}" for n, v in requires if n not in roots)),
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
            # "name" where the lock holds one version of it, "name version (source)" where several.
            requires=tuple(sorted({" ".join(str(d).split()[:2]) for d in p.get("dependencies") or []})),
        )
        for p in data.get("package", [])
        if "source" in p
    ]  # no source: the workspace's own crates


def parse_gemfile_lock(text: str) -> list[Package]:
    """Bundler's lock file: each gem in the ``GEM``/``GIT``/``PATH`` specs at its version
    (a platform gem's version without the platform), the gems it depends on (the indented
    lines under it), and ``DEPENDENCIES`` (the Gemfile's own gems) as the direct ones."""
    section, direct = None, set()
    specs: list[tuple[str, str, list[str]]] = []
    for raw in text.splitlines():
        if raw and not raw.startswith(" "):
            section = raw.strip()
            continue
        if section in ("GEM", "GIT", "PATH"):
            spec = re.match(r"^ {4}([^\s(]+) \(([^)]+)\)$", raw)
            needs = re.match(r"^ {6}([^\s(]+)", raw)
            if spec:
                specs.append((spec[1], spec[2], []))
            elif needs and specs:
                specs[-1][2].append(needs[1])
        elif section == "DEPENDENCIES" and raw.startswith("  "):
            direct.add(raw.strip().split()[0].rstrip("!"))
    if not specs and "GEM" not in text:
        raise ManifestError("Gemfile.lock has no GEM section")
    # A platform gem (``nokogiri (1.13.10-x86_64-linux)``) is that version built for a platform.
    return [
        Package("gem", name, gem_version(version), direct=name in direct, requires=tuple(sorted(set(needs))))
        for name, version, needs in specs
    ]


def parse_composer_lock(text: str) -> list[Package]:
    data = _json(text, "composer.lock")
    return [
        Package(
            "composer",
            p["name"],
            str(p.get("version", "")).lstrip("v"),
            direct=False,
            dev=dev,
            # Platform requirements (php, ext-json, lib-icu, composer-plugin-api) are not packages.
            requires=tuple(sorted(n for n in p.get("require") or {} if "/" in n)),
        )
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
            seen[(name, version)] = Package(
                "nuget",
                name,
                version,
                direct=(meta or {}).get("type") == "Direct",
                requires=tuple(sorted((meta or {}).get("dependencies") or {})),
            )
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


def _merged(packages: list[Package]) -> list[Package]:
    """One record per package version: copies of it in several places (npm's nested folders,
    several importers) are one package, direct if any copy is, development-only if every
    copy is, requiring what any copy requires."""
    merged: dict[tuple[str, str, str], Package] = {}
    for p in packages:
        key = (p.ecosystem, p.name, p.version)
        seen = merged.get(key)
        if seen is None:
            merged[key] = p
        else:
            merged[key] = Package(
                p.ecosystem,
                p.name,
                p.version,
                direct=seen.direct or p.direct,
                dev=seen.dev and p.dev,
                requires=tuple(sorted(set(seen.requires) | set(p.requires))),
            )
    return list(merged.values())


def _resolved(packages: list[Package]) -> list[Package]:
    """Each ``requires`` entry as ``name version``: a lock file that names only a dependency
    holds one version of it, which is the one meant. An entry naming a package the file does
    not hold (or holds in several versions, unnamed) is dropped: the graph has no edge it
    cannot place."""
    found: dict[tuple[str, str], list[Package]] = {}
    for p in packages:
        found.setdefault((p.ecosystem, normalise_name(p.ecosystem, p.name)), []).append(p)
    held = {(p.ecosystem, normalise_name(p.ecosystem, p.name), p.version) for p in packages}
    result = []
    for p in packages:
        if not p.requires:
            result.append(p)
            continue
        edges = set()
        for entry in p.requires:
            name, _, version = entry.partition(" ")
            key = (p.ecosystem, normalise_name(p.ecosystem, name))
            if version and (*key, version) in held:
                edges.add(f"{found[key][0].name} {version}")
            elif not version and len({t.version for t in found.get(key, [])}) == 1:
                target = found[key][0]
                edges.add(f"{target.name} {target.version}")
        result.append(Package(p.ecosystem, p.name, p.version, p.direct, p.dev, tuple(sorted(edges))))
    return result


def parse_manifest(path: str, text: str) -> list[Package]:
    parser = parser_for(path)
    if parser is None:
        raise ManifestError(f"{path} is not a manifest the portal reads")
    try:
        packages = _resolved(_merged(parser(text)))
    except ManifestError:
        raise
    except (AttributeError, TypeError, KeyError, ValueError, IndexError) as exc:
        # Valid JSON/YAML/TOML in a shape its format never has (a list where a mapping
        # belongs, null for a package): said as such, never a crash of the scan.
        raise ManifestError(
            f"{path}: not in the shape its format has ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    lock_files = {name for names in LOCKFILES.values() for name in names} | {"packages.lock.json"}
    if not packages and PurePosixPath(path).name in lock_files and len(text.strip()) > 200:
        # A lock file of real size that yields nothing is a format the parser missed: say so.
        raise ManifestError(f"{path}: no packages could be read from it (an unsupported format or version?)")
    return packages
