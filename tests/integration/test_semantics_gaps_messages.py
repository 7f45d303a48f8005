"""Gaps of events between instances (issue 15, part B review): a sender whose sent
events are not posted yet cannot be purged (its log is what posts them again after a
crash); start_with_event racing the end of the run. Races forced by wrappers that
pause a call, on a MockClock."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import pytest
from _semantics import runtime_fixture, store_fixture  # noqa: F401 (fixtures)

import durable
from durable import Registry, WorkflowContext
from durable._core._events import EventRaised
from durable.store import ObjectStore

pytestmark = pytest.mark.anyio

registry = Registry()


@registry.workflow
async def sender(ctx: WorkflowContext) -> None:
    ctx.send_event("recv", "ping", 1)


@registry.workflow
async def receiver(ctx: WorkflowContext) -> int:
    got: int = await ctx.wait_for_event("ping")
    return got


def inbox_fails(store: ObjectStore, instance_id: str) -> list[bool]:
    """Writes to ``instance_id``'s inbox fail (transiently) while the list holds True."""
    blocked = [True]
    put = store.put
    prefix = f"instances/{instance_id}/inbox/"

    async def failing(key: str, data: bytes) -> str:
        if blocked[0] and prefix in key:
            raise durable.StoreError(f"{key}: unavailable", key=key, transient=True)
        return await put(key, data)

    store.put = failing  # type: ignore[method-assign]
    return blocked


async def test_a_sender_with_unposted_events_is_not_purged(
    runtime: Any, store: ObjectStore
) -> None:
    """Bug: a sender that had ended, its last turn's sent event not posted yet (the post
    failed, a retry pending), could be purged: that deleted the log a restart posts the
    event again from, so a crash before the retry lost the event for good. The purge is
    now refused (InstanceRunningError) until the sender's events are posted; then it
    goes through, and the receiver got its event."""
    clock = durable.MockClock()
    async with runtime(registry, clock) as rt:
        recv = await rt.start(receiver, instance_id="recv")
        await rt.wait_idle()
        blocked = inbox_fails(store, "recv")
        sent = await rt.start(sender, instance_id="send")
        await sent  # ended; its event waits for a retry
        with pytest.raises(durable.InstanceRunningError, match="not posted yet"):
            await rt.client.purge("send")
        blocked[0] = False
        for _ in range(30):  # the retries run on the clock
            clock.advance(durable.RetryPolicy().initial_interval)
            await rt.wait_idle()
        assert await recv == 1
        await rt.client.purge("send")


@registry.workflow
async def box(ctx: WorkflowContext) -> int:
    got: int = await ctx.wait_for_event("go")
    return got


async def test_start_with_event_racing_the_end_of_the_run_keeps_the_event(
    runtime: Any,
) -> None:
    """Bug: start_with_event found the instance running and sent it the event, but the
    run ended between that look and the event's write: the event went to an ended run
    and was dropped, though start_with_event returned as if delivered. Now a
    start_with_event message that reaches an ended run starts the instance again with
    it. Forced: its write waits until another event has ended the run."""
    async with runtime(registry) as rt:
        handle = await rt.start(box, instance_id="b")
        await rt.wait_idle()
        client = rt.client
        write, reached, go = client._write_message, anyio.Event(), anyio.Event()

        async def paused(instance_id: str, msg_id: str, event: Any, to: str, *rest: Any) -> Any:
            if isinstance(event, EventRaised) and bytes(event.input) == b"2":
                reached.set()  # it looked: the run was running
                await go.wait()
            return await write(instance_id, msg_id, event, to, *rest)

        client._write_message = paused  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                partial(client.start_with_event, box, instance_id="b", event="go", data=2)
            )
            await reached.wait()
            await handle.raise_event("go", 1)
            assert await handle == 1  # the run ended without the event of start_with_event
            go.set()
        await rt.wait_idle()
        assert await handle == 2  # delivered: to a run started again with it
