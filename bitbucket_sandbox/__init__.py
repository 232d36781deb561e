"""A local Bitbucket Cloud sandbox: REST 2.0, git ref advertisement, OAuth, webhooks.

For the quick-start demo and end-to-end tests; see ``app.py`` for what it serves.
"""

from bitbucket_sandbox.app import Request, Response, Sandbox
from bitbucket_sandbox.data import World, generate
from bitbucket_sandbox.server import SandboxServer

__all__ = ["Request", "Response", "Sandbox", "SandboxServer", "World", "generate"]
