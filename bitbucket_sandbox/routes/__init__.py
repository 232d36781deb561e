"""The REST routes, one module per resource family, and the ``@route`` that declares them.

Each family is a mixin of ``app.Sandbox``: a method decorated with ``@route(method,
path, legacy=..., granular=..., bucket=...)`` serves ``/2.0{path}``. ``legacy`` names
the scopes access tokens and OAuth consumers need, ``granular`` those API tokens need
(both as the spec's operation says; ``tests/bitbucket_sandbox/test_sandbox_contract.py``
checks them); ``bucket="repositories"`` counts the call against the
``/2.0/repositories/*`` rate limit. ``{path}`` matches across slashes, ``{branch}``
anything non-empty, every other placeholder one segment.

``git.py`` (the git ref advertisement) and ``oauth.py`` (the token endpoint) are not
under ``/2.0`` and are dispatched by ``app.Sandbox.handle`` directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, TypeVar

Handler = TypeVar("Handler", bound=Callable)


@dataclass
class Route:
    method: str
    pattern: re.Pattern
    handler: Callable
    legacy: tuple[str, ...]  # scopes for access tokens and OAuth
    granular: tuple[str, ...]  # scopes for API tokens
    rate_bucket: str = "other"


def route(
    method: str, path: str, legacy: tuple = (), granular: tuple = (), bucket: str = "other"
) -> Callable[[Handler], Handler]:
    regex = (
        "^"
        + re.sub(
            r"\{(\w+)\}",
            lambda m: (
                f"(?P<{m.group(1)}>{'.*' if m.group(1) == 'path' else '.+' if m.group(1) == 'branch' else '[^/]+'})"
            ),
            path,
        )
        + "/?$"
    )

    def decorate(fn: Handler) -> Handler:
        fn._route = (method, re.compile(regex), legacy, granular, bucket)
        return fn

    return decorate
