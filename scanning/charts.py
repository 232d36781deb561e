"""Charts people can read, as inline SVG: no JavaScript, no inline style (a strict
Content-Security-Policy holds), dated axes, counts, a tooltip per bar, and outcomes that
differ by pattern as well as by colour."""

from __future__ import annotations

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

# Outcome -> (fill colour, pattern id or ""). Partial is hatched, failed cross-hatched, so
# they stay apart for readers who do not tell the colours apart.
OUTCOMES = (
    ("succeeded", "#2e8b57", ""),
    ("partial", "#c77c00", "hatch"),
    ("failed", "#c0392b", "cross"),
)

_PATTERNS = mark_safe(  # noqa: S308 - constant markup
    "<defs>"
    '<pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
    '<rect width="6" height="6" fill="#c77c00"/><line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2"/>'
    "</pattern>"
    '<pattern id="cross" width="6" height="6" patternUnits="userSpaceOnUse">'
    '<rect width="6" height="6" fill="#c0392b"/><path d="M0 0L6 6M6 0L0 6" stroke="#fff" stroke-width="1.2"/>'
    "</pattern></defs>"
)


def _n(value: float) -> str:
    return f"{value:.1f}"


def scans_per_day_svg(days: list[dict]) -> SafeString:
    """Stacked bars, one a day (``scans_per_day``): y axis in scans, x axis dated."""
    width, height, left, bottom, top = 640, 180, 34, 24, 8
    plot_w, plot_h = width - left - 6, height - bottom - top
    peak = max([d["total"] for d in days] + [1])
    step = plot_w / max(1, len(days))
    parts = [_PATTERNS]
    for fraction in (0, 0.5, 1):  # y axis: 0, half, peak
        value = round(peak * fraction)
        y = top + plot_h - plot_h * (value / peak)
        parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#dfe3ea"/>'
                '<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#5c667a">{}</text>',
                left,
                width - 6,
                y,
                y,
                left - 4,
                y + 3,
                value,
            )
        )
    for i, day in enumerate(days):
        x = left + i * step + 1
        y = top + plot_h
        bars = []
        for outcome, colour, pattern in OUTCOMES:
            n = day[outcome]
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            fill = f"url(#{pattern})" if pattern else colour
            bars.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>', _n(x), _n(y), _n(step - 2), _n(h), fill
                )
            )
        tip = f"{day['date']:%a %b %-d}: {day['succeeded']} succeeded, {day['partial']} partial, {day['failed']} failed"
        # An invisible full-height target carries the tooltip even on days without scans.
        parts.append(
            format_html(
                '<g><title>{}</title><rect x="{}" y="{}" width="{}" height="{}" fill="transparent"/>{}</g>',
                tip,
                x,
                top,
                step - 2,
                plot_h,
                mark_safe("".join(bars)),  # noqa: S308 - built with format_html
            )
        )
        if i % 5 == 0 or i == len(days) - 1:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" font-size="10" text-anchor="middle" fill="#5c667a">{}</text>',
                    x + step / 2,
                    height - 8,
                    f"{day['date']:%b %-d}",
                )
            )
    total = sum(d["total"] for d in days)
    label = f"Scans per day over the last {len(days)} days: {total} in all"
    return format_html(
        '<svg class="chart-svg" viewBox="0 0 {} {}" role="img" aria-label="{}">{}</svg>',
        width,
        height,
        label,
        mark_safe("".join(parts)),  # noqa: S308 - built with format_html
    )


def pass_rate_bars(rules: list[dict], link: str) -> SafeString:
    """Horizontal bars, one per posture rule: the pass rate with its counts, each bar a link
    to the repositories failing that rule."""
    rows = []
    for rule in rules:
        rate = rule["pass_rate"]
        rows.append(
            (
                f"{link}?rule={rule['rule']}",
                rule["check"],
                rate if rate is not None else 0,
                f"{rate}% ({rule['passing']} of {rule['passing'] + rule['failing']})"
                if rate is not None
                else "not read yet",
            )
        )
    return format_html(
        '<ul class="rate-bars">{}</ul>',
        format_html_join(
            "",
            '<li><a href="{}"><span class="rate-label">{}</span>'
            '<svg viewBox="0 0 100 8" preserveAspectRatio="none" class="rate" aria-hidden="true">'
            '<rect width="100" height="8" fill="#f3d5d2"/><rect width="{}" height="8" fill="#2e8b57"/></svg>'
            '<span class="rate-value">{}</span></a></li>',
            rows,
        ),
    )
