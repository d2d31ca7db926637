"""Where the DAG picture puts each step: by depth, big fan-outs grouped, long rows wrapped."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

from pipelines.spec import PipelineSpec

NODE_W = 150
NODE_H = 40
COL_GAP = 44
ROW_GAP = 14
PAD = 12
# Siblings with the same upstream and the same downstream steps draw as one group box
# from this many on: nine boxes with their edges already fill a screen's height.
GROUP_MIN = 9
GROUP_W = 236
GROUP_H = 64
# An expanded group lays its members out in columns of this many, so 50 siblings take
# the height of eight boxes, not fifty.
GRID_ROWS = 8
CELL_GAP = 8
GROUP_HEAD = 28
# A row of columns wider than this continues on a band below (a long chain reads like
# lines of text, and stays within a laptop's width).
WRAP_W = 1260
BAND_GAP = 40


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def mid(self) -> int:
        return self.y + self.h // 2


@dataclass(frozen=True)
class Group:
    """Siblings drawn together; `id` is its first member's name (step names have no ':')."""

    id: str
    members: tuple[str, ...]
    expanded: bool


@dataclass
class Layout:
    width: int = 0
    height: int = 0
    # A box per unit: a step drawn alone, or a group (keyed by its id).
    boxes: dict[str, Box] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    # The boxes of an expanded group's members, inside their group's box.
    members: dict[str, Box] = field(default_factory=dict)
    # Each dependency once between units: a group has one edge in and one out.
    edges: list[tuple[str, str]] = field(default_factory=list)
    # Which band (row of columns) each unit sits in.
    band: dict[str, int] = field(default_factory=dict)
    band_top: list[int] = field(default_factory=list)


def grid(spec: PipelineSpec) -> dict[str, tuple[int, int]]:
    """Column (longest-path depth) and row of each step, ungrouped; deterministic for a spec."""
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


def sibling_groups(spec: PipelineSpec) -> dict[str, tuple[str, ...]]:
    """Groups of GROUP_MIN or more steps with the same upstream and downstream steps."""
    found: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
    for name in spec.order:
        key = (tuple(sorted(spec.by_name[name].after)), tuple(sorted(spec.successors[name])))
        found.setdefault(key, []).append(name)
    return {names[0]: tuple(names) for names in found.values() if len(names) >= GROUP_MIN}


def _group_size(group: Group) -> tuple[int, int]:
    if not group.expanded:
        return GROUP_W, GROUP_H
    rows = min(GRID_ROWS, len(group.members))
    cols = math.ceil(len(group.members) / rows)
    width = max(GROUP_W, 2 * CELL_GAP + cols * NODE_W + (cols - 1) * CELL_GAP)
    return width, GROUP_HEAD + rows * NODE_H + (rows - 1) * CELL_GAP + CELL_GAP


def place(
    spec: PipelineSpec, *, expand: Collection[str] = (), keep: Collection[str] = ()
) -> Layout:
    """The picture's geometry: groups in `expand`, or holding a step of `keep`, drawn open."""
    groups = {
        gid: Group(gid, members, gid in expand or any(m in keep for m in members))
        for gid, members in sibling_groups(spec).items()
    }
    unit_of = {name: name for name in spec.order}
    for group in groups.values():
        for member in group.members:
            unit_of[member] = group.id
    units: list[str] = []
    after: dict[str, list[str]] = {}
    for name in spec.order:
        unit = unit_of[name]
        if unit not in after:
            units.append(unit)
            after[unit] = list(dict.fromkeys(unit_of[a] for a in spec.by_name[name].after))
    depth: dict[str, int] = {}
    for unit in units:
        depth[unit] = 1 + max(depth[a] for a in after[unit]) if after[unit] else 0
    size = {u: _group_size(groups[u]) if u in groups else (NODE_W, NODE_H) for u in units}
    columns: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=0))]
    for unit in units:
        columns[depth[unit]].append(unit)
    col_w = [max(size[u][0] for u in col) for col in columns]
    col_h = [sum(size[u][1] for u in col) + (len(col) - 1) * ROW_GAP for col in columns]

    # Columns into bands, greedily: a band takes columns while they fit in WRAP_W.
    bands: list[list[int]] = [[]]
    x = PAD
    for index, width in enumerate(col_w):
        if bands[-1] and x + width > WRAP_W - PAD:
            bands.append([])
            x = PAD
        bands[-1].append(index)
        x += width + COL_GAP
    layout = Layout(groups=groups)
    y = PAD
    for band_index, band in enumerate(bands):
        layout.band_top.append(y)
        band_h = max(col_h[c] for c in band)
        x = PAD
        for c in band:
            # Each column centred in its band: a join sits level with the fan it closes.
            top = y + (band_h - col_h[c]) // 2
            for unit in columns[c]:
                w, h = size[unit]
                layout.boxes[unit] = Box(x + (col_w[c] - w) // 2, top, w, h)
                layout.band[unit] = band_index
                top += h + ROW_GAP
            x += col_w[c] + COL_GAP
        layout.width = max(layout.width, x - COL_GAP + PAD + COL_GAP // 2)
        y += band_h + BAND_GAP
    layout.height = y - BAND_GAP + PAD
    for group in groups.values():
        if group.expanded:
            _place_members(layout, group)
    layout.edges = [(a, unit) for unit in units for a in after[unit]]
    return layout


def _place_members(layout: Layout, group: Group) -> None:
    box = layout.boxes[group.id]
    rows = min(GRID_ROWS, len(group.members))
    for index, member in enumerate(group.members):
        col, row = divmod(index, rows)
        layout.members[member] = Box(
            box.x + CELL_GAP + col * (NODE_W + CELL_GAP),
            box.y + GROUP_HEAD + row * (NODE_H + CELL_GAP),
            NODE_W,
            NODE_H,
        )
