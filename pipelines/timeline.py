"""A run's step attempts on one time axis (a Gantt chart), people's time apart from machines'."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from pipelines.spec import PipelineSpec
from pipelines.states import ACTIVE

LABEL_W = 200
PLOT_W = 640
ROW_H = 22
BAR_H = 12
AXIS_H = 24
PAD = 10
MIN_BAR = 2  # px: a step of a few ms next to a wait of hours stays visible
# A run with more attempts than this lists the rest in the table only: the picture of
# a thousand retries would be taller than anyone scrolls.
MAX_ROWS = 150
# Tick spacing in seconds: the first that gives at most MAX_TICKS ticks.
STEPS_S: tuple[int, ...] = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
STEPS_S += (7200, 10800, 21600, 43200, 86400, 172800, 604800)
MAX_TICKS = 8


class AttemptRow(Protocol):
    """One attempt of a step, as `StepRun` holds it."""

    step_name: str
    generation: int
    attempt: int
    status: str
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Bar:
    step: str
    generation: int
    attempt: int
    status: str
    # A person's decision, not a machine, was awaited while it was started (approval,
    # input, choice: the interactive step types).
    human: bool
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    # Where its two parts end on the axis: still queued or running ones end now.
    queue_end: datetime | None
    end: datetime | None

    @property
    def label(self) -> str:
        extra = f" · try {self.attempt}" if self.attempt > 1 else ""
        extra += f" · gen {self.generation}" if self.generation > 1 else ""
        return self.step + extra

    @property
    def queued_ms(self) -> int | None:
        return _ms(self.queued_at, self.queue_end)

    @property
    def active_ms(self) -> int | None:
        return _ms(self.started_at, self.end)


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return max(0, int((end - start).total_seconds() * 1000))


@dataclass(frozen=True)
class Timeline:
    bars: tuple[Bar, ...]
    start: datetime | None
    end: datetime | None

    @property
    def human_ms(self) -> int:
        return sum(b.active_ms or 0 for b in self.bars if b.human)

    @property
    def machine_ms(self) -> int:
        return sum(b.active_ms or 0 for b in self.bars if not b.human)

    def svg(self) -> SafeString:
        return render_svg(self)


def build(spec: PipelineSpec, attempts: Iterable[AttemptRow], *, now: datetime) -> Timeline:
    """Every attempt that was queued or started, earliest first; pending ones have no time."""
    bars = []
    for row in attempts:
        first = row.queued_at or row.started_at
        if first is None:
            continue
        step = spec.by_name.get(row.step_name)
        live = row.status in ACTIVE
        # A retry's queued_at is when its backoff ends, which may be after now.
        queued_at = min(row.queued_at, now) if row.queued_at else None
        end = row.finished_at or (now if live else row.started_at)
        queue_end = row.started_at or row.finished_at or (now if live else queued_at)
        bars.append(
            Bar(
                step=row.step_name,
                generation=row.generation,
                attempt=row.attempt,
                status=row.status,
                human=bool(step and step.interactive),
                queued_at=queued_at,
                started_at=row.started_at,
                finished_at=row.finished_at,
                queue_end=queue_end if queued_at else None,
                end=end if row.started_at else None,
            )
        )
    position = spec.position
    bars.sort(
        key=lambda b: (
            b.queued_at or b.started_at,
            position.get(b.step, len(position)),
            b.generation,
            b.attempt,
        )
    )
    times = [t for b in bars for t in (b.queued_at, b.started_at, b.queue_end, b.end) if t]
    return Timeline(tuple(bars), min(times, default=None), max(times, default=None))


def _tick_step(span_s: float) -> int:
    for step in STEPS_S:
        if span_s / step <= MAX_TICKS:
            return step
    return STEPS_S[-1]


def tick_label(seconds: int) -> str:
    """0, 30 s, 2 min, 1 h 30 min, 2 d: from the run's first moment."""
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(seconds // 3600, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def render_svg(timeline: Timeline) -> SafeString:
    """Bars on a shared axis: a lighter part while queued, then running or, hatched,
    waiting for a person; failures red. The table beside it carries the same figures."""
    bars = timeline.bars[:MAX_ROWS]
    if not bars or timeline.start is None or timeline.end is None:
        return mark_safe("")
    start = timeline.start
    span = max((timeline.end - start).total_seconds(), 1.0)
    width = LABEL_W + PLOT_W + 2 * PAD
    height = AXIS_H + len(bars) * ROW_H + PAD

    def x(moment: datetime) -> float:
        return LABEL_W + PAD + (moment - start).total_seconds() / span * PLOT_W

    human, machine = _human_minutes(timeline)
    label = (
        f"Timeline of {len(timeline.bars)} step attempts over {tick_label(int(span))}: "
        f"{machine} by machines, {human} waiting for people. The table below lists them."
    )
    parts = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
        # One hatch for every wait for a person (an id per page: one timeline per page).
        '<defs><pattern id="tl-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect class="tl-hatch-bg" width="6" height="6"/>'
        '<line class="tl-hatch-line" x1="0" y1="0" x2="0" y2="6"/></pattern></defs>'
    ]
    step = _tick_step(span)
    for tick in range(0, int(span) + 1, step):
        tx = LABEL_W + PAD + tick / span * PLOT_W
        parts.append(
            f'<line class="grid" x1="{tx:.1f}" y1="{AXIS_H - 6}" x2="{tx:.1f}" '
            f'y2="{height - PAD}"/>'
            f'<text class="tick" x="{tx:.1f}" y="{AXIS_H - 10}" text-anchor="middle">'
            f"{tick_label(tick)}</text>"
        )
    for index, bar in enumerate(bars):
        top = AXIS_H + index * ROW_H
        y = top + (ROW_H - BAR_H) // 2
        parts.append(f'<g class="tl-row" data-step="{escape(bar.step)}">')
        parts.append(f"<title>{escape(_describe(bar))}</title>")
        parts.append(f'<text x="{PAD}" y="{top + ROW_H - 7}">{escape(_cut(bar.label))}</text>')
        if bar.queued_at and bar.queue_end:
            parts.append(_rect("tl-queued", x(bar.queued_at), x(bar.queue_end), y))
        if bar.started_at and bar.end:
            status = escape(bar.status)
            if bar.human:
                parts.append(
                    _rect(f"tl-human st-{status}", x(bar.started_at), x(bar.end), y, hatch=True)
                )
            else:
                parts.append(_rect(f"tl-run st-{status}", x(bar.started_at), x(bar.end), y))
        parts.append("</g>")
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated value is escaped


def _rect(classes: str, x1: float, x2: float, y: int, *, hatch: bool = False) -> str:
    # A fill attribute, not a style: the Content-Security-Policy refuses inline styles.
    fill = ' fill="url(#tl-hatch)"' if hatch else ""
    return (
        f'<rect class="{classes}" x="{x1:.1f}" y="{y}" width="{max(x2 - x1, MIN_BAR):.1f}" '
        f'height="{BAR_H}" rx="2"{fill}/>'
    )


def _cut(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _said(ms: int | None) -> str:
    return "" if ms is None else tick_label(ms // 1000) if ms >= 1000 else f"{ms} ms"


def _describe(bar: Bar) -> str:
    said = [f"{bar.label}: {bar.status}"]
    if bar.queued_ms is not None:
        said.append(f"queued {_said(bar.queued_ms)}")
    if bar.active_ms is not None:
        doing = "waited for a person" if bar.human else "ran"
        said.append(f"{doing} {_said(bar.active_ms)}")
    return ", ".join(said)


def _human_minutes(timeline: Timeline) -> tuple[str, str]:
    return _said(timeline.human_ms), _said(timeline.machine_ms)
