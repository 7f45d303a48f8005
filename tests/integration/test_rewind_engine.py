"""Rewind (issue 14): a FAILED instance runs on as a new run, its failed activities and
sub-workflows run again, its successful ones keep their results; through nested
sub-workflows, twice in a row, with a purged sub-workflow; recorded in the log so that
every replay agrees."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

import durable
from durable import ActivityContext, MockClock, Registry, WorkflowContext, WorkflowStatus
from durable._core._events import (
    ActivityErrored,
    HistoryEvent,
    WorkflowErrored,
    WorkflowRewound,
    WorkflowStarted,
)
from durable._errors import InstanceExistsError
from durable._log._records import log_key
from durable.store import MemoryStore, ObjectStore
from durable.testing import Replayer

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Flaky:
    """Which steps still fail (each a number of times), and every call made."""

    def __init__(self, **fails: int) -> None:
        self.fails = dict(fails)
        self.calls: list[str] = []

    def count(self, name: str) -> int:
        return self.calls.count(name)


def registry_for(flaky: Flaky) -> Registry:
    """``flow``: a, b, c in turn; ``handled``: x caught, then y, z; ``top`` -> ``mid`` ->
    ``leaf``, each with an activity of its own before it calls the next; ``gate``: a,
    then waits for "go"; ``outer``: starts ``inner`` (which waits for "finish", abandoned
    if ``outer`` ends first), runs b, then takes inner's result; ``holder``: the same
    with its child terminated if it ends first."""
    registry = Registry()

    @registry.activity
    async def step(ctx: ActivityContext, name: str) -> str:
        flaky.calls.append(name)
        if flaky.fails.get(name, 0) > 0:
            flaky.fails[name] -= 1
            raise RuntimeError(f"{name} fails on purpose")
        return name.upper()

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> list[str]:
        return [await ctx.call_activity(step, n) for n in ("a", "b", "c")]

    @registry.workflow
    async def handled(ctx: WorkflowContext) -> list[str]:
        try:
            first = await ctx.call_activity(step, "x")
        except durable.ActivityFailed:
            first = "x-failed"
        return [first, await ctx.call_activity(step, "y"), await ctx.call_activity(step, "z")]

    @registry.workflow
    async def leaf(ctx: WorkflowContext) -> list[str]:
        return [await ctx.call_activity(step, "leaf1"), await ctx.call_activity(step, "leaf2")]

    @registry.workflow
    async def mid(ctx: WorkflowContext) -> list[Any]:
        own = await ctx.call_activity(step, "mid1")
        return [own, await ctx.call_workflow(leaf, instance_id="leaf")]

    @registry.workflow
    async def top(ctx: WorkflowContext) -> list[Any]:
        own = await ctx.call_activity(step, "top1")
        return [own, await ctx.call_workflow(mid, instance_id="mid")]

    @registry.workflow
    async def gate(ctx: WorkflowContext) -> list[str]:
        return [await ctx.call_activity(step, "a"), await ctx.wait_for_event("go")]

    @registry.workflow
    async def inner(ctx: WorkflowContext) -> str:
        return f"inner {await ctx.wait_for_event('finish')}"

    @registry.workflow
    async def outer(ctx: WorkflowContext) -> list[str]:
        child = ctx.call_workflow(inner, instance_id="inner", on_parent_close="abandon")
        return [await ctx.call_activity(step, "b"), await child]

    @registry.workflow
    async def retried(ctx: WorkflowContext) -> list[str]:
        policy = durable.RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=1))
        return [await ctx.call_activity(step, "r", retry=policy)]

    @registry.workflow
    async def holder(ctx: WorkflowContext) -> list[str]:
        child = ctx.call_workflow(inner, instance_id="held")  # terminated when holder ends
        return [await ctx.call_activity(step, "b"), await child]

    return registry


@asynccontextmanager
async def runtime(
    registry: Registry, store: ObjectStore | None = None, **options: Any
) -> AsyncIterator[durable.Runtime]:
    """A runtime that keeps no run in memory between turns: every turn replays the log."""
    options.setdefault("max_resident_workflows", 0)
    clock = MockClock(T0, auto_advance=True)
    async with durable.Runtime(
        registry, store=store or MemoryStore(), clock=clock, **options
    ) as rt:
        yield rt


async def failed(handle: durable.WorkflowHandle[Any]) -> None:
    """Wait for the instance to end, FAILED."""
    with anyio.fail_after(10), pytest.raises(durable.WorkflowFailed):
        await handle.result()
    assert (await handle.describe()).status is WorkflowStatus.FAILED


async def result(handle: durable.WorkflowHandle[Any]) -> Any:
    with anyio.fail_after(10):
        return await handle.result()


def rewinds(history: list[HistoryEvent]) -> list[WorkflowRewound]:
    return [e for e in history if isinstance(e, WorkflowRewound)]


async def test_a_rewind_runs_the_failed_activity_again_and_keeps_the_rest() -> None:
    """b failed the run: the rewind runs b again (once), not a; the run completes, its
    history records the rewind, holds no failure, and replays against the code."""
    flaky = Flaky(b=1)
    registry = registry_for(flaky)
    async with runtime(registry) as rt:
        handle = await rt.start("flow", instance_id="f")
        await failed(handle)
        assert flaky.calls == ["a", "b"]
        await handle.rewind("b is fixed")
        assert await result(handle) == ["A", "B", "C"]
        history = await handle.history()
    assert flaky.calls == ["a", "b", "b", "c"]
    assert [(m.reason, bool(m.run_id)) for m in rewinds(history)] == [("b is fixed", True)]
    assert not [e for e in history if isinstance(e, ActivityErrored | WorkflowErrored)]
    assert [e.event_id for e in history] == list(range(len(history)))
    Replayer(registry).check(history)


async def test_a_rewind_is_a_new_run_that_keeps_the_failed_runs_seed() -> None:
    """The rewound run has its own run id (answers to the failed run never reach it),
    the failed run's seed (replayed values stay the same) and names the run it rewinds."""
    flaky = Flaky(b=1)
    async with runtime(registry_for(flaky)) as rt:
        handle = await rt.start("flow", instance_id="f")
        await failed(handle)
        before = (await handle.history())[0]
        await rt.client.rewind("f")
        await result(handle)
        after = (await handle.history())[0]
    assert isinstance(before, WorkflowStarted)
    assert isinstance(after, WorkflowStarted)
    assert after.run_id != before.run_id
    assert after.replay_seed == before.replay_seed
    assert after.rewinds == (before.run_id,)
    assert after.step_base == before.step_base  # the failed step keeps its memo


async def test_a_rewind_twice_in_a_row() -> None:
    """b fails twice: the first rewind fails again at b, the second completes; a and c
    run once each, and the history (a rewind of a rewind) replays."""
    flaky = Flaky(b=2)
    registry = registry_for(flaky)
    async with runtime(registry) as rt:
        handle = await rt.start("flow", instance_id="f")
        await failed(handle)
        await handle.rewind("once")
        await failed(handle)
        await handle.rewind("twice")
        assert await result(handle) == ["A", "B", "C"]
        history = await handle.history()
    assert flaky.calls == ["a", "b", "b", "b", "c"]
    assert [m.reason for m in rewinds(history)] == ["once", "twice"]
    started = history[0]
    assert isinstance(started, WorkflowStarted)
    assert len(started.rewinds) == 2
    Replayer(registry).check(history)


async def test_a_failure_the_code_handled_stays() -> None:
    """x failed and the code went on from it (to y, then z, which failed the run): the
    rewind keeps x's failure (the code's later steps depend on it) and runs z again."""
    flaky = Flaky(x=1, z=1)
    registry = registry_for(flaky)
    async with runtime(registry) as rt:
        handle = await rt.start("handled", instance_id="h")
        await failed(handle)
        await handle.rewind()
        assert await result(handle) == ["x-failed", "Y", "Z"]
        history = await handle.history()
    assert flaky.calls == ["x", "y", "z", "z"]
    Replayer(registry).check(history)


async def test_a_rewind_goes_through_nested_sub_workflows() -> None:
    """leaf2 failed leaf, which failed mid, which failed top. Rewinding top rewinds mid
    and leaf (each a run that keeps its history, not a new start): only leaf2 runs
    again, and each level's history records its rewind and replays."""
    flaky = Flaky(leaf2=1)
    registry = registry_for(flaky)
    async with runtime(registry) as rt:
        handle = await rt.start("top", instance_id="top")
        await failed(handle)
        assert flaky.calls == ["top1", "mid1", "leaf1", "leaf2"]
        await handle.rewind("leaf2 is fixed")
        assert await result(handle) == ["TOP1", ["MID1", ["LEAF1", "LEAF2"]]]
        histories = {i: await rt.client.get_handle(i).history() for i in ("top", "mid", "leaf")}
    assert flaky.calls == ["top1", "mid1", "leaf1", "leaf2", "leaf2"]
    for instance_id, history in histories.items():
        assert len(rewinds(history)) == 1, instance_id
        Replayer(registry).check(history)
    assert rewinds(histories["mid"])[0].reason == "its parent 'top' was rewound"


async def test_a_rewind_of_the_parent_twice_rewinds_the_children_twice() -> None:
    """leaf2 fails twice: the tree is rewound twice, and each child twice with it."""
    flaky = Flaky(leaf2=2)
    async with runtime(registry_for(flaky)) as rt:
        handle = await rt.start("top", instance_id="top")
        await failed(handle)
        await handle.rewind()
        await failed(handle)
        await handle.rewind()
        assert await result(handle) == ["TOP1", ["MID1", ["LEAF1", "LEAF2"]]]
        leaf = await rt.client.get_handle("leaf").history()
    assert flaky.calls == ["top1", "mid1", "leaf1", "leaf2", "leaf2", "leaf2"]
    assert len(rewinds(leaf)) == 2


async def test_a_rewind_starts_a_purged_sub_workflow_anew() -> None:
    """The failed leaf was purged before its tree was rewound: mid's call starts it
    anew from its input (so leaf1 runs again: its result went with the purge), and
    the tree completes."""
    flaky = Flaky(leaf2=1)
    registry = registry_for(flaky)
    async with runtime(registry) as rt:
        handle = await rt.start("top", instance_id="top")
        await failed(handle)
        await rt.client.purge("leaf")
        await handle.rewind()
        assert await result(handle) == ["TOP1", ["MID1", ["LEAF1", "LEAF2"]]]
        leaf = await rt.client.get_handle("leaf").history()
        mid = await rt.client.get_handle("mid").history()
    assert flaky.calls == ["top1", "mid1", "leaf1", "leaf2", "leaf1", "leaf2"]
    assert not rewinds(leaf)  # a new start, not a rewind
    assert len(rewinds(mid)) == 1
    Replayer(registry).check(mid)


async def test_only_a_failed_instance_is_rewound() -> None:
    """A COMPLETED or a running instance is refused (InstanceStatusError, nothing
    written); an unknown one is not found."""
    flaky = Flaky()
    async with runtime(registry_for(flaky)) as rt:
        handle = await rt.start("flow", instance_id="f")
        await result(handle)
        log = await rt.client.store.list("instances/f/log")
        with pytest.raises(durable.InstanceStatusError, match="COMPLETED"):
            await handle.rewind()
        with pytest.raises(durable.InstanceNotFoundError):
            await rt.client.rewind("nobody")
        assert await rt.client.store.list("instances/f/log") == log
        waiting = await rt.start("gate", instance_id="g")
        await rt.wait_idle()
        with pytest.raises(durable.InstanceStatusError, match="RUNNING"):
            await waiting.rewind()


async def test_a_rewind_written_by_a_client_without_a_runtime() -> None:
    """A client with no engine writes the rewind; the next runtime on the store finds
    the run and finishes it."""
    store = MemoryStore()
    flaky = Flaky(b=1)
    registry = registry_for(flaky)
    async with runtime(registry, store) as rt:
        await failed(await rt.start("flow", instance_id="f"))
    outside = durable.Client(store, clock=MockClock(T0))
    await outside.rewind("f", "from outside")
    assert (await outside.get_handle("f").describe()).status is WorkflowStatus.PENDING
    async with runtime(registry, store) as rt:
        assert await result(rt.client.get_handle("f")) == ["A", "B", "C"]
    assert flaky.calls == ["a", "b", "b", "c"]


class PauseRewindWrite(MemoryStore):
    """Holds the first put-if-absent of ``key`` (once set) until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.key = ""
        self.held = anyio.Event()
        self.go = anyio.Event()

    async def put_if_absent(self, key: str, data: bytes) -> str:
        if key == self.key and not self.held.is_set():
            self.held.set()
            await self.go.wait()
        return await super().put_if_absent(key, data)


async def test_two_rewinds_at_once_make_one_run() -> None:
    """Two clients rewind the same failed run at once: the log's put-if-absent lets one
    write the new run; the other is told the instance exists, and nothing runs twice."""
    flaky = Flaky(b=1)
    store = PauseRewindWrite()
    lost: list[Exception] = []

    async def first(client: durable.Client) -> None:
        try:
            await client.rewind("f", "first")
        except InstanceExistsError as err:
            lost.append(err)

    async with runtime(registry_for(flaky), store) as rt:
        handle = await rt.start("flow", instance_id="f")
        await failed(handle)
        store.key = log_key("f", len(await store.list("instances/f/log")))
        other = durable.Client(store, clock=rt.client.clock)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(first, other)
                await store.held.wait()
                second = await rt.client.rewind("f", "second")
                store.go.set()
            assert await result(second) == ["A", "B", "C"]
        history = await handle.history()
    assert len(lost) == 1
    assert [m.reason for m in rewinds(history)] == ["second"]
    assert flaky.calls == ["a", "b", "b", "c"]


async def test_an_event_sent_to_the_failed_instance_is_not_the_rewound_runs() -> None:
    """ "go" raised while the instance was FAILED is for that run, which had ended: the
    rewound run (a new start) does not take it; one raised after the rewind it does."""
    flaky = Flaky(a=1)
    async with runtime(registry_for(flaky)) as rt:
        handle = await rt.start("gate", instance_id="g")
        await failed(handle)
        await handle.raise_event("go", "early")
        await handle.rewind()
        await rt.wait_idle()
        assert (await handle.describe()).status is WorkflowStatus.RUNNING
        await handle.raise_event("go", "late")
        assert await result(handle) == ["A", "late"]


async def test_a_child_that_completed_after_its_parent_failed_gives_the_rewind_its_result() -> None:
    """b failed outer while inner (abandoned on outer's end) still waited; inner then
    completed. The rewind of outer runs b again and takes inner's result: inner is not
    started again."""
    flaky = Flaky(b=1)
    registry = registry_for(flaky)
    async with runtime(registry) as rt:
        handle = await rt.start("outer", instance_id="o")
        await failed(handle)
        kid = rt.client.get_handle("inner")
        await kid.raise_event("finish", "done")
        assert await result(kid) == "inner done"
        await handle.rewind()
        assert await result(handle) == ["B", "inner done"]
        inner_runs = [e for e in await kid.history() if isinstance(e, WorkflowStarted)]
        history = await handle.history()
    assert len(inner_runs) == 1
    assert flaky.calls == ["b", "b"]
    Replayer(registry).check(history)


async def test_a_child_terminated_by_its_parents_failure_starts_anew() -> None:
    """b failed holder, whose end terminated its child (its ``on_parent_close``). A
    TERMINATED run cannot be rewound: the rewind of holder starts the child anew from
    its call (as the README says), and the tree completes."""
    flaky = Flaky(b=1)
    async with runtime(registry_for(flaky)) as rt:
        handle = await rt.start("holder", instance_id="h")
        await failed(handle)
        kid = rt.client.get_handle("held")
        await rt.wait_idle()
        assert (await kid.describe()).status is WorkflowStatus.TERMINATED
        before = (await kid.history())[0]
        await handle.rewind()
        await rt.wait_idle()
        await kid.raise_event("finish", "anew")
        assert await result(handle) == ["B", "inner anew"]
        history = await kid.history()
    assert isinstance(before, WorkflowStarted)
    assert isinstance(history[0], WorkflowStarted)
    assert history[0].run_id != before.run_id
    assert not rewinds(history)


async def test_a_step_out_of_retries_runs_its_last_attempt_again_once() -> None:
    """r failed both attempts its policy allows: the rewind runs the last attempt again,
    once (the retry history before it stays, as the code went on from it); a second
    failure then fails the run again, and another rewind runs it once more."""
    flaky = Flaky(r=3)
    registry = registry_for(flaky)
    async with runtime(registry) as rt:
        handle = await rt.start("retried", instance_id="r")
        await failed(handle)
        assert flaky.count("r") == 2
        await handle.rewind()
        await failed(handle)
        assert flaky.count("r") == 3
        await handle.rewind()
        assert await result(handle) == ["R"]
        history = await handle.history()
    assert flaky.count("r") == 4
    Replayer(registry).check(history)
