"""The remote worker's history cache and turn taker, without a network.

The cache: TTL on a MockClock, the instance cap, the byte budget, LRU order and
generations (reset on reconnect). The turn taker: wire histories built with
``_convert`` the way a sidecar would send them; a small in-test sidecar model records
the actions of each turn into history, so deltas, misses and fallbacks can be driven
turn by turn.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from msgspec import Raw

import durable
from durable import MockClock, WorkflowContext
from durable._core._actions import (
    Action,
    CompleteWorkflow,
    ScheduleActivity,
    StartTimer,
)
from durable._core._codec import JsonCodec
from durable._core._events import (
    ActivityCompleted,
    ActivityScheduled,
    EventRaised,
    HistoryEvent,
    TimerCreated,
    TimerFired,
    TurnStarted,
    WorkflowStarted,
    WorkflowTerminated,
)
from durable._core._replay import WorkflowRun
from durable.grpc import _convert as cv
from durable.grpc._cache import CacheEntry, CacheStats, HistoryCache
from durable.grpc._framing import LazyEvents, UndecodableError
from durable.grpc._proto import dapr
from durable.grpc._turns import TurnOutcome, TurnTaker

if TYPE_CHECKING:
    from collections.abc import Sequence

AT = datetime(2026, 1, 1, tzinfo=UTC)
registry = durable.Registry()


@registry.workflow
async def steps(ctx: WorkflowContext, n: int) -> list[int]:
    out = []
    for i in range(n):
        out.append(await ctx.call_activity("double", i))
    await ctx.sleep(timedelta(seconds=5))
    out.append(await ctx.wait_for_event("last", type=int))
    return out


def _run(instance_id: str = "i") -> WorkflowRun:
    return WorkflowRun(instance_id, registry.get_workflow("steps"), registry, JsonCodec())


def _entry(size: int = 10) -> CacheEntry:
    return CacheEntry(run=_run(), seen=0, expected=[], next_event_id=0, run_id="", size=size)


# -- the cache --------------------------------------------------------------------------


def test_ttl_counts_from_last_use_on_the_clock() -> None:
    clock = MockClock(AT)
    cache = HistoryCache(clock, ttl=timedelta(minutes=10))
    entry = _entry()
    cache.put("a", entry, generation=0)
    clock.advance(timedelta(minutes=9))
    assert cache.take("a") is entry  # still fresh
    cache.put("a", entry, generation=0)  # last use now: ten more minutes
    clock.advance(timedelta(minutes=9))
    assert "a" in cache
    clock.advance(timedelta(minutes=1))
    assert cache.take("a") is None
    assert entry.run.terminated  # the expired run was closed
    assert cache.stats().evictions == 1


def test_expired_entries_are_evicted_when_others_are_put() -> None:
    clock = MockClock(AT)
    cache = HistoryCache(clock, ttl=timedelta(seconds=30))
    cache.put("old", _entry(), generation=0)
    clock.advance(timedelta(seconds=31))
    cache.put("new", _entry(), generation=0)
    assert cache.ids() == ["new"]
    assert cache.stats().bytes == 10


def test_instance_cap_evicts_least_recently_used() -> None:
    cache = HistoryCache(MockClock(AT), max_instances=2)
    a, b, c = _entry(), _entry(), _entry()
    cache.put("a", a, generation=0)
    cache.put("b", b, generation=0)
    taken = cache.take("a")  # used again: now the most recent
    assert taken is a
    cache.put("a", a, generation=0)
    cache.put("c", c, generation=0)
    assert cache.ids() == ["a", "c"]  # b was least recently used
    assert b.run.terminated
    assert not a.run.terminated
    assert cache.stats() == CacheStats(0, 0, 1, 2, 20)


def test_byte_budget() -> None:
    cache = HistoryCache(MockClock(AT), max_bytes=100)
    for name in "abc":
        cache.put(name, _entry(size=40), generation=0)
    assert cache.ids() == ["b", "c"]
    assert cache.stats().bytes == 80
    huge = _entry(size=101)
    assert not cache.put("huge", huge, generation=0)  # alone over budget: never kept
    assert huge.run.terminated
    assert cache.ids() == ["b", "c"]
    cache.drop("b")
    assert cache.stats().bytes == 40


def test_clear_starts_a_generation_that_refuses_older_turns() -> None:
    cache = HistoryCache(MockClock(AT))
    cache.put("a", _entry(), generation=0)
    before = cache.generation
    cache.clear()
    assert len(cache) == 0
    assert cache.stats().bytes == 0
    late = _entry()
    assert not cache.put("b", late, generation=before)  # began before the reconnect
    assert late.run.terminated
    assert cache.put("b", _entry(), generation=cache.generation)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        HistoryCache(MockClock(AT), max_instances=-1)


# -- turns over wire histories ----------------------------------------------------------


class Sidecar:
    """A sidecar's bookkeeping for one instance: committed history in durable's model,
    turn requests in the Dapr dialect (full, or as stateful-history deltas), and each
    turn's actions recorded as events, as durable's engine records them."""

    def __init__(
        self, taker: TurnTaker, instance_id: str = "i", *, stateful: bool, lazy: bool = False
    ) -> None:
        self.taker = taker
        self.instance_id = instance_id
        self.stateful = stateful
        self.lazy = lazy  # past events as a RemoteWorker receives them: kept encoded
        self.history: list[HistoryEvent] = []
        self.inbox: list[HistoryEvent] = [
            WorkflowStarted(name="steps", input=Raw(b"3"), run_id="r1")
        ]
        self.warm = 0
        self.sent: list[tuple[int, int | None]] = []  # (past events sent, cachedHistory)
        self.outcomes: list[TurnOutcome] = []

    def wire(self, events: list[HistoryEvent]) -> list[dapr.HistoryEvent]:
        return cv.events_to_dapr(events, instance_id=self.instance_id)

    def request(
        self,
    ) -> tuple[Sequence[dapr.HistoryEvent], list[dapr.HistoryEvent], int | None]:
        past: Sequence[dapr.HistoryEvent] = self.wire(self.history)
        new = self.wire([TurnStarted(timestamp=AT), *self.inbox])
        cached = None
        if self.stateful and 0 < self.warm <= len(past):
            past, cached = past[self.warm :], self.warm
        self.warm = len(self.wire(self.history))
        self.sent.append((len(past), cached))
        if self.lazy:
            past = LazyEvents([e.SerializeToString() for e in past], dapr.HistoryEvent)
        return past, new, cached

    def turn(self, *inbox: HistoryEvent) -> list[Action]:
        self.inbox += inbox
        past, new, cached = self.request()
        outcome = self.taker.take(self.instance_id, past, new, cached)
        if outcome is None:  # a miss: GetInstanceHistory returns the whole history
            outcome = self.taker.replay(self.instance_id, self.wire(self.history), new)
        assert outcome.failure is None, outcome.failure
        self.taker.settle(outcome, generation=self.taker.cache.generation)
        self.outcomes.append(outcome)
        self.commit(outcome.actions)
        return outcome.actions

    def commit(self, actions: list[Action]) -> None:
        events: list[HistoryEvent] = [TurnStarted(timestamp=AT), *self.inbox]
        started = [e for e in events if isinstance(e, WorkflowStarted)]
        events = started + [e for e in events if not isinstance(e, WorkflowStarted)]
        self.inbox = []
        for action in actions:
            match action:
                case ScheduleActivity():
                    events.append(
                        ActivityScheduled(task_id=action.task_id, name=action.name, step=0)
                    )
                case StartTimer():
                    events.append(TimerCreated(task_id=action.task_id, fire_at=action.fire_at))
        self.history += [
            msgspec.structs.replace(e, event_id=len(self.history) + i) for i, e in enumerate(events)
        ]


def _taker(**limits: Any) -> TurnTaker:
    return TurnTaker(registry, JsonCodec(), HistoryCache(MockClock(AT), **limits))


def _answer(action: Action, value: int = 0) -> HistoryEvent:
    assert isinstance(action, ScheduleActivity | StartTimer)
    if isinstance(action, StartTimer):
        return TimerFired(task_id=action.task_id, fire_at=action.fire_at)
    return ActivityCompleted(task_id=action.task_id, result=Raw(str(value).encode()))


def _drive(side: Sidecar) -> list[Action]:
    (first,) = side.turn()
    (second,) = side.turn(_answer(first, 10))
    (third,) = side.turn(_answer(second, 11))
    (timer,) = side.turn(_answer(third, 12))
    assert side.turn(_answer(timer)) == []
    return side.turn(EventRaised(name="last", input=Raw(b"99")))


def test_stateful_history_feeds_only_deltas() -> None:
    taker = _taker()
    side = Sidecar(taker, stateful=True)
    assert _drive(side) == [CompleteWorkflow(Raw(b"[10,11,12,99]"))]
    assert taker.cache.stats().hits == 5
    assert taker.cache.stats().misses == 1  # the first turn
    assert [o.replayed for o in side.outcomes] == [1, 0, 0, 0, 0, 0]  # only WorkflowStarted
    # full histories until the sidecar knows the worker holds some (a first turn sends
    # none), then only what each turn added
    assert side.sent[:2] == [(0, None), (3, None)]
    assert [past for past, _ in side.sent[2:]] == [3, 3, 3, 2]
    assert all(cached is not None for _, cached in side.sent[2:])
    assert "i" not in taker.cache  # the run ended: dropped


@pytest.mark.parametrize("lazy", [False, True])
def test_full_histories_reuse_the_cached_run_when_they_extend_it(lazy: bool) -> None:
    """Without cachedHistory (the MS dialect) the cached run is still reused when the
    history is the one it stood on plus what its last turn committed."""
    taker = _taker()
    side = Sidecar(taker, stateful=False, lazy=lazy)
    assert _drive(side) == [CompleteWorkflow(Raw(b"[10,11,12,99]"))]
    assert taker.cache.stats().hits == 5
    assert [o.replayed for o in side.outcomes] == [1, 0, 0, 0, 0, 0]
    assert side.sent[-1][0] > 10  # full histories went over the wire


def test_a_full_history_that_changed_what_the_run_saw_is_a_miss() -> None:
    """Found in review: event keys (kind, task id, name) do not cover payloads, so a
    full history whose earlier results differ from what the run was fed could reuse it.
    The part the run saw must now match byte for byte, or the turn replays."""
    taker = _taker()
    side = Sidecar(taker, stateful=False, lazy=True)
    (first,) = side.turn()
    (second,) = side.turn(_answer(first, 10))
    (third,) = side.turn(_answer(second, 11))
    assert side.outcomes[-1].hit is True
    at = next(i for i, e in enumerate(side.history) if isinstance(e, ActivityCompleted))
    side.history[at] = msgspec.structs.replace(side.history[at], result=Raw(b"20"))
    (timer,) = side.turn(_answer(third, 12))
    assert side.outcomes[-1].hit is False  # replayed from the history as committed
    assert side.turn(_answer(timer)) == []
    final = side.turn(EventRaised(name="last", input=Raw(b"99")))
    assert final == [CompleteWorkflow(Raw(b"[20,11,12,99]"))]


def test_a_damaged_past_event_is_not_the_workflows_failure() -> None:
    """A past event that does not parse is a damaged work item: the worker has it sent
    again (UndecodableError) instead of failing the run for good."""
    taker = _taker()
    side = Sidecar(taker, stateful=False, lazy=True)
    (first,) = side.turn()
    side.turn(_answer(first, 10))
    past, new, _ = _delta(side, TimerFired(task_id=99, fire_at=AT))
    assert isinstance(past, LazyEvents)
    damaged = [e.SerializeToString() for e in past]
    damaged[-1] = b"\x0a\xff"  # a field longer than the event
    lazy = LazyEvents(damaged, dapr.HistoryEvent)
    with pytest.raises(UndecodableError):
        taker.take("i", lazy, new)  # the cached run needs the damaged tail
    with pytest.raises(UndecodableError):
        taker.take("i", lazy, new)  # and with no cached run, neither does a replay


def test_a_cache_miss_replays_the_fetched_history() -> None:
    taker = _taker()
    side = Sidecar(taker, stateful=True)
    (first,) = side.turn()
    (second,) = side.turn(_answer(first, 10))
    committed = len(side.history)
    taker.cache.clear()  # e.g. a reconnect, while the sidecar still sends a delta
    (third,) = side.turn(_answer(second, 11))
    assert side.sent[-1][1] is not None  # it was a delta...
    assert isinstance(third, ScheduleActivity)
    assert third.task_id == 2
    assert side.outcomes[-1].hit is False
    assert side.outcomes[-1].replayed == committed  # ...and the whole history was replayed
    assert taker.cache.stats().misses == 2
    (fourth,) = side.turn(_answer(third, 12))  # and the next turn hits again
    assert isinstance(fourth, StartTimer)
    assert side.outcomes[-1].hit is True


def test_a_delta_that_does_not_match_is_a_miss() -> None:
    taker = _taker()
    side = Sidecar(taker, stateful=True)
    (first,) = side.turn()
    (second,) = side.turn(_answer(first, 10))
    # the sidecar committed something other than what the turn asked for
    side.history[-1] = ActivityScheduled(event_id=side.history[-1].event_id, task_id=1,
                                         name="triple")  # fmt: skip
    outcome = taker.take("i", *_delta(side, _answer(second, 11)))
    assert outcome is None  # the worker must fetch the whole history
    assert "i" not in taker.cache


def test_a_wrong_event_count_is_a_miss() -> None:
    taker = _taker()
    side = Sidecar(taker, stateful=True)
    (first,) = side.turn()
    (second,) = side.turn(_answer(first, 10))
    past, new, cached = _delta(side, _answer(second, 11))
    assert cached is not None
    assert taker.take("i", past, new, cached + 1) is None
    assert taker.cache.stats().misses == 2


def _delta(
    side: Sidecar, *inbox: HistoryEvent
) -> tuple[list[dapr.HistoryEvent], list[dapr.HistoryEvent], int | None]:
    side.inbox += inbox
    return side.request()


def test_termination_is_answered_and_drops_the_run() -> None:
    taker = _taker()
    side = Sidecar(taker, stateful=True)
    side.turn()
    assert side.turn(WorkflowTerminated(output=Raw(b'"stop"'))) == []
    assert side.outcomes[-1].terminated is not None
    assert side.outcomes[-1].terminated.output == Raw(b'"stop"')
    assert "i" not in taker.cache


def test_an_unknown_workflow_is_a_failed_turn_not_a_crash() -> None:
    taker = _taker()
    new = cv.events_to_dapr(
        [TurnStarted(timestamp=AT), WorkflowStarted(name="nope", input=Raw(b"1"))]
    )
    outcome = taker.take("x", [], new)
    assert outcome is not None
    assert outcome.failure is not None
    assert outcome.failure.type == "durable.UnknownWorkflowError"
    garbage = cv.events_to_dapr([TurnStarted(timestamp=AT), EventRaised(name="e")])
    outcome = taker.take("y", [], garbage)
    assert outcome is not None
    assert outcome.failure is not None
    assert "executionStarted" in outcome.failure.message


def test_discard_forgets_only_the_entry_still_kept() -> None:
    cache = HistoryCache(MockClock(AT))
    first = _entry()
    cache.put("a", first, generation=0)
    cache.discard("a", first)
    assert "a" not in cache
    assert first.run.terminated
    taken = _entry()
    cache.put("a", taken, generation=0)
    assert cache.take("a") is taken  # a later turn owns it now
    cache.discard("a", taken)
    assert not taken.run.terminated
