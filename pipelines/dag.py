"""Server-side SVG picture of a pipeline's DAG, coloured by step state."""

from __future__ import annotations

from collections.abc import Mapping

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from pipelines.spec import PipelineSpec
from pipelines.states import StepState

NODE_W = 150
NODE_H = 40
COL_GAP = 44
ROW_GAP = 14
PAD = 12
# Longer names are cut in the box; the full name stays in the node's <title> tooltip.
MAX_LABEL = 18


def layout(spec: PipelineSpec) -> dict[str, tuple[int, int]]:
    """Column (longest-path depth) and row of each step; deterministic for a spec."""
    depth: dict[str, int] = {}
    for name in spec.order:
        after = spec.by_name[name].after
        depth[name] = 1 + max(depth[a] for a in after) if after else 0
    rows: dict[int, int] = {}
    placed: dict[str, tuple[int, int]] = {}
    for name in spec.order:
        col = depth[name]
        placed[name] = (col, rows.get(col, 0))
        rows[col] = rows.get(col, 0) + 1
    return placed


def _label(name: str) -> str:
    return name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "…"


def render_svg(
    spec: PipelineSpec,
    states: Mapping[str, StepState] | None = None,
    *,
    highlight: str = "",
) -> SafeString:
    """An <svg> with one rounded box per step and a curved edge per dependency.

    The picture keeps its natural size (no shrinking) so 30+ steps stay readable;
    its container scrolls horizontally.
    """
    states = states or {}
    placed = layout(spec)
    cols = 1 + max((c for c, _ in placed.values()), default=0)
    rows = 1 + max((r for _, r in placed.values()), default=0)
    width = PAD * 2 + cols * NODE_W + (cols - 1) * COL_GAP
    height = PAD * 2 + rows * NODE_H + (rows - 1) * ROW_GAP

    def box(name: str) -> tuple[int, int]:
        col, row = placed[name]
        return PAD + col * (NODE_W + COL_GAP), PAD + row * (NODE_H + ROW_GAP)

    parts = [
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(spec.name)} steps">'
    ]
    for name in spec.order:
        x2, y2 = box(name)
        for upstream in spec.by_name[name].after:
            x1, y1 = box(upstream)
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H // 2, x2, y2 + NODE_H // 2
            mid = (sx + ex) // 2
            parts.append(f'<path class="edge" d="M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}"/>')
    for name in spec.order:
        x, y = box(name)
        state = states.get(name)
        status = state.status if state else "none"
        classes = f"node st-{escape(status)}" + (" current" if name == highlight else "")
        # Without a run, the second line names the step's type instead of a state.
        detail = status if state else spec.by_name[name].type
        if state and state.generation > 1:
            detail += f" · gen {state.generation}"
        if state and state.attempt > 1:
            detail += f" · try {state.attempt}"
        parts.append(
            f'<g class="{classes}" data-step="{escape(name)}">'
            f"<title>{escape(name)} ({escape(detail)})</title>"
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="8" ry="8"/>'
            f'<text x="{x + 10}" y="{y + 17}" class="name">{escape(_label(name))}</text>'
            f'<text x="{x + 10}" y="{y + 32}" class="status">{escape(detail)}</text>'
            "</g>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated value is escaped above
