"""Parsing what a person types to name a Bitbucket Cloud workspace or project.

Accepted, against ``settings.BITBUCKET_WEB_URL``:

* ``https://bitbucket.org/{workspace}``
* ``https://bitbucket.org/{workspace}/workspace/projects/{KEY}`` (a project's page)
* a workspace slug with an optional project key, given separately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

# Bitbucket workspace IDs: lower-case letters, digits, '-' and '_'.
WORKSPACE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,61}$")
# Project keys: a letter, then letters, digits or '_' (Bitbucket shows them upper-case).
PROJECT_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


@dataclass(frozen=True)
class BitbucketTarget:
    workspace: str
    project_key: str
    url: str

    @property
    def scope(self) -> str:
        return "project" if self.project_key else "workspace"


def _web_base() -> str:
    return settings.BITBUCKET_WEB_URL.rstrip("/")


def target_url(workspace: str, project_key: str = "") -> str:
    base = f"{_web_base()}/{workspace}"
    return f"{base}/workspace/projects/{project_key}" if project_key else base


def clean_workspace(value: str, field: str = "workspace") -> str:
    workspace = (value or "").strip().lower()
    if not workspace:
        raise ValidationError({field: "Enter the workspace ID (the part after bitbucket.org/ in its URL)."})
    if not WORKSPACE_RE.match(workspace):
        raise ValidationError(
            {
                field: (
                    f"'{value.strip()}' is not a Bitbucket workspace ID: use the workspace's URL slug "
                    "(lower-case letters, digits, '-' and '_'), not its display name."
                )
            }
        )
    return workspace


def clean_project_key(value: str, field: str = "project_key") -> str:
    key = (value or "").strip().upper()
    if key and not PROJECT_KEY_RE.match(key):
        raise ValidationError(
            {
                field: (
                    f"'{value.strip()}' is not a Bitbucket project key: keys start with a letter and "
                    "contain only letters, digits and '_' (for example PROJ)."
                )
            }
        )
    return key


def parse_target(url: str = "", workspace: str = "", project_key: str = "") -> BitbucketTarget:
    """Resolve a URL, or a workspace with an optional project key, to one target.

    Raises ``ValidationError`` keyed by the field at fault, with a message that says
    what was wrong and what a correct value looks like.
    """
    url = (url or "").strip()
    if url and (workspace or project_key):
        raise ValidationError(
            {"bitbucket_url": "Give either a Bitbucket URL, or a workspace and project key, not both."}
        )
    if not url:
        ws = clean_workspace(workspace)
        key = clean_project_key(project_key)
        return BitbucketTarget(ws, key, target_url(ws, key))
    return _parse_url(url)


def _parse_url(url: str) -> BitbucketTarget:
    example = f"{_web_base()}/your-workspace"
    parts = urlsplit(url if "://" in url else f"https://{url}")
    base = urlsplit(_web_base())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError({"bitbucket_url": f"'{url}' is not a URL. Expected something like {example}."})
    if parts.netloc.lower() != base.netloc.lower():
        hint = ""
        if parts.netloc.lower().startswith("api."):
            hint = " That is the API host; use the address you see in the browser."
        elif "/projects/" in parts.path and "/repos/" in parts.path:
            hint = " It looks like a Bitbucket Data Center URL; this integration is for Bitbucket Cloud."
        raise ValidationError(
            {
                "bitbucket_url": (
                    f"'{parts.netloc}' is not the Bitbucket Cloud host this portal uses ({base.netloc}).{hint}"
                )
            }
        )
    if parts.query or parts.fragment:
        raise ValidationError({"bitbucket_url": "Remove the query string or '#' part from the URL."})
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ValidationError({"bitbucket_url": f"The URL has no workspace. Expected {example}."})
    if len(segments) == 1:
        ws = clean_workspace(segments[0], field="bitbucket_url")
        return BitbucketTarget(ws, "", target_url(ws))
    if len(segments) == 4 and segments[1] == "workspace" and segments[2] == "projects":
        ws = clean_workspace(segments[0], field="bitbucket_url")
        key = clean_project_key(segments[3], field="bitbucket_url")
        return BitbucketTarget(ws, key, target_url(ws, key))
    if len(segments) >= 2 and segments[1] not in ("workspace",):
        raise ValidationError(
            {
                "bitbucket_url": (
                    f"That is the URL of a repository ({segments[0]}/{segments[1]}). Connect its workspace "
                    f"({_web_base()}/{segments[0]}) or its project "
                    f"({_web_base()}/{segments[0]}/workspace/projects/KEY) instead."
                )
            }
        )
    raise ValidationError(
        {
            "bitbucket_url": (
                f"Unrecognised Bitbucket URL. Use a workspace URL ({example}) or a project URL "
                f"({example}/workspace/projects/KEY)."
            )
        }
    )


def parse_repository_url(url: str) -> tuple[str, str]:
    """``{web}/{workspace}/{repo}`` (optionally ``.git`` or a deeper page) -> (workspace, slug)."""
    url = (url or "").strip()
    parts = urlsplit(url if "://" in url else f"https://{url}")
    base = urlsplit(_web_base())
    if not url:
        raise ValidationError({"url": "Enter the URL of a repository, e.g. https://bitbucket.org/acme/api."})
    if parts.netloc.lower() != base.netloc.lower():
        raise ValidationError(
            {"url": f"'{parts.netloc}' is not the Bitbucket Cloud host this portal uses ({base.netloc})."}
        )
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) < 2 or segments[1] == "workspace":
        raise ValidationError({"url": f"That is not a repository URL: expected {_web_base()}/workspace/repository."})
    workspace = clean_workspace(segments[0], field="url")
    slug = segments[1].removesuffix(".git").lower()
    if not re.match(r"^[a-z0-9._-]{1,128}$", slug):
        raise ValidationError({"url": f"'{segments[1]}' is not a Bitbucket repository slug."})
    return workspace, slug
