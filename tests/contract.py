"""Validating sandbox responses against the published Bitbucket Cloud OpenAPI spec.

The spec is read from ``../shared/bitbucket/`` (never copied into the project). It is
stricter than the live API in a few known places, which are loosened here and only
here:

* ``error.error.detail`` is typed as a string; a missing-scope 403 sends an object
  (``{"required": [...], "granted": [...]}``);
* ``commit_file.attributes`` is a single string; the live API sends a list;
* ``project.links`` is closed without ``self``; the live API sends ``self``;
* ``src/{commit}/{path}?format=meta`` on a file answers one ``commit_file``, which the
  spec (describing only the directory listing) does not mention.

A partial response (``fields=``) is checked for types and closed objects, but not
for ``required`` properties, since leaving fields out is its point.
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path

SPEC_PATH = Path(__file__).resolve().parents[2] / "shared" / "bitbucket" / "bitbucket-cloud-openapi-v3.json"
ABSENT_REASON = f"Bitbucket OpenAPI spec not found at {SPEC_PATH} (../shared is absent): contract not checked"


def spec_available() -> bool:
    return SPEC_PATH.is_file()


@lru_cache(maxsize=1)
def load_spec() -> dict:
    return json.loads(SPEC_PATH.read_text())


def _drop_required(node):
    if isinstance(node, dict):
        node.pop("required", None) if isinstance(node.get("required"), list) else None
        for value in node.values():
            _drop_required(value)
    elif isinstance(node, list):
        for value in node:
            _drop_required(value)
    return node


@lru_cache(maxsize=2)
def _components(partial: bool = False) -> dict:
    if partial:
        return _drop_required(copy.deepcopy(_components(False)))
    components = copy.deepcopy(load_spec()["components"])
    schemas = components["schemas"]
    detail = schemas["error"]["properties"]["error"]["properties"]["detail"]
    detail.pop("type", None)  # string or object
    attributes = schemas["commit_file"]["properties"]["attributes"]
    schemas["commit_file"]["properties"]["attributes"] = {"anyOf": [attributes, {"type": "array", "items": attributes}]}
    project_links = schemas["project"]["allOf"][1]["properties"]["links"]
    project_links["properties"]["self"] = {"$ref": "#/components/schemas/link"}
    return components


@lru_cache(maxsize=1)
def _operations() -> list[tuple[re.Pattern, str, dict]]:
    ops = []
    for template, item in load_spec()["paths"].items():
        regex = "^" + re.sub(r"\{(\w+)\}", lambda m: "(.*)" if m.group(1) == "path" else "([^/]+)", template) + "/?$"
        ops.append((re.compile(regex), template, item))
    # Literal segments beat parameters: longest literal text first.
    ops.sort(key=lambda op: -len(re.sub(r"\{\w+\}", "", op[1])))
    return ops


def response_schema(method: str, api_path: str, status: int) -> tuple[str, dict | None]:
    """The operation's template and the schema for ``status`` (None: no JSON body)."""
    for regex, template, item in _operations():
        if regex.match(api_path) and method.lower() in item:
            responses = item[method.lower()].get("responses", {})
            declared = responses.get(str(status)) or responses.get("default")
            if declared is None:
                if status >= 400:
                    return template, {"$ref": "#/components/schemas/error"}
                raise AssertionError(f"{method} {template}: status {status} is not in the spec")
            content = declared.get("content", {}).get("application/json")
            return template, (content or {}).get("schema")
    raise AssertionError(f"{method} {api_path}: no such operation in the spec")


def validate(method: str, api_path: str, status: int, body: bytes, content_type: str, partial: bool = False) -> None:
    """Raise AssertionError describing the first mismatch."""
    from jsonschema import Draft7Validator

    template, schema = response_schema(method, api_path, status)
    if schema is None or not content_type.startswith("application/json"):
        return
    document = json.loads(body)
    if template.endswith("/src/{commit}/{path}") and document.get("type") == "commit_file":
        schema = {"$ref": "#/components/schemas/commit_file"}
    validator = Draft7Validator({**schema, "components": _components(partial)})
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        where = "/".join(str(p) for p in error.absolute_path)
        raise AssertionError(f"{method} {template} -> {status}: at '{where}': {error.message[:300]}")
