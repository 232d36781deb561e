"""Parsers for each manifest and lock file format, with real-world-shaped inputs."""

from __future__ import annotations

import json

import pytest

from scanning.manifests import ManifestError, Package, is_vendored, parse_manifest, parser_for


def by_name(packages):
    return {p.name: p for p in packages}


def test_package_json_ranges_and_dev():
    text = json.dumps(
        {
            "name": "web",
            "dependencies": {"lodash": "^4.17.20", "react": "18.2.0"},
            "devDependencies": {"jest": "~29.7.0"},
        }
    )
    pkgs = by_name(parse_manifest("package.json", text))
    assert pkgs["lodash"] == Package("npm", "lodash", "^4.17.20", True, False)
    assert pkgs["jest"].dev
    assert pkgs["react"].version == "18.2.0"


def test_package_lock_v3_direct_transitive_and_dev():
    text = json.dumps(
        {
            "lockfileVersion": 3,
            "packages": {
                "": {"name": "web", "dependencies": {"express": "^4"}, "devDependencies": {"jest": "^29"}},
                "node_modules/express": {"version": "4.18.2"},
                "node_modules/ms": {"version": "2.1.3"},
                "node_modules/jest": {"version": "29.7.0", "dev": True},
                "node_modules/express/node_modules/debug": {"version": "2.6.9"},
                "node_modules/local": {"link": True},
            },
        }
    )
    pkgs = by_name(parse_manifest("package-lock.json", text))
    assert pkgs["express"].direct
    assert not pkgs["ms"].direct
    assert pkgs["jest"].dev
    assert pkgs["debug"].version == "2.6.9"
    assert not pkgs["debug"].direct
    assert "local" not in pkgs


def test_package_lock_v1():
    text = json.dumps(
        {
            "lockfileVersion": 1,
            "dependencies": {
                "lodash": {"version": "4.17.20", "dependencies": {"inner": {"version": "1.0.0"}}},
                "jest": {"version": "29.0.0", "dev": True},
            },
        }
    )
    pkgs = by_name(parse_manifest("package-lock.json", text))
    assert pkgs["lodash"].version == "4.17.20"
    assert pkgs["inner"].direct is False
    assert pkgs["jest"].dev


def test_yarn_lock_v1_and_berry():
    v1 = """# yarn lockfile v1

"@babel/core@^7.0.0", "@babel/core@^7.1.0":
  version "7.23.6"
  resolved "https://registry.yarnpkg.com/@babel/core/-/core-7.23.6.tgz"

lodash@^4.17.20:
  version "4.17.21"
"""
    pkgs = by_name(parse_manifest("yarn.lock", v1))
    assert pkgs["@babel/core"].version == "7.23.6"
    assert pkgs["lodash"].version == "4.17.21"
    berry = """__metadata:
  version: 6

"lodash@npm:^4.17.0":
  version: 4.17.21
  resolution: "lodash@npm:4.17.21"
"""
    assert by_name(parse_manifest("yarn.lock", berry))["lodash@npm:^4.17.0".rsplit("@", 1)[0]].version == "4.17.21"


def test_pnpm_lock_v6_and_v9():
    v6 = """lockfileVersion: '6.0'
dependencies:
  axios:
    specifier: ^1.6.0
    version: 1.6.2
devDependencies:
  typescript:
    specifier: ^5
    version: 5.3.3
packages:
  /axios@1.6.2:
    resolution: {integrity: sha512-x}
    dev: false
  /typescript@5.3.3:
    dev: true
  /follow-redirects@1.15.3:
    dev: false
"""
    pkgs = by_name(parse_manifest("pnpm-lock.yaml", v6))
    assert pkgs["axios"].direct
    assert pkgs["typescript"].dev
    assert not pkgs["follow-redirects"].direct
    v9 = """lockfileVersion: '9.0'
importers:
  .:
    dependencies:
      '@scope/pkg':
        specifier: ^2
        version: 2.0.1
packages:
  '@scope/pkg@2.0.1':
    resolution: {integrity: sha512-y}
"""
    assert by_name(parse_manifest("pnpm-lock.yaml", v9))["@scope/pkg"] == Package(
        "npm", "@scope/pkg", "2.0.1", True, False
    )


def test_requirements_files():
    text = """# pinned
Django==5.2.1  # web
requests>=2.31,<3
-r base.txt
--hash=sha256:abc
-e git+https://github.com/x/y.git#egg=y
PyYAML[extra]===6.0.1 ; python_version >= "3.8"
"""
    pkgs = by_name(parse_manifest("requirements.txt", text))
    assert pkgs["django"].version == "5.2.1"
    assert pkgs["requests"].version == "<3,>=2.31"
    assert pkgs["pyyaml"].version == "6.0.1"
    assert pkgs["y"].version == ""  # an editable VCS requirement: known by its #egg= name
    assert len(pkgs) == 4
    assert all(p.dev for p in parse_manifest("requirements-dev.txt", "pytest==8.0\n"))
    with pytest.raises(ManifestError, match="requirements.txt line 1"):
        parse_manifest("requirements.txt", "django==>5\n")


def test_pipfile_poetry_and_pyproject():
    pipfile = json.dumps(
        {"default": {"requests": {"version": "==2.31.0"}}, "develop": {"pytest": {"version": "==7.4.3"}}}
    )
    pkgs = by_name(parse_manifest("Pipfile.lock", pipfile))
    assert pkgs["requests"].version == "2.31.0"
    assert pkgs["pytest"].dev
    poetry = """[[package]]
name = "Django"
version = "4.2.8"
groups = ["main"]

[[package]]
name = "pytest"
version = "7.4.3"
category = "dev"
"""
    pkgs = by_name(parse_manifest("poetry.lock", poetry))
    assert pkgs["django"].version == "4.2.8"
    assert not pkgs["django"].dev
    assert pkgs["pytest"].dev
    pyproject = """[project]
name = "svc"
dependencies = ["httpx>=0.25", "pydantic==2.5.2"]
[project.optional-dependencies]
dev = ["ruff"]
[tool.poetry.dependencies]
python = "^3.11"
fastapi = "^0.104"
[tool.poetry.group.test.dependencies]
pytest = {version = "^7"}
"""
    pkgs = by_name(parse_manifest("pyproject.toml", pyproject))
    assert pkgs["pydantic"].version == "2.5.2"
    assert pkgs["httpx"].version == ">=0.25"
    assert pkgs["ruff"].dev
    assert pkgs["fastapi"].version == "^0.104"
    assert "python" not in pkgs
    assert pkgs["pytest"].dev
    with pytest.raises(ManifestError, match="not valid TOML"):
        parse_manifest("pyproject.toml", "[project\nname=")


def test_pom_with_properties_and_scopes():
    pom = """<?xml version="1.0"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <version>1.2.0</version>
  <properties><jackson.version>2.16.0</jackson.version></properties>
  <dependencies>
    <dependency><groupId>com.fasterxml.jackson.core</groupId><artifactId>jackson-databind</artifactId>
      <version>${jackson.version}</version></dependency>
    <dependency><groupId>junit</groupId><artifactId>junit</artifactId><version>4.13.2</version><scope>test</scope></dependency>
    <dependency><groupId>org.example</groupId><artifactId>sibling</artifactId><version>${project.version}</version></dependency>
  </dependencies>
</project>"""
    pkgs = by_name(parse_manifest("pom.xml", pom))
    assert pkgs["com.fasterxml.jackson.core:jackson-databind"].version == "2.16.0"
    assert pkgs["junit:junit"].dev
    assert pkgs["org.example:sibling"].version == "1.2.0"


def test_pom_rejects_entity_expansion():
    bomb = """<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>
<project><dependencies><dependency><groupId>&lol2;</groupId><artifactId>a</artifactId></dependency></dependencies></project>"""
    with pytest.raises(ManifestError, match="unsafe"):
        parse_manifest("pom.xml", bomb)


def test_go_mod_and_sum():
    mod = """module example.com/svc

go 1.21

require github.com/gin-gonic/gin v1.9.1
require (
\tgolang.org/x/crypto v0.17.0 // indirect
\tgithub.com/stretchr/testify v1.8.4
)
"""
    pkgs = by_name(parse_manifest("go.mod", mod))
    assert pkgs["github.com/gin-gonic/gin"].direct
    assert not pkgs["golang.org/x/crypto"].direct
    summed = parse_manifest("go.sum", "github.com/a/b v1.0.0 h1:abc=\ngithub.com/a/b v1.0.0/go.mod h1:def=\n")
    assert summed == [Package("go", "github.com/a/b", "v1.0.0", False, False)]
    with pytest.raises(ManifestError, match="go.sum line 1"):
        parse_manifest("go.sum", "garbage\n")


def test_cargo_gemfile_composer_nuget():
    cargo = """version = 3
[[package]]
name = "serde"
version = "1.0.193"
source = "registry+https://github.com/rust-lang/crates.io-index"
[[package]]
name = "my-crate"
version = "0.1.0"
"""
    assert parse_manifest("Cargo.lock", cargo) == [Package("cargo", "serde", "1.0.193", False, False)]
    gemfile = """GEM
  remote: https://rubygems.org/
  specs:
    rack (3.0.8)
    rails (7.1.2)
      rack (>= 2.2.4)

PLATFORMS
  ruby

DEPENDENCIES
  rails!
"""
    pkgs = by_name(parse_manifest("Gemfile.lock", gemfile))
    assert pkgs["rails"].direct
    assert not pkgs["rack"].direct
    assert pkgs["rack"].version == "3.0.8"
    composer = json.dumps(
        {
            "packages": [{"name": "monolog/monolog", "version": "v3.5.0"}],
            "packages-dev": [{"name": "phpunit/phpunit", "version": "10.5.3"}],
        }
    )
    pkgs = by_name(parse_manifest("composer.lock", composer))
    assert pkgs["monolog/monolog"].version == "3.5.0"
    assert pkgs["phpunit/phpunit"].dev
    nuget = json.dumps(
        {
            "version": 1,
            "dependencies": {
                "net8.0": {
                    "Newtonsoft.Json": {"type": "Direct", "requested": "[13.0.3, )", "resolved": "13.0.3"},
                    "System.Memory": {"type": "Transitive", "resolved": "4.5.5"},
                    "MyLib": {"type": "Project"},
                }
            },
        }
    )
    pkgs = by_name(parse_manifest("packages.lock.json", nuget))
    assert pkgs["Newtonsoft.Json"].direct
    assert not pkgs["System.Memory"].direct
    assert "MyLib" not in pkgs


@pytest.mark.parametrize(
    "path,text,message",
    [
        ("package.json", "{not json", "not valid JSON"),
        ("package.json", json.dumps({"dependencies": ["lodash"]}), "should be an object"),
        ("package-lock.json", json.dumps({"name": "x"}), "neither"),
        ("yarn.lock", "lodash@^4\n  version", "yarn.lock line 1"),
        ("yarn.lock", "# yarn lockfile v1\n", "no entries"),
        ("pnpm-lock.yaml", "a: [unclosed", "not valid YAML"),
        ("poetry.lock", "[[package]]\nname = 'x'\n", "lacks name or version"),
        (
            "pom.xml",
            "<project><dependencies><dependency><artifactId>a</artifactId></dependency></dependencies></project>",
            "lacks groupId",
        ),
        ("pom.xml", "<project>", "not valid"),
        ("go.mod", "require (\n  onlyname\n)\n", "go.mod line 2"),
        ("Gemfile.lock", "nothing here", "no GEM section"),
        ("packages.lock.json", json.dumps({"dependencies": []}), "should map"),
    ],
)
def test_malformed_files_say_what_is_wrong(path, text, message):
    with pytest.raises(ManifestError, match=message):
        parse_manifest(path, text)


def test_which_paths_are_manifests():
    assert parser_for("services/api/requirements-prod.txt") is not None
    assert parser_for("node_modules/lodash/package.json") is None
    assert is_vendored("app/vendor/x/go.mod")
    assert parser_for("README.md") is None
    assert parser_for("src/Pipfile.lock") is not None
