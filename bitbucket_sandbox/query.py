"""Bitbucket's ``q=`` filter language, ``sort=``, and ``fields=`` partial responses.

See the API guide's "Filtering" and "Partial response" pages. The filter is parsed
into a small tree and evaluated against an object's full JSON representation.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Callable

Predicate = Callable[[dict], bool]


class QueryError(ValueError):
    """A ``q`` expression Bitbucket would reject with 400."""


_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<op>!=|!~|>=|<=|=|~|>|<)
    | (?P<lparen>\() | (?P<rparen>\)) | (?P<comma>,)
    | (?P<word>[A-Za-z0-9_.:+\-{}]+)
    )""",
    re.VERBOSE,
)
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise QueryError(f"Invalid query: unexpected character at position {pos}: {text[pos : pos + 10]!r}")
        kind = match.lastgroup
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def _parse_datetime(value: str) -> datetime | None:
    if not isinstance(value, str) or not _DATETIME.match(value):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _literal(kind: str, text: str) -> Any:
    if kind == "string":
        return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    moment = _parse_datetime(text)
    if moment is not None:
        return moment
    raise QueryError(f"Invalid query: {text!r} is not a value (strings need double quotes)")


def _lookup(doc: Any, path: str) -> list[Any]:
    """All values at a dotted path; lists fan out (``reviewers.nickname``)."""
    values = [doc]
    for segment in path.split("."):
        nxt = []
        for value in values:
            if isinstance(value, list):
                value = [v.get(segment) for v in value if isinstance(v, dict)]
                nxt.extend(value)
            elif isinstance(value, dict):
                nxt.append(value.get(segment))
            else:
                nxt.append(None)
        values = nxt
    return values


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if isinstance(expected, datetime):
        actual = _parse_datetime(actual) if isinstance(actual, str) else None
        if actual is None:
            return False
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    if op in ("~", "!~"):
        contains = isinstance(actual, str) and str(expected).lower() in actual.lower()
        return contains if op == "~" else not contains
    if actual is None or expected is None:
        return False
    try:
        return {">": actual > expected, ">=": actual >= expected, "<": actual < expected, "<=": actual <= expected}[op]
    except TypeError:
        return False


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens, self.pos = tokens, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise QueryError("Invalid query: unexpected end of expression")
        self.pos += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token and token[0] == "word" and token[1].upper() == word:
            self.pos += 1
            return True
        return False

    def parse(self) -> Predicate:
        predicate = self.or_expr()
        if self.peek() is not None:
            raise QueryError(f"Invalid query: unexpected {self.peek()[1]!r}")
        return predicate

    def or_expr(self) -> Predicate:
        parts = [self.and_expr()]
        while self.keyword("OR"):
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda doc: any(p(doc) for p in parts))

    def and_expr(self) -> Predicate:
        parts = [self.atom()]
        while self.keyword("AND"):
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else (lambda doc: all(p(doc) for p in parts))

    def atom(self) -> Predicate:
        kind, text = self.take()
        if kind == "lparen":
            inner = self.or_expr()
            if self.take()[0] != "rparen":
                raise QueryError("Invalid query: missing ')'")
            return inner
        if kind != "word":
            raise QueryError(f"Invalid query: expected a field name, found {text!r}")
        field = text
        if self.keyword("NOT"):
            if not self.keyword("IN"):
                raise QueryError("Invalid query: expected IN after NOT")
            values = self.value_list()
            return lambda doc: not any(v in values for v in _lookup(doc, field))
        if self.keyword("IN"):
            values = self.value_list()
            return lambda doc: any(v in values for v in _lookup(doc, field))
        op_kind, op = self.take()
        if op_kind != "op":
            raise QueryError(f"Invalid query: expected an operator after {field!r}")
        value_kind, value_text = self.take()
        if value_kind not in ("string", "word"):
            raise QueryError(f"Invalid query: expected a value after {op!r}")
        expected = _literal(value_kind, value_text)
        if op in ("!=", "!~"):
            return lambda doc: all(_compare(a, op, expected) for a in _lookup(doc, field))
        return lambda doc: any(_compare(a, op, expected) for a in _lookup(doc, field))

    def value_list(self) -> list[Any]:
        if self.take()[0] != "lparen":
            raise QueryError("Invalid query: expected '(' to start a list")
        values = []
        while True:
            kind, text = self.take()
            values.append(_literal(kind, text))
            sep = self.take()[0]
            if sep == "rparen":
                return values
            if sep != "comma":
                raise QueryError("Invalid query: expected ',' or ')' in a list")


def compile_query(text: str) -> Predicate:
    return _Parser(_tokens(text)).parse()


def sort_key(field: str) -> Callable[[dict], Any]:
    def key(doc: dict) -> Any:
        values = _lookup(doc, field)
        value = values[0] if values else None
        return (value is None, value if not isinstance(value, (dict, list)) else str(value))

    return key


# --- fields= --------------------------------------------------------------------------


def _tree(paths: list[str]) -> dict:
    tree: dict = {}
    for path in paths:
        node = tree
        for segment in path.split("."):
            node = node.setdefault(segment, {})
    return tree


def _pick(value: Any, tree: dict) -> Any:
    """A copy of the selected parts. Containers are new; leaves are shared, which is
    safe because results are only serialised, never mutated in place."""
    if not tree:
        return _copy_containers(value)
    if isinstance(value, list):
        return [_pick(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict = {}
    for key, sub in tree.items():
        if key == "*":
            for k, v in value.items():
                out[k] = _merge(out.get(k), _pick(v, sub))
        elif key in value:
            out[key] = _merge(out.get(key), _pick(value[key], sub))
    return out


def _copy_containers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_containers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_containers(v) for v in value]
    return value


def _merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        merged = dict(a)
        for k, v in b.items():
            merged[k] = _merge(merged.get(k), v)
        return merged
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [_merge(x, y) for x, y in zip(a, b, strict=True)]
    return b if b is not None else a


def _remove(value: Any, segments: list[str]) -> None:
    if isinstance(value, list):
        for item in value:
            _remove(item, segments)
        return
    if not isinstance(value, dict) or not segments:
        return
    head, rest = segments[0], segments[1:]
    keys = list(value) if head == "*" else [head]
    for key in keys:
        if key not in value:
            continue
        if rest:
            _remove(value[key], rest)
        else:
            del value[key]


def apply_fields(doc: dict, fields: str) -> dict:
    """Apply a ``fields=`` expression: ``a.b,c`` keeps only those; ``-x`` removes;
    ``+y`` adds back from the full document; ``*`` matches every key at a level."""
    terms = [t.strip() for t in fields.split(",") if t.strip()]
    if not terms:
        return doc
    keep = [t for t in terms if t[0] not in "+-"]
    result = _pick(doc, _tree(keep)) if keep else _copy_containers(doc)
    for term in terms:
        if term.startswith("-"):
            _remove(result, term[1:].split("."))
    for term in terms:
        if term.startswith("+"):
            result = _merge(result, _pick(doc, _tree([term[1:]])))
    return result
