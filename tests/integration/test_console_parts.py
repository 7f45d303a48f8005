"""The console's pure parts: the timeline's layout from hand-built histories, and the
list's cursors at the edges (filters, prefixes, the scan budget)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import durable
from durable._core._events import (
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    HistoryEvent,
    TimerCreated,
    TurnStarted,
    WorkflowStarted,
)
from durable._core._failure import FailureDetails
from durable.console import _listing
from durable.console._listing import ListQuery, list_page
from durable.console._timeline import LABEL_WIDTH, MAX_LANES, PLOT_WIDTH, build_timeline
from durable.store import MemoryStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def numbered(events: list[HistoryEvent]) -> list[HistoryEvent]:
    import msgspec

    return [msgspec.structs.replace(e, event_id=i) for i, e in enumerate(events)]


def test_timeline_pairs_attempts_and_packs_lanes() -> None:
    """Two activities at once take two lanes; a failed attempt and its retry are
    two bars; a timer still open runs to the chart's end; x follows time."""
    history = numbered([
        WorkflowStarted(name="wf", timestamp=at(0)),
        TurnStarted(timestamp=at(0)),
        ActivityScheduled(task_id=0, name="a", timestamp=at(0)),
        ActivityScheduled(task_id=1, name="b", timestamp=at(0)),
        ActivityCompleted(task_id=0, timestamp=at(10)),
        ActivityErrored(task_id=1, failure=FailureDetails("E", "x"), timestamp=at(10)),
        ActivityScheduled(task_id=2, name="b", attempt=2, step=1, timestamp=at(10)),
        ActivityCompleted(task_id=2, timestamp=at(20)),
        TimerCreated(task_id=3, fire_at=at(100), timestamp=at(20)),
    ])  # fmt: skip
    timeline = build_timeline(history, until=at(40))
    assert timeline.axis == "time"
    by_kind = {lane.kind: lane for lane in reversed(timeline.lanes)}  # first lane of each
    activity_lanes = [lane for lane in timeline.lanes if lane.kind == "activity"]
    assert len(activity_lanes) == 2
    bars = [bar for lane in activity_lanes for bar in lane.bars]
    assert sorted((b.label, b.outcome) for b in bars) == [
        ("a #1", "ok"), ("b #1", "failed"), ("b #2", "ok"),
    ]  # fmt: skip
    retry = next(b for b in bars if b.label == "b #2")
    assert retry.x == pytest.approx(LABEL_WIDTH + PLOT_WIDTH * 10 / 40)
    assert retry.width == pytest.approx(PLOT_WIDTH * 10 / 40)
    (timer,) = by_kind["timer"].bars
    assert timer.outcome == "open"
    assert timer.x + timer.width == pytest.approx(LABEL_WIDTH + PLOT_WIDTH)
    assert [m.event_id for m in by_kind["turn"].marks] == [1]


def test_timeline_without_time_spreads_by_order_and_caps_lanes() -> None:
    """A history on a clock that stood still is laid out in event order; a hundred
    parallel steps share at most MAX_LANES lanes."""
    events: list[HistoryEvent] = [WorkflowStarted(name="wf", timestamp=T0)]
    events += [ActivityScheduled(task_id=i, name="a", timestamp=T0) for i in range(100)]
    timeline = build_timeline(numbered(events))
    assert timeline.axis == "order"
    lanes = [lane for lane in timeline.lanes if lane.kind == "activity"]
    assert len(lanes) == MAX_LANES
    assert sum(len(lane.bars) for lane in lanes) == 100


@pytest.mark.anyio
async def test_list_cursors_with_filters_and_scan_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name-filtered page reads on past non-matching instances, stops at the scan
    budget with a cursor that goes on from there; Next starts after the last row."""
    monkeypatch.setattr(_listing, "SCAN_LIMIT", 40)
    store = MemoryStore()
    async with durable.Client(store) as client:
        for i in range(100):
            await client.start("even" if i % 2 == 0 else "odd", i, instance_id=f"i-{i:03d}")
        page = await list_page(client, ListQuery(name="odd", size=20))
        assert [m.instance_id for m in page.rows] == [f"i-{i:03d}" for i in range(1, 40, 2)]
        nxt = await list_page(client, ListQuery(name="odd", size=20, cursor=page.next_cursor))
        assert [m.instance_id for m in nxt.rows] == [f"i-{i:03d}" for i in range(41, 80, 2)]

        starved = await list_page(client, ListQuery(name="nothing", size=20))
        assert starved.rows == []
        assert starved.cut_short
        assert starved.scanned == 40
        after = await list_page(client, ListQuery(name="ev", size=20, cursor=starved.next_cursor))
        assert after.rows[0].instance_id == "i-040"

        prefixed = await list_page(client, ListQuery(prefix="i-09", size=20))
        assert [m.instance_id for m in prefixed.rows] == [f"i-{i:03d}" for i in range(90, 100)]
        assert prefixed.next_cursor == ""
