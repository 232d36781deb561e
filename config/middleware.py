"""Request-level guards that apply to every page, API route and webhook."""

from __future__ import annotations

from django.db import DataError
from django.http import HttpResponseBadRequest, JsonResponse


class RejectNulMiddleware:
    """A NUL byte (``%00``) in the path, query string or a form field answers 400 here.

    Nothing the portal stores may contain one (PostgreSQL refuses NUL in text and would
    turn a search into a 500, or cut a streamed CSV export short), and no legitimate
    request carries one. Bodies of other types are checked where they are parsed (the
    API's JSON parser, the webhook endpoint).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if (
            "\x00" in request.path
            or "%00" in request.META.get("QUERY_STRING", "")
            or "\x00" in request.META.get("QUERY_STRING", "")
        ):
            return HttpResponseBadRequest(
                "The address contains a NUL character, which no field accepts.", content_type="text/plain"
            )
        if request.method == "POST" and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            if any("\x00" in key or any("\x00" in v for v in values) for key, values in request.POST.lists()):
                return HttpResponseBadRequest(
                    "A form field contains a NUL character, which no field accepts.", content_type="text/plain"
                )
        return self.get_response(request)


class OutOfRangeMiddleware:
    """A value past what the database can hold (an id of 10**30 in a path or a filter)
    reaches the database as an ``OverflowError`` (SQLite) or a ``DataError``
    (PostgreSQL): it is the request that is wrong, so the answer is a 400, not a 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, (OverflowError, DataError)):
            message = "A value in the request is out of range (too large or too long)."
            if request.path.startswith("/api/"):
                return JsonResponse({"error": {"code": "invalid", "message": message}}, status=400)
            return HttpResponseBadRequest(message, content_type="text/plain")
        return None


class NoStoreForSignedInMiddleware:
    """``Cache-Control: no-store`` on everything answered to a signed-in user (pages, API):
    they show secrets (a new API token, the webhook secret) and tenant data that no
    browser or proxy cache should keep."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and not response.has_header("Cache-Control"):
            response["Cache-Control"] = "no-store"
        return response


class ContentSecurityPolicyMiddleware:
    """A strict Content-Security-Policy on every answer: scripts, styles, images and fonts
    only from this site (no inline script or style anywhere in the portal or the admin;
    charts are inline SVG with presentation attributes), no plugins, no framing, forms
    only to this site. A page that tried anything else is refused by the browser."""

    POLICY = "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.POLICY)
        return response
