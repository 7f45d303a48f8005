"""Gaps of cancellation (issue 15, part B review): a sub-workflow's cancel committed by
its parent just before a crash. The crash is forced: the store
freezes right after the parent's record that cancels the child is written, and the
process is stopped there."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from _semantics import runtime_fixture, store_fixture  # noqa: F401 (fixtures)

import durable
from durable import Registry, WorkflowContext, WorkflowStatus
from durable.store import ObjectStore

pytestmark = pytest.mark.anyio

registry = Registry()


@registry.workflow
async def child(ctx: WorkflowContext) -> str:
    await ctx.wait_for_event("never")
    return "done"


@registry.workflow
async def parent(ctx: WorkflowContext) -> str:
    call = ctx.call_workflow(child, instance_id="kid", on_parent_close="abandon")
    await ctx.wait_for_event("cancel it")
    call.cancel()
    await ctx.wait_for_event("end")
    return "ended"


class Freezing:
    """The store, until ``freeze()``: from then on every call waits forever (the process
    is gone, as far as the store can tell)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.frozen = False
        self.url = store.url

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.store, name)
        if not callable(call) or name == "close":
            return call

        async def wrapped(*args: Any) -> Any:
            if self.frozen:
                await anyio.sleep_forever()
            result = await call(*args)
            key = args[0] if args else ""
            cancels = name == "put_if_absent" and b"task_cancelled" in args[1]
            if cancels and key.startswith("instances/p/log/"):
                self.frozen = True  # the cancel is committed: nothing more lands
            return result

        return wrapped


async def test_a_cancel_committed_before_a_crash_reaches_the_child(store: ObjectStore) -> None:
    """Bug: the parent's turn that cancels its sub-workflow committed, then the process
    died before the child recorded the cancel (it was handed over in memory). A
    restarted runtime found the cancel in the parent's history, the operation closed,
    and never told the child again: the child ran on. The order is now in the parent's
    record and posted through its outbox, again after a restart."""
    clock = durable.MockClock(auto_advance=True)
    freezing = Freezing(store)
    with anyio.CancelScope() as crash:
        async with durable.Runtime(registry, store=freezing, clock=clock) as rt:  # type: ignore[arg-type]
            handle = await rt.start(parent, instance_id="p")
            await rt.wait_idle()
            await handle.raise_event("cancel it")
            while not freezing.frozen:
                await anyio.lowlevel.checkpoint()
            crash.cancel()
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        await rt.wait_idle()
        kid = rt.client.get_handle("kid")
        assert (await kid.describe()).status is WorkflowStatus.CANCELED
