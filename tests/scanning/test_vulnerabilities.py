"""Known vulnerabilities: the portal's own copy of OSV (the sandbox serves small archives
of real advisories' facts), matched locally by each ecosystem's version rules; package URLs
right for every ecosystem."""

from __future__ import annotations

import pytest
from django.urls import reverse

from advisories.models import Advisory, OsvFeed
from bitbucket_sandbox.osv import ADVISORIES, archive
from common.packages import package_url
from integrations.models import Role
from scanning.models import DependencyPackage, PackageVulnerability
from scanning.vulnerabilities import advisories_refresh, vulnerabilities_match_all
from tests.factories import member
from tests.helpers import connect, scan

pytestmark = pytest.mark.django_db


@pytest.fixture
def osv(bitbucket, settings):
    settings.OSV_URL = f"{bitbucket.web_url}/_osv/{{ecosystem}}/all.zip"
    return bitbucket.sandbox.osv_archives


def _matched(name: str) -> set[str]:
    return set(
        PackageVulnerability.objects.filter(package__name__iexact=name).values_list("advisory__osv_id", flat=True)
    )


@pytest.mark.parametrize(
    "ecosystem,name,version,expected",
    [
        (
            "maven",
            "org.springframework:spring-core",
            "5.3.0.RELEASE",
            "pkg:maven/org.springframework/spring-core@5.3.0.RELEASE",
        ),
        ("maven", "com.example:app", "1.0-SNAPSHOT", "pkg:maven/com.example/app@1.0-SNAPSHOT"),
        ("maven", "com.google.guava:guava", "32.1.2-jre", "pkg:maven/com.google.guava/guava@32.1.2-jre"),
        (
            "go",
            "golang.org/x/crypto",
            "v0.0.0-20210921155107-089bfa567519",
            "pkg:golang/golang.org/x/crypto@v0.0.0-20210921155107-089bfa567519",
        ),
        ("gem", "nokogiri", "1.13.10-x86_64-linux", "pkg:gem/nokogiri@1.13.10"),
        ("pypi", "flask_cors", "4.0.0", "pkg:pypi/flask-cors@4.0.0"),
        ("pypi", "torch", "2.1.0+cpu", "pkg:pypi/torch@2.1.0%2Bcpu"),
        ("npm", "@babel/core", "^7.23.0", "pkg:npm/%40babel/core"),
        ("npm", "lodash", "4.17.20", "pkg:npm/lodash@4.17.20"),
    ],
)
def test_package_urls_keep_versions_every_ecosystem_writes(ecosystem, name, version, expected):
    assert package_url(ecosystem, name, version) == expected


def test_sandbox_advisories_are_imported_and_matched_by_each_ecosystems_rules(osv, client):
    integration = connect(scanners=["dependencies"])
    assert scan(integration).status == "succeeded"
    report = advisories_refresh()
    assert set(report) >= {"npm", "pypi"}
    assert not any(r["error"] for r in report.values()), report
    assert "GHSA-35jh-r3h4-6jhm" in _matched("lodash")  # 4.17.20 < 4.17.21 (SEMVER)
    assert "GHSA-mh6f-8j2x-4483" in _matched("event-stream")  # the malicious 3.3.6 (explicit versions)
    if DependencyPackage.objects.filter(name="jinja2", version="3.1.2").exists():
        assert "GHSA-h5c8-rqwp-cp95" in _matched("jinja2")  # PyPI, ECOSYSTEM range
    assert not _matched("requests")  # ">=2.31.0" is a range, not a resolved version: not matched
    assert "GHSA-xxj9-f6rv-m3x4" in _matched("django")  # PyPI name "Django", one of three intervals
    lodash = PackageVulnerability.objects.filter(advisory__osv_id="GHSA-35jh-r3h4-6jhm").first()
    assert lodash.fixed_version == "4.17.21"
    advisory = Advisory.objects.get(osv_id="GHSA-35jh-r3h4-6jhm")
    assert advisory.severity == "high"
    assert advisory.score == 7.2
    assert advisory.aliases == ["CVE-2021-23337"]
    assert not _matched("react")  # nothing known

    # Unchanged archives are not downloaded again (ETag), and nothing is rewritten.
    again = advisories_refresh()
    assert not any(r["changed"] for r in again.values())
    assert OsvFeed.objects.get(ecosystem="npm").imported_at is not None

    # Shown where people look.
    client.force_login(member(integration.tenant, Role.VIEWER, username="reader"))
    page = client.get(reverse("portal:vulnerabilities")).content.decode()
    assert "GHSA-35jh-r3h4-6jhm" in page
    assert "CVE-2021-23337" in page
    total = PackageVulnerability.objects.filter(package__reference__is_default=True).count()
    overview = client.get("/").content.decode()
    assert f'data-figure="vulnerabilities">{total}<' in overview
    csv = b"".join(client.get(reverse("portal:vulnerabilities"), {"format": "csv"}).streaming_content).decode()
    assert csv.count("\n") == total + 1
    project = DependencyPackage.objects.filter(name="lodash").first().reference.project
    assert "GHSA-35jh-r3h4-6jhm" in client.get(reverse("portal:project_detail", args=[project.pk])).content.decode()


def test_a_new_inventory_is_matched_as_it_is_written(osv):
    advisories_refresh(ecosystems=["npm"])  # advisories first, packages later
    integration = connect(scanners=["dependencies"])
    scan(integration)
    assert "GHSA-35jh-r3h4-6jhm" in _matched("lodash")


def test_changed_withdrawn_and_removed_advisories_rematch_only_their_packages(osv):
    integration = connect(scanners=["dependencies"])
    scan(integration)
    advisories_refresh(ecosystems=["npm"])
    assert _matched("lodash") == {"GHSA-35jh-r3h4-6jhm", "GHSA-29mw-wpgm-hmr9"}
    changed = [dict(a) for a in ADVISORIES["npm"]]
    changed[1] = {**changed[1], "modified": "2026-01-01T00:00:00Z", "withdrawn": "2026-01-01T00:00:00Z"}
    del changed[2]  # no longer in the archive
    osv["npm"] = archive(changed)
    report = advisories_refresh(ecosystems=["npm"])
    assert report["npm"]["changed"]
    assert report["npm"]["removed"] == 1
    assert _matched("lodash") == set()  # withdrawn, and removed
    assert "GHSA-mh6f-8j2x-4483" in _matched("event-stream")  # untouched


def test_a_range_in_another_version_scheme_is_compared_by_its_rules(osv):
    from advisories.ranges import affects, intervals

    spans = intervals([{"introduced": "2.0-beta9"}, {"fixed": "2.3.1"}, {"introduced": "2.13.0"}, {"fixed": "2.15.0"}])
    assert affects("maven", "2.14.1", spans, [])
    assert affects("maven", "2.0-rc1", spans, [])  # Maven: beta9 < rc1
    assert not affects("maven", "2.15.0", spans, [])
    assert not affects("maven", "2.12.4", spans, [])
    go = intervals([{"introduced": "0"}, {"fixed": "0.17.0"}])
    assert affects("go", "v0.0.0-20210921155107-089bfa567519", go, [])
    assert not affects("go", "v0.17.0", go, [])


def test_a_malformed_archive_keeps_the_previous_copy_and_says_why(osv):
    integration = connect(scanners=["dependencies"])
    scan(integration)
    advisories_refresh(ecosystems=["npm"])
    before = (Advisory.objects.count(), PackageVulnerability.objects.count())
    osv["npm"] = b"this is not a zip archive"
    report = advisories_refresh(ecosystems=["npm"])
    assert "BadZipFile" in report["npm"]["error"]
    assert (Advisory.objects.count(), PackageVulnerability.objects.count()) == before
    assert "BadZipFile" in OsvFeed.objects.get(ecosystem="npm").error
    assert vulnerabilities_match_all() == before[1]  # a full re-match finds the same


def test_vulnerabilities_api_filters_and_stays_in_the_tenant(osv, client):
    from rest_framework.test import APIClient

    integration = connect(scanners=["dependencies"])
    scan(integration)
    advisories_refresh(ecosystems=["npm"])
    api = APIClient()
    api.force_authenticate(member(integration.tenant, Role.VIEWER, username="api-reader"))
    rows = api.get("/api/v1/vulnerabilities/", {"severity": "critical"}).json()["results"]
    assert rows
    assert {r["advisory"] for r in rows} == {"GHSA-mh6f-8j2x-4483"}
    assert rows[0]["purl"] == "pkg:npm/event-stream@3.3.6" or rows[0]["version"].startswith("^")
    lodash = api.get("/api/v1/vulnerabilities/", {"package": "lodash", "advisory": "GHSA-35jh-r3h4-6jhm"}).json()
    assert lodash["results"][0]["fixed_version"] == "4.17.21"
    assert lodash["results"][0]["aliases"] == ["CVE-2021-23337"]
    outsider = APIClient()
    outsider.force_authenticate(member(connect(name="Other").tenant, Role.OWNER, username="api-outsider"))
    assert outsider.get("/api/v1/vulnerabilities/").json()["results"] == []
    client.force_login(member(integration.tenant, Role.ADMIN, username="page-admin-v"))
    page = client.get(reverse("portal:integration_detail", args=[integration.pk])).content.decode()
    assert "Known vulnerabilities" in page
    assert "none known" not in page


def test_the_sbom_is_valid_cyclonedx_1_6_with_the_graph_dev_scope_and_vulnerabilities(osv, client):
    import json

    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    integration = connect(scanners=["dependencies"])
    scan(integration)
    advisories_refresh(ecosystems=["npm"])
    package = DependencyPackage.objects.filter(name="lodash", version="4.17.20").first()
    client.force_login(member(integration.tenant, Role.VIEWER, username="sbom-reader"))
    body = client.get(reverse("portal:reference_sbom", args=[package.reference_id])).content.decode()
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(body)
    assert errors is None, errors
    sbom = json.loads(body)
    assert sbom["specVersion"] == "1.6"
    assert sbom["serialNumber"].startswith("urn:uuid:")
    refs = {c["bom-ref"] for c in sbom["components"]}
    root = sbom["metadata"]["component"]["bom-ref"]
    graph = {d["ref"]: d.get("dependsOn", []) for d in sbom["dependencies"]}
    assert set(graph[root]) <= refs
    assert "pkg:npm/lodash@4.17.20" in graph[root]
    assert all(c["purl"].startswith("pkg:npm/") or "@" in c["purl"] or c["version"] for c in sbom["components"])
    dev = DependencyPackage.objects.filter(reference_id=package.reference_id, dev=True).first()
    if dev is not None:
        assert next(c for c in sbom["components"] if c["name"] == dev.name)["scope"] in ("excluded", "required")
    lodash_vulns = [v for v in sbom["vulnerabilities"] if {"ref": "pkg:npm/lodash@4.17.20"} in v["affects"]]
    assert "GHSA-35jh-r3h4-6jhm" in {v["id"] for v in lodash_vulns}


def test_the_organisation_sbom_streams_valid_cyclonedx_with_every_default_branch(osv, client):
    import json

    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from django.http import StreamingHttpResponse

    integration = connect(scanners=["dependencies"])
    scan(integration)
    advisories_refresh(ecosystems=["npm"])
    client.force_login(member(integration.tenant, Role.VIEWER, username="org-sbom"))
    response = client.get(reverse("portal:tenant_sbom"))
    assert isinstance(response, StreamingHttpResponse)  # written as it is read
    body = b"".join(response.streaming_content).decode()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(body) is None
    sbom = json.loads(body)
    repositories = [c for c in sbom["components"] if c["type"] == "application"]
    assert len(repositories) == integration.projects.count()
    libraries = {c["bom-ref"] for c in sbom["components"] if c["type"] == "library"}
    assert "pkg:npm/lodash@4.17.20" in libraries
    assert len(libraries) == len([c for c in sbom["components"] if c["type"] == "library"])  # each once
    assert all(set(d.get("dependsOn", [])) <= libraries for d in sbom["dependencies"])
    assert "GHSA-35jh-r3h4-6jhm" in {v["id"] for v in sbom["vulnerabilities"]}
    root = integration.root_namespace
    scoped = client.get(reverse("portal:tenant_sbom"), {"namespace": root.pk})
    assert json.loads(b"".join(scoped.streaming_content))["metadata"]["component"]["name"].endswith(root.name)
    assert client.get(reverse("portal:tenant_sbom"), {"namespace": "x"}).status_code == 400


def test_the_sbom_graph_follows_what_lock_files_say(bitbucket):
    import json

    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from scanning.sbom import reference_sbom
    from tests.factories import ProjectFactory, ReferenceFactory

    reference = ReferenceFactory(project=ProjectFactory(), is_default=True)
    for name, version, direct, requires in (
        ("express", "4.18.2", True, ["body-parser 1.20.1"]),
        ("body-parser", "1.20.1", False, ["bytes 3.1.2"]),
        ("bytes", "3.1.2", False, []),
    ):
        DependencyPackage.objects.create(
            reference=reference,
            ecosystem="npm",
            name=name,
            version=version,
            manifest_path="package-lock.json",
            direct=direct,
            requires=requires,
        )
    sbom = reference_sbom(reference=reference)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(sbom)) is None
    graph = {d["ref"]: d.get("dependsOn", []) for d in sbom["dependencies"]}
    root = sbom["metadata"]["component"]["bom-ref"]
    assert graph[root] == ["pkg:npm/express@4.18.2"]  # the repository -> its direct dependency
    assert graph["pkg:npm/express@4.18.2"] == ["pkg:npm/body-parser@1.20.1"]  # -> transitive, as the lock says
    assert graph["pkg:npm/body-parser@1.20.1"] == ["pkg:npm/bytes@3.1.2"]
    assert graph["pkg:npm/bytes@3.1.2"] == []
