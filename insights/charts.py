"""Bar charts as SVG drawn on the server: no script, colours from firefly.css classes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH = 640
PLOT_HEIGHT = 180
LEFT = 44  # room for the value axis' labels
BOTTOM = 34  # room for the category labels
TOP = 10
BAR_ROW = 22  # a horizontal bar's row height (one series)
LABEL_WIDTH = 200  # a horizontal chart's room for category labels


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]


def _joined(parts: list[SafeString]) -> SafeString:
    return format_html_join("", "{}", ((part,) for part in parts))


def _f(value: float) -> str:
    return f"{value:.1f}"


def _nice_max(value: float) -> float:
    """A round top for the axis at or above `value` (1, 2, 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 <= value:
        step *= 10
    for factor in (1, 2, 5, 10):
        if step * factor >= value:
            return step * factor
    return step * 10


def _legend(series: Sequence[Series], y: int) -> SafeString:
    if len(series) < 2:
        return SafeString("")
    return format_html_join(
        "",
        '<g class="legend"><rect class="s{}" x="{}" y="{}" width="10" height="10"></rect>'
        '<text x="{}" y="{}">{}</text></g>',
        ((n, LEFT + n * 120, y, LEFT + n * 120 + 14, y + 9, s.name) for n, s in enumerate(series)),
    )


def columns(
    label: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    every: int = 1,
    unit: Callable[[float], str] = lambda v: f"{v:g}",
) -> SafeString:
    """Vertical bars, one column per category, its series stacked; `every`th category
    labelled (days would crowd the axis)."""
    count = max(len(categories), 1)
    totals = [sum(s.values[i] for s in series) for i in range(len(categories))]
    top = _nice_max(max(totals, default=0))
    slot = (WIDTH - LEFT - 4) / count
    bar = max(slot * 0.7, 1.0)
    legend_y = TOP + PLOT_HEIGHT + BOTTOM
    height = legend_y + (18 if len(series) > 1 else 0)
    parts = [_axis(top, unit)]
    for i, category in enumerate(categories):
        x = LEFT + i * slot + (slot - bar) / 2
        base: float = TOP + PLOT_HEIGHT
        for n, s in enumerate(series):
            h = PLOT_HEIGHT * s.values[i] / top
            if h <= 0:
                continue
            base -= h
            parts.append(
                format_html(
                    '<rect class="s{}" x="{}" y="{}" width="{}" height="{}">'
                    "<title>{}: {} {}</title></rect>",
                    n,
                    _f(x),
                    _f(base),
                    _f(bar),
                    _f(h),
                    category,
                    unit(s.values[i]),
                    s.name,
                )
            )
        if i % every == 0:
            parts.append(
                format_html(
                    '<text class="cat" x="{}" y="{}" text-anchor="middle">{}</text>',
                    _f(x + bar / 2),
                    TOP + PLOT_HEIGHT + 16,
                    category,
                )
            )
    parts.append(_legend(series, legend_y))
    return _svg(label, height, parts)


def bars(
    label: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    unit: Callable[[float], str] = lambda v: f"{v:g}",
) -> SafeString:
    """Horizontal bars, one group per category, one bar per series (side by side)."""
    group = BAR_ROW * len(series) + 8
    top = _nice_max(max((v for s in series for v in s.values), default=0))
    plot = WIDTH - LABEL_WIDTH - 60
    height = TOP + group * max(len(categories), 1) + 24
    parts = []
    for i, category in enumerate(categories):
        y0 = TOP + i * group
        parts.append(
            format_html(
                '<text class="cat" x="{}" y="{}" text-anchor="end">{}</text>',
                LABEL_WIDTH - 6,
                _f(y0 + BAR_ROW * len(series) / 2 + 4),
                _short(category),
            )
        )
        for n, s in enumerate(series):
            w = plot * s.values[i] / top
            y = y0 + n * BAR_ROW
            parts.append(
                format_html(
                    '<rect class="s{}" x="{}" y="{}" width="{}" height="{}">'
                    "<title>{} ({}): {}</title></rect>"
                    '<text class="val" x="{}" y="{}">{}</text>',
                    n,
                    LABEL_WIDTH,
                    y,
                    _f(w),
                    BAR_ROW - 4,
                    category,
                    s.name,
                    unit(s.values[i]),
                    _f(LABEL_WIDTH + w + 4),
                    y + BAR_ROW - 8,
                    unit(s.values[i]),
                )
            )
    parts.append(_legend(series, height - 16))
    return _svg(label, height + (4 if len(series) > 1 else -14), parts)


def _short(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _axis(top: float, unit: Callable[[float], str]) -> SafeString:
    lines = []
    for k in range(5):
        value = top * k / 4
        y = TOP + PLOT_HEIGHT - PLOT_HEIGHT * k / 4
        lines.append(
            format_html(
                '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"></line>'
                '<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>',
                LEFT,
                WIDTH,
                _f(y),
                _f(y),
                LEFT - 4,
                _f(y + 4),
                unit(value),
            )
        )
    return _joined(lines)


def _svg(label: str, height: float, parts: list[SafeString]) -> SafeString:
    # role=img with a label: a screen reader announces the chart once and moves on to its
    # table, which holds the same figures.
    return format_html(
        '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}"'
        ' xmlns="http://www.w3.org/2000/svg"><title>{}</title>{}</svg>',
        WIDTH,
        f"{height:.0f}",
        label,
        label,
        _joined(parts),
    )
