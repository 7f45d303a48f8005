"""Every way a parent closes a sub-workflow survives a crash right after the parent's
turn that closes it committed (issue 15: the orders were handed over in memory only).
The crash is forced: the store freezes right after that record is written, and the
runtime is stopped there; a new runtime over the same store must then close the child.
On a MockClock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from _semantics import SECOND, store_fixture  # noqa: F401 (fixtures)

import durable
from durable import Registry, WorkflowContext, WorkflowStatus
from durable._core._events import WorkflowCancelRequested
from durable._errors import ObjectNotFoundError
from durable.store import ObjectStore

pytestmark = pytest.mark.anyio

registry = Registry()


@registry.workflow
async def waiter(ctx: WorkflowContext) -> str:
    await ctx.wait_for_event("never")
    return "done"


@registry.workflow
async def middle(ctx: WorkflowContext) -> None:
    await ctx.call_workflow(waiter, instance_id="leaf")


@registry.workflow
async def racing(ctx: WorkflowContext) -> str:
    call = ctx.call_workflow(waiter, instance_id="kid", on_parent_close="abandon")
    await ctx.any([call, ctx.wait_for_event("go")], cancel_rest=True)
    await ctx.wait_for_event("end")
    return "ended"


@registry.workflow
async def awaiting(ctx: WorkflowContext) -> str:
    return await ctx.call_workflow(waiter, instance_id="kid", on_parent_close="abandon")


@registry.workflow
async def leaving(ctx: WorkflowContext, policy: str) -> str:
    ctx.call_workflow(waiter, instance_id="kid", on_parent_close=policy)  # type: ignore[arg-type]
    await ctx.wait_for_event("go")
    return "left"


@registry.workflow
async def failing(ctx: WorkflowContext) -> str:
    ctx.call_workflow(waiter, instance_id="kid")
    await ctx.wait_for_event("go")
    raise ValueError("the parent fails")


@registry.workflow
async def leaving_at_once(ctx: WorkflowContext) -> str:
    ctx.call_workflow(waiter, instance_id="kid", on_parent_close="cancel")
    return "left at once"


@registry.workflow
async def tree(ctx: WorkflowContext) -> None:
    await ctx.call_workflow(middle, instance_id="mid")


@registry.workflow
async def slow(ctx: WorkflowContext) -> None:
    await ctx.call_workflow(waiter, instance_id="kid")


@registry.workflow
async def stubborn(ctx: WorkflowContext) -> int:
    """Sees a cancel, goes on, and counts the cancels its history holds at the end."""
    try:
        await ctx.wait_for_event("never")
    except durable.CancelledError:
        pass
    await ctx.wait_for_event("finish")
    return 0


@registry.workflow
async def cancelling(ctx: WorkflowContext) -> str:
    call = ctx.call_workflow(stubborn, instance_id="kid", on_parent_close="abandon")
    await ctx.wait_for_event("cancel it")
    call.cancel()
    await ctx.wait_for_event("end")
    return "ended"


class Freezing:
    """The store, until a write ``when`` accepts has landed: from then on every call
    waits forever (the process is gone, as far as the store can tell). A call on a key
    ``hold`` accepts waits forever from the start (a slow write, cut by the crash)."""

    def __init__(
        self,
        store: ObjectStore,
        when: Callable[[str, bytes], bool],
        hold: Callable[[str], bool] = lambda key: False,
    ) -> None:
        self.store = store
        self.when = when
        self.hold = hold
        self.frozen = False
        self.url = store.url

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.store, name)
        if not callable(call) or name == "close":
            return call

        async def wrapped(*args: Any) -> Any:
            if self.frozen or (name.startswith("put") and self.hold(args[0])):
                await anyio.sleep_forever()
            result = await call(*args)
            if name.startswith("put") and self.when(args[0], args[1]):
                self.frozen = True  # it landed: nothing more does
            return result

        return wrapped


def record_of(instance_id: str, *marks: bytes) -> Callable[[str, bytes], bool]:
    """A write of a turn record of ``instance_id`` holding one of ``marks``."""

    def match(key: str, data: bytes) -> bool:
        return key.startswith(f"instances/{instance_id}/log/") and any(m in data for m in marks)

    return match


def ended(status: str) -> bytes:
    return f'"status":"{status}"'.encode()


async def crash_when(
    store: ObjectStore,
    clock: durable.MockClock,
    when: Callable[[str, bytes], bool],
    act: Callable[[durable.Runtime], Awaitable[None]],
    hold: Callable[[str], bool] = lambda key: False,
) -> None:
    """Run ``act`` on a runtime over ``store`` until the write ``when`` accepts lands,
    then stop that runtime there (a crash); writes ``hold`` accepts never land."""
    freezing = Freezing(store, when, hold)

    async def run() -> None:
        async with durable.Runtime(registry, store=freezing, clock=clock) as rt:  # type: ignore[arg-type]
            await act(rt)
            await anyio.sleep_forever()

    with anyio.CancelScope() as crash:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            for _ in range(100_000):
                if freezing.frozen:
                    crash.cancel()
                await anyio.lowlevel.checkpoint()
            pytest.fail("the write to crash after never came")


async def status_after_restart(
    store: ObjectStore, clock: durable.MockClock, instance_id: str
) -> WorkflowStatus:
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        await rt.wait_idle()
        return (await rt.client.get_handle(instance_id).describe()).status


async def test_cancel_rest_committed_before_a_crash_reaches_the_child(
    store: ObjectStore,
) -> None:
    """Bug: ctx.any(..., cancel_rest=True) cancelled a losing sub-workflow in a turn that
    committed just before a crash: the child never heard, and ran on."""
    clock = durable.MockClock(auto_advance=True)

    async def act(rt: durable.Runtime) -> None:
        handle = await rt.start(racing, instance_id="p")
        await rt.wait_idle()
        await handle.raise_event("go")

    await crash_when(store, clock, record_of("p", b"task_cancelled"), act)
    assert await status_after_restart(store, clock, "kid") is WorkflowStatus.CANCELED


async def test_a_cancelled_parent_cancels_the_child_it_awaits_across_a_crash(
    store: ObjectStore,
) -> None:
    """Bug: WorkflowHandle.cancel() on a parent awaiting a sub-workflow cancels that
    call, and the parent ends CANCELED; a crash right after that turn's commit lost the
    child's cancel."""
    clock = durable.MockClock(auto_advance=True)

    async def act(rt: durable.Runtime) -> None:
        handle = await rt.start(awaiting, instance_id="p")
        await rt.wait_idle()
        await handle.cancel("stop")

    await crash_when(store, clock, record_of("p", b"task_cancelled", ended("CANCELED")), act)
    assert await status_after_restart(store, clock, "kid") is WorkflowStatus.CANCELED


@pytest.mark.parametrize(
    ("policy", "child_status"),
    [("terminate", WorkflowStatus.TERMINATED), ("cancel", WorkflowStatus.CANCELED)],
)
async def test_on_parent_close_survives_a_crash_at_the_parents_end(
    store: ObjectStore, policy: str, child_status: WorkflowStatus
) -> None:
    """Bug: a parent that returned with a sub-workflow still running, its end committed
    just before a crash: the child never followed its on_parent_close policy."""
    clock = durable.MockClock(auto_advance=True)

    async def act(rt: durable.Runtime) -> None:
        handle = await rt.start(leaving, policy, instance_id="p")
        await rt.wait_idle()
        await handle.raise_event("go")

    await crash_when(store, clock, record_of("p", ended("COMPLETED")), act)
    assert await status_after_restart(store, clock, "kid") is child_status


async def test_a_failed_parent_terminates_its_child_across_a_crash(store: ObjectStore) -> None:
    """Bug: a parent that failed (default policy: terminate), its end committed just
    before a crash: the child ran on."""
    clock = durable.MockClock(auto_advance=True)

    async def act(rt: durable.Runtime) -> None:
        handle = await rt.start(failing, instance_id="p")
        await rt.wait_idle()
        await handle.raise_event("go")

    await crash_when(store, clock, record_of("p", ended("FAILED")), act)
    assert await status_after_restart(store, clock, "kid") is WorkflowStatus.TERMINATED


async def test_a_recursive_terminate_reaches_the_whole_tree_across_crashes(
    store: ObjectStore,
) -> None:
    """Bug: terminate(recursive=True) of a root, committed just before a crash, never
    reached its child, nor (a crash after the child's terminate) its grandchild."""
    clock = durable.MockClock(auto_advance=True)

    async def act(rt: durable.Runtime) -> None:
        handle = await rt.start(tree, instance_id="root")
        await rt.wait_idle()
        await handle.terminate("stop everything")

    await crash_when(store, clock, record_of("root", ended("TERMINATED")), act)

    async def restart(rt: durable.Runtime) -> None:
        await rt.wait_idle()

    await crash_when(store, clock, record_of("mid", ended("TERMINATED")), restart)
    assert await status_after_restart(store, clock, "mid") is WorkflowStatus.TERMINATED
    assert await status_after_restart(store, clock, "leaf") is WorkflowStatus.TERMINATED


async def test_an_execution_timeout_closes_the_child_across_a_crash(store: ObjectStore) -> None:
    """Bug: a parent failed by its execution_timeout, that end committed just before a
    crash: its child (policy terminate) ran on."""
    clock = durable.MockClock()

    async def act(rt: durable.Runtime) -> None:
        await rt.start(slow, instance_id="p", execution_timeout=timedelta(minutes=5))
        await rt.wait_idle()
        clock.advance(timedelta(minutes=6))

    await crash_when(store, clock, record_of("p", ended("FAILED")), act)
    assert await status_after_restart(store, clock, "kid") is WorkflowStatus.TERMINATED


async def test_a_child_started_by_the_last_turn_still_follows_the_policy(
    store: ObjectStore,
) -> None:
    """A parent whose very last turn starts a sub-workflow (on_parent_close="cancel")
    and returns: the child, begun after the order was posted to its inbox, still ends
    CANCELED; also with a crash right after the child's start was written."""
    clock = durable.MockClock(auto_advance=True)
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        await rt.start(leaving_at_once, instance_id="p1")
        await rt.wait_idle()
        with pytest.raises(durable.WorkflowFailed):
            await rt.client.get_handle("kid").result()
        assert (await rt.client.get_handle("kid").describe()).status is WorkflowStatus.CANCELED
        await rt.client.purge("kid")
        await rt.client.purge("p1")

    async def act(rt: durable.Runtime) -> None:
        await rt.start(leaving_at_once, instance_id="p")

    await crash_when(store, clock, record_of("kid", b"workflow_started"), act)
    assert await status_after_restart(store, clock, "kid") is WorkflowStatus.CANCELED


async def test_an_order_posted_again_after_a_crash_is_applied_once(store: ObjectStore) -> None:
    """A crash after the child applied its parent's cancel, before the parent noted
    the order posted: the restart posts it again, under the same message id, and the
    child applies it once (one cancel in its history)."""
    clock = durable.MockClock(auto_advance=True)

    async def act(rt: durable.Runtime) -> None:
        handle = await rt.start(cancelling, instance_id="p")
        await rt.wait_idle()
        await handle.raise_event("cancel it")

    cancelled = [False]  # the parent's turn that cancels the child landed

    def when(key: str, data: bytes) -> bool:
        cancelled[0] = cancelled[0] or record_of("p", b"task_cancelled")(key, data)
        return record_of("kid", b"workflow_cancel_requested")(key, data)

    def hold(key: str) -> bool:  # the parent's meta never says the order was posted
        return cancelled[0] and key == "instances/p/meta"

    await crash_when(store, clock, when, act, hold)
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        await rt.wait_idle()
        kid = rt.client.get_handle("kid")
        await kid.raise_event("finish")
        assert await kid == 0
        cancels = [e for e in await kid.history() if isinstance(e, WorkflowCancelRequested)]
    assert len(cancels) == 1


class HoldingChildStart:
    """The store; the sub-workflow's first record waits until a read of the child's log
    has found nothing after its parent's order reached the child's inbox (the read of
    the order's announcement came before the child began)."""

    def __init__(self, store: ObjectStore, child: str) -> None:
        self.store = store
        self.url = store.url
        self.first = f"instances/{child}/log/{0:012d}"
        self.inbox = f"instances/{child}/inbox/"
        self.ordered = False
        self.looked = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.store, name)
        if not callable(call) or name == "close":
            return call

        async def wrapped(*args: Any) -> Any:
            key = args[0] if args else ""
            if name == "put_if_absent" and key == self.first:
                await self.looked.wait()
            try:
                result = await call(*args)
            except ObjectNotFoundError:
                if key == self.first and self.ordered:
                    self.looked.set()
                raise
            if name == "put" and key.startswith(self.inbox):
                self.ordered = True
            return result

        return wrapped


async def test_an_order_posted_before_the_child_began_is_applied(store: ObjectStore) -> None:
    """Bug: a parent's order reached its sub-workflow's inbox before the child's first
    record was written (the parent's last turn started the child and ended): its
    announcement found no child to load, and the child's first run, begun afterwards,
    never read its inbox, so it ran on (and a later order, handed to it at once, passed
    the waiting one: the waiting one was then skipped as old). A sub-workflow's first
    run now reads its inbox before anything is handed to it."""
    clock = durable.MockClock(auto_advance=True)
    holding = HoldingChildStart(store, "kid")
    async with durable.Runtime(registry, store=holding, clock=clock) as rt:  # type: ignore[arg-type]
        await rt.start(leaving_at_once, instance_id="p")
        await rt.wait_idle()
        assert holding.looked.is_set()
        assert (await rt.client.get_handle("kid").describe()).status is WorkflowStatus.CANCELED
