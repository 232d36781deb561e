"""The one function that turns a failure into a sync log category and a hint.

Hints are written for the person who must fix the problem, per auth method where it
matters. Nothing here includes a secret: messages come from typed client errors,
whose text never holds one.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from integrations.bitbucket import client as bb
from integrations.bitbucket.credentials import APP_PASSWORD_REMOVED, EXPIRED_HELP, SCOPE_HELP
from integrations.models import AuthMethod
from synclogs.models import Category


@dataclass(frozen=True)
class Classified:
    category: str
    message: str
    hint: str
    status_code: int | None = None
    method: str = ""
    path: str = ""
    remote_message: str = ""
    missing_scopes: tuple[str, ...] = ()


def classify(exc: BaseException, *, auth_method: str = "") -> Classified:
    """Map any exception to a category, a message and a remediation hint."""
    if not isinstance(exc, bb.BitbucketError):
        return Classified(
            Category.UNEXPECTED,
            f"Unexpected error: {type(exc).__name__}.",
            "This is a problem in the portal. Try again; if it repeats, report it with the time "
            "of this entry (the server log has the details).",
        )
    common = {
        "status_code": exc.status,
        "method": exc.method,
        "path": exc.path,
        "remote_message": exc.remote_message[:1000],
    }
    host = settings.BITBUCKET_API_URL
    if isinstance(exc, bb.AppPasswordRejected):
        return Classified(Category.APP_PASSWORD, exc.message, APP_PASSWORD_REMOVED, **common)
    if isinstance(exc, bb.Unauthorized):
        return Classified(
            Category.INVALID_CREDENTIALS,
            exc.message,
            EXPIRED_HELP.get(auth_method, EXPIRED_HELP[AuthMethod.ACCESS_TOKEN]),
            **common,
        )
    if isinstance(exc, bb.Forbidden):
        if exc.missing_scopes:
            scopes = ", ".join(exc.missing_scopes)
            help_text = SCOPE_HELP.get(auth_method, SCOPE_HELP[AuthMethod.ACCESS_TOKEN])
            return Classified(
                Category.INSUFFICIENT_PERMISSIONS,
                f"The credentials lack the scope(s): {scopes}.",
                f"Missing: {scopes}. {help_text}",
                missing_scopes=tuple(exc.missing_scopes),
                **common,
            )
        return Classified(
            Category.INSUFFICIENT_PERMISSIONS,
            exc.message,
            "The credentials' account or token is not allowed to do this. Give it the needed "
            "permission in Bitbucket (for example workspace or repository admin), or use a "
            "credential that has it.",
            **common,
        )
    if isinstance(exc, bb.CertificateError):
        return Classified(
            Category.CERTIFICATE,
            exc.message,
            f"The TLS certificate presented for {host} is not trusted. If a proxy inspects TLS, add its "
            "CA to the server's trust store (REQUESTS_CA_BUNDLE); otherwise check BITBUCKET_API_URL "
            "and the server's clock.",
            **common,
        )
    if isinstance(exc, bb.HostUnreachable):
        return Classified(
            Category.INVALID_HOST,
            exc.message,
            f"Check BITBUCKET_API_URL ({host}) and BITBUCKET_WEB_URL, DNS, and any firewall or proxy "
            "between the portal and Bitbucket.",
            **common,
        )
    if isinstance(exc, bb.NotFound):
        return Classified(
            Category.NOT_FOUND,
            exc.message,
            "Bitbucket has nothing at this address for these credentials. Check the workspace ID and "
            "project key in the integration's URL; a private repository outside the token's reach "
            "also answers 404.",
            **common,
        )
    if isinstance(exc, bb.RateLimited):
        wait = f" Bitbucket asked to wait {int(exc.retry_after)} seconds." if exc.retry_after else ""
        return Classified(
            Category.RATE_LIMITED,
            exc.message + wait,
            "The credential's hourly request budget is used up (1,000/hour for API tokens and OAuth; "
            "access tokens have their own). The next scan continues; to scan more often use an access "
            "token, or lengthen the scan interval.",
            **common,
        )
    if isinstance(exc, (bb.ServerError, bb.Timeout, bb.ConnectionDropped)):
        return Classified(
            Category.UNAVAILABLE,
            exc.message,
            "Bitbucket is failing, slow or dropping connections right now (see "
            "bitbucket.status.atlassian.com), or a proxy in between is. Nothing to change here: this is "
            "usually transient: the scan is retried within minutes (backing off while it lasts).",
            **common,
        )
    return Classified(
        Category.UNEXPECTED,
        exc.message,
        "Bitbucket answered something the portal did not expect. Check BITBUCKET_API_URL; if it is "
        "right, try again later.",
        **common,
    )
