"""A local Bitbucket Cloud sandbox: REST 2.0, git ref advertisement, OAuth, webhooks.

For the quick-start demo and end-to-end tests; see ``app.py`` for what it serves.
"""

from scanning.sandbox.app import Request, Response, Sandbox
from scanning.sandbox.data import World, generate
from scanning.sandbox.server import SandboxServer

__all__ = ["Request", "Response", "Sandbox", "SandboxServer", "World", "generate"]
