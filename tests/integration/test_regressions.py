"""Defects found in review, each pinned by the smallest run that showed it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import anyio
import pytest

import durable
from durable import ActivityContext, MockClock, Registry, WorkflowContext, WorkflowStatus
from durable._core._events import ActivityScheduled
from durable.store import MemoryStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def saga_registry(cleanups: list[str]) -> Registry:
    registry = Registry()

    @registry.activity
    async def cleanup(ctx: ActivityContext) -> None:
        cleanups.append(ctx.instance_id)

    @registry.workflow
    async def saga(ctx: WorkflowContext) -> str:
        try:
            return await ctx.wait_for_event("go")
        finally:
            await ctx.call_activity(cleanup)  # awaiting while the coroutine is closed

    return registry


async def test_dropping_a_coroutine_that_awaits_in_finally_keeps_the_runtime_up() -> None:
    cleanups: list[str] = []
    registry = saga_registry(cleanups)
    async with durable.Runtime(
        registry, store=MemoryStore(), clock=MockClock(T0), max_resident_workflows=0
    ) as rt:
        terminated = await rt.start("saga", instance_id="t")
        await rt.wait_idle()
        await terminated.terminate("stop")
        with pytest.raises(durable.WorkflowFailed, match="stop"):
            await terminated
        evicted = await rt.start("saga", instance_id="e")  # evicted while waiting
        await rt.wait_idle()
        assert (await evicted.describe()).is_resident is False
        await evicted.raise_event("go", "went")
        assert await evicted == "went"  # restored by replay, the finally ran for real
    assert cleanups == ["e"]  # closing a coroutine records nothing and runs no activity
    assert [type(e).__name__ for e in await terminated.history()][-1] == "WorkflowTerminated"


async def test_an_activity_raising_cancelled_error_is_an_ordinary_failure() -> None:
    registry = Registry()

    @registry.activity
    async def cancels(ctx: ActivityContext) -> None:
        raise anyio.get_cancelled_exc_class()()

    @registry.workflow
    async def calls_it(ctx: WorkflowContext) -> None:
        await ctx.call_activity(cancels)

    async with durable.Runtime(
        registry, store=MemoryStore(), clock=MockClock(T0, auto_advance=True)
    ) as rt:
        with pytest.raises(durable.WorkflowFailed, match="CancelledError"):
            await (await rt.start(calls_it))
        assert await (await rt.start(calls_it, instance_id="again")).describe()  # still serving


async def test_rerun_runs_steps_the_kept_history_left_open() -> None:
    registry = Registry()
    calls: list[str] = []

    @registry.activity
    async def a(ctx: ActivityContext) -> str:
        calls.append("a")
        return "A"

    @registry.activity
    async def b(ctx: ActivityContext) -> str:
        calls.append("b")
        return "B"

    @registry.workflow
    async def par(ctx: WorkflowContext) -> list[str]:
        return await ctx.all([ctx.call_activity(a), ctx.call_activity(b)])

    async with durable.Runtime(
        registry, store=MemoryStore(), clock=MockClock(T0, auto_advance=True)
    ) as rt:
        handle = await rt.start(par, instance_id="p")
        assert await handle == ["A", "B"]
        sched_b = next(
            e for e in await handle.history() if isinstance(e, ActivityScheduled) and e.name == "b"
        )
        again = await rt.client.rerun("p", sched_b.event_id)
        with anyio.fail_after(5):
            assert await again == ["A", "B"]
    assert sorted(calls) == ["a", "a", "b", "b"]


async def test_work_scheduled_with_a_termination_never_runs() -> None:
    registry = Registry()
    ran: list[str] = []

    @registry.activity
    async def charge(ctx: ActivityContext) -> None:
        ran.append("charged")

    @registry.workflow
    async def pay(ctx: WorkflowContext) -> None:
        await ctx.wait_for_event("go")
        await ctx.call_activity(charge)

    async with durable.Runtime(registry, store=MemoryStore(), clock=MockClock(T0)) as rt:
        handle = await rt.start(pay, instance_id="p")
        await rt.wait_idle()
        await handle.raise_event("go")
        await handle.terminate("stop")  # both land in one turn
        with pytest.raises(durable.WorkflowFailed):
            await handle
        await rt.wait_idle()
        assert (await handle.describe()).status is WorkflowStatus.TERMINATED
    assert ran == []


async def test_messages_for_an_ended_run_do_not_reach_its_reuse() -> None:
    registry = Registry()

    @registry.workflow
    async def hold(ctx: WorkflowContext) -> str:
        return await ctx.wait_for_event("go")

    store, clock = MemoryStore(), MockClock(T0)
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        first = await rt.start(hold, instance_id="r")
        await first.raise_event("go", "one")
        assert await first == "one"
    outside = durable.Client(store, clock=clock)
    await outside.get_handle("r").terminate("too late")  # lands in the inbox of an ended run
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        second = await rt.start(hold, instance_id="r", reuse=True)
        await rt.wait_idle()
        assert (await second.describe()).status is WorkflowStatus.RUNNING
        await second.raise_event("go", "two")
        assert await second == "two"


class _Outage(MemoryStore):
    """A store whose log reads fail while ``down``."""

    down = False
    failed = 0

    async def get(self, key: str) -> bytes:
        if self.down and "/log/" in key:
            self.failed += 1
            raise durable.StoreError(f"503 on {key}", key=key, transient=True)
        return await super().get(key)


async def test_a_store_outage_backs_off_instead_of_spinning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    registry = Registry()

    @registry.workflow
    async def waiter(ctx: WorkflowContext) -> str:
        return await ctx.wait_for_event("go")

    store, clock = _Outage(), MockClock(T0)
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        await rt.start(waiter, instance_id="w")
        await rt.wait_idle()
    async with durable.Runtime(registry, store=store, clock=clock) as rt:  # not cached now
        store.down = True
        await rt.client.get_handle("w").raise_event("go", "x")
        await rt.wait_idle()
        assert store.failed == 1  # one attempt, then a backoff on the clock
        store.down = False
        clock.advance(timedelta(seconds=1))
        assert await rt.client.get_handle("w") == "x"


async def test_poll_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        durable.Runtime(Registry(), store=MemoryStore(), poll_interval=0)


async def test_a_runtime_client_used_after_the_runtime_stopped_still_starts() -> None:
    """The runtime's client outlives it: a start after exit writes the run and rings the
    bell for the next runtime (it used to fail with a closed internal stream)."""
    store = MemoryStore()
    reg = Registry()

    @reg.workflow
    async def hello(ctx: WorkflowContext, name: str) -> str:
        return f"hello {name}"

    async with durable.Runtime(reg, store=store, clock=MockClock(auto_advance=True)) as rt:
        client = rt.client
    handle = await client.start(hello, "late", instance_id="late")
    async with durable.Runtime(reg, store=store, clock=MockClock(auto_advance=True)) as rt2:
        assert await rt2.client.get_handle("late").result() == "hello late"
    assert await handle.result() == "hello late"
