"""Gaps of events between instances closed (issue 15, part B review): a sender whose
sent events are not posted yet cannot be purged (its log is what posts them again after
a crash). Races forced by a store wrapper, on a MockClock."""

from __future__ import annotations

from typing import Any

import pytest
from _semantics import runtime_fixture, store_fixture  # noqa: F401 (fixtures)

import durable
from durable import Registry, WorkflowContext
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
