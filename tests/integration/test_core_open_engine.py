"""The simulation's open core bugs (issue: no acknowledged start may be lost), the engine
side: each test pins one bug the whole-system simulation found, at the mechanism that
caused it. Time flows through a MockClock advanced by hand, so nothing sleeps."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

import durable
from durable import ActivityContext, Registry, RetryPolicy, WorkflowContext
from durable.store import MemoryStore

pytestmark = pytest.mark.anyio


def _registry(started: anyio.Event) -> Registry:
    registry = Registry()

    @registry.activity
    async def hang(ctx: ActivityContext) -> None:
        started.set()
        await anyio.Event().wait()  # a call that never answers: only a cancel ends it

    @registry.activity
    async def quick(ctx: ActivityContext) -> str:
        return "done"

    @registry.workflow
    async def stuck(ctx: WorkflowContext) -> None:
        await ctx.call_activity(
            hang, start_to_close_timeout=timedelta(seconds=5), retry=RetryPolicy(max_attempts=1)
        )

    @registry.workflow
    async def other(ctx: WorkflowContext) -> str:
        result: str = await ctx.call_activity(quick)
        return result

    return registry


async def test_an_attempt_timed_out_then_cancelled_keeps_the_engine_serving() -> None:
    """Found by the simulation (seed 342, 60 operations): an attempt's start_to_close
    timeout fired and, before its task ran again, the run ended (its execution timeout)
    and cancelled the operation. Each stop cancelled the attempt's task, so it held two
    cancel requests; the attempt took back one and the other escaped its worker, which
    ended with a CancelledError, and the task group then silently cancelled the whole
    engine: the process kept running with no turns, no timers and no leases."""
    started = anyio.Event()
    clock = durable.MockClock()
    async with durable.Runtime(_registry(started), store=MemoryStore(), clock=clock) as rt:
        await rt.start("stuck", instance_id="s")
        await started.wait()
        (attempt,) = rt._engine._attempts.values()
        # in one step of the loop, as the timer queue and the run's end do it: the
        # timeout stops the attempt, then its operation is cancelled
        attempt.stop("start_to_close", timedelta(seconds=5))
        attempt.cancel()
        await anyio.wait_all_tasks_blocked()
        assert rt._engine.running
        handle = await rt.start("other", instance_id="o")
        with anyio.fail_after(5):  # a guard against a hang only: the MockClock skips waits
            assert await handle == "done"
