"""Webhook events: their payloads, and signed deliveries to every subscribed hook.

As Bitbucket delivers them: ``X-Event-Key``, ``X-Hook-UUID``, ``X-Request-UUID`` (the
same on every attempt), ``X-Attempt-Number``, and ``X-Hub-Signature`` (HMAC-SHA256 of
the raw body with the hook's secret) when the hook has one; retried after a 5xx or a
failed connection. Every attempt is kept in ``Sandbox.deliveries``
(``GET /_sandbox/deliveries``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid as uuidlib

import requests

from bitbucket_sandbox.data import Repo
from bitbucket_sandbox.shapes import Shapes


def signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature`` header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Events(Shapes):
    def event_payload(
        self, event: str, workspace: str, slug: str, extra: dict, *, repo: Repo | None = None, pr_id: int | None = None
    ) -> dict:
        ws = self.world.workspaces[workspace]
        repo = repo or ws.repos[slug]
        payload = {
            "repository": self._repo_json(repo),
            "actor": self._user_json(ws.members[0]),
            **({"workspace": self._workspace_json(ws)}),
        }
        if pr_id is not None:
            payload["pullrequest"] = self._pr_json(repo, repo.pullrequests[pr_id])
        payload.update(extra)
        return payload

    def fire(
        self,
        event: str,
        workspace: str,
        slug: str,
        extra: dict,
        *,
        repo: Repo | None = None,
        pr_id: int | None = None,
        attempts: int = 3,
    ) -> list[dict]:
        """Deliver ``event`` to every active hook subscribed to it, as Bitbucket does:
        signed with the hook's secret, retried (same request UUID) after a 5xx."""
        with self.lock:
            ws = self.world.workspaces.get(workspace)
            if ws is None:
                return []
            target = repo or ws.repos.get(slug)
            hooks = [
                h
                for h in list(ws.hooks.values()) + list(target.hooks.values() if target else [])
                if h.active and event in h.events
            ]
            payload = self.event_payload(event, workspace, slug, extra, repo=target, pr_id=pr_id) if hooks else {}
        results = []
        body = json.dumps(payload).encode()
        for hook in hooks:
            request_uuid = str(uuidlib.uuid4())
            for attempt in range(1, attempts + 1):
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": "Bitbucket-Webhooks/2.0",
                    "X-Event-Key": event,
                    "X-Hook-UUID": hook.uuid.strip("{}"),
                    "X-Request-UUID": request_uuid,
                    "X-Attempt-Number": str(attempt),
                }
                if hook.secret:
                    headers["X-Hub-Signature"] = signature(hook.secret, body)
                try:
                    status = requests.post(hook.url, data=body, headers=headers, timeout=10).status_code
                except requests.RequestException as exc:
                    status = 0
                    error = type(exc).__name__
                else:
                    error = ""
                record = {
                    "event": event,
                    "hook": hook.uuid,
                    "url": hook.url,
                    "request_uuid": request_uuid,
                    "attempt": attempt,
                    "status": status,
                    "error": error,
                }
                results.append(record)
                self.deliveries.append(record)
                if 200 <= status < 500 and status != 0:
                    break
        return results
