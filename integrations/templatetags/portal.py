"""Template helpers shared by the portal's pages."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince, timeuntil

register = template.Library()


@register.filter
def when(value: datetime | None, empty: str = "—"):
    """A moment as people read it: relative ("5 minutes ago", "in 3 hours"), with the
    absolute time and its zone on hover and in the ``datetime`` attribute."""
    if value is None:
        return empty
    local = timezone.localtime(value)
    now = timezone.now()
    relative = f"{timesince(value, now)} ago" if value <= now else f"in {timeuntil(value, now)}"
    if abs((now - value).total_seconds()) < 60:
        relative = "just now" if value <= now else "in under a minute"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', local.isoformat(), local.strftime("%Y-%m-%d %H:%M %Z"), relative
    )


@register.filter
def stamp(value: datetime | None, empty: str = "—"):
    """An absolute moment with its time zone (tables and logs)."""
    if value is None:
        return empty
    local = timezone.localtime(value)
    return format_html('<time datetime="{}">{}</time>', local.isoformat(), local.strftime("%Y-%m-%d %H:%M %Z"))


@register.filter
def duration(seconds_or_delta) -> str:
    """A short duration: 45 s, 3 min 20 s, 2 h 5 min."""
    if seconds_or_delta is None:
        return "—"
    seconds = int(getattr(seconds_or_delta, "total_seconds", lambda: seconds_or_delta)())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
