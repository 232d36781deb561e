"""One error body for the whole API: ``{"error": {"code", "message", "fields"?}}``."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from integrations.services import VerificationFailed


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "Conflict."


def _flatten(detail) -> object:
    if isinstance(detail, dict):
        return {k: _flatten(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [str(d) if not isinstance(d, (dict, list)) else _flatten(d) for d in detail]
    return str(detail)


def error_body(code: str, message: str, fields: dict | None = None, **extra) -> dict:
    error = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    error.update(extra)
    return {"error": error}


def exception_handler(exc, context):
    if isinstance(exc, VerificationFailed):
        report = exc.report
        return Response(
            error_body(
                "verification_failed",
                "Bitbucket verification failed; nothing was saved.",
                {"non_field_errors": report.summary_lines()},
                verification=report.as_dict(),
            ),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, DjangoValidationError):
        fields = (
            {("non_field_errors" if k == "__all__" else k): v for k, v in exc.message_dict.items()}
            if hasattr(exc, "error_dict")
            else {"non_field_errors": exc.messages}
        )
        return Response(
            error_body("invalid", " ".join(m for ms in fields.values() for m in ms), fields),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: let Django log it and answer 500
    detail = response.data
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(detail if isinstance(detail, dict) else {"non_field_errors": detail})
        messages = [f"{k}: {' '.join(v) if isinstance(v, list) else v}" for k, v in fields.items()]
        response.data = error_body("invalid", "; ".join(messages), fields)
    else:
        codes = exc.get_codes() if hasattr(exc, "get_codes") else "error"
        code = codes if isinstance(codes, str) else "error"
        message = str(detail.get("detail", detail)) if isinstance(detail, dict) else str(detail)
        response.data = error_body(code, message)
    return response


class SafeJSONParser(JSONParser):
    """JSON bodies, with nesting too deep for Python's parser answered as 400 (not a
    500 from a ``RecursionError``) and NUL characters refused: no field the API stores
    may hold one, and PostgreSQL cannot."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the document is nested too deeply.") from None
        if _has_nul(data):
            raise exceptions.ParseError("JSON parse error - text may not contain NUL (\\u0000) characters.")
        return data


def _has_nul(value, depth: int = 0) -> bool:
    if depth > 200:
        raise exceptions.ParseError("JSON parse error - the document is nested too deeply.")
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k, depth + 1) or _has_nul(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v, depth + 1) for v in value)
    return False
