"""SBOMs as CycloneDX 1.6 JSON: one reference's, and the organisation's (every default branch
of a tenant, or of one namespace and the namespaces under it), the latter streamed: written
as it is read, in a few ordered passes over the database, so memory stays flat however
large the inventory."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

from django.db.models import F, Value
from django.db.models.functions import Lower, Replace
from django.utils import timezone

from common.packages import package_url
from integrations.models import IntegrationStatus, Project, Reference
from integrations.selectors import namespace_subtree_ids
from scanning.models import DependencyPackage, PackageVulnerability
from scanning.selectors import purl, vulnerability_marks

CHUNK = 2000


def _document(component: dict, serial: str) -> dict:
    """The document's head: format, serial number, timestamp, tool and subject."""
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "serialNumber": f"urn:uuid:{serial}",
        "metadata": {
            "timestamp": timezone.now().replace(microsecond=0).isoformat(),
            "tools": {"components": [{"type": "application", "name": "bitbucket-portal"}]},
            "component": {"type": "application", **component},
        },
    }


def _vulnerability(osv_id: str, severity: str, score: float | None, summary: str, aliases: list) -> dict:
    """One advisory as a CycloneDX vulnerability (``affects`` filled in by the caller)."""
    rating = {"severity": severity}
    if score is not None:
        rating.update({"score": score, "method": "CVSSv31"})
    return {
        "bom-ref": f"vulnerability:{osv_id}",
        "id": osv_id,
        "source": {"name": "OSV", "url": f"https://osv.dev/vulnerability/{osv_id}"},
        "references": [{"id": alias, "source": {"name": "OSV"}} for alias in aliases or []],
        "ratings": [rating],
        "description": summary,
        "affects": [],
    }


def _projects(tenant, namespace=None):
    projects = Project.objects.filter(namespace__tenant=tenant).exclude(integration__status=IntegrationStatus.DELETING)
    if namespace is not None:
        projects = projects.filter(namespace_id__in=namespace_subtree_ids(root_id=namespace.pk))
    return projects


# Rows in package URL order: names as the URL spells them (case and PyPI's separators aside),
# so every row of one URL is adjacent whatever its spelling (Newtonsoft.Json, newtonsoft.json).
URL_ORDER = (
    "ecosystem",
    Lower(Replace(Replace(F("name"), Value("_"), Value("-")), Value("."), Value("-"))),
    "version",
    Lower("name"),
    "name",
    "pk",
)


def tenant_sbom_stream(*, tenant, namespace=None) -> Iterator[str]:
    """CycloneDX 1.6 JSON, piece by piece: each repository an application component that
    depends on its direct dependencies, each package version one library component (the
    first of equal package URLs, in URL order) that depends on what its lock files say it
    requires (in any repository), and the known vulnerabilities with the components they
    affect. Memory holds the set of package URLs, not the document."""
    projects = _projects(tenant, namespace)
    packages = DependencyPackage.objects.filter(reference__is_default=True, reference__project__in=projects)
    name = tenant.name + (f" / {namespace.name}" if namespace is not None else "")
    header = _document({"bom-ref": f"organisation:{tenant.slug}", "name": name}, str(uuid.uuid4()))
    yield json.dumps(header)[:-1] + ', "components": ['
    first = True
    # Repositories: application components.
    for project in projects.order_by("pk").values("pk", "full_name", "name").iterator(chunk_size=CHUNK):
        component = {
            "type": "application",
            "bom-ref": f"repository:{project['pk']}",
            "name": project["full_name"] or project["name"],
        }
        yield ("" if first else ",") + json.dumps(component)
        first = False
    # Libraries: one per package URL (rows come in URL order, so a URL's rows are adjacent).
    emitted: set[str] = set()
    rows = packages.order_by(*URL_ORDER).values_list("ecosystem", "name", "version", "dev")
    for ecosystem, package, version, dev in rows.iterator(chunk_size=CHUNK):
        ref = package_url(ecosystem, package, version)
        if ref in emitted:
            continue
        emitted.add(ref)
        component = {
            "type": "library",
            "bom-ref": ref,
            "name": package,
            "version": version,
            "purl": ref,
            "scope": "excluded" if dev else "required",
        }
        yield ("" if first else ",") + json.dumps(component)
        first = False
    yield '], "dependencies": ['
    first = True
    # The graph: each repository -> its direct dependencies (read in repository order).
    current, direct = None, []
    rows = (
        packages.filter(direct=True)
        .order_by("reference__project_id", "pk")
        .values_list("reference__project_id", "ecosystem", "name", "version")
    )
    for project_id, ecosystem, package, version in rows.iterator(chunk_size=CHUNK):
        if project_id != current and current is not None:
            yield ("" if first else ",") + json.dumps({"ref": f"repository:{current}", "dependsOn": direct})
            first, direct = False, []
        current = project_id
        ref = package_url(ecosystem, package, version)
        if ref not in direct:
            direct.append(ref)
    if current is not None:
        yield ("" if first else ",") + json.dumps({"ref": f"repository:{current}", "dependsOn": direct})
        first = False
    # Each package version -> what its lock file rows require, over every repository.
    rows = packages.exclude(requires=[]).order_by(*URL_ORDER).values_list("ecosystem", "name", "version", "requires")
    current, needs, done = None, set(), set()
    for ecosystem, package, version, requires in rows.iterator(chunk_size=CHUNK):
        ref = package_url(ecosystem, package, version)
        if ref != current:
            if current is not None and current not in done:
                done.add(current)
                yield ("" if first else ",") + json.dumps({"ref": current, "dependsOn": sorted(needs)})
                first = False
            current, needs = ref, set()
        needs.update(t for t in _requires(ecosystem, requires) if t in emitted and t != ref)
    if current is not None and current not in done:
        yield ("" if first else ",") + json.dumps({"ref": current, "dependsOn": sorted(needs)})
    yield '], "vulnerabilities": ['
    first = True
    # Known vulnerabilities, one entry per advisory with every component it affects.
    matches = (
        PackageVulnerability.objects.filter(package__in=packages, advisory__withdrawn__isnull=True)
        .order_by("advisory_id", "pk")
        .values_list(
            "advisory_id",
            "advisory__osv_id",
            "advisory__severity",
            "advisory__score",
            "advisory__summary",
            "advisory__aliases",
            "package__ecosystem",
            "package__name",
            "package__version",
        )
    )
    entry = None
    for advisory_id, osv_id, severity, score, summary, aliases, ecosystem, package, version in matches.iterator(
        chunk_size=CHUNK
    ):
        if entry is None or entry["_id"] != advisory_id:
            if entry is not None:
                yield ("" if first else ",") + _entry_json(entry)
                first = False
            entry = {"_id": advisory_id, **_vulnerability(osv_id, severity, score, summary, aliases)}
        ref = {"ref": package_url(ecosystem, package, version)}
        if ref not in entry["affects"]:
            entry["affects"].append(ref)
    if entry is not None:
        yield ("" if first else ",") + _entry_json(entry)
    yield "]}"


def _entry_json(entry: dict) -> str:
    return json.dumps({k: v for k, v in entry.items() if k != "_id"})


def reference_sbom(*, reference: Reference) -> dict:
    """A CycloneDX 1.6 JSON SBOM of the reference's packages: one component per package
    version (its package URL, the manifests it is declared in), the dependency graph (the
    repository depends on its direct dependencies, and each package on what its lock file
    entry requires, where the lock file says so: npm, pnpm, Yarn, Cargo, Poetry, uv, Bundler,
    Composer), development
    dependencies with ``scope: excluded``, and the known vulnerabilities (OSV) with the
    components they affect."""
    project = reference.project
    root = f"{project.full_name or project.name}@{reference.name}"
    components: dict[str, dict] = {}
    direct: list[str] = []
    vulnerabilities: dict[int, dict] = {}
    packages = list(reference.packages.order_by("ecosystem", "name", "version", "manifest_path"))
    vulnerability_marks(packages)
    for package in packages:
        ref = purl(package)
        if ref not in components:
            components[ref] = {
                "type": "library",
                "bom-ref": ref,
                "name": package.name,
                "version": package.version,
                "purl": ref,
                # CycloneDX: a development dependency is not part of what ships.
                "scope": "excluded" if package.dev else "required",
                "properties": [],
            }
        component = components[ref]
        if not package.dev and component["scope"] == "excluded":
            component["scope"] = "required"  # also a runtime dependency elsewhere
        component["properties"].append({"name": "portal:manifest", "value": package.manifest_path})
        if package.direct and ref not in direct:
            direct.append(ref)
        for match in package.vulns:
            a = match.advisory
            entry = vulnerabilities.setdefault(
                match.advisory_id, _vulnerability(a.osv_id, a.severity, a.score, a.summary, a.aliases)
            )
            if {"ref": ref} not in entry["affects"]:
                entry["affects"].append({"ref": ref})
            if match.fixed_version:
                entry.setdefault("recommendation", f"Upgrade to {match.fixed_version} or later.")
    document = _document(
        {
            "bom-ref": root,
            "name": project.full_name or project.name,
            "version": reference.head_commit or reference.name,
        },
        str(uuid.uuid5(uuid.NAMESPACE_URL, f"{project.full_name}@{reference.head_commit}")),
    )
    document.update(
        {
            "components": list(components.values()),
            "dependencies": [{"ref": root, "dependsOn": direct}]
            + [
                {"ref": ref, "dependsOn": sorted(needs)} if needs else {"ref": ref}
                for ref, needs in _graph(packages).items()
            ],
        }
    )
    if vulnerabilities:
        document["vulnerabilities"] = list(vulnerabilities.values())
    return document


def _graph(packages: list[DependencyPackage]) -> dict[str, set[str]]:
    """{component: the components it depends on}: each lock file row's ``requires`` entries
    (``name version``, placed by the parser within its file) as package URLs."""
    refs = {purl(p) for p in packages}
    graph: dict[str, set[str]] = {}
    for p in packages:
        ref = purl(p)
        graph.setdefault(ref, set()).update(t for t in _requires(p.ecosystem, p.requires) if t in refs and t != ref)
    return graph


def _requires(ecosystem: str, requires) -> list[str]:
    """The package URLs a row's ``requires`` entries name."""
    return [package_url(ecosystem, *entry.split(" ", 1)) for entry in requires or [] if " " in entry]
