"""A partition dropped while ``recover()`` reads an instance's log: the instance must not
end up resident in a process that no longer owns it, so that when the partition comes
back its inbox is read again and a message waiting there is applied. (Found in review.)"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest
from msgspec import Raw

import durable
from durable import Fleet, WorkflowContext
from durable._core._events import EventRaised
from durable._log._instances import send_message
from durable.store import MemoryStore, ObjectStore

pytestmark = pytest.mark.anyio


class SlowMeta:
    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner
        self.never_suspends = False
        self.hold: anyio.Event | None = None
        self.entered = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get(self, key: str) -> bytes:
        if self.hold is not None and key.endswith("/meta"):
            self.entered.set()
            await self.hold.wait()
        return await self._inner.get(key)

    async def get_with_etag(self, key: str):
        if self.hold is not None and key.endswith("/meta"):
            self.entered.set()
            await self.hold.wait()
        return await self._inner.get_with_etag(key)


def registry() -> durable.Registry:
    reg = durable.Registry()

    @reg.workflow
    async def waiter(ctx: WorkflowContext, n: int) -> int:
        return await ctx.wait_for_event("go")

    return reg


async def test_an_instance_read_across_a_partition_drop_is_not_kept() -> None:
    inner, clock = MemoryStore(), durable.MockClock()
    slow = SlowMeta(inner)
    fleet = Fleet(
        partitions=1, lease_ttl=timedelta(seconds=9), renew_interval=timedelta(seconds=3), owner="a"
    )
    client = durable.Client(inner, clock=clock)
    async with durable.Runtime(registry(), store=slow, clock=clock, fleet=fleet) as a:
        eng = a._engine
        await anyio.wait_all_tasks_blocked()
        assert a.partitions == [0]
        await a.start("waiter", 1, instance_id="x")
        await anyio.wait_all_tasks_blocked()
        eng.forget("x")  # e.g. evicted / not yet loaded here
        slow.hold = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(eng.recover, "x")
            await slow.entered.wait()
            # the partition is lost while recover() reads the store
            held = eng._leases._held.pop(0)
            eng.drop_partitions([0])
            slow.hold.set()
            slow.hold = None
        assert not eng.owns("x")
        stale = eng.local("x")
        # meanwhile the interim owner handled x's wakeup but did not commit before it
        # lost the partition: the message sits in x's inbox, no wakeup rung
        await send_message(inner, "x", "m-1", EventRaised(name="go", input=Raw(b"7")))
        # the partition comes back to a: what take_partitions runs
        eng._leases._held[0] = held
        await eng.recover_all([0])
        for _ in range(5):
            clock.advance(timedelta(seconds=1))
            await anyio.wait_all_tasks_blocked()
        state = await client.get_handle("x").describe()
        assert stale is None, (
            f"x stayed resident after the drop; after regaining the partition its inbox "
            f"was not scanned: status {state.status}, pending {stale.pending}"
        )


async def test_without_the_race_the_waiting_message_is_applied() -> None:
    inner, clock = MemoryStore(), durable.MockClock()
    fleet = Fleet(
        partitions=1, lease_ttl=timedelta(seconds=9), renew_interval=timedelta(seconds=3), owner="a"
    )
    client = durable.Client(inner, clock=clock)
    async with durable.Runtime(registry(), store=inner, clock=clock, fleet=fleet) as a:
        eng = a._engine
        await anyio.wait_all_tasks_blocked()
        await a.start("waiter", 1, instance_id="x")
        await anyio.wait_all_tasks_blocked()
        held = eng._leases._held.pop(0)
        eng.drop_partitions([0])
        await send_message(inner, "x", "m-1", EventRaised(name="go", input=Raw(b"7")))
        eng._leases._held[0] = held
        await eng.recover_all([0])
        for _ in range(5):
            clock.advance(timedelta(seconds=1))
            await anyio.wait_all_tasks_blocked()
        state = await client.get_handle("x").describe()
        assert str(state.status).endswith("COMPLETED"), state.status
