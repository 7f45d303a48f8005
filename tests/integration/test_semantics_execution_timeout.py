"""The workflow execution timeout through the public API, on memory:// and file://, on
a MockClock that skips to it: ``start(..., execution_timeout=)``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from _semantics import runtime_fixture, store_fixture  # noqa: F401 (fixtures)

import durable
import durable.testing
from durable import Registry, WorkflowContext, WorkflowStatus
from durable._core._events import ExecutionTimedOut

pytestmark = pytest.mark.anyio

HOUR = timedelta(hours=1)


async def test_a_run_past_its_execution_timeout_fails(runtime: Callable[..., Any]) -> None:
    """A run still going when its execution_timeout passes ends FAILED with
    durable.TimeoutError, at the deadline; its history replays."""
    registry = Registry()

    @registry.workflow
    async def slow(ctx: WorkflowContext) -> str:
        await ctx.sleep(48 * HOUR)
        return "done"

    async with runtime(registry) as rt:
        handle = await rt.start(slow, execution_timeout=24 * HOUR)
        with pytest.raises(durable.WorkflowFailed) as caught:
            await handle
        state = await handle.describe()
        history = await handle.history()
    assert state.status is WorkflowStatus.FAILED
    assert caught.value.failure.type == "durable.TimeoutError"
    assert "execution_timeout" in caught.value.failure.message
    timed_out = [e for e in history if isinstance(e, ExecutionTimedOut)]
    assert timed_out[0].timestamp - history[0].timestamp == 24 * HOUR
    durable.testing.Replayer(registry).check(history)


async def test_the_timeout_bounds_continue_as_new_successors(
    runtime: Callable[..., Any],
) -> None:
    """A workflow that continues as new every hour is stopped by the execution_timeout
    of its start, in whichever run is current then."""
    registry = Registry()

    @registry.workflow
    async def loop(ctx: WorkflowContext, n: int) -> None:
        await ctx.sleep(HOUR)
        ctx.continue_as_new(n + 1)

    async with runtime(registry) as rt:
        handle = await rt.start(loop, 0, execution_timeout=5 * HOUR + timedelta(minutes=30))
        with pytest.raises(durable.WorkflowFailed) as caught:
            await handle
        state = await handle.describe()
    assert caught.value.failure.type == "durable.TimeoutError"
    assert state.input == 5  # the sixth run was current when the time ran out


async def test_a_run_that_ends_in_time_is_not_touched(runtime: Callable[..., Any]) -> None:
    """A run that ends before its deadline completes; a later start under the same id
    (reuse, no timeout) is not bound by the earlier start's deadline."""
    registry = Registry()

    @registry.workflow
    async def nap(ctx: WorkflowContext, hours: int) -> int:
        await ctx.sleep(hours * HOUR)
        return hours

    async with runtime(registry) as rt:
        first = await rt.start(nap, 1, instance_id="n", execution_timeout=2 * HOUR)
        assert await first == 1
        again = await rt.start(nap, 5, instance_id="n", reuse=True)
        assert await again == 5


@pytest.mark.parametrize(
    ("policy", "child_status"),
    [("terminate", WorkflowStatus.TERMINATED), ("abandon", WorkflowStatus.RUNNING)],
)
async def test_children_follow_their_policy_when_the_parent_times_out(
    runtime: Callable[..., Any], policy: str, child_status: WorkflowStatus
) -> None:
    """The children of a run that timed out follow their on_parent_close."""
    registry = Registry()

    @registry.workflow
    async def child(ctx: WorkflowContext) -> None:
        await ctx.wait_for_event("never")

    @registry.workflow
    async def parent(ctx: WorkflowContext, policy: str) -> None:
        await ctx.call_workflow(child, instance_id="kid", on_parent_close=policy)  # type: ignore[arg-type]

    async with runtime(registry) as rt:
        handle = await rt.start(parent, policy, execution_timeout=HOUR)
        with pytest.raises(durable.WorkflowFailed):
            await handle
        await rt.wait_idle()
        assert (await rt.client.get_handle("kid").describe()).status is child_status


@pytest.mark.parametrize("bad", [timedelta(0), timedelta(seconds=-1)])
async def test_a_timeout_that_is_not_positive_is_refused(
    runtime: Callable[..., Any], bad: timedelta
) -> None:
    """execution_timeout <= 0 is an InvalidArgumentError before anything is written."""
    registry = Registry()

    @registry.workflow
    async def noop(ctx: WorkflowContext) -> None:
        return None

    async with runtime(registry) as rt:
        with pytest.raises(durable.InvalidArgumentError, match="execution_timeout"):
            await rt.start(noop, instance_id="never", execution_timeout=bad)
        with pytest.raises(durable.InstanceNotFoundError):
            await rt.client.get_handle("never").describe()
