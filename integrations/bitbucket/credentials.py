"""The three ways to authenticate to Bitbucket Cloud, and what each credential holds.

* access token (workspace, project or repository): ``Authorization: Bearer``;
* Atlassian account email + API token: HTTP Basic;
* OAuth consumer key + secret: client-credentials grant, then Bearer.

App passwords were removed on 2026-07-28; they are recognised and explained, never
accepted. Credentials are validated here and stored as one encrypted JSON blob; only
the non-secret identity (email or consumer key) is kept in clear.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from integrations.models import AuthMethod

APP_PASSWORD_REMOVED = (
    "Bitbucket app passwords were removed on 2026-07-28 and no longer work. "
    "Create an Atlassian API token (Atlassian account settings > Security > API tokens, "
    "with Bitbucket scopes such as read:repository:bitbucket and read:workspace:bitbucket) "
    "and use it with your account email, or create a workspace or project access token "
    "(Workspace settings > Access tokens) and use it as an access token."
)

# What to do about a rejected credential or a missing scope, per auth method.
SCOPE_HELP = {
    AuthMethod.API_TOKEN: "Create a new API token with these scopes (Atlassian account settings > Security > "
    "API tokens > Create API token with scopes > Bitbucket) and update the credentials.",
    AuthMethod.ACCESS_TOKEN: "Create a new access token with these scopes (Workspace, project or repository "
    "settings > Access tokens) and update the credentials: a token's scopes cannot be "
    "changed after creation.",
    AuthMethod.OAUTH: "Add these permissions to the OAuth consumer (Workspace settings > OAuth consumers > Edit); "
    "the portal fetches a new token on the next scan.",
}
EXPIRED_HELP = {
    AuthMethod.API_TOKEN: "The API token is invalid, expired (they last at most a year) or revoked, or the email "
    "is not the account that created it. Create a new API token and update the credentials.",
    AuthMethod.ACCESS_TOKEN: "The access token is invalid, expired or revoked. Create a new one in the workspace, "
    "project or repository settings (Access tokens) and update the credentials.",
    AuthMethod.OAUTH: "Bitbucket refused the OAuth consumer key and secret, or its token. Check that the consumer "
    "still exists, is private and has client credentials enabled, then update the credentials.",
}


# Prefixes Atlassian gives its secrets. App passwords start with ATBB; API tokens with
# ATATT; access tokens with ATCTT. Only ATBB is refused; the others steer hints.
APP_PASSWORD_PREFIX = "ATBB"
_whitespace = re.compile(r"\s")

# Fields per method: (secret fields, identity field)
FIELDS: dict[str, tuple[tuple[str, ...], str | None]] = {
    AuthMethod.ACCESS_TOKEN: (("token",), None),
    AuthMethod.API_TOKEN: (("token",), "email"),
    AuthMethod.OAUTH: (("secret",), "key"),
}


@dataclass(frozen=True)
class Credentials:
    method: str
    identity: str  # email or consumer key; not secret
    secret: str  # token or consumer secret

    def to_json(self) -> str:
        return json.dumps({"identity": self.identity, "secret": self.secret})

    @classmethod
    def from_json(cls, method: str, blob: str) -> "Credentials":
        data = json.loads(blob)
        return cls(method=method, identity=data.get("identity", ""), secret=data["secret"])

    def __repr__(self) -> str:  # never print the secret
        return f"Credentials(method={self.method!r}, identity={self.identity!r}, secret=<hidden>)"

    __str__ = __repr__


def _token_text(value: str) -> bool:
    """Bitbucket's tokens, secrets and keys are printable ASCII; anything else is a paste
    gone wrong (and could not be sent in an HTTP header anyway)."""
    return value.isascii() and value.isprintable()


def looks_like_app_password(secret: str) -> bool:
    return secret.startswith(APP_PASSWORD_PREFIX)


def clean_credentials(method: str, data: dict[str, str]) -> Credentials:
    """Validate the fields for ``method``; errors are keyed by form field name.

    Field names: ``email`` + ``token`` (API token), ``token`` (access token),
    ``key`` + ``secret`` (OAuth consumer).
    """
    if method not in AuthMethod.values:
        if method == "app_password":
            raise ValidationError({"auth_method": APP_PASSWORD_REMOVED})
        raise ValidationError({"auth_method": f"Unknown authentication method '{method}'."})
    errors: dict[str, str] = {}
    values = {k: (data.get(k) or "").strip() for k in ("email", "token", "key", "secret")}

    if method == AuthMethod.API_TOKEN:
        if not values["email"]:
            errors["email"] = "Enter the email address of the Atlassian account that owns the API token."
        else:
            try:
                validate_email(values["email"])
            except ValidationError:
                errors["email"] = (
                    "Enter the Atlassian account email (API tokens use the email, not the Bitbucket username)."
                )
    if method == AuthMethod.OAUTH and not values["key"]:
        errors["key"] = "Enter the OAuth consumer key."
    elif method == AuthMethod.OAUTH and not _token_text(values["key"]):
        errors["key"] = (
            "The consumer key contains characters Bitbucket never uses (only ASCII letters, digits and "
            "punctuation); copy it again from the OAuth consumer's settings."
        )

    secret_field = "secret" if method == AuthMethod.OAUTH else "token"
    secret = values[secret_field]
    label = {"token": "token", "secret": "consumer secret"}[secret_field]
    if not secret:
        errors[secret_field] = f"Enter the {label}."
    elif _whitespace.search(secret):
        errors[secret_field] = f"The {label} contains spaces or line breaks; paste it again without them."
    elif not _token_text(secret):
        errors[secret_field] = (
            f"The {label} contains characters Bitbucket never puts in one (only ASCII letters, "
            "digits and punctuation); copy it again from Bitbucket."
        )
    elif looks_like_app_password(secret):
        errors[secret_field] = APP_PASSWORD_REMOVED
    elif len(secret) < 8:
        errors[secret_field] = f"That {label} is too short to be a Bitbucket credential."
    if errors:
        raise ValidationError(errors)

    identity = values["email"].lower() if method == AuthMethod.API_TOKEN else values["key"]
    return Credentials(method=method, identity=identity, secret=secret)
