"""The sidecar's pure parts: dialect detection, the converted-history cache, the wire
order of a run's first turn, and the dispatcher's matching (no sockets)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import anyio
import pytest
from msgspec import Raw
from msgspec.structs import replace

from durable._core._events import (
    ActivityCompleted,
    ActivityScheduled,
    EventRaised,
    HistoryEvent,
    PatchApplied,
    TurnStarted,
    WorkflowStarted,
)
from durable.grpc import _convert as cv
from durable.grpc._dispatch import ActivityWork, Dispatcher, TurnWork, Warm
from durable.grpc._framing import PAST_EVENTS, field_chunk
from durable.grpc._pastcache import PastCache
from durable.grpc._proto import dapr, ms
from durable.grpc._remote import wire_order
from durable.grpc._workitems import detect_dialect, stream_options

AT = datetime(2024, 5, 1, tzinfo=UTC)


def test_dialect_of_get_work_items() -> None:
    assert detect_dialect(
        ms.GetWorkItemsRequest(maxConcurrentActivityWorkItems=2).SerializeToString()
    ) == ("ms", set())
    assert detect_dialect(b"") == ("minimal", set())
    request = dapr.GetWorkItemsRequest(
        capabilities=[dapr.WORKER_CAPABILITY_HEALTH_PING, dapr.WORKER_CAPABILITY_STATEFUL_HISTORY]
    )
    assert detect_dialect(request.SerializeToString()) == ("dapr", {2, 3})
    assert stream_options("dapr", {2, 3}) == (True, True)
    assert stream_options("dapr", {2}) == (True, False)
    assert stream_options("ms", set()) == (False, True)
    assert stream_options("minimal", set()) == (False, False)


def turns(count: int) -> list[list[HistoryEvent]]:
    """A run's committed turns: start, then an activity per turn, a patch in turn 2."""
    started = WorkflowStarted(name="wf", input=Raw(b"1"), run_id="r1", version="v2",
                              first_task_id=10)  # fmt: skip
    out: list[list[HistoryEvent]] = [[started, EventRaised(name="carried")]]
    for t in range(count):
        turn: list[HistoryEvent] = [TurnStarted()]
        if t:
            turn.append(ActivityCompleted(task_id=10 + t - 1, result=Raw(b'"x"')))
        turn.append(ActivityScheduled(task_id=10 + t, name="a", step=10 + t))
        if t == 2:
            turn.append(PatchApplied(patch_id="p"))
        out.append(turn)
    return out


def history(parts: list[list[HistoryEvent]]) -> list[HistoryEvent]:
    flat = [e for part in parts for e in part]
    return [replace(e, event_id=i, timestamp=AT) for i, e in enumerate(flat)]


def test_wire_order_puts_the_first_turn_start_first() -> None:
    events = history(turns(2))
    ordered = wire_order(events)
    assert [type(e).__name__ for e in ordered[:4]] == [
        "TurnStarted", "WorkflowStarted", "EventRaised", "ActivityScheduled"]  # fmt: skip
    assert wire_order(ordered) == ordered  # already in order
    longer = wire_order(history(turns(4)))
    assert longer[: len(ordered)] == ordered  # a prefix stays a prefix


def test_past_cache_converts_only_new_turns_and_matches_a_full_conversion() -> None:
    cache = PastCache(limit=4)
    all_turns = turns(6)
    for n in range(2, len(all_turns) + 1):
        past = wire_order(history(all_turns[:n]))
        work = TurnWork("i", "r1", past, [], 10)
        assert cache.dapr(work) == chunks(cv.events_to_dapr(past, instance_id="i", task_base=10))
        assert cache.ms(work) == chunks(cv.events_to_ms(past, instance_id="i", task_base=10))
    assert len(cache) == 2
    # a history that no longer begins the same way is converted whole
    other = wire_order(history(turns(3)))
    other[-1] = replace(other[-1], timestamp=datetime(2030, 1, 1, tzinfo=UTC))
    work = TurnWork("i", "r1", other, [], 10)
    assert cache.dapr(work) == chunks(cv.events_to_dapr(other, instance_id="i", task_base=10))


def chunks(messages: list[dapr.HistoryEvent] | list[ms.HistoryEvent]) -> list[bytes]:
    return [field_chunk(PAST_EVENTS, m.SerializeToString()) for m in messages]


@pytest.mark.anyio
async def test_dispatcher_matches_tokens_and_falls_back_to_instance_and_task() -> None:
    dispatcher = Dispatcher(tokens=(f"t-{n}" for n in itertools.count(1)).__next__)
    scheduled = ActivityScheduled(task_id=12, name="a", step=12)
    results: dict[str, object] = {}

    async def submit(name: str, work: TurnWork | ActivityWork) -> None:
        results[name] = await dispatcher.submit(work)

    async with anyio.create_task_group() as tg:
        tg.start_soon(submit, "turn", TurnWork("i", "r", [], [TurnStarted()], 0))
        tg.start_soon(submit, "act", ActivityWork("i", "r", scheduled, 2))
        await anyio.wait_all_tasks_blocked()
        assert dispatcher.waiting == 2  # no stream: they wait
        stream = dispatcher.connect("minimal", stateful=False, pings=False)
        assert dispatcher.waiting == 0
        assert len(stream.held) == 2
        assert dispatcher.find("t-1", "someone-else") is None  # token of another instance
        assert dispatcher.find("nope", "i") is None  # a token nobody issued
        act = dispatcher.find("", "i", 2)  # no token: instance and wire task id
        assert act is not None
        assert isinstance(act.work, ActivityWork)
        turn = dispatcher.find("", "i")
        assert turn is not None
        assert isinstance(turn.work, TurnWork)
        assert dispatcher.resolve(act, "done")
        assert not dispatcher.resolve(act, "again")  # a duplicate is dropped
        dispatcher.disconnect(stream)  # the turn goes back to waiting
        assert dispatcher.waiting == 1
        other = dispatcher.connect("ms", stateful=False, pings=True)
        assert list(other.held) == [turn.token]
        assert turn.dialect == "ms"
        assert dispatcher.abandon(turn.wire_token)  # the only stream: back to it
        assert dispatcher.resolve(turn, "turned")
        dispatcher.disconnect(other)
    assert results == {"turn": "turned", "act": "done"}


@pytest.mark.anyio
async def test_cancelled_submit_withdraws_its_item() -> None:
    dispatcher = Dispatcher()
    with anyio.move_on_after(0):
        await dispatcher.submit(TurnWork("i", "r", [], [TurnStarted()], 0))
    assert dispatcher.waiting == 0
    assert dispatcher.find("t-1", "i") is None


def test_a_stream_trusts_its_cache_only_while_it_still_begins_the_history() -> None:
    dispatcher = Dispatcher()
    stream = dispatcher.connect("dapr", stateful=True, pings=False)
    try:
        past = wire_order(history(turns(3)))
        stream.remember("i", Warm("r1", 9, len(past), past[-1]))
        grown = wire_order(history(turns(4)))
        assert stream.cached(TurnWork("i", "r1", grown, [], 10)) == 9
        assert stream.cached(TurnWork("i", "r2", grown, [], 10)) == 0  # another run
        assert stream.cached(TurnWork("i", "r1", past[:4], [], 10)) == 0  # shorter
        # a rerun keeps the run id, cuts the history and grows it again differently
        regrown = [*past[:4], *(replace(e, timestamp=datetime(2031, 1, 1, tzinfo=UTC))
                                for e in grown[4:])]  # fmt: skip
        assert stream.cached(TurnWork("i", "r1", regrown, [], 10)) == 0
        # a stream that did not advertise stateful history remembers nothing
        plain = dispatcher.connect("dapr", stateful=False, pings=False)
        plain.remember("i", Warm("r1", 9, len(past), past[-1]))
        assert plain.warm == {}
        dispatcher.disconnect(plain)
    finally:
        dispatcher.disconnect(stream)
