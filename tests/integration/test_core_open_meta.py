"""The simulation's open core bugs of trust: a stale meta written back over a start
under the same id after a purge, and an engine that died without a word. Each test
pins one bug at the mechanism that caused it; time flows through a MockClock."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

import durable
from durable import ActivityContext, Registry, WorkflowContext
from durable._errors import EngineFailedError
from durable.store import MemoryStore

pytestmark = pytest.mark.anyio


def _hanging(started: anyio.Event) -> Registry:
    registry = Registry()

    @registry.activity
    async def hang(ctx: ActivityContext) -> None:
        started.set()
        await anyio.Event().wait()  # a call that never answers: only a cancel ends it

    @registry.workflow
    async def stuck(ctx: WorkflowContext) -> None:
        await ctx.call_activity(hang)

    return registry


async def test_a_stray_cancel_of_a_worker_fails_the_runtime_loudly() -> None:
    """A worker task that ended by a cancellation nobody asked for (a stray
    ``task.cancel()``, as the double cancel of an attempt made) ended the engine's whole
    task group without an error: the process kept running with no turns, timers or
    leases. The engine now fails loudly with ``EngineFailedError``."""
    started = anyio.Event()
    clock = durable.MockClock()
    with pytest.raises(BaseExceptionGroup) as caught:  # noqa: PT012
        async with durable.Runtime(_hanging(started), store=MemoryStore(), clock=clock) as rt:
            await rt.start("stuck", instance_id="s")
            await started.wait()
            (attempt,) = rt._engine._attempts.values()
            assert attempt.task is not None
            attempt.task.cancel()  # the stray cancel: no scope asked for it
            task = attempt.task
            while not task.done():  # the engine's failure cancels this wait
                await anyio.lowlevel.checkpoint()
            await anyio.wait_all_tasks_blocked()
            assert rt._engine.running, "the engine stopped without an error"
    assert caught.group_contains(EngineFailedError)
