"""A child ends in process B while its parent runs in process A, and B stops before the
parent's inbox message is written. The child's meta must not say it ended until the
parent was told, so the child's next owner, seeing an unfinished meta over a finished
log, tells the parent itself. (Found in review: the parent used to wait forever.)"""

from __future__ import annotations

import re
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import anyio
import pytest

import durable
from durable import Fleet, WorkflowContext
from durable._fleet._partitions import partition_of
from durable.store import MemoryStore, ObjectStore

pytestmark = pytest.mark.anyio

TTL = timedelta(seconds=9)
RENEW = timedelta(seconds=3)
N = 2


class SlowInbox:
    """B's view of the store: a PUT into an inbox is slow (never returns here)."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner
        self.never_suspends = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def put(self, key: str, data: bytes) -> str:
        if re.match(r"instances/[^/]+/inbox/", key):
            await anyio.sleep_forever()
        return await self._inner.put(key, data)


def registry() -> durable.Registry:
    reg = durable.Registry()

    @reg.workflow
    async def child(ctx: WorkflowContext, n: int) -> int:
        return n + 1

    @reg.workflow
    async def parent(ctx: WorkflowContext, child_id: str) -> int:
        return await ctx.call_workflow(child, 1, instance_id=child_id)

    return reg


def fleet(owner: str) -> Fleet:
    return Fleet(partitions=N, lease_ttl=TTL, renew_interval=RENEW, owner=owner)


def id_in(partition: int, prefix: str) -> str:
    n = 0
    while partition_of(f"{prefix}-{n}", N) != partition:
        n += 1
    return f"{prefix}-{n}"


async def step(clock: durable.MockClock, n: int) -> None:
    for _ in range(n):
        await anyio.wait_all_tasks_blocked()
        clock.advance(RENEW)
    await anyio.wait_all_tasks_blocked()


async def test_a_child_result_reaches_its_parent_when_the_childs_process_stops_first() -> None:
    store, clock = MemoryStore(), durable.MockClock()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            durable.Runtime(registry(), store=store, clock=clock, fleet=fleet("a"))
        )
        b = durable.Runtime(registry(), store=SlowInbox(store), clock=clock, fleet=fleet("b"))
        await b.__aenter__()
        await step(clock, 4)
        assert len(a.partitions) == len(b.partitions) == 1
        parent_id = id_in(a.partitions[0], "parent")
        child_id = id_in(b.partitions[0], "child")
        await a.start("parent", child_id, instance_id=parent_id)
        await step(clock, 2)
        child_meta = await b.client.get_handle(child_id).describe()
        assert str(child_meta.status).endswith("COMPLETED")
        await b.__aexit__(None, None, None)  # clean stop while _post is in flight
        await step(clock, 10)  # a takes b's partition, recovers it
        assert len(a.partitions) == 2
        state = await a.client.get_handle(parent_id).describe()
        assert str(state.status).endswith("COMPLETED"), f"parent stuck: {state.status}"
