"""The engine operations under the sidecar's lifecycle calls (issue 14), through the
public Client: a start that replaces only the statuses a reuse policy lists, a
recursive purge, a rerun into a new instance with a new input for its step. Races are
forced by pausing one side at a chosen point (nothing sleeps on real time)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

import durable
from durable import MockClock, Registry, WorkflowContext, WorkflowStatus
from durable._errors import InstanceExistsError, InstanceRunningError
from durable._log import _tree
from durable.store import MemoryStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _registry() -> Registry:
    registry = Registry()

    @registry.activity
    async def shout(ctx: durable.ActivityContext, word: str) -> str:
        return word.upper()

    @registry.workflow
    async def leaf(ctx: WorkflowContext, word: str) -> str:
        if word == "bad":
            raise ValueError("bad word")
        said: str = await ctx.call_activity(shout, word)
        return said

    @registry.workflow
    async def branch(ctx: WorkflowContext, word: str) -> list[str]:
        got: list[str] = await ctx.all(
            [ctx.call_workflow(leaf, f"{word}-{i}", instance_id=f"{ctx.instance_id}-{i}")
             for i in range(2)]
        )  # fmt: skip
        return got

    @registry.workflow
    async def root(ctx: WorkflowContext, word: str) -> list[Any]:
        return [
            await ctx.call_workflow(branch, word, instance_id=f"{ctx.instance_id}-b"),
            await ctx.call_workflow(leaf, word, instance_id=f"{ctx.instance_id}-l"),
        ]

    @registry.workflow
    async def words(ctx: WorkflowContext, n: int) -> list[str]:
        return [await ctx.call_activity(shout, f"w{i}") for i in range(n)]

    return registry


async def _ended(rt: durable.Runtime, instance_id: str) -> WorkflowStatus:
    try:
        await rt.client.get_handle(instance_id).result(timeout=60)
    except Exception:
        pass
    return (await rt.client.get_handle(instance_id).describe()).status


async def _exists(client: durable.Client, instance_id: str) -> bool:
    try:
        await client.get_handle(instance_id).describe()
    except durable.InstanceNotFoundError:
        return False
    return True


async def test_a_reuse_with_statuses_replaces_only_an_instance_that_ended_so() -> None:
    """An id-reuse policy (OrchestrationIdReusePolicy) was ignored: ``reuse`` took only
    a bool. Given statuses, a start replaces an instance that ended with one of them."""
    async with durable.Runtime(_registry(), store=MemoryStore(), clock=MockClock(T0)) as rt:
        await rt.start("leaf", "bad", instance_id="x")
        assert await _ended(rt, "x") is WorkflowStatus.FAILED
        with pytest.raises(InstanceExistsError):
            await rt.start("leaf", "ok", instance_id="x", reuse={WorkflowStatus.COMPLETED})
        await rt.start("leaf", "ok", instance_id="x", reuse={WorkflowStatus.FAILED})
        assert await _ended(rt, "x") is WorkflowStatus.COMPLETED
        assert await rt.client.get_handle("x").result() == "OK"


async def test_a_recursive_purge_deletes_the_tree_and_only_it() -> None:
    """purge with recursive=True (the SDKs' default) left the sub-workflows stored. It
    deletes every ended descendant that still holds its id; a child id another
    instance has taken since stays."""
    async with durable.Runtime(_registry(), store=MemoryStore(), clock=MockClock(T0)) as rt:
        await rt.start("root", "a", instance_id="r")
        assert await _ended(rt, "r") is WorkflowStatus.COMPLETED
        # r-l is taken by an instance of its own (no parent): not r's any more
        await rt.start("leaf", "mine", instance_id="r-l", reuse=True)
        assert await _ended(rt, "r-l") is WorkflowStatus.COMPLETED
        await rt.start("words", 1, instance_id="busy")
        with pytest.raises(InstanceRunningError):  # (and a root that runs is refused)
            await rt.client.purge("busy", recursive=True)
        assert await rt.client.purge("r", recursive=True) == 4
        gone = [i for i in ("r", "r-b", "r-b-0", "r-b-1", "r-l") if not await _exists(rt.client, i)]
        assert gone == ["r", "r-b", "r-b-0", "r-b-1"]


async def test_a_recursive_purge_spares_a_child_started_again_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A recursive purge reads a child, then purges it: a start that takes the child's
    id in between and ends (here, forced there) must not be deleted with the tree."""
    store, clock = MemoryStore(), MockClock(T0)
    async with durable.Runtime(_registry(), store=store, clock=clock) as rt:
        await rt.start("root", "a", instance_id="r")
        assert await _ended(rt, "r") is WorkflowStatus.COMPLETED
        real = _tree.purge_instance
        raced = False

        async def start_first(index: Any, instance_id: str, *args: Any, **kw: Any) -> bool:
            nonlocal raced
            if instance_id == "r-l" and not raced:  # read as r's child; now taken again
                raced = True
                await rt.start("leaf", "again", instance_id="r-l", reuse=True)
                assert await _ended(rt, "r-l") is WorkflowStatus.COMPLETED  # and ended
            return await real(index, instance_id, *args, **kw)

        monkeypatch.setattr(_tree, "purge_instance", start_first)
        assert await rt.client.purge("r", recursive=True) == 4
        assert raced
        assert await _ended(rt, "r-l") is WorkflowStatus.COMPLETED
        assert await rt.client.get_handle("r-l").result() == "AGAIN"


async def test_a_rerun_into_a_new_instance_with_a_new_step_input() -> None:
    """Dapr's rerun with newInstanceID and overwriteInput was refused: durable reran in
    place only, with the step's own input. The rerun is a new instance (the source
    stays as it was), its step runs with the input given."""
    async with durable.Runtime(_registry(), store=MemoryStore(), clock=MockClock(T0)) as rt:
        await rt.start("words", 3, instance_id="src")
        assert await rt.client.get_handle("src").result() == ["W0", "W1", "W2"]
        history = await rt.client.get_handle("src").history()
        second = [e for e in history if type(e).__name__ == "ActivityScheduled"][1]
        fork = await rt.client.rerun("src", second.event_id, new_instance_id="fork",
                                     step_input="changed")  # fmt: skip
        assert fork.instance_id == "fork"
        assert await fork.result(timeout=60) == ["W0", "CHANGED", "W2"]
        assert await rt.client.get_handle("src").result() == ["W0", "W1", "W2"]
        assert len(await rt.client.get_handle("src").history()) == len(history)
        with pytest.raises(InstanceExistsError):
            await rt.client.rerun("src", second.event_id, new_instance_id="fork")
        # in place, with a new input
        again = await rt.client.rerun("src", second.event_id, step_input="other")
        assert await again.result(timeout=60) == ["W0", "OTHER", "W2"]
        # a sub-workflow is rerun only in place (a new instance would have no parent)
        await rt.start("root", "a", instance_id="r")
        assert await _ended(rt, "r") is WorkflowStatus.COMPLETED
        child = await rt.client.get_handle("r-l").history()
        step = next(e for e in child if type(e).__name__ == "ActivityScheduled")
        with pytest.raises(ValueError, match="sub-workflow"):
            await rt.client.rerun("r-l", step.event_id, new_instance_id="orphan")


async def test_the_simulation_catches_a_reuse_that_replaces_a_status_not_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole-system simulation starts instances again with a reuse limited to some
    statuses, and its ledger checks each replaced run ended with one of them: with the
    limit planted away (any ended run replaced), some seed reports it."""
    from durable._log import _instances
    from durable.testing import SystemConfig, simulate_system

    def any_ended(status: WorkflowStatus, reuse: object) -> bool:
        return status.is_terminal and reuse is not False

    monkeypatch.setattr(_instances, "replaceable", any_ended)
    for seed in range(80):
        result = await simulate_system(seed, SystemConfig(operations=60))
        if any("by a start that may replace only" in v for v in result.violations):
            return
    raise AssertionError("no seed noticed a reuse that ignores its statuses")


async def test_a_late_answer_to_a_retried_call_is_not_the_retrys_answer() -> None:
    """A Durable Task SDK retries a sub-orchestration under the same id and task id. A
    late copy of the first child's answer (told again by a recovery) reached the parent
    after the retry was scheduled, and was taken as the retry's answer: the answer
    names the scheduling it is for, and the turn takes it only for that one."""
    from durable._core._events import ChildWorkflowErrored, ChildWorkflowScheduled, WorkflowStarted
    from durable._core._failure import FailureDetails
    from durable._engine._instance import _ANY_RUN, _Instance

    async with durable.Runtime(_registry(), store=MemoryStore(), clock=MockClock(T0)) as rt:
        started = WorkflowStarted(event_id=0, timestamp=T0, name="p", run_id="run")
        inst = _Instance("p", started, T0)
        retry = ChildWorkflowScheduled(event_id=8, task_id=1, name="c", instance_id="p-c")
        inst.outstanding[1] = retry
        failed = FailureDetails("ValueError", "attempt 1")

        def answer(scheduled: int) -> Any:
            return ChildWorkflowErrored(task_id=1, failure=failed, instance_id="p-c",
                                        parent_run="run", scheduled=scheduled)  # fmt: skip

        late = [(None, _ANY_RUN, answer(2))]  # for the first scheduling, event 2
        events, _, _ = rt._engine._new_events(inst, late, 9, T0)
        assert events == []
        fresh = [(None, _ANY_RUN, answer(8))]
        events, _, _ = rt._engine._new_events(inst, fresh, 9, T0)
        assert [e.event_id for e in events] == [9]
