"""Two sidecars in one fleet on one store: each holds some partitions, runs those
instances on its own workers, and hands what its clients start or signal on the other's
partitions over through the store.

In one process, on a shared MemoryStore, with the SystemClock and short lease timings;
the test waits on the store's writes (an event per write), never on a sleep."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import timedelta

import anyio
import pytest

import durable
from durable import ActivityContext, Fleet, WorkflowContext
from durable._fleet._partitions import partition_of
from durable.grpc import RemoteClient, RemoteWorker, Sidecar
from durable.store import MemoryStore

pytestmark = pytest.mark.anyio

N = 8


class WatchedStore(MemoryStore):
    """A MemoryStore that wakes waiters on every write (leases, heartbeats, logs)."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = anyio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def put(self, key: str, data: bytes) -> str:
        etag = await super().put(key, data)
        self._notify()
        return etag

    async def put_if_absent(self, key: str, data: bytes) -> str:
        etag = await super().put_if_absent(key, data)
        self._notify()
        return etag

    async def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        new = await super().put_if_match(key, data, etag)
        self._notify()
        return new

    async def until(self, condition: Callable[[], bool], what: str, limit: float = 20) -> None:
        """Wait for writes until ``condition`` holds (lease rounds write every interval)."""
        with anyio.fail_after(limit):
            while not condition():
                await self._changed.wait()
        assert condition(), what


def registry(tag: str, ran: dict[str, set[str]]) -> durable.Registry:
    """The same workflows for every member; each step records which worker ran it."""
    reg = durable.Registry()

    @reg.activity
    async def double(ctx: ActivityContext, n: int) -> int:
        ran[ctx.instance_id].add(tag)
        return 2 * n

    @reg.workflow
    async def thrice(ctx: WorkflowContext, n: int) -> int:
        for _ in range(3):
            n = await ctx.call_activity(double, n)
        return n

    @reg.workflow
    async def waiter(ctx: WorkflowContext, n: int) -> int:
        got: int = await ctx.wait_for_event("go")
        return await ctx.call_activity(double, n + got)

    return reg


def fleet(owner: str) -> Fleet:
    return Fleet(
        partitions=N,
        lease_ttl=timedelta(seconds=5),
        renew_interval=timedelta(milliseconds=200),
        owner=owner,
    )


def ids_in(partitions: set[int], count: int, prefix: str) -> list[str]:
    """Instance ids whose partitions are among ``partitions``."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        candidate = f"{prefix}-{n}"
        if partition_of(candidate, N) in partitions:
            found.append(candidate)
        n += 1
    return found


async def test_two_sidecars_split_the_partitions_of_one_store() -> None:
    store = WatchedStore()
    ran: dict[str, set[str]] = defaultdict(set)
    a = Sidecar(store, port=0, fleet=fleet("car-a"), poll_interval=0.05)
    b = Sidecar(store, port=0, fleet=fleet("car-b"), poll_interval=0.05)
    async with AsyncExitStack() as stack:  # b's last in, first out: it stops mid-test
        await stack.enter_async_context(a)
        assert a.partitions == list(range(N))  # a lone member takes every partition
        ta = f"127.0.0.1:{a.port}"
        worker_a = await stack.enter_async_context(RemoteWorker(registry("worker-a", ran), ta))
        client_a = await stack.enter_async_context(RemoteClient(ta, poll_interval=0.02))
        b_stack = await stack.enter_async_context(AsyncExitStack())
        await b_stack.enter_async_context(b)
        await store.until(
            lambda: len(a.partitions) == len(b.partitions) == N // 2,
            f"an even split: {a.partitions} / {b.partitions}",
        )
        held_a, held_b = set(a.partitions), set(b.partitions)
        assert held_a | held_b == set(range(N))
        tb = f"127.0.0.1:{b.port}"
        worker_b = await b_stack.enter_async_context(RemoteWorker(registry("worker-b", ran), tb))
        client_b = await b_stack.enter_async_context(RemoteClient(tb, poll_interval=0.02))
        with anyio.fail_after(30):
            await worker_a.wait_connected()
            await worker_b.wait_connected()
            # through each sidecar: instances on its own partitions and the other's
            started = {}
            for client, name in ((client_a, "via-a"), (client_b, "via-b")):
                ids = ids_in(held_a, 2, f"{name}-on-a") + ids_in(held_b, 2, f"{name}-on-b")
                for n, iid in enumerate(ids, 1):
                    started[iid] = (n, await client.start("thrice", n, instance_id=iid))
            # events raised through the sidecar that does not run the instance
            (wait_b,) = ids_in(held_b, 1, "waiter-on-b")
            (wait_a,) = ids_in(held_a, 1, "waiter-on-a")
            await client_a.start("waiter", 1, instance_id=wait_b)
            await client_b.start("waiter", 2, instance_id=wait_a)
            await client_a.get_handle(wait_b).raise_event("go", 10)
            await client_b.get_handle(wait_a).raise_event("go", 20)
            for iid, (n, handle) in started.items():
                assert await handle.result() == 8 * n, iid
            assert await client_b.get_handle(wait_b).result() == 22
            assert await client_a.get_handle(wait_a).result() == 44
        # each instance ran on the worker of the sidecar that holds its partition
        assert set(ran) == {*started, wait_a, wait_b}
        for iid in ran:
            owner = "worker-a" if partition_of(iid, N) in held_a else "worker-b"
            assert ran[iid] == {owner}, (iid, ran[iid])
        # and only that sidecar sent its turns
        assert {t.instance_id for t in a.sent} == _on(held_a, ran)
        assert {t.instance_id for t in b.sent} == _on(held_b, ran)
        assert (a.partitions, b.partitions) == (sorted(held_a), sorted(held_b))

        # an instance half done on b's partition when b stops moves to a, and its worker
        (moving,) = ids_in(held_b, 1, "moving")
        await client_a.start("waiter", 3, instance_id=moving)
        await store.until(lambda: bool(b.sent) and b.sent[-1].instance_id == moving, "b ran it")
        await b_stack.aclose()  # b stops cleanly and frees its leases: a takes them
        await store.until(lambda: a.partitions == list(range(N)), f"taken: {a.partitions}")
        with anyio.fail_after(30):
            await client_a.get_handle(moving).raise_event("go", 30)
            assert await client_a.get_handle(moving).result() == 66
        assert ran[moving] == {"worker-a"}
        assert any(t.instance_id == moving for t in a.sent)


def _on(partitions: set[int], ids: dict[str, set[str]]) -> set[str]:
    return {iid for iid in ids if partition_of(iid, N) in partitions}
