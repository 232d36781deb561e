"""The organisation-wide SBOM (every default branch of a tenant, or of one namespace and the
namespaces under it) as CycloneDX 1.6 JSON, streamed: written as it is read, in a few
ordered passes over the database, so memory stays flat however large the inventory."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

from django.utils import timezone

from common.packages import package_url
from integrations.models import IntegrationStatus, Project
from integrations.selectors import namespace_subtree_levels
from scanning.models import DependencyPackage, PackageVulnerability

CHUNK = 2000


def _projects(tenant, namespace=None):
    projects = Project.objects.filter(namespace__tenant=tenant).exclude(integration__status=IntegrationStatus.DELETING)
    if namespace is not None:
        ids = [i for level in namespace_subtree_levels(root_ids=[namespace.pk]) for i in level]
        projects = projects.filter(namespace_id__in=ids)
    return projects


def tenant_sbom_stream(*, tenant, namespace=None) -> Iterator[str]:
    """CycloneDX 1.6 JSON, piece by piece: each repository an application component that
    depends on its direct dependencies, each package version one library component (the
    first of equal package URLs, in URL order), and the known vulnerabilities with the
    components they affect."""
    projects = _projects(tenant, namespace)
    packages = DependencyPackage.objects.filter(reference__is_default=True, reference__project__in=projects)
    name = tenant.name + (f" / {namespace.name}" if namespace is not None else "")
    header = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "metadata": {
            "timestamp": timezone.now().replace(microsecond=0).isoformat(),
            "tools": {"components": [{"type": "application", "name": "bitbucket-portal"}]},
            "component": {"type": "application", "bom-ref": f"organisation:{tenant.slug}", "name": name},
        },
    }
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
    # Libraries: one per package URL (rows come in URL-relevant order; equal URLs are adjacent).
    previous = None
    rows = packages.order_by("ecosystem", "name", "version", "pk").values_list("ecosystem", "name", "version", "dev")
    for ecosystem, package, version, dev in rows.iterator(chunk_size=CHUNK):
        ref = package_url(ecosystem, package, version)
        if ref == previous:
            continue
        previous = ref
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
                yield ("" if first else ",") + _vulnerability(entry)
                first = False
            rating = {"severity": severity}
            if score is not None:
                rating.update({"score": score, "method": "CVSSv31"})
            entry = {
                "_id": advisory_id,
                "bom-ref": f"vulnerability:{osv_id}",
                "id": osv_id,
                "source": {"name": "OSV", "url": f"https://osv.dev/vulnerability/{osv_id}"},
                "references": [{"id": alias, "source": {"name": "OSV"}} for alias in aliases or []],
                "ratings": [rating],
                "description": summary,
                "affects": [],
            }
        ref = {"ref": package_url(ecosystem, package, version)}
        if ref not in entry["affects"]:
            entry["affects"].append(ref)
    if entry is not None:
        yield ("" if first else ",") + _vulnerability(entry)
    yield "]}"


def _vulnerability(entry: dict) -> str:
    return json.dumps({k: v for k, v in entry.items() if k != "_id"})
