"""A small OSV archive per ecosystem, as OSV publishes them (a zip of OSV-format JSON files
at ``{ecosystem}/all.zip``), holding real advisories' facts for packages the generated
repositories use, so the demo shows real findings without the internet. Tests replace an
archive with their own (``SandboxCore.osv_archives``)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

ADVISORIES = {
    "npm": [
        {
            "id": "GHSA-mh6f-8j2x-4483",
            "modified": "2023-01-09T05:02:37Z",
            "summary": "Critical severity vulnerability that affects event-stream and flatmap-stream",
            "affected": [{"package": {"ecosystem": "npm", "name": "event-stream"}, "versions": ["3.3.6"]}],
            "database_specific": {"severity": "CRITICAL"},
            "references": [{"type": "ADVISORY", "url": "https://github.com/advisories/GHSA-mh6f-8j2x-4483"}],
        },
        {
            "id": "GHSA-35jh-r3h4-6jhm",
            "aliases": ["CVE-2021-23337"],
            "modified": "2024-02-08T19:41:52Z",
            "summary": "Command Injection in lodash",
            "affected": [
                {
                    "package": {"ecosystem": "npm", "name": "lodash"},
                    "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "4.17.21"}]}],
                }
            ],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H"}],
            "database_specific": {"severity": "HIGH"},
            "references": [{"type": "ADVISORY", "url": "https://nvd.nist.gov/vuln/detail/CVE-2021-23337"}],
        },
        {
            "id": "GHSA-29mw-wpgm-hmr9",
            "aliases": ["CVE-2020-28500"],
            "modified": "2023-11-01T23:33:10Z",
            "summary": "Regular Expression Denial of Service (ReDoS) in lodash",
            "affected": [
                {
                    "package": {"ecosystem": "npm", "name": "lodash"},
                    "ranges": [{"type": "SEMVER", "events": [{"introduced": "4.0.0"}, {"fixed": "4.17.21"}]}],
                }
            ],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L"}],
            "database_specific": {"severity": "MODERATE"},
        },
    ],
    "PyPI": [
        {
            "id": "GHSA-h5c8-rqwp-cp95",
            "aliases": ["CVE-2024-22195"],
            "modified": "2024-01-30T18:52:03Z",
            "summary": "Jinja vulnerable to HTML attribute injection when passing user input as keys to xmlattr filter",
            "affected": [
                {
                    "package": {"ecosystem": "PyPI", "name": "jinja2"},
                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.1.3"}]}],
                }
            ],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N"}],
            "database_specific": {"severity": "MODERATE"},
        },
        {
            "id": "GHSA-xxj9-f6rv-m3x4",
            "aliases": ["CVE-2024-24680"],
            "modified": "2024-02-09T00:00:00Z",
            "summary": "Django denial-of-service in intcomma template filter",
            "affected": [
                {
                    "package": {"ecosystem": "PyPI", "name": "Django"},
                    "ranges": [
                        {
                            "type": "ECOSYSTEM",
                            "events": [
                                {"introduced": "3.2"},
                                {"fixed": "3.2.24"},
                                {"introduced": "4.2"},
                                {"fixed": "4.2.10"},
                                {"introduced": "5.0"},
                                {"fixed": "5.0.2"},
                            ],
                        }
                    ],
                }
            ],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"}],
        },
    ],
    "Maven": [
        {
            "id": "GHSA-jfh8-c2jp-5v3q",
            "aliases": ["CVE-2021-44228"],
            "modified": "2024-03-15T00:00:00Z",
            "summary": "Remote code injection in Log4j",
            "affected": [
                {
                    "package": {"ecosystem": "Maven", "name": "org.apache.logging.log4j:log4j-core"},
                    "ranges": [
                        {
                            "type": "ECOSYSTEM",
                            "events": [
                                {"introduced": "2.0-beta9"},
                                {"fixed": "2.3.1"},
                                {"introduced": "2.4"},
                                {"fixed": "2.12.2"},
                                {"introduced": "2.13.0"},
                                {"fixed": "2.15.0"},
                            ],
                        }
                    ],
                }
            ],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"}],
            "database_specific": {"severity": "CRITICAL"},
        }
    ],
}

ADVISORIES["Go"] = [
    {
        "id": "GHSA-45x7-px36-x8w8",
        "aliases": ["CVE-2023-48795"],
        "modified": "2024-05-20T00:00:00Z",
        "summary": "Prefix Truncation Attack against ChaCha20-Poly1305 and Encrypt-then-MAC aka Terrapin",
        "affected": [
            {
                "package": {"ecosystem": "Go", "name": "golang.org/x/crypto"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "0.17.0"}]}],
            }
        ],
        "database_specific": {"severity": "MODERATE"},
    }
]
ADVISORIES["RubyGems"] = [
    {
        "id": "GHSA-54rr-7fvw-6x8f",
        "aliases": ["CVE-2024-26146"],
        "modified": "2024-02-29T00:00:00Z",
        "summary": "Possible Denial of Service Vulnerability in Rack Header Parsing",
        "affected": [
            {
                "package": {"ecosystem": "RubyGems", "name": "rack"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "3.0.0"}, {"fixed": "3.0.9.1"}]}],
            }
        ],
        "database_specific": {"severity": "MODERATE"},
    }
]
ADVISORIES["crates.io"] = [
    {
        "id": "RUSTSEC-2023-0005",
        "modified": "2023-01-11T00:00:00Z",
        "summary": "tokio::io::ReadHalf<T>::unsplit is Unsound",
        "affected": [
            {
                "package": {"ecosystem": "crates.io", "name": "tokio"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0.0.0-0"}, {"fixed": "1.18.4"}]}],
            }
        ],
    }
]


def archive(advisories: list[dict]) -> bytes:
    """A zip of OSV JSON files, one per advisory, as OSV's all.zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for advisory in advisories:
            zipped.writestr(f"{advisory['id']}.json", json.dumps(advisory))
    return buffer.getvalue()


def default_archives() -> dict[str, bytes]:
    return {ecosystem: archive(items) for ecosystem, items in ADVISORIES.items()}


def etag(body: bytes) -> str:
    return '"' + hashlib.sha1(body, usedforsecurity=False).hexdigest() + '"'
