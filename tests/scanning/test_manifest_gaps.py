"""Manifest formats the parsers used to get wrong (issue 14): pnpm 5.x, options on a
requirements line, go.mod replace/exclude, platform gems, and silence from a lock file."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanning.manifests import ManifestError, parse_manifest

PNPM_5 = (Path(__file__).parent / "fixtures" / "manifests" / "pnpm-lock-v5.yaml").read_text()


def test_pnpm_5_lock_files_are_read():
    packages = {(p.name, p.version, p.dev) for p in parse_manifest("pnpm-lock.yaml", PNPM_5)}
    assert ("lodash", "4.17.20", False) in packages
    assert ("@babel/core", "7.23.5", True) in packages


def test_requirements_with_hashes_on_the_line_are_read():
    text = (
        "flask==2.3.3 --hash=sha256:09c347a92aa7ff4a8e7f3206795f30d826654baf38b873d0744cd571ca609efc\n"
        "requests==2.31.0 \\\n    --hash=sha256:58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f\n"
        "Flask_Cors==4.0.0 ; python_version >= '3.8'\n"
    )
    packages = {(p.name, p.version) for p in parse_manifest("requirements.txt", text)}
    assert packages == {("flask", "2.3.3"), ("requests", "2.31.0"), ("flask-cors", "4.0.0")}


def test_go_mod_replace_and_exclude_are_applied():
    text = """module example.com/app

go 1.21

require (
\tgithub.com/gin-gonic/gin v1.9.1
\tgolang.org/x/crypto v0.14.0 // indirect
\texample.com/local v1.0.0
)

replace golang.org/x/crypto => golang.org/x/crypto v0.17.0

replace (
\texample.com/local => ../local
)

exclude golang.org/x/net v0.0.1
"""
    packages = {(p.name, p.version, p.direct) for p in parse_manifest("go.mod", text)}
    assert ("golang.org/x/crypto", "v0.17.0", False) in packages  # what the build uses
    assert ("example.com/local", "", True) in packages  # a local directory: no version
    assert ("github.com/gin-gonic/gin", "v1.9.1", True) in packages
    assert not any(name == "golang.org/x/net" for name, _, _ in packages)


def test_platform_gems_keep_their_version_without_the_platform():
    text = """GEM
  remote: https://rubygems.org/
  specs:
    nokogiri (1.13.10-x86_64-linux)
      racc (~> 1.4)
    nokogiri (1.13.10-arm64-darwin)
      racc (~> 1.4)
    racc (1.7.3)

PLATFORMS
  arm64-darwin
  x86_64-linux

DEPENDENCIES
  nokogiri
"""
    packages = sorted((p.name, p.version, p.direct) for p in parse_manifest("Gemfile.lock", text))
    assert packages == [("nokogiri", "1.13.10", True), ("racc", "1.7.3", False)]


def test_a_lock_file_that_yields_nothing_says_so():
    text = "lockfileVersion: 99\n" + "\n".join(f"weird{i}: {{unknown: format}}" for i in range(20))
    with pytest.raises(ManifestError, match="no packages could be read"):
        parse_manifest("pnpm-lock.yaml", text)


@pytest.mark.parametrize(
    "ecosystem,text,version,denied",
    [
        ("npm", "^4.17.0", "4.17.20", True),
        ("npm", "^4.17.0", "5.0.0", False),
        ("npm", "<4.17.21", "^4.17.20", True),  # a manifest range: its lower bound is compared
        ("pypi", ">=1.0,<2.0", "1.5", True),
        ("maven", "[5.0,5.3.1)", "5.3.0.RELEASE", True),  # Maven's own versions, not unparsable
        ("maven", "[5.0,5.3.1)", "5.3.1", False),
        ("gem", "~> 1.13", "1.13.10", True),
        ("go", "<0.17.0", "v0.0.0-20210921155107-089bfa567519", True),  # a pseudo-version
        ("go", "<0.17.0", "v0.17.0", False),
    ],
)
def test_deny_ranges_are_read_and_compared_in_each_ecosystems_own_syntax(ecosystem, text, version, denied):
    from scanning.policy import denied_by, deny_rules

    rules = deny_rules([{"name": "pkg", "range": text}])
    assert rules, f"{text} was refused"
    assert (denied_by(rules, "pkg", ecosystem, version) is not None) is denied


def test_uv_lock_and_pep_735_dependency_groups_are_read():
    text = (Path(__file__).parent / "fixtures" / "manifests" / "uv.lock").read_text()
    packages = {(p.name, p.version, p.direct, p.dev) for p in parse_manifest("uv.lock", text)}
    assert ("requests", "2.31.0", True, False) in packages
    assert ("pytest", "8.3.3", True, True) in packages
    assert ("certifi", "2024.8.30", False, False) in packages  # requests needs it at run time
    assert ("iniconfig", "2.0.0", False, True) in packages  # only pytest (a dev group) needs it
    assert not any(name == "example-app" for name, *_ in packages)  # the project itself
    pyproject = """[project]
name = "example-app"
dependencies = ["requests>=2.31"]

[dependency-groups]
test = ["pytest==8.3.3", {include-group = "lint"}]
lint = ["ruff==0.6.9"]
"""
    found = {(p.name, p.version, p.dev) for p in parse_manifest("pyproject.toml", pyproject)}
    assert ("pytest", "8.3.3", True) in found
    assert ("ruff", "0.6.9", True) in found
    assert ("requests", ">=2.31", False) in found


def test_maven_versions_are_resolved_the_way_maven_resolves_them():
    pom = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <parent>
    <groupId>com.example</groupId>
    <artifactId>platform-parent</artifactId>
    <version>2.4.1</version>
  </parent>
  <artifactId>orders</artifactId>
  <properties>
    <spring.version>5.3.0.RELEASE</spring.version>
    <spring.core.version>${spring.version}</spring.core.version>
  </properties>
  <dependencyManagement>
    <dependencies>
      <dependency>
        <groupId>com.google.guava</groupId>
        <artifactId>guava</artifactId>
        <version>32.1.2-jre</version>
      </dependency>
      <dependency>
        <groupId>org.junit.jupiter</groupId>
        <artifactId>junit-jupiter</artifactId>
        <version>5.10.1</version>
        <scope>test</scope>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>org.springframework</groupId>
      <artifactId>spring-core</artifactId>
      <version>${spring.core.version}</version>
    </dependency>
    <dependency>
      <groupId>${project.groupId}</groupId>
      <artifactId>orders-api</artifactId>
      <version>${project.version}</version>
    </dependency>
    <dependency>
      <groupId>com.google.guava</groupId>
      <artifactId>guava</artifactId>
    </dependency>
    <dependency>
      <groupId>org.junit.jupiter</groupId>
      <artifactId>junit-jupiter</artifactId>
    </dependency>
  </dependencies>
</project>
"""
    found = {(p.name, p.version, p.dev) for p in parse_manifest("pom.xml", pom)}
    assert found == {
        ("org.springframework:spring-core", "5.3.0.RELEASE", False),  # a property naming a property
        ("com.example:orders-api", "2.4.1", False),  # groupId and version inherited from the parent
        ("com.google.guava:guava", "32.1.2-jre", False),  # version from dependencyManagement
        ("org.junit.jupiter:junit-jupiter", "5.10.1", True),  # scope from dependencyManagement
    }


def test_yarn_berry_workspaces_aliases_and_patches():
    text = (Path(__file__).parent / "fixtures" / "manifests" / "yarn-berry.lock").read_text()
    found = {(p.name, p.version) for p in parse_manifest("yarn.lock", text)}
    assert found == {
        ("@babel/core", "7.23.5"),
        ("lodash", "4.17.21"),
        ("resolve", "1.22.8"),  # a patched package is still that package
        ("string-width", "4.2.3"),  # an alias is the package it names
    }  # the repository's own workspaces are not dependencies


def test_lock_files_give_the_graph_from_direct_to_transitive():
    import json

    lock = {
        "name": "app",
        "lockfileVersion": 3,
        "packages": {
            "": {"name": "app", "dependencies": {"express": "^4.18.2"}},
            "node_modules/express": {"version": "4.18.2", "dependencies": {"body-parser": "1.20.1"}},
            "node_modules/body-parser": {"version": "1.20.1", "dependencies": {"bytes": "3.1.2"}},
            "node_modules/bytes": {"version": "3.1.2"},
        },
    }
    found = {p.name: p for p in parse_manifest("package-lock.json", json.dumps(lock))}
    assert found["express"].direct
    # "name version": each dependency resolved to the copy Node.js would load.
    assert found["express"].requires == ("body-parser 1.20.1",)
    assert found["body-parser"].requires == ("bytes 3.1.2",)
    text = (Path(__file__).parent / "fixtures" / "manifests" / "uv.lock").read_text()
    uv = {p.name: p for p in parse_manifest("uv.lock", text)}
    assert [r.split()[0] for r in uv["requests"].requires] == ["certifi"]


def test_bundler_composer_and_nuget_lock_files_give_their_graph():
    """Gemfile.lock (GIT, PATH and GEM specs, platform gems), composer.lock and NuGet's
    packages.lock.json say what each package depends on: the rows carry it as
    ``name version``, the one version the file holds."""
    import json

    text = (Path(__file__).parent / "fixtures" / "manifests" / "Gemfile.lock").read_text()
    gems = {p.name: p for p in parse_manifest("Gemfile.lock", text)}
    assert len(gems) == 16  # nokogiri's three platform builds are one version
    assert gems["nokogiri"].version == "1.15.5"
    # One version, so what the source gem and the platform builds need together.
    assert gems["nokogiri"].requires == ("mini_portile2 2.8.5", "racc 1.7.3")
    assert gems["actionpack"].requires == (
        "actionview 7.1.2",
        "activesupport 7.1.2",
        "nokogiri 1.15.5",
        "rack 3.0.8",
    )
    assert gems["acme-auth"].requires == ("jwt 2.7.1",)  # a GIT gem
    assert gems["billing"].requires == ("rails 7.1.2",)  # a PATH gem
    assert {name for name, p in gems.items() if p.direct} == {"acme-auth", "billing", "nokogiri", "rails", "rspec-core"}
    composer = {
        "packages": [
            {
                "name": "monolog/monolog",
                "version": "3.5.0",
                "require": {"php": ">=8.1", "ext-json": "*", "psr/log": "^2.0 || ^3.0"},
            },
            {"name": "psr/log", "version": "3.0.0", "require": {"php": ">=8.0.0"}},
        ],
        "packages-dev": [{"name": "phpunit/phpunit", "version": "10.5.3", "require": {"composer-runtime-api": "*"}}],
    }
    found = {p.name: p for p in parse_manifest("composer.lock", json.dumps(composer))}
    assert found["monolog/monolog"].requires == ("psr/log 3.0.0",)  # php and extensions are the platform
    assert found["phpunit/phpunit"].requires == ()
    nuget = {
        "version": 1,
        "dependencies": {
            "net8.0": {
                "Serilog.Sinks.Console": {
                    "type": "Direct",
                    "requested": "[5.0.1, )",
                    "resolved": "5.0.1",
                    "dependencies": {"Serilog": "3.1.1"},
                },
                "Serilog": {"type": "Transitive", "resolved": "3.1.1"},
            }
        },
    }
    found = {p.name: p for p in parse_manifest("packages.lock.json", json.dumps(nuget))}
    assert found["Serilog.Sinks.Console"].requires == ("Serilog 3.1.1",)


def test_pnpm_folders_and_tarballs_in_every_format():
    """pnpm 7, 8 and 9 wrote these for a folder dependency (file:./local, itself needing ms),
    a registry tarball URL and a plain version: each is a direct runtime package, the
    folder's own dependency is transitive, and nothing is taken for a name it is not."""
    for major in (7, 8, 9):
        text = (Path(__file__).parent / "fixtures" / "manifests" / f"pnpm-{major}-local-and-tarball.yaml").read_text()
        found = {(p.name, p.version): p for p in parse_manifest("pnpm-lock.yaml", text)}
        local_version = "0.2.0" if major == 7 else ""  # pnpm 8 and 9 do not write a folder's version
        assert set(found) == {("is-number", "7.0.0"), ("left-pad", "1.3.0"), ("local", local_version), ("ms", "2.1.3")}
        assert {key for key, p in found.items() if p.direct} == {
            ("is-number", "7.0.0"),
            ("left-pad", "1.3.0"),
            ("local", local_version),
        }
        assert not any(p.dev for p in found.values()), major
        assert found[("local", local_version)].requires == ("ms 2.1.3",)


def test_yarn_2_and_3_ranges_without_npm_prefix_and_folder_packages():
    """Yarn 2 and 3 write a dependency's range without "npm:" (the entry's key has it); a
    file: dependency is a package built from a folder, not the repository's workspace."""
    berry = """__metadata:
  version: 6
  cacheKey: 8

"@babel/highlight@npm:^7.16.7":
  version: 7.16.10
  resolution: "@babel/highlight@npm:7.16.10"
  dependencies:
    chalk: ^2.0.0
  languageName: node
  linkType: hard

"chalk@npm:^2.0.0":
  version: 2.4.2
  resolution: "chalk@npm:2.4.2"
  languageName: node
  linkType: hard

"app@workspace:.":
  version: 0.0.0-use.local
  resolution: "app@workspace:."
  dependencies:
    "@babel/highlight": ^7.16.7
  languageName: unknown
  linkType: soft
"""
    found = {p.name: p for p in parse_manifest("yarn.lock", berry)}
    assert found["@babel/highlight"].direct
    assert found["@babel/highlight"].requires == ("chalk 2.4.2",)
    v1 = """# yarn lockfile v1


"local@file:../local":
  version "0.2.0"
  dependencies:
    ms "2.1.3"

ms@2.1.3:
  version "2.1.3"
"""
    found = {p.name: p for p in parse_manifest("yarn.lock", v1)}
    assert found["local"].version == "0.2.0"
    assert found["local"].requires == ("ms 2.1.3",)
    assert not found["ms"].direct


def test_uv_extras_asked_only_by_development_groups_are_development_only():
    text = """version = 1
requires-python = ">=3.11"

[[package]]
name = "app"
version = "0.1.0"
source = { editable = "." }
dependencies = [{ name = "requests" }]

[package.dev-dependencies]
dev = [{ name = "requests", extra = ["socks"] }]

[[package]]
name = "requests"
version = "2.32.3"
source = { registry = "https://pypi.org/simple" }

[package.optional-dependencies]
socks = [{ name = "pysocks" }]

[[package]]
name = "pysocks"
version = "1.7.1"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "tool"
source = { directory = "tools/tool" }
"""
    found = {p.name: p for p in parse_manifest("uv.lock", text)}
    assert not found["requests"].dev
    assert found["pysocks"].dev  # only the dev group asks for requests[socks]
    assert found["requests"].requires == ("pysocks 1.7.1",)  # the graph holds every extra asked for
    assert "tool" not in found  # a local folder with a dynamic version: the repository's own


def test_requirements_lines_as_pips_reader_makes_them():
    text = "\n".join(
        [
            "foo==1.0 \\",
            "# a comment ends the continuation",
            "bar==2.0",
            "# a comment line ending in a backslash continues nothing \\",
            "requests==2.31.0",
            "dist/baz-1.2-py3-none-any.whl",
            "qux-0.3.tar.gz",
            "./local/folder",
            "pkg @ https://example.com/pkg-2.0.tar.gz",
            "-r /etc/hostname",
        ]
    )
    found = {p.name: p.version for p in parse_manifest("requirements.txt", text)}
    assert found == {"foo": "1.0", "bar": "2.0", "requests": "2.31.0", "baz": "1.2", "qux": "0.3", "pkg": "2.0"}


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("package-lock.json", '{"lockfileVersion": 1, "dependencies": {"a": null}}'),
        ("package-lock.json", '{"lockfileVersion": 1, "dependencies": {"a": {"version": "1", "requires": true}}}'),
        ("package-lock.json", '{"lockfileVersion": 3, "packages": {"": {"dependencies": ["a"]}}}'),
        ("pnpm-lock.yaml", "lockfileVersion: '9.0'\nimporters:\n  .:\n    dependencies: [a]\n"),
        ("pnpm-lock.yaml", "lockfileVersion: '6.0'\npackages:\n  /a@1.0.0: just a string\n"),
        ("uv.lock", 'version = 1\n[[package]]\nname = "a"\nversion = "1"\ndependencies = ["b"]\n'),
        ("yarn.lock", '  dependencies:\n    a "1"\nb@^1:\n  version "1.0.0"\n'),
    ],
)
def test_a_lock_file_in_a_shape_its_format_never_has_is_a_clear_error(path, text):
    """Read as far as it makes sense, or refused with a ManifestError naming the file (the
    scan's warning); never an AttributeError or TypeError that stops the scan."""
    try:
        found = parse_manifest(path, text)
    except ManifestError as exc:
        assert path in str(exc)
    else:
        assert isinstance(found, list)
