"""Sub-workflows across runs of their parent (reuse, rerun), and reruns that no longer
replay: issue 13, items 2 to 4, and the "child ``retry=`` ignored" mutant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

import durable
from durable import (
    ActivityContext,
    MockClock,
    Registry,
    RetryPolicy,
    WorkflowContext,
    WorkflowStatus,
)
from durable._core._events import ActivityScheduled, ChildWorkflowScheduled, WorkflowStarted
from durable._fleet._partitions import partition_of
from durable._log._instances import rerun_instance
from durable.store import MemoryStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def order_registry() -> Registry:
    """A parent ``order`` whose child ``process`` (fixed id) waits for "go"."""
    registry = Registry()

    @registry.workflow
    async def process(ctx: WorkflowContext, item: str) -> str:
        await ctx.wait_for_event("go")
        return f"processed {item}"

    @registry.workflow
    async def order(ctx: WorkflowContext, item: str) -> str:
        return await ctx.call_workflow(process, item, instance_id="order-1-process")

    return registry


async def test_a_reused_parent_gets_a_child_of_its_own_run() -> None:
    """Bug 2: a parent terminated while its child ran, then started again with
    ``reuse=True`` and new input, joined the old child and got "processed OLD"."""
    async with durable.Runtime(
        order_registry(), store=MemoryStore(), clock=MockClock(T0, auto_advance=True)
    ) as rt:
        first = await rt.start("order", "OLD", instance_id="order-1")
        await rt.wait_idle()
        await first.terminate("changed my mind")
        await rt.wait_idle()
        child = rt.client.get_handle("order-1-process")
        # the child ended with its parent: it is not left running for nobody
        assert (await child.describe()).status is WorkflowStatus.TERMINATED
        second = await rt.start("order", "NEW", instance_id="order-1", reuse=True)
        await rt.wait_idle()
        assert (await child.describe()).input == "NEW"
        await child.raise_event("go")
        assert await second.result() == "processed NEW"


async def test_a_reused_parent_replaces_a_child_still_running_from_its_old_run() -> None:
    """Bug 2: the child of the parent's previous run is still running when the new run
    starts it (its parent ended without terminating it, e.g. a log written before the
    cascade): the new run's child is a fresh one with the new input, never the old one."""
    registry = order_registry()

    @registry.workflow
    async def quick(ctx: WorkflowContext, item: str) -> str:
        await ctx.sleep(timedelta(seconds=1))  # the child's task id differs from order's
        ctx.call_workflow(  # fire and forget: it outlives its parent
            "process", item, instance_id="order-1-process", on_parent_close="abandon"
        )
        return "left it running"

    async with durable.Runtime(
        registry, store=MemoryStore(), clock=MockClock(T0, auto_advance=True)
    ) as rt:
        first = await rt.start(quick, "OLD", instance_id="order-1")
        assert await first.result() == "left it running"
        await rt.wait_idle()
        child = rt.client.get_handle("order-1-process")
        assert (await child.describe()).status is WorkflowStatus.RUNNING
        second = await rt.start("order", "NEW", instance_id="order-1", reuse=True)
        await rt.wait_idle()
        state = await child.describe()
        assert (state.status, state.input) == (WorkflowStatus.RUNNING, "NEW")
        await child.raise_event("go")
        assert await second.result() == "processed NEW"


RENEW = timedelta(seconds=3)


def fleet(owner: str) -> durable.Fleet:
    return durable.Fleet(
        partitions=2, lease_ttl=timedelta(seconds=9), renew_interval=RENEW, owner=owner
    )


def id_in(partition: int, prefix: str) -> str:
    n = 0
    while partition_of(f"{prefix}-{n}", 2) != partition:
        n += 1
    return f"{prefix}-{n}"


async def step(clock: MockClock, n: int) -> None:
    for _ in range(n):
        await anyio.wait_all_tasks_blocked()
        clock.advance(RENEW)
    await anyio.wait_all_tasks_blocked()


async def test_a_reused_parent_replaces_the_old_child_across_processes() -> None:
    """Bug 2 in a fleet: parent and child run in different processes, so the terminate,
    the old child's answer and the new child's start all go through the store."""
    registry = Registry()

    @registry.workflow
    async def process(ctx: WorkflowContext, item: str) -> str:
        await ctx.wait_for_event("go")
        return f"processed {item}"

    @registry.workflow
    async def order(ctx: WorkflowContext, args: list[str]) -> str:
        item, child_id = args
        return await ctx.call_workflow(process, item, instance_id=child_id)

    store, clock = MemoryStore(), MockClock(T0)
    async with (
        durable.Runtime(registry, store=store, clock=clock, fleet=fleet("a")) as a,
        durable.Runtime(registry, store=store, clock=clock, fleet=fleet("b")) as b,
    ):
        await step(clock, 4)
        assert len(a.partitions) == len(b.partitions) == 1
        parent_id = id_in(a.partitions[0], "order")
        child_id = id_in(b.partitions[0], "process")
        first = await a.start(order, ["OLD", child_id], instance_id=parent_id)
        await step(clock, 2)
        await first.terminate("changed my mind")
        await step(clock, 2)
        child = a.client.get_handle(child_id)
        assert (await child.describe()).status is WorkflowStatus.TERMINATED
        second = await a.start(order, ["NEW", child_id], instance_id=parent_id, reuse=True)
        await step(clock, 2)
        state = await child.describe()
        assert (state.status, state.input) == (WorkflowStatus.RUNNING, "NEW")
        await child.raise_event("go")
        await step(clock, 2)
        assert await second.result() == "processed NEW"


def flaky_child_registry(calls: list[str], fixed: list[bool]) -> Registry:
    """A parent whose child fails until ``fixed`` holds a value."""
    registry = Registry()

    @registry.activity
    async def work(ctx: ActivityContext, item: str) -> str:
        calls.append(item)
        if not fixed:
            raise RuntimeError("broken")
        return f"worked {item}"

    @registry.workflow
    async def child(ctx: WorkflowContext, item: str) -> str:
        return await ctx.call_activity(work, item)

    @registry.workflow
    async def parent(ctx: WorkflowContext, item: str) -> str:
        first = await ctx.call_activity("note", item)
        return first + " / " + await ctx.call_workflow(child, item, instance_id="p-child")

    @registry.activity
    async def note(ctx: ActivityContext, item: str) -> str:
        calls.append("note")
        return "noted"

    return registry


async def test_a_rerun_from_the_child_step_runs_the_child_again() -> None:
    """Bug 3: a rerun kept the run id, so it joined the old (failed) child and got its
    old failure without running it again."""
    calls: list[str] = []
    fixed: list[bool] = []
    registry = flaky_child_registry(calls, fixed)
    async with durable.Runtime(
        registry, store=MemoryStore(), clock=MockClock(T0, auto_advance=True)
    ) as rt:
        handle = await rt.start("parent", "x", instance_id="p")
        with pytest.raises(durable.WorkflowFailed, match="broken"):
            await handle.result()
        history = await handle.history()
        scheduled = next(e for e in history if isinstance(e, ChildWorkflowScheduled))
        old_run = next(e for e in history if isinstance(e, WorkflowStarted)).run_id
        fixed.append(True)
        again = await rt.client.rerun("p", scheduled.event_id)
        assert await again.result() == "noted / worked x"
        assert calls == ["note", "x", "x"]  # the kept step did not run again; the child did
        new_history = await again.history()
        new_run = next(e for e in new_history if isinstance(e, WorkflowStarted)).run_id
        assert new_run != old_run


def steps_registry(first: str) -> Registry:
    """``steps`` runs activity ``first`` then ``second``; ``second`` fails until fixed.
    Two registries with different ``first`` stand for the code before and after a change
    that no longer replays the old history."""
    registry = Registry()

    @registry.activity
    async def one(ctx: ActivityContext) -> str:
        return "one"

    @registry.activity
    async def other(ctx: ActivityContext) -> str:
        return "other"

    @registry.activity
    async def second(ctx: ActivityContext) -> str:
        raise RuntimeError("second broke")

    @registry.workflow
    async def steps(ctx: WorkflowContext) -> str:
        return await ctx.call_activity(first) + await ctx.call_activity(second)

    return registry


async def failed_steps(store: MemoryStore) -> int:
    """Run ``steps`` (old code) to its failure; the event id of its second step."""
    async with durable.Runtime(
        steps_registry("one"), store=store, clock=MockClock(T0, auto_advance=True)
    ) as rt:
        handle = await rt.start("steps", instance_id="s")
        with pytest.raises(durable.WorkflowFailed, match="second broke"):
            await handle.result()
        return [e for e in await handle.history() if isinstance(e, ActivityScheduled)][1].event_id


async def test_a_rerun_that_no_longer_replays_is_refused_before_writing() -> None:
    """Bug 4: a rerun whose kept history the changed code no longer replays was written
    but never queued: ``result()`` hung, and a second rerun said the instance runs. A
    client that has the code (here a runtime's) now refuses it, naming the event."""
    store = MemoryStore()
    second = await failed_steps(store)
    async with durable.Runtime(
        steps_registry("other"), store=store, clock=MockClock(T0, auto_advance=True)
    ) as rt:
        handle = rt.client.get_handle("s")
        before = await handle.history()
        with pytest.raises(durable.NonDeterminismError, match=r"history event 2 is .*'one'"):
            await rt.client.rerun("s", second)
        assert await handle.history() == before  # nothing written
        assert (await handle.describe()).status is WorkflowStatus.FAILED
        first = before[2]
        assert isinstance(first, ActivityScheduled)
        with pytest.raises(durable.WorkflowFailed, match="second broke"):
            await (await rt.client.rerun("s", first.event_id)).result()  # not stuck
    assert [e.name for e in await handle.history() if isinstance(e, ActivityScheduled)] == [
        "other",
        "second",
    ]


async def settle(rt: durable.Runtime, clock: MockClock, instance_id: str) -> None:
    """Let the runtime poll its wakeups until the instance ends (a bounded number of
    poll intervals on the MockClock)."""
    handle = rt.client.get_handle(instance_id)
    for _ in range(20):
        await rt.wait_idle()
        if (await handle.describe()).status.is_terminal:
            return
        clock.advance(timedelta(seconds=1))
    pytest.fail(f"{instance_id!r} did not end")


async def test_a_rerun_that_no_longer_replays_fails_visibly_on_a_separate_runtime() -> None:
    """Bug 4, through a client without the code on a store that a separate runtime
    runs: the runtime fails the rerun, naming the event, and a second rerun is taken."""
    store = MemoryStore()
    second = await failed_steps(store)
    clock = MockClock(T0)
    async with (
        durable.Runtime(steps_registry("other"), store=store, clock=clock) as rt,
        durable.Client(store=store, clock=clock) as client,
    ):
        again = await client.rerun("s", second)
        await settle(rt, clock, "s")
        with pytest.raises(durable.WorkflowFailed, match=r"history event 2 is .*'one'"):
            await again.result()
        again = await client.rerun("s", 2)  # from the first step: the new code runs
        await settle(rt, clock, "s")
        with pytest.raises(durable.WorkflowFailed, match="second broke"):
            await again.result()


async def test_a_rerun_announced_without_a_check_fails_visibly() -> None:
    """Bug 4, the engine's side: a rerun that no longer replays, written without a
    check and handed to the runtime in this process, was held in memory and never
    queued; now its first turn fails it, naming the event."""
    store = MemoryStore()
    second = await failed_steps(store)
    clock = MockClock(T0, auto_advance=True)
    async with durable.Runtime(steps_registry("other"), store=store, clock=clock) as rt:
        created = await rerun_instance(rt._engine.index, clock.now(), "s", second, run_id="r2")
        await rt._engine.announce_created("s", created)
        with anyio.fail_after(10), pytest.raises(durable.WorkflowFailed, match="event 2"):
            await rt.client.get_handle("s").result()


async def test_a_child_call_with_a_retry_policy_retries_a_failed_child() -> None:
    """Mutant "child ``retry=`` ignored": a sub-workflow that fails is started again,
    after the policy's delay, as ``{id}-2``; without a policy the failure is final."""
    attempts: list[str] = []
    registry = Registry()

    @registry.activity
    async def flaky(ctx: ActivityContext) -> str:
        attempts.append(ctx.instance_id)
        if len(attempts) == 1:
            raise RuntimeError("first attempt breaks")
        return "fine"

    @registry.workflow
    async def child(ctx: WorkflowContext) -> str:
        return await ctx.call_activity(flaky)

    @registry.workflow
    async def parent(ctx: WorkflowContext, retry: bool) -> tuple[str, str]:
        policy = RetryPolicy(max_attempts=2, initial_interval=timedelta(minutes=5))
        result = await ctx.call_workflow(
            child, instance_id=f"{ctx.instance_id}-kid", retry=policy if retry else None
        )
        return result, ctx.now().isoformat()

    async with durable.Runtime(
        registry, store=MemoryStore(), clock=MockClock(T0, auto_advance=True)
    ) as rt:
        handle = await rt.start(parent, True, instance_id="with-retry")
        assert await handle.result() == ("fine", (T0 + timedelta(minutes=5)).isoformat())
        assert attempts == ["with-retry-kid", "with-retry-kid-2"]
        attempts.clear()
        handle = await rt.start(parent, False, instance_id="without")
        with pytest.raises(durable.WorkflowFailed, match="first attempt breaks"):
            await handle.result()
