"""Bugs the whole-system simulation (``durable.testing.simulate_system``) found, each
pinned by a direct test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import durable
from durable import ActivityContext, MockClock, Registry, WorkflowContext
from durable.store import MemoryStore, ObjectStore
from durable.testing import Replayer

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def steps_code(*, patched: bool) -> Registry:
    """Two steps, each waiting for "next"; the patched code pauses before each step."""
    registry = Registry()

    @registry.activity
    async def step(ctx: ActivityContext, n: int) -> int:
        return n

    @registry.workflow(name="steps")
    async def steps(ctx: WorkflowContext) -> list[int]:
        done = []
        for n in range(2):
            if patched and ctx.patched("pause"):
                await ctx.sleep(timedelta(seconds=1))
            done.append(await ctx.call_activity(step, n))
            await ctx.wait_for_event("next")
        return done

    return registry


async def test_a_run_in_flight_when_a_patch_is_deployed_replays() -> None:
    """Pins a bug the simulation found (a deploy under a patch): a run that was in
    flight when ``ctx.patched`` code was deployed takes the old path at the steps it
    had already taken and records the patch at the next one; replaying it later took
    the patched path from the start (the patch was anywhere in its history), so the
    run failed with NonDeterminismError at its next load."""
    store, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    async with durable.Runtime(steps_code(patched=False), store=store, clock=clock) as rt:
        await rt.start("steps", instance_id="in-flight")
        await rt.wait_idle()  # step 0 done on the old code
    async with durable.Runtime(steps_code(patched=True), store=store, clock=clock) as rt:
        await rt.client.get_handle("in-flight").raise_event("next")
        await rt.wait_idle()  # step 1 on the new code: the patch is recorded here
        history = await rt.client.get_handle("in-flight").history()
    Replayer(steps_code(patched=True)).check(history)
    async with durable.Runtime(steps_code(patched=True), store=store, clock=clock) as rt:
        handle = rt.client.get_handle("in-flight")
        await handle.raise_event("next")  # a fresh runtime replays the history first
        assert await handle == [0, 1]


class PausedPut:
    """A store whose put-if-absent at one key waits until ``release`` is set."""

    def __init__(self, inner: ObjectStore, key: str) -> None:
        self.inner, self.key = inner, key
        self.release = anyio.Event()
        self.reached = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_if_absent(self, key: str, data: bytes) -> str:
        if key == self.key:
            self.reached.set()
            await self.release.wait()
        return await self.inner.put_if_absent(key, data)


def sleep_then_step() -> Registry:
    registry = Registry()

    @registry.activity
    async def step(ctx: ActivityContext, n: int) -> int:
        return n

    @registry.workflow(name="sleeper")
    async def sleeper(ctx: WorkflowContext) -> int:
        await ctx.sleep(timedelta(seconds=1))
        return await ctx.call_activity(step, 7)

    return registry


async def test_a_suspend_in_the_turn_that_schedules_work_replays() -> None:
    """Pins a bug the simulation found: a turn that took a timer's firing and then a
    suspend records what the code scheduled on the firing after the suspend; replay
    held those scheduling events back as if they were events waiting for the resume,
    so the run failed with NonDeterminismError at its next load."""
    inner, clock = MemoryStore(), MockClock(T0)
    store = PausedPut(inner, "instances/blocker/log/000000000001")
    code = sleep_then_step()
    async with durable.Runtime(code, store=store, clock=clock, max_concurrent_workflows=1) as rt:
        handle = await rt.start("sleeper", instance_id="sleepy")
        await rt.wait_idle()
        await rt.start("sleeper", instance_id="blocker")
        await store.reached.wait()  # the one workflow worker is busy with the blocker
        clock.advance(timedelta(seconds=2))  # sleepy's timer fires ...
        for _ in range(20):  # (its firing reaches sleepy's queue)
            await anyio.lowlevel.checkpoint()
        await handle.suspend()  # ... and its suspend arrives before its turn runs
        store.release.set()
        await rt.wait_idle()
        history = await handle.history()
    kinds = ",".join(type(e).__name__ for e in history)
    assert "TimerFired,WorkflowSuspended,ActivityScheduled" in kinds, kinds
    Replayer(sleep_then_step()).check(history)
    async with durable.Runtime(code, store=inner, clock=clock) as rt:
        handle = rt.client.get_handle("sleepy")
        await handle.resume()  # a fresh runtime replays the history first
        assert await handle == 7


def sleep_then_continue() -> Registry:
    registry = Registry()

    @registry.workflow(name="looper")
    async def looper(ctx: WorkflowContext, n: int) -> str:
        if n == 0:
            await ctx.sleep(timedelta(seconds=1))
            ctx.continue_as_new(1)
        return str(await ctx.wait_for_event("a"))

    return registry


async def test_an_event_held_while_suspended_reaches_the_next_run() -> None:
    """Pins a bug the simulation found: events that arrive while a run is suspended are
    held; on resume a held timer's firing made the run continue as new, and an event
    held behind it (taken in an earlier turn) was neither carried over nor left for the
    new run, which then waited for it for ever."""
    store, clock = MemoryStore(), MockClock(T0)
    async with durable.Runtime(sleep_then_continue(), store=store, clock=clock) as rt:
        handle = await rt.start("looper", 0, instance_id="held")
        await rt.wait_idle()
        await handle.suspend()
        await rt.wait_idle()
        clock.advance(timedelta(seconds=2))  # the timer fires while suspended: held
        await rt.wait_idle()
        await handle.raise_event("a", "x")  # held behind it
        await rt.wait_idle()
        await handle.resume()
        await rt.wait_idle()
        state = await handle.describe()
        assert state.status is durable.WorkflowStatus.COMPLETED, state
        assert await handle == "x"
