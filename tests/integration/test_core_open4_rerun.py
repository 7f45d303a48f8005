"""A rerun of a run whose ``ctx.any(..., cancel_rest=True)`` cancelled its losers (one
of them in a retry backoff) replays, from whichever step it reruns: the kind of soak
seeds 32 and 165 (NonDeterminismError after a rerun), which no longer reproduce."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest

import durable
from durable import ActivityContext, Registry, RetryPolicy, WorkflowContext
from durable.store import MemoryStore

pytestmark = pytest.mark.anyio

_BACKOFF = RetryPolicy(max_attempts=5, initial_interval=timedelta(seconds=2))
_TARGETS = ("ActivityScheduled", "TimerCreated")


def _racing() -> Registry:
    registry = Registry()

    @registry.activity
    async def quick(ctx: ActivityContext, v: int) -> int:
        return v

    @registry.activity
    async def failing(ctx: ActivityContext, v: int) -> int:
        raise ValueError(f"no {v}")

    @registry.workflow
    async def race(ctx: WorkflowContext, n: int) -> list[Any]:
        async def slow_winner() -> int:
            await ctx.sleep(timedelta(seconds=3))
            got: int = await ctx.call_activity(quick, n)
            return got

        calls = [ctx.call_activity(failing, n, retry=_BACKOFF), slow_winner()]
        futures = [ctx._as_future(c) for c in calls]
        winner = await ctx.any(futures, cancel_rest=True)
        states: list[Any] = []
        for future in futures:
            try:
                states.append(await future)
            except durable.CancelledError:
                states.append("cancelled")
        await ctx.sleep(timedelta(seconds=1))
        return [winner.result(), states, await ctx.call_activity(quick, 7)]

    return registry


async def _ended_race(store: MemoryStore, clock: durable.MockClock) -> list[int]:
    """Run ``r`` to its end; return the ids of the events a rerun may start at."""
    async with durable.Runtime(_racing(), store=store, clock=clock) as rt:
        handle = await rt.start("race", 5, instance_id="r")
        assert await handle.result() == [5, ["cancelled", 5], 7]
        return [e.event_id for e in await handle.history() if type(e).__name__ in _TARGETS]


async def test_a_rerun_of_an_any_that_cancelled_its_losers_replays_from_every_step() -> None:
    """Each rerunnable step of the run (the loser's schedule and retry timers, the
    winner's timer and activity, the steps after the race) reruns to the same result
    without a NonDeterminismError."""
    clock = durable.MockClock(auto_advance=True)
    targets = await _ended_race(MemoryStore(), clock)
    assert len(targets) >= 6  # two attempts of the loser, and its backoff, at least
    for target in targets:
        store = MemoryStore()
        await _ended_race(store, clock)
        async with durable.Runtime(_racing(), store=store, clock=clock) as rt:
            rerun = await rt.client.rerun("r", target)
            with anyio.fail_after(30):
                assert await rerun.result() == [5, ["cancelled", 5], 7], target
