"""The dashboard's chart of refresh outcomes by day: a pure function from daily counts to an SVG string.

Rendered on the server, so the page needs no script and no CDN (the CSP allows neither). Colours are SVG
presentation attributes, not ``style`` attributes, which the CSP would refuse. Every text is escaped; the
chart is an image with a ``<title>`` and a ``<desc>`` that says its totals, axis labels and a legend.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from ..store import DailyOutcomes

WIDTH, HEIGHT = 720, 280
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 16, 64  # the plot area's margins: tick labels, axis titles, legend
TITLE = "Refresh outcomes by day"
FONT = 'font-family="system-ui, sans-serif" font-size="11" fill="#3b4354"'
#: Stacked bottom to top, in this order; the colours are the dashboard's status colours.
SERIES = (
    ("refreshed", "refreshed", "#2e9e57"),
    ("skipped", "skipped", "#9aa3b2"),
    ("errors", "errors", "#d97706"),
    ("expired", "expired", "#c0392b"),
)


def outcome_chart(days: Sequence[DailyOutcomes], *, title: str = TITLE, ident: str = "chart") -> str:
    """A stacked bar per day (oldest left), a y axis of connections handled and a legend, as SVG text."""
    top = _nice_ceiling(max((_total(day) for day in days), default=0))
    parts = [_open(title, days, ident), *_y_axis(top), *_bars(days, top), *_x_axis(days), *_legend()]
    if top == 0 or not days:
        parts.append(_note("No refresh runs in these days"))
    return "\n".join([*parts, "</svg>"])


def _open(title: str, days: Sequence[DailyOutcomes], ident: str) -> str:
    who = escape(ident)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-labelledby="{who}-title {who}-desc">\n'
        f'<title id="{who}-title">{escape(title)}</title>\n<desc id="{who}-desc">{escape(describe(days))}</desc>'
    )


def describe(days: Sequence[DailyOutcomes]) -> str:
    """The chart in one sentence, for screen readers: the span and each outcome's total."""
    if not days:
        return "No days to show."
    totals = ", ".join(f"{sum(getattr(day, field) for day in days)} {word}" for field, word, _ in SERIES)
    span = f"{len(days)} days from {days[0].day.isoformat()} to {days[-1].day.isoformat()} (UTC)"
    return f"{span}: {totals}."


def _total(day: DailyOutcomes) -> int:
    return sum(getattr(day, field) for field, _, _ in SERIES)


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (0 stays 0): round axis ticks."""
    if value <= 0:
        return 0
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def _ticks(top: int) -> list[int]:
    if top == 0:
        return [0]
    step = top // 5 if top % 5 == 0 else top // 2 if top % 2 == 0 else top
    return list(range(0, top + 1, step))


def _plot_height() -> int:
    return HEIGHT - TOP - BOTTOM


def _y(value: float, top: int) -> float:
    """The y coordinate of ``value`` on an axis from 0 (bottom of the plot) to ``top``."""
    return HEIGHT - BOTTOM - (value / top * _plot_height() if top else 0)


def _y_axis(top: int) -> list[str]:
    lines = [f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#8a93a5"/>']
    for tick in _ticks(top):
        y = _y(tick, top)
        lines.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e3e6ec"/>')
        lines.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" {FONT}>{tick}</text>')
    middle = TOP + _plot_height() / 2
    lines.append(
        f'<text x="14" y="{middle:.1f}" transform="rotate(-90 14 {middle:.1f})" text-anchor="middle" {FONT}>'
        "connections</text>"
    )
    return lines


def _slot(days: Sequence[DailyOutcomes]) -> float:
    return (WIDTH - LEFT - RIGHT) / max(len(days), 1)


def _bars(days: Sequence[DailyOutcomes], top: int) -> list[str]:
    slot, rects = _slot(days), []
    for index, day in enumerate(days):
        x, below = LEFT + index * slot + slot * 0.15, 0
        for field, word, colour in SERIES:
            count = getattr(day, field)
            if count and top:
                y, height = _y(below + count, top), _y(below, top) - _y(below + count, top)
                label = escape(f"{day.day.isoformat()}: {count} {word}")
                rects.append(
                    f'<rect class="bar-{field}" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
                    f'height="{height:.1f}" fill="{colour}"><title>{label}</title></rect>'
                )
            below += count
    return rects


def _x_axis(days: Sequence[DailyOutcomes]) -> list[str]:
    slot, base = _slot(days), HEIGHT - BOTTOM
    lines = [f'<line x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}" stroke="#8a93a5"/>']
    for index, day in enumerate(days):
        x = LEFT + (index + 0.5) * slot
        lines.append(f'<text x="{x:.1f}" y="{base + 14}" text-anchor="middle" {FONT}>{day.day:%m-%d}</text>')
    centre = LEFT + (WIDTH - LEFT - RIGHT) / 2
    lines.append(f'<text x="{centre:.1f}" y="{base + 30}" text-anchor="middle" {FONT}>day (UTC)</text>')
    return lines


def _legend() -> list[str]:
    items, x, y = [], LEFT, HEIGHT - 12
    for field, word, colour in SERIES:
        items.append(f'<rect class="legend-{field}" x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>')
        items.append(f'<text x="{x + 14}" y="{y}" {FONT}>{escape(word)}</text>')
        x += 100
    return items


def _note(text: str) -> str:
    middle = TOP + _plot_height() / 2
    centre = LEFT + (WIDTH - LEFT - RIGHT) / 2
    return f'<text class="empty" x="{centre:.1f}" y="{middle:.1f}" text-anchor="middle" {FONT}>{escape(text)}</text>'


__all__ = ["SERIES", "describe", "outcome_chart"]
