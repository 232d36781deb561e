"""A local Bitbucket Cloud sandbox: REST 2.0, git ref advertisement, OAuth, webhooks.

For the quick-start demo, end-to-end tests and benchmarks. Django-free (standard
library, ``cryptography`` for TLS, ``requests`` for webhook deliveries) and not part of
the production wheel; product code never imports it.

- ``app.py``: ``Sandbox``, which combines the parts below and dispatches a request;
- ``http.py``: ``Request``, ``Response``, ``ApiError``;
- ``core.py``: the state, shared lookups and the paginated envelope;
- ``auth.py``: credentials, scopes, reach, rate windows;
- ``faults.py``: injected failures and the request record;
- ``shapes.py``: the JSON shapes of Bitbucket's objects;
- ``routes/``: the REST routes, one module per resource family, plus git refs and OAuth;
- ``events.py``: webhook payloads and signed deliveries (``fire``);
- ``changes.py``: pushes, repository and pull-request changes that tests and demos make;
- ``control.py``: the ``/_sandbox/`` control actions, one function each;
- ``data.py``: the world (dataclasses, the generator, JSON fixtures, test credentials);
- ``query.py``: the ``q=`` language, ``sort=`` and ``fields=``;
- ``server.py``: ``SandboxServer``, the threaded HTTP(S) server on loopback.
"""

from bitbucket_sandbox.app import Sandbox
from bitbucket_sandbox.data import World, generate
from bitbucket_sandbox.http import Request, Response
from bitbucket_sandbox.server import SandboxServer

__all__ = ["Request", "Response", "Sandbox", "SandboxServer", "World", "generate"]
