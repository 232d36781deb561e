"""The inventory agrees with what each ecosystem's own tool says the project's dependencies are.

The lock files in ``fixtures/tools`` were written by the tools themselves (npm 11, pnpm 7, 8
and 9, yarn 1 and 4, uv, Poetry, Pipenv) for the manifests beside them, and each
``expected.json`` holds what that tool then reported: ``npm query``, ``pnpm list``, ``yarn
list``, ``yarn info``, ``uv export`` and ``uv tree``, ``poetry show``, ``pipenv
requirements``, pip's own requirements reader. ``fixtures/tools/regenerate.py`` reruns them.
Each test compares the portal's reading of the lock file with the tool's: the same package
versions, the same development-only ones, the same direct ones, and the same graph (which
version depends on which), wherever the tool tells.
"""

import json
from pathlib import Path

import pytest

from common.packages import normalise_name
from scanning.manifests import Package, parse_manifest

TOOLS = Path(__file__).parent / "fixtures" / "tools"

CASES = [
    ("npm", "package-lock.json"),
    ("pnpm-7", "pnpm-lock.yaml"),
    ("pnpm-8", "pnpm-lock.yaml"),
    ("pnpm-9", "pnpm-lock.yaml"),
    ("yarn-v1", "yarn.lock"),
    ("yarn-berry", "yarn.lock"),
    ("uv", "uv.lock"),
    ("poetry", "poetry.lock"),
    ("pipenv", "Pipfile.lock"),
]


def _key(ecosystem: str, name: str, version: str) -> str:
    return f"{name.lower() if ecosystem == 'pypi' else name}@{version}"


def portal_view(packages: list[Package]) -> dict[str, set]:
    """The portal's reading in the shape of expected.json: name@version keys."""
    keys = {p: _key(p.ecosystem, p.name, p.version) for p in packages}
    edges = set()
    for p in packages:
        for entry in p.requires:
            name, version = entry.split(" ")  # always "name version": the version is placed
            edges.add((keys[p], _key(p.ecosystem, name, version)))
    return {
        "packages": set(keys.values()),
        "dev": {keys[p] for p in packages if p.dev},
        "direct": {keys[p] for p in packages if p.direct},
        "edges": edges,
    }


@pytest.mark.parametrize(("tool", "lock_file"), CASES)
def test_the_inventory_agrees_with_the_ecosystems_own_tool(tool, lock_file):
    expected = json.loads((TOOLS / tool / "expected.json").read_text())
    packages = parse_manifest(lock_file, (TOOLS / tool / lock_file).read_text())
    # One row per package version: copies in several places are merged (dev only if every one is).
    assert len(packages) == len({(p.name, p.version) for p in packages})
    seen = portal_view(packages)
    want = {key: set(expected[key]) for key in ("packages", "dev", "direct") if key in expected}
    if tool == "poetry":
        # poetry show lists what this platform installs; the lock (and so the inventory) also
        # holds colorama, which pytest needs on Windows only.
        assert (
            'colorama = {version = "*", markers = "sys_platform == \\"win32\\""}'
            in (TOOLS / tool / lock_file).read_text()
        )
        want["packages"].add("colorama@0.4.6")
        want["dev"].add("colorama@0.4.6")
    if tool == "yarn-v1":
        # yarn list names an alias by its alias; the lock file says which package it is.
        want["packages"] = want["packages"] - {"string-width-cjs@4.2.3"} | {"string-width@4.2.3"}
    for key, values in want.items():
        assert seen[key] == values, f"{expected['tool']}: {key} differs"
    if "edges" in expected:
        assert seen["edges"] == {tuple(e) for e in expected["edges"]}, f"{expected['tool']}: graph differs"
    assert len(seen["packages"]) > 10  # a real project, not an empty reading


def test_requirements_agree_with_pips_own_reader():
    """Every requirement pip reads from the file (editable and URL requirements included,
    by name), with the same specifier; lines of included files are read with those files."""
    expected = json.loads((TOOLS / "pip" / "expected.json").read_text())
    packages = parse_manifest("requirements.txt", (TOOLS / "pip" / "requirements.txt").read_text())
    pip_view = []
    for req in expected["requirements"]:
        specifier = req["specifier"]
        pinned = specifier[2:] if specifier.startswith("==") and "," not in specifier else None
        pinned = specifier[3:] if specifier.startswith("===") else pinned
        pip_view.append((normalise_name("pypi", req["name"]), pinned or specifier))
    assert [p.name for p in packages] == [name for name, _ in pip_view]
    for package, (name, version) in zip(packages, pip_view, strict=True):
        # pip has no specifier for a URL requirement; the archive's file name gives a version.
        assert package.version == (version or {"pkg-from-url": "1.0"}.get(name, "")), name


@pytest.mark.parametrize(("tool", "lock_file"), [("npm", "package-lock.json"), ("pnpm-9", "pnpm-lock.yaml")])
def test_both_sboms_carry_the_tools_graph(db, tool, lock_file):
    """Stored as the scanner stores them, the rows of a real lock file give a reference SBOM
    and an organisation SBOM whose graphs are the tool's own: every package version that
    depends on another, by package URL, and the repository on its direct dependencies."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from common.packages import package_url
    from scanning.models import DependencyPackage
    from scanning.sbom import reference_sbom, tenant_sbom_stream
    from tests.factories import ProjectFactory, ReferenceFactory

    expected = json.loads((TOOLS / tool / "expected.json").read_text())
    reference = ReferenceFactory(project=ProjectFactory(), is_default=True)
    for p in parse_manifest(lock_file, (TOOLS / tool / lock_file).read_text()):
        DependencyPackage.objects.create(
            reference=reference,
            ecosystem=p.ecosystem,
            name=p.name,
            version=p.version,
            manifest_path=lock_file,
            direct=p.direct,
            dev=p.dev,
            requires=list(p.requires),
        )

    def purl(key: str) -> str:
        name, version = key.rsplit("@", 1)
        return package_url("npm", name, version)

    want = {}
    for source, target in expected["edges"]:
        want.setdefault(purl(source), set()).add(purl(target))
    tenant = reference.project.namespace.tenant
    documents = {
        "reference": reference_sbom(reference=reference),
        "organisation": json.loads("".join(tenant_sbom_stream(tenant=tenant))),
    }
    for kind, sbom in documents.items():
        assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(sbom)) is None, kind
        graph = {d["ref"]: set(d.get("dependsOn", [])) for d in sbom["dependencies"]}
        assert {ref: needs for ref, needs in graph.items() if ref.startswith("pkg:") and needs} == want, kind
        root = sbom["metadata"]["component"]["bom-ref"] if kind == "reference" else f"repository:{reference.project_id}"
        assert graph[root] == {purl(key) for key in expected["direct"]}, kind
        excluded = {c["purl"] for c in sbom["components"] if c.get("scope") == "excluded"}
        assert excluded == {purl(key) for key in expected["dev"]}, kind


def test_the_organisation_sbom_joins_rows_of_one_package_url_whatever_their_spelling(db):
    """NuGet names are case-insensitive: Newtonsoft.Json and newtonsoft.json rows are one
    component, depending on what either row requires (rows of other versions sort between
    them by name alone)."""
    from scanning.models import DependencyPackage
    from scanning.sbom import tenant_sbom_stream
    from tests.factories import ProjectFactory, ReferenceFactory

    first = ReferenceFactory(project=ProjectFactory(), is_default=True)
    second = ReferenceFactory(project=ProjectFactory(namespace=first.project.namespace), is_default=True)
    for reference, name, version, requires in (
        (first, "Newtonsoft.Json", "12.0.0", ["System.A 1.0.0"]),
        (first, "Newtonsoft.Json", "13.0.0", []),
        (second, "newtonsoft.json", "12.0.0", ["System.B 1.0.0"]),
        (first, "System.A", "1.0.0", []),
        (second, "System.B", "1.0.0", []),
    ):
        DependencyPackage.objects.create(
            reference=reference,
            ecosystem="nuget",
            name=name,
            version=version,
            manifest_path="packages.lock.json",
            requires=requires,
        )
    sbom = json.loads("".join(tenant_sbom_stream(tenant=first.project.namespace.tenant)))
    refs = [c["bom-ref"] for c in sbom["components"]]
    assert len(refs) == len(set(refs))
    graph = {d["ref"]: d["dependsOn"] for d in sbom["dependencies"]}
    assert len(graph) == len(sbom["dependencies"])
    assert graph["pkg:nuget/newtonsoft.json@12.0.0"] == ["pkg:nuget/system.a@1.0.0", "pkg:nuget/system.b@1.0.0"]
