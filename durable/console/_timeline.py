"""The history as a timeline: turns, activity attempts, timers, sub-workflows and
outside events laid out against time, as geometry a template draws as inline SVG.

Pure: a history in, bars and marks out. Labels stay plain text here; the template
escapes them like every other value from the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from durable._core._events import (
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowErrored,
    ChildWorkflowScheduled,
    EventRaised,
    HistoryEvent,
    TimerCreated,
    TimerFired,
    TurnStarted,
    WorkflowResumed,
    WorkflowRewound,
    WorkflowSuspended,
    WorkflowTerminated,
)

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["RERUNNABLE", "Bar", "Lane", "Mark", "Timeline", "build_timeline"]

# the events a rerun may start from (a scheduled step)
RERUNNABLE = (ActivityScheduled, TimerCreated, ChildWorkflowScheduled)

WIDTH = 1000  # the SVG's viewBox width
LABEL_WIDTH = 150  # room for the lane names on the left
PLOT_WIDTH = WIDTH - LABEL_WIDTH - 10
LANE_HEIGHT = 18
MIN_BAR = 3.0  # an instantaneous step still shows
MAX_LANES = 12  # per kind: past this, bars share the last lane


@dataclass(frozen=True, slots=True)
class Bar:
    """One step drawn from its start to its end (or to the chart's end while open)."""

    event_id: int  # the scheduling event: the row in the table, the rerun point
    label: str
    outcome: str  # "ok", "failed", "open"
    x: float
    width: float
    child_id: str = ""  # a sub-workflow's instance id


@dataclass(frozen=True, slots=True)
class Mark:
    """One moment: a turn, or an event from outside."""

    event_id: int
    label: str
    x: float


@dataclass(slots=True)
class Lane:
    """A row of the chart."""

    title: str
    kind: str  # css class: turn, activity, timer, child, event
    y: float = 0.0
    bars: list[Bar] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    _end: float = -1.0  # where the last bar placed in it ends (for packing)


@dataclass(frozen=True, slots=True)
class Timeline:
    """What the template draws: lanes at their heights, and the axis."""

    lanes: list[Lane]
    height: float
    axis: str  # how x is measured, for the caption
    start: str
    end: str
    label_width: int = LABEL_WIDTH
    width: int = WIDTH


@dataclass(slots=True)
class _Span:
    event_id: int
    label: str
    kind: str
    start: float
    end: float | None = None
    outcome: str = "open"
    child_id: str = ""


def _spans(history: list[HistoryEvent], at: dict[int, float]) -> tuple[list[_Span], list[Mark]]:
    """Pair each scheduled step with the event that ended it; collect the moments."""
    spans: list[_Span] = []
    open_by_task: dict[tuple[str, int], _Span] = {}
    marks: list[Mark] = []
    for event in history:
        x = at[event.event_id]
        match event:
            case ActivityScheduled():
                span = _Span(event.event_id, f"{event.name} #{event.attempt}", "activity", x)
                open_by_task["activity", event.task_id] = span
                spans.append(span)
            case TimerCreated():
                span = _Span(event.event_id, f"timer ({event.purpose})", "timer", x)
                open_by_task["timer", event.task_id] = span
                spans.append(span)
            case ChildWorkflowScheduled():
                span = _Span(
                    event.event_id, f"{event.name} {event.instance_id}", "child", x,
                    child_id=event.instance_id,
                )  # fmt: skip
                open_by_task["child", event.task_id] = span
                spans.append(span)
            case ActivityCompleted() | ActivityErrored():
                _close(open_by_task, ("activity", event.task_id), x, event)
            case TimerFired():
                _close(open_by_task, ("timer", event.task_id), x, event)
            case ChildWorkflowCompleted() | ChildWorkflowErrored():
                _close(open_by_task, ("child", event.task_id), x, event)
            case TurnStarted():
                marks.append(Mark(event.event_id, "turn", _px(x)))
            case EventRaised():
                marks.append(Mark(event.event_id, f"event {event.name}", _px(x)))
            case WorkflowSuspended() | WorkflowResumed() | WorkflowTerminated() | WorkflowRewound():
                marks.append(Mark(event.event_id, type(event).__name__, _px(x)))
            case _:
                pass
    return spans, marks


def _px(x: float) -> float:
    """A position in [0, 1] as an x in the SVG."""
    return LABEL_WIDTH + x * PLOT_WIDTH


def _close(
    open_by_task: dict[tuple[str, int], _Span], key: tuple[str, int], x: float, ended: object
) -> None:
    span = open_by_task.pop(key, None)
    if span is not None:
        span.end = x
        failed = isinstance(ended, ActivityErrored | ChildWorkflowErrored)
        span.outcome = "failed" if failed else "ok"


def _positions(history: list[HistoryEvent], until: datetime | None) -> tuple[dict[int, float], str]:
    """Each event's x in [0, 1]: by time, or by order where no time passed at all
    (a mock clock that stood still)."""
    if not history:
        return {}, "time"
    first = history[0].timestamp
    last = max(e.timestamp for e in history)
    if until is not None and until > last:
        last = until
    span = (last - first).total_seconds()
    if span > 0:
        return {e.event_id: (e.timestamp - first).total_seconds() / span for e in history}, "time"
    count = max(len(history) - 1, 1)
    return {e.event_id: i / count for i, e in enumerate(history)}, "order"


def build_timeline(history: list[HistoryEvent], until: datetime | None = None) -> Timeline:
    """Lay ``history`` out in lanes; an open step runs to ``until`` (now, for a run
    still going) or to the last event."""
    at, axis = _positions(history, until)
    spans, marks = _spans(history, at)
    lanes: list[Lane] = [Lane("turns", "turn", marks=[m for m in marks if m.label == "turn"])]
    for kind, title in (("activity", "activities"), ("timer", "timers"), ("child", "children")):
        lanes.extend(_pack([s for s in spans if s.kind == kind], kind, title))
    outside = [m for m in marks if m.label != "turn"]
    if outside:
        lanes.append(Lane("outside events", "event", marks=outside))
    for i, lane in enumerate(lanes):
        lane.y = i * LANE_HEIGHT
    start = history[0].timestamp.isoformat() if history else ""
    end_at = max((e.timestamp for e in history), default=None)
    if until is not None and (end_at is None or until > end_at):
        end_at = until
    return Timeline(
        lanes=lanes, height=len(lanes) * LANE_HEIGHT + 20, axis=axis, start=start,
        end=end_at.isoformat() if end_at is not None else "",
    )  # fmt: skip


def _pack(spans: list[_Span], kind: str, title: str) -> list[Lane]:
    """Stack overlapping steps in lanes of their kind (the first lane with room)."""
    lanes: list[Lane] = []
    for span in spans:
        end = span.end if span.end is not None else 1.0
        x = _px(span.start)
        width = max((end - span.start) * PLOT_WIDTH, MIN_BAR)
        bar = Bar(span.event_id, span.label, span.outcome, x, width, span.child_id)
        lane = next((la for la in lanes if la._end <= x), None)
        if lane is None:
            if len(lanes) < MAX_LANES:
                lane = Lane(title if not lanes else "", kind)
                lanes.append(lane)
            else:
                lane = lanes[-1]
        lane.bars.append(bar)
        lane._end = max(lane._end, x + width)
    return lanes
