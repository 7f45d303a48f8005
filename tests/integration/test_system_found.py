"""Bugs the whole-system simulation (``durable.testing.simulate_system``) found, each
pinned by a direct test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import durable
from durable import ActivityContext, MockClock, Registry, WorkflowContext
from durable.store import MemoryStore
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
