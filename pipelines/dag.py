"""Server-side SVG picture of a pipeline's DAG, coloured by step state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from urllib.parse import urlencode

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from pipelines import dag_layout
from pipelines.dag_layout import BAND_GAP, COL_GAP, Box, Group, Layout
from pipelines.spec import PipelineSpec
from pipelines.states import ACTIVE, STEP_STATUSES, StepState

# Longer names are cut in the box; the full name stays in the node's <title> tooltip.
MAX_LABEL = 18
BAR_H = 8
# A group's counts, most finished first: what an operator reads as progress.
_FIRST = ("succeeded", "running", "waiting", "queued", "failed", "rejected")
COUNT_ORDER = (*_FIRST, *(s for s in STEP_STATUSES if s not in _FIRST))
# The box shows this many counts; the tooltip and the link's name show them all.
COUNTS_SHOWN = 3


def layout(spec: PipelineSpec) -> dict[str, tuple[int, int]]:
    """Column (longest-path depth) and row of each step; deterministic for a spec."""
    return dag_layout.grid(spec)


def _label(name: str, limit: int = MAX_LABEL) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def group_counts(group: Group, states: Mapping[str, StepState]) -> list[tuple[str, int]]:
    """(status, how many members) in COUNT_ORDER, without zeros; `none` before a run."""
    found = Counter(states[m].status if m in states else "none" for m in group.members)
    ordered = [(s, found[s]) for s in COUNT_ORDER if found[s]]
    return ordered + ([("none", found["none"])] if found["none"] else [])


def group_summary(group: Group, states: Mapping[str, StepState], spec: PipelineSpec) -> str:
    """The group in a line, "20 steps: 12 succeeded, 5 running, 3 queued" (without a run:
    its steps' types)."""
    counts = group_counts(group, states)
    if not states:
        kinds = sorted({spec.by_name[m].type for m in group.members})
        return f"{len(group.members)} steps: " + ", ".join(kinds)
    return f"{len(group.members)} steps: " + ", ".join(f"{n} {s}" for s, n in counts)


def _href(expand: Collection[str]) -> str:
    # "?" alone reloads the page with no group open.
    return "?" + urlencode([("expand", gid) for gid in sorted(expand)])


def render_svg(
    spec: PipelineSpec,
    states: Mapping[str, StepState] | None = None,
    *,
    highlight: str = "",
    expand: Collection[str] | None = None,
) -> SafeString:
    """An <svg> with a rounded box per step (or per group of siblings) and a curved edge
    per dependency.

    The picture keeps its natural size (no shrinking) so its text stays readable; long
    chains wrap onto bands below each other, and its container scrolls sideways. With
    `expand` (the groups shown open, from the page's address) each group box is a link
    that opens or closes it; without, groups stay closed (but one holding `highlight`).
    """
    states = states or {}
    opened = set(expand or ())
    placed = dag_layout.place(spec, expand=opened, keep={highlight} if highlight else ())
    # Only this picture's groups: anything else in the address is ignored, never echoed.
    opened &= set(placed.groups)
    links = expand is not None and bool(placed.groups)
    # A picture holding links is a group of them (axe: an image's children are not
    # operable); without, one image with its name.
    role = "group" if links else "img"
    parts = [
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{placed.width}" '
        f'height="{placed.height}" viewBox="0 0 {placed.width} {placed.height}" '
        f'role="{role}" aria-label="{escape(spec.name)} steps">'
    ]
    parts.extend(_edges(placed))
    for unit, box in placed.boxes.items():
        group = placed.groups.get(unit)
        if group is None:
            parts.append(_node(spec, unit, box, states.get(unit), highlight))
        else:
            summary = group_summary(group, states, spec)
            # The fragment brings the reader back to the group, and the keyboard's next
            # Tab starts from it.
            toggle = f"{_href(opened ^ {group.id})}#group-{group.id}" if links else ""
            parts.append(_group(spec, group, box, summary, states, toggle, placed, highlight))
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated value is escaped


def _edges(placed: Layout) -> list[str]:
    paths = []
    for upstream, unit in placed.edges:
        a, b = placed.boxes[upstream], placed.boxes[unit]
        sx, sy, ex, ey = a.right, a.mid, b.x, b.mid
        if placed.band[upstream] == placed.band[unit]:
            mid = (sx + ex) // 2
            d = f"M{sx},{sy} C{mid},{sy} {mid},{ey} {ex},{ey}"
        else:
            # Down into the gap above the target's band, back to its left, then in.
            gap_y = placed.band_top[placed.band[unit]] - BAND_GAP // 2
            # The way back runs in the page's left margin, beside the band's first box.
            out_x, in_x = sx + COL_GAP // 2, ex - dag_layout.PAD // 2
            d = f"M{sx},{sy} H{out_x} V{gap_y} H{in_x} V{ey} H{ex}"
        paths.append(f'<path class="edge" d="{d}"/>')
    return paths


def _node(spec: PipelineSpec, name: str, box: Box, state: StepState | None, highlight: str) -> str:
    status = state.status if state else "none"
    classes = f"node st-{escape(status)}"
    classes += " current" if name == highlight else ""
    # Without a run, the second line names the step's type instead of a state.
    detail = status if state else spec.by_name[name].type
    if state and state.generation > 1:
        detail += f" · gen {state.generation}"
    if state and state.attempt > 1:
        detail += f" · try {state.attempt}"
    x, y = box.x, box.y
    return (
        f'<g class="{classes}" data-step="{escape(name)}">'
        f"<title>{escape(name)} ({escape(detail)})</title>"
        f'<rect x="{x}" y="{y}" width="{box.w}" height="{box.h}" rx="8" ry="8"/>'
        f'<text x="{x + 10}" y="{y + 17}" class="name">{escape(_label(name))}</text>'
        f'<text x="{x + 10}" y="{y + 32}" class="status">{escape(detail)}</text>'
        "</g>"
    )


def _bar(group: Group, states: Mapping[str, StepState], x: int, y: int, width: int) -> str:
    """The group's counts as one stacked bar, a segment per state."""
    parts, left, total = [], 0, len(group.members)
    for status, count in group_counts(group, states):
        # The last segment ends exactly at the bar's end, whatever the rounding.
        right = left + count
        x1, x2 = x + width * left // total, x + width * right // total
        parts.append(
            f'<rect class="bar st-{escape(status)}" x="{x1}" y="{y}" width="{x2 - x1}" '
            f'height="{BAR_H}"/>'
        )
        left = right
    return "".join(parts)


def _group(
    spec: PipelineSpec,
    group: Group,
    box: Box,
    summary: str,
    states: Mapping[str, StepState],
    toggle: str,
    placed: Layout,
    highlight: str,
) -> str:
    first, last = group.members[0], group.members[-1]
    active = any(states[m].status in ACTIVE for m in group.members if m in states)
    classes = "node group" + (" open" if group.expanded else "") + (" active" if active else "")
    names = f"{first} … {last}"
    x, y = box.x, box.y
    counts = group_counts(group, states) if states else []
    shown = ", ".join(f"{n} {s}" for s, n in counts[:COUNTS_SHOWN])
    if len(counts) > COUNTS_SHOWN:
        shown += ", …"
    body = [
        f'<g class="{classes}" id="group-{escape(group.id)}" data-group="{escape(group.id)}">',
        f"<title>{escape(summary)} ({escape(names)})</title>",
        f'<rect class="frame" x="{x}" y="{y}" width="{box.w}" height="{box.h}" rx="8" ry="8"/>',
    ]
    if group.expanded:
        body.append(
            f'<text x="{x + 10}" y="{y + 18}" class="name">{escape(_label(summary, 44))}</text>'
        )
        body.extend(
            _node(spec, m, placed.members[m], states.get(m), highlight) for m in group.members
        )
    else:
        body.append(
            f'<text x="{x + 10}" y="{y + 17}" class="name">'
            f"{escape(_label(first, 13))} +{len(group.members) - 1} more</text>"
        )
        line = shown or summary
        body.append(
            f'<text x="{x + 10}" y="{y + 33}" class="status">{escape(_label(line, 40))}</text>'
        )
        if states:
            body.append(_bar(group, states, x + 10, y + 44, box.w - 20))
    body.append("</g>")
    if not toggle:
        return "".join(body)
    verb = "Hide" if group.expanded else "Show"
    # The link is the group's box when closed; when open, only its heading line, so the
    # members' own boxes are not inside a link.
    # An id lets htmx give the focus back to the link after each refresh of the page.
    link = (
        f'<a class="group-toggle" id="toggle-{escape(group.id)}" href="{escape(toggle)}" '
        f'aria-label="{verb} the {escape(summary)} ({escape(names)})">'
    )
    if group.expanded:
        hint = (
            f'{link}<rect class="hit" x="{x}" y="{y}" width="{box.w}" '
            f'height="{dag_layout.GROUP_HEAD}" '
            f'rx="8" ry="8"/><text x="{box.right - 10}" y="{y + 18}" class="hint" '
            f'text-anchor="end">{verb} ▴</text></a>'
        )
        return "".join(body) + hint
    hint = f'<text x="{box.right - 10}" y="{y + 17}" class="hint" text-anchor="end">{verb} ▾</text>'
    return link + "".join(body[:-1]) + hint + "</g></a>"
