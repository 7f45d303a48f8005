"""A rerun's run replays from the log wherever its cut falls (found by the whole-system
simulation, kind ``rerun-replay``; the same class as issue 13's bug 4).

A rerun keeps the history before its step, which ends inside that step's turn. Its first
turn used to open another turn there, so the steps the cut turn still asked for sat
after a second ``TurnStarted``, and every replay of the run from the log (after an
eviction, a restart, in a second rerun, or a parked rerun resumed) raised
``NonDeterminismError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

import durable
from durable import ActivityContext, MockClock, Registry, WorkflowContext, WorkflowStatus
from durable._core._events import (
    ActivityScheduled,
    ChildWorkflowScheduled,
    HistoryEvent,
    TimerCreated,
    TurnStarted,
)
from durable.store import MemoryStore, ObjectStore
from durable.testing import Replayer

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def flow_registry(calls: list[str]) -> Registry:
    """``flow``: two activities, a timer, a sub-workflow, a fan-out of three, an event."""
    registry = Registry()

    @registry.activity
    async def step(ctx: ActivityContext, name: str) -> str:
        calls.append(name)
        return name.upper()

    @registry.workflow
    async def kid(ctx: WorkflowContext, name: str) -> str:
        return await ctx.call_activity(step, name)

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> list[str]:
        out = [await ctx.call_activity(step, "a"), await ctx.call_activity(step, "b")]
        await ctx.sleep(timedelta(milliseconds=50))
        out.append(await ctx.call_workflow(kid, "c", instance_id="flow-kid"))
        out += await ctx.all([ctx.call_activity(step, n) for n in ("p", "q", "r")])
        out.append(await ctx.wait_for_event("go"))
        out.append(await ctx.call_activity(step, "z"))
        return out

    return registry


DONE = ["A", "B", "C", "P", "Q", "R", "now", "Z"]


@asynccontextmanager
async def runtime(
    registry: Registry, store: ObjectStore, clock: MockClock, **options: Any
) -> AsyncIterator[durable.Runtime]:
    """A runtime that keeps no run in memory between turns: every turn replays the log."""
    options.setdefault("max_resident_workflows", 0)
    async with durable.Runtime(registry, store=store, clock=clock, **options) as rt:
        yield rt


async def finish(rt: durable.Runtime, handle: durable.WorkflowHandle[Any]) -> Any:
    """Send "go" once the run waits for it (so that it lands late in history); the
    run's result."""
    with anyio.fail_after(10):
        await rt.wait_idle()
        await handle.raise_event("go", "now")
        return await handle.result()


async def ran_once(registry: Registry, store: ObjectStore, clock: MockClock) -> list[HistoryEvent]:
    """Run ``flow`` to its end in a runtime of its own; its history."""
    async with runtime(registry, store, clock) as rt:
        handle = await rt.start("flow", instance_id="flow")
        assert await finish(rt, handle) == DONE
        return await handle.history()


def scheduled(history: list[HistoryEvent], which: str) -> HistoryEvent:
    """The step ``which`` of a history of ``flow`` (the last one it holds): "timer",
    "child", or the activity given that name."""
    if which == "timer":
        return [e for e in history if isinstance(e, TimerCreated)][-1]
    if which == "child":
        return [e for e in history if isinstance(e, ChildWorkflowScheduled)][-1]
    named = f'"{which}"'.encode()
    return [e for e in history if isinstance(e, ActivityScheduled) and bytes(e.input) == named][-1]


def replays(registry: Registry, history: list[HistoryEvent]) -> None:
    """The run's whole history replays against the code, as a fresh worker would."""
    Replayer(registry).check(history)


@pytest.mark.parametrize("which", ["a", "b", "timer", "child", "p", "q", "r", "z"])
async def test_a_rerun_replays_from_the_log_whatever_step_it_starts_at(which: str) -> None:
    """The rerun's turns each replay its log (nothing stays resident): the run completes,
    and its whole history replays. Before the fix, a rerun from any step but the first
    failed with NonDeterminismError at its second turn."""
    calls: list[str] = []
    registry = flow_registry(calls)
    async with runtime(registry, MemoryStore(), MockClock(T0, auto_advance=True)) as rt:
        handle = await rt.start("flow", instance_id="flow")
        assert await finish(rt, handle) == DONE
        step = scheduled(await handle.history(), which)
        calls.clear()
        again = await rt.client.rerun("flow", step.event_id)
        assert await finish(rt, again) == DONE
        history = await again.history()
    replays(registry, history)
    assert calls[-1] == "z"


@pytest.mark.parametrize("first", ["b", "q", "child"])
@pytest.mark.parametrize("second", ["b", "q", "z"])
async def test_a_rerun_of_a_rerun_replays(first: str, second: str) -> None:
    """A second rerun keeps part of the first one's history (its first turn included,
    when it starts later): it replays, and so does the run it makes."""
    registry = flow_registry([])
    async with runtime(registry, MemoryStore(), MockClock(T0, auto_advance=True)) as rt:
        handle = await rt.start("flow", instance_id="flow")
        assert await finish(rt, handle) == DONE
        again = await rt.client.rerun("flow", scheduled(await handle.history(), first).event_id)
        assert await finish(rt, again) == DONE
        step = scheduled(await again.history(), second)
        third = await rt.client.rerun("flow", step.event_id)
        assert await finish(rt, third) == DONE
        history = await third.history()
    replays(registry, history)


async def test_a_rerun_recovered_after_a_restart_replays() -> None:
    """A rerun that waits (for "go") when its runtime stops: the next runtime recovers
    it from the log and finishes it."""
    store, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    registry = flow_registry([])
    async with runtime(registry, store, clock, max_resident_workflows=None) as rt:
        handle = await rt.start("flow", instance_id="flow")
        assert await finish(rt, handle) == DONE
        step = scheduled(await handle.history(), "q")
        await rt.client.rerun("flow", step.event_id)
        await rt.wait_idle()
        assert (await handle.describe()).status is WorkflowStatus.RUNNING
    async with runtime(registry, store, clock, max_resident_workflows=None) as rt:
        assert await finish(rt, rt.client.get_handle("flow")) == DONE


async def test_events_that_reach_a_rerun_before_its_first_turn_replay() -> None:
    """A rerun written by a client with no runtime, and an event raised before any
    runtime took its first turn: the first turn takes the event, and the run replays."""
    store, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    registry = flow_registry([])
    history = await ran_once(registry, store, clock)
    outside = durable.Client(store, clock=clock)
    await outside.rerun("flow", scheduled(history, "r").event_id)
    await outside.get_handle("flow").raise_event("go", "early")  # not waited for yet: kept
    async with runtime(registry, store, clock) as rt:
        again = rt.client.get_handle("flow")
        with anyio.fail_after(10):
            assert await again.result() == [*DONE[:6], "early", "Z"]
        history = await again.history()
    replays(registry, history)


def unrelated() -> Registry:
    """A registry without ``flow``: a runtime with it parks ``flow``'s instances."""
    registry = Registry()

    @registry.workflow
    async def other(ctx: WorkflowContext) -> None:
        pass

    return registry


async def until(check: Callable[[], Awaitable[bool]], clock: MockClock, rt: Any) -> None:
    """Move the clock a second at a time (the runtime polls for outside messages each
    second) until ``check()`` holds."""
    for _ in range(60):
        await rt._engine.wait_idle()
        if await check():
            return
        clock.advance(timedelta(seconds=1))
    raise AssertionError("never happened")


async def is_parked(handle: durable.WorkflowHandle[Any]) -> bool:
    return "waiting for a worker" in (await handle.describe()).reason


async def test_a_parked_rerun_suspended_and_resumed_still_takes_its_first_turn() -> None:
    """A rerun parked where its code is not registered, suspended and resumed there: it is
    PENDING again (its first turn is still to come, though its history holds turns), and
    a runtime with the code finishes it. Before, it came back RUNNING, and that runtime
    failed it with NonDeterminismError."""
    store, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    registry = flow_registry([])
    history = await ran_once(registry, store, clock)
    async with runtime(unrelated(), store, clock, poll_interval=1.0) as rt:
        outside = durable.Client(store, clock=clock)
        await outside.rerun("flow", scheduled(history, "b").event_id)
        handle = outside.get_handle("flow")

        async def status_is(status: WorkflowStatus) -> bool:
            return (await handle.describe()).status is status

        await until(lambda: is_parked(handle), clock, rt)
        await handle.suspend("hold on")
        await until(lambda: status_is(WorkflowStatus.SUSPENDED), clock, rt)
        await handle.resume("go on")
        await until(lambda: status_is(WorkflowStatus.PENDING), clock, rt)
    async with runtime(registry, store, clock) as rt:
        again = rt.client.get_handle("flow")
        assert await finish(rt, again) == DONE
        history = await again.history()
    replays(registry, history)
    assert sum(isinstance(e, TurnStarted) for e in history) > 5


@pytest.mark.parametrize("dialect", ["dapr", "ms"])
@pytest.mark.parametrize("cached_runs", [0, 100])
async def test_a_rerun_through_the_sidecar_replays_on_a_remote_worker(
    dialect: str, cached_runs: int
) -> None:
    """The sidecar serves reruns: a durable RemoteWorker that keeps no run in its cache
    (``cached_runs=0``) replays the rerun's whole history at every turn, and one that
    does meets the rerun's first turn (which opens no turn of its own) on the wire."""
    from durable.grpc import RemoteClient, RemoteWorker, Sidecar

    calls: list[str] = []
    registry = flow_registry(calls)
    async with Sidecar("memory://", port=0) as sidecar:
        target = f"127.0.0.1:{sidecar.port}"
        async with (
            RemoteWorker(registry, target, dialect=dialect, cache_max_instances=cached_runs) as w,
            RemoteClient(target, dialect=dialect, registry=registry, poll_interval=0.02) as rc,
        ):
            with anyio.fail_after(30):
                await w.wait_connected()
                handle = await rc.start("flow", instance_id="flow")
                await handle.raise_event("go", "now")
                assert await handle.result() == DONE
                history = await sidecar.client.get_handle("flow").history()
                for which in ("q", "b"):
                    calls.clear()
                    step = scheduled(history, which)
                    await sidecar.client.rerun("flow", step.event_id)
                    again = rc.get_handle("flow")
                    await again.raise_event("go", "now")
                    assert await again.result() == DONE
                    assert calls[-1] == "z"
                    history = await sidecar.client.get_handle("flow").history()
    replays(registry, history)
