"""Cancellation through the public API, on memory:// and file://, on a MockClock:
``DurableFuture.cancel()``, ``ctx.any(cancel_rest=True)``, ``WorkflowHandle.cancel``,
``on_parent_close`` and ``terminate(recursive=)``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from _semantics import runtime_fixture, store_fixture  # noqa: F401 (fixtures)

import durable
import durable.testing
from durable import ActivityContext, MockClock, Registry, WorkflowContext, WorkflowStatus
from durable._core._events import ActivityCompleted, TaskCancelled

pytestmark = pytest.mark.anyio

SECOND = timedelta(seconds=1)


async def test_cancelling_a_running_activity(runtime: Callable[..., Any]) -> None:
    """future.cancel() on a running activity: awaiting it raises CancelledError, the
    attempt is cancelled at its await, the cancel is in history and the run replays."""
    registry = Registry()
    stopped: list[bool] = []

    @registry.activity
    async def hang(ctx: ActivityContext) -> str:
        try:
            await ctx.cancelled.wait()
        finally:
            stopped.append(ctx.cancelled.is_set())
        return "never applied"

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> str:
        future = ctx.call_activity(hang)
        await ctx.sleep(SECOND)
        assert future.cancel()
        assert not future.cancel()  # once is enough
        try:
            await future
        except durable.CancelledError:
            return "cancelled"
        return "not cancelled"

    async with runtime(registry) as rt:
        handle = await rt.start(flow)
        assert await handle == "cancelled"
        history = await handle.history()
        await rt.wait_idle()
    assert stopped == [True]
    assert [type(e) for e in history if isinstance(e, TaskCancelled)] == [TaskCancelled]
    assert not [e for e in history if isinstance(e, ActivityCompleted)]
    durable.testing.Replayer(registry).check(history)


async def test_a_cancelled_activity_result_is_never_applied(runtime: Callable[..., Any]) -> None:
    """An activity that finishes after the workflow cancelled it (it ignores its cancel
    signal) has its result dropped: the workflow sees CancelledError only."""
    registry = Registry()
    release = anyio.Event()
    started = anyio.Event()

    @registry.activity
    async def stubborn(ctx: ActivityContext) -> str:
        started.set()
        with anyio.CancelScope(shield=True):
            await release.wait()
        return "late"

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> list[str]:
        future = ctx.call_activity(stubborn)
        await ctx.wait_for_event("stop")
        future.cancel()
        seen = []
        try:
            seen.append(await future)
        except durable.CancelledError:
            seen.append("cancelled")
        await ctx.wait_for_event("finish")
        return seen

    async with runtime(registry) as rt:
        handle = await rt.start(flow)
        await started.wait()
        await handle.raise_event("stop")
        release.set()
        await rt.wait_idle()
        await handle.raise_event("finish")
        assert await handle == ["cancelled"]
        history = await handle.history()
    assert not [e for e in history if isinstance(e, ActivityCompleted)]


async def test_cancelling_a_timer_and_an_event_wait(runtime: Callable[..., Any]) -> None:
    """A timer and an event wait, cancelled, raise CancelledError; an event that comes
    later stays for the next wait."""
    registry = Registry()

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> list[str]:
        timer = ctx.sleep(timedelta(days=30))
        waiting = ctx.wait_for_event("go", timeout=timedelta(days=1))
        seen = [str(timer.cancel()), str(waiting.cancel())]
        for future in (timer, waiting):
            try:
                await future
            except durable.CancelledError:
                seen.append("cancelled")
        seen.append(await ctx.wait_for_event("go"))
        return seen

    async with runtime(registry) as rt:
        handle = await rt.start(flow)
        await handle.raise_event("go", "event")
        assert await handle == ["True", "True", "cancelled", "cancelled", "event"]
        history = await handle.history()
    durable.testing.Replayer(registry).check(history)


async def test_any_cancel_rest_cancels_the_losers(runtime: Callable[..., Any]) -> None:
    """ctx.any(..., cancel_rest=True) cancels the tasks that did not finish first; by
    default they go on running."""
    registry = Registry()
    cancelled: list[str] = []

    @registry.activity
    async def slow(ctx: ActivityContext, name: str) -> str:
        try:
            await ctx.cancelled.wait()
        finally:
            cancelled.append(name)
        return name

    @registry.activity
    async def fast(ctx: ActivityContext) -> str:
        return "fast"

    @registry.workflow
    async def flow(ctx: WorkflowContext, cancel_rest: bool) -> list[str]:
        loser = ctx.call_activity(slow, "loser")
        timer = ctx.sleep(timedelta(hours=1))
        winner = await ctx.any([ctx.call_activity(fast), loser, timer], cancel_rest=cancel_rest)
        return [await winner, str(loser.done()), str(timer.done())]

    async with runtime(registry) as rt:
        assert await (await rt.start(flow, True)) == ["fast", "True", "True"]
        await rt.wait_idle()
        assert cancelled == ["loser"]
        # without cancel_rest the loser runs on until its workflow ends
        assert await (await rt.start(flow, False)) == ["fast", "False", "False"]


async def test_cancelling_a_workflow_lets_it_clean_up(runtime: Callable[..., Any]) -> None:
    """handle.cancel(): the workflow gets CancelledError at its current await, runs a
    clean-up activity, re-raises, and ends CANCELED; the activity it waited on stops."""
    registry = Registry()
    log: list[str] = []

    @registry.activity
    async def work(ctx: ActivityContext) -> None:
        try:
            await ctx.cancelled.wait()
        finally:
            log.append("work stopped")

    @registry.activity
    async def undo(ctx: ActivityContext) -> None:
        log.append("undone")

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> None:
        try:
            await ctx.call_activity(work)
        except durable.CancelledError:
            await ctx.call_activity(undo)
            raise

    async with runtime(registry) as rt:
        handle = await rt.start(flow)
        await rt.wait_idle()
        await handle.cancel("changed my mind")
        with pytest.raises(durable.WorkflowFailed) as caught:
            await handle
        state = await handle.describe()
        history = await handle.history()
    assert state.status is WorkflowStatus.CANCELED
    assert caught.value.failure.type == "durable.CancelledError"
    assert log == ["work stopped", "undone"]
    durable.testing.Replayer(registry).check(history)


async def test_a_workflow_may_finish_normally_after_a_cancel(
    runtime: Callable[..., Any],
) -> None:
    """A workflow that catches the CancelledError and returns ends COMPLETED."""
    registry = Registry()

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> str:
        try:
            await ctx.wait_for_event("never")
        except durable.CancelledError:
            return "stopped politely"
        return "event"

    async with runtime(registry) as rt:
        handle = await rt.start(flow)
        await rt.wait_idle()
        await handle.cancel()
        assert await handle == "stopped politely"
        assert (await handle.describe()).status is WorkflowStatus.COMPLETED


@pytest.mark.parametrize(
    ("policy", "child_status"),
    [
        ("terminate", WorkflowStatus.TERMINATED),
        ("cancel", WorkflowStatus.CANCELED),
        ("abandon", WorkflowStatus.RUNNING),
    ],
)
async def test_on_parent_close(
    runtime: Callable[..., Any], policy: str, child_status: WorkflowStatus
) -> None:
    """A child still running when its parent returns follows on_parent_close:
    terminated, cancelled or left running."""
    registry = Registry()

    @registry.workflow
    async def child(ctx: WorkflowContext) -> None:
        await ctx.wait_for_event("never")

    @registry.workflow
    async def parent(ctx: WorkflowContext, policy: str) -> str:
        ctx.call_workflow(child, instance_id="kid", on_parent_close=policy)  # type: ignore[arg-type]
        await ctx.sleep(SECOND)
        return "parent done"

    async with runtime(registry) as rt:
        assert await (await rt.start(parent, policy)) == "parent done"
        kid = rt.client.get_handle("kid")
        if child_status.is_terminal:
            with pytest.raises(durable.WorkflowFailed):
                await kid
        else:
            await rt.wait_idle()
        assert (await kid.describe()).status is child_status


async def test_terminate_recursive(runtime: Callable[..., Any]) -> None:
    """terminate() ends the whole tree of children by default; recursive=False leaves
    the children running."""
    registry = Registry()

    @registry.workflow
    async def leaf(ctx: WorkflowContext) -> None:
        await ctx.wait_for_event("never")

    @registry.workflow
    async def root(ctx: WorkflowContext, tag: str) -> None:
        await ctx.call_workflow(leaf, instance_id=f"leaf-{tag}")

    async with runtime(registry) as rt:
        deep = await rt.start(root, "a", instance_id="root-a")
        shallow = await rt.start(root, "b", instance_id="root-b")
        await rt.wait_idle()
        await deep.terminate("stop everything")
        await shallow.terminate("stop the root", recursive=False)
        for handle in (deep, shallow, rt.client.get_handle("leaf-a")):
            with pytest.raises(durable.WorkflowFailed):
                await handle
        await rt.wait_idle()
        states = {
            i: (await rt.client.get_handle(i).describe()).status for i in ("leaf-a", "leaf-b")
        }
    assert states == {"leaf-a": WorkflowStatus.TERMINATED, "leaf-b": WorkflowStatus.RUNNING}


async def test_cancelling_a_child_future_cancels_the_child(runtime: Callable[..., Any]) -> None:
    """future.cancel() on a sub-workflow asks the child to cancel: it ends CANCELED and
    the parent's await raises CancelledError."""
    registry = Registry()

    @registry.workflow
    async def child(ctx: WorkflowContext) -> None:
        await ctx.wait_for_event("never")

    @registry.workflow
    async def parent(ctx: WorkflowContext) -> str:
        future = ctx.call_workflow(child, instance_id="kid")
        await ctx.sleep(SECOND)
        future.cancel()
        try:
            await future
        except durable.CancelledError:
            return "cancelled"
        return "finished"

    async with runtime(registry) as rt:
        assert await (await rt.start(parent)) == "cancelled"
        with pytest.raises(durable.WorkflowFailed):
            await rt.client.get_handle("kid")
        assert (await rt.client.get_handle("kid").describe()).status is WorkflowStatus.CANCELED


async def test_bad_on_parent_close_is_refused(runtime: Callable[..., Any]) -> None:
    """An unknown on_parent_close is an InvalidArgumentError at the call."""
    registry = Registry()

    @registry.workflow
    async def child(ctx: WorkflowContext) -> None:
        return None

    @registry.workflow
    async def parent(ctx: WorkflowContext) -> str:
        try:
            ctx.call_workflow(child, on_parent_close="explode")  # type: ignore[arg-type]
        except durable.InvalidArgumentError as err:
            return str(err)
        return "accepted"

    async with runtime(registry) as rt:
        answer = await (await rt.start(parent))
    assert answer == "on_parent_close must be one of terminate, cancel, abandon, not 'explode'"


async def test_cli_cancel(tmp_path: Path) -> None:
    """``durable cancel ID`` asks a workflow to cancel; the runtime that runs it ends it
    CANCELED."""
    registry = Registry()

    @registry.workflow
    async def waits(ctx: WorkflowContext) -> None:
        await ctx.wait_for_event("never")

    url = f"file://{tmp_path / 'store'}"
    async with durable.Client(url, registry=registry) as client:
        await client.start(waits, instance_id="stuck")
    done = await anyio.run_process(
        [sys.executable, "-m", "durable", "cancel", "stuck", "--store", url, "--reason", "cli"],
        check=False,
    )
    assert done.returncode == 0, done.stderr
    async with durable.Runtime(registry, store=url, clock=MockClock(auto_advance=True)) as rt:
        with pytest.raises(durable.WorkflowFailed):
            await rt.client.get_handle("stuck")
        state = await rt.client.get_handle("stuck").describe()
    assert state.status is WorkflowStatus.CANCELED


@pytest.mark.parametrize("recursive", [True, False])
async def test_the_sidecar_maps_terminate_recursive(recursive: bool) -> None:
    """The Durable Task TerminateRequest's ``recursive`` reaches terminate (it was
    ignored: every terminate through the sidecar ended the children)."""
    from durable.grpc import _management as mgmt
    from durable.grpc._proto import ms

    calls: list[dict[str, Any]] = []

    class Handle:
        async def terminate(self, reason: str, output: Any, *, recursive: bool) -> None:
            calls.append({"reason": reason, "recursive": recursive})

    class StubClient:
        def get_handle(self, instance_id: str) -> Handle:
            return Handle()

    request = ms.TerminateRequest(instanceId="wf-1", recursive=recursive)
    await mgmt.terminate_instance(StubClient(), request.SerializeToString())  # type: ignore[arg-type]
    assert calls == [{"reason": "terminated by a client", "recursive": recursive}]
