"""Several runtimes on one store: partitions by lease, balance, messages across
partitions, and a stale owner that must not commit. In one process, on a shared
MockClock advanced by hand, so lease expiry is exact and nothing sleeps."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import anyio
import pytest

import durable
from durable import ActivityContext, Fleet, WorkflowContext
from durable._engine import EngineHooks
from durable._fleet._partitions import partition_of
from durable.store import MemoryStore, ObjectStore

pytestmark = pytest.mark.anyio

TTL = timedelta(seconds=9)
RENEW = timedelta(seconds=3)
N = 8


async def settle(condition: Callable[[], bool], what: str, limit: float = 20.0) -> None:
    """Let the runtimes run (no clock movement) until ``condition`` holds."""
    with anyio.fail_after(limit):
        while not condition():
            await anyio.wait_all_tasks_blocked()
    assert condition(), what


async def advance_until(
    clock: durable.MockClock, condition: Callable[[], bool], what: str, steps: int = 40
) -> None:
    """Advance the clock a renewal interval at a time until ``condition`` holds."""
    for _ in range(steps):
        await anyio.wait_all_tasks_blocked()
        if condition():
            return
        clock.advance(RENEW)
    await anyio.wait_all_tasks_blocked()
    assert condition(), what


def registry(tag: str, ran: dict[str, list[str]]) -> durable.Registry:
    """A workflow of two steps; each step records which process ran it."""
    reg = durable.Registry()

    @reg.activity
    async def double(ctx: ActivityContext, n: int) -> int:
        ran[ctx.instance_id].append(tag)
        return 2 * n

    @reg.workflow
    async def twice(ctx: WorkflowContext, n: int) -> int:
        return await ctx.call_activity(double, await ctx.call_activity(double, n))

    @reg.workflow
    async def child(ctx: WorkflowContext, n: int) -> int:
        return n + 1

    @reg.workflow
    async def parent(ctx: WorkflowContext, child_id: str) -> list[int]:
        a = await ctx.call_workflow(child, 1, instance_id=child_id)
        b: int = await ctx.wait_for_event("go")
        return [a, b]

    return reg


def fleet(owner: str) -> Fleet:
    return Fleet(partitions=N, lease_ttl=TTL, renew_interval=RENEW, owner=owner)


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


async def outcome(clock: durable.MockClock, handle: durable.WorkflowHandle[Any]) -> Any:
    """The handle's result, advancing the clock while waiting for it."""
    box: list[Any] = []

    async def wait() -> None:
        box.append(await handle.result())

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await advance_until(clock, lambda: bool(box), f"{handle.instance_id} ends")
    return box[0]


async def test_the_partition_count_is_written_once(store: ObjectStore) -> None:
    clock = durable.MockClock()
    reg = registry("a", defaultdict(list))
    async with durable.Runtime(reg, store=store, clock=clock, fleet=fleet("a")) as rt:
        await settle(lambda: rt.partitions == list(range(N)), "a lone member takes all")
    with pytest.raises(durable.StoreConfigError, match="has 8 partitions"):
        async with durable.Runtime(reg, store=store, clock=clock, fleet=Fleet(partitions=4)):
            pass
    async with durable.Runtime(reg, store=store, clock=clock) as solo:
        assert solo.partitions == list(range(N))  # adopts the store's count


async def test_partitions_spread_over_members_and_move_when_one_leaves() -> None:
    store, clock = MemoryStore(), durable.MockClock()
    ran: dict[str, list[str]] = defaultdict(list)

    def member(name: str) -> durable.Runtime:
        return durable.Runtime(registry(name, ran), store=store, clock=clock, fleet=fleet(name))

    a, b, c = member("a"), member("b"), member("c")

    def split(*rts: durable.Runtime) -> list[int]:
        return sorted(len(rt.partitions) for rt in rts)

    async with a, c:
        await advance_until(clock, lambda: split(a, c) == [4, 4], f"two members: {split(a, c)}")
        async with b:  # joins: the others give up partitions for it
            await advance_until(
                clock, lambda: split(a, b, c) == [2, 3, 3], f"an even split: {split(a, b, c)}"
            )
            owned = [p for rt in (a, b, c) for p in rt.partitions]
            assert sorted(owned) == list(range(N))  # each partition has exactly one owner
        # b stopped cleanly: it freed its leases at once, and the others take them
        assert b.partitions == []
        await advance_until(clock, lambda: split(a, c) == [4, 4], f"taken over: {split(a, c)}")
        assert sorted(a.partitions + c.partitions) == list(range(N))


async def test_each_instance_runs_in_the_process_that_leases_its_partition() -> None:
    store, clock = MemoryStore(), durable.MockClock()
    ran: dict[str, list[str]] = defaultdict(list)
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            durable.Runtime(registry("a", ran), store=store, clock=clock, fleet=fleet("a"),
                            poll_interval=1.0)
        )  # fmt: skip
        b = await stack.enter_async_context(
            durable.Runtime(registry("b", ran), store=store, clock=clock, fleet=fleet("b"),
                            poll_interval=1.0)
        )  # fmt: skip
        await advance_until(clock, lambda: len(a.partitions) == len(b.partitions) == 4, "split")
        owner = {p: "a" for p in a.partitions} | {p: "b" for p in b.partitions}

        client = durable.Client(store, clock=clock)  # a client with no runtime of its own
        handles = [await client.start("twice", n, instance_id=f"wf-{n}") for n in range(24)]
        results = {h.instance_id: await outcome(clock, h) for h in handles}
        assert results == {f"wf-{n}": 4 * n for n in range(24)}
        for instance_id, tags in ran.items():
            expected = owner[partition_of(instance_id, N)]
            assert tags == [expected, expected], f"{instance_id} ran in {tags}"
        assert {t for tags in ran.values() for t in tags} == {"a", "b"}


async def test_children_and_events_cross_partitions_through_the_inbox() -> None:
    store, clock = MemoryStore(), durable.MockClock()
    ran: dict[str, list[str]] = defaultdict(list)
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            durable.Runtime(registry("a", ran), store=store, clock=clock, fleet=fleet("a"))
        )
        b = await stack.enter_async_context(
            durable.Runtime(registry("b", ran), store=store, clock=clock, fleet=fleet("b"))
        )
        await advance_until(clock, lambda: len(a.partitions) == len(b.partitions) == 4, "split")
        [parent_id] = ids_in(set(a.partitions), 1, "parent")
        [child_id] = ids_in(set(b.partitions), 1, "child")

        # a starts the parent; the child it creates belongs to b, which runs it, and its
        # result reaches the parent through the parent's inbox
        handle = await a.start("parent", child_id, instance_id=parent_id)
        # an event raised through the other process's client crosses over the same way
        await b.client.get_handle(parent_id).raise_event("go", 7)
        assert await outcome(clock, handle) == [2, 7]
        assert not a._engine.owns(child_id)
        assert not b._engine.owns(parent_id)
        assert a._engine.local(child_id) is None
        assert b._engine.local(parent_id) is None


class _GatedStore:
    """Delegates to a store, but holds this process's lease and heartbeat writes while
    ``paused``: a process stalled past its lease (a long GC pause, a SIGSTOP)."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner
        self.paused = False
        self.resume = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _gate(self, key: str) -> None:
        if self.paused and re.match(r"(leases|members)/", key):
            await self.resume.wait()

    async def put(self, key: str, data: bytes) -> str:
        await self._gate(key)
        return await self._inner.put(key, data)

    async def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        await self._gate(key)
        return await self._inner.put_if_match(key, data, etag)


def gated_registry(tag: str, ran: dict[str, list[str]], gate: anyio.Event) -> durable.Registry:
    """``twice`` whose steps wait for ``gate`` before they return."""
    reg = durable.Registry()

    @reg.activity
    async def double(ctx: ActivityContext, n: int) -> int:
        ran[ctx.instance_id].append(tag)
        await gate.wait()
        return 2 * n

    @reg.workflow
    async def twice(ctx: WorkflowContext, n: int) -> int:
        return await ctx.call_activity(double, await ctx.call_activity(double, n))

    return reg


async def test_a_stale_owner_cannot_commit() -> None:
    inner, clock = MemoryStore(), durable.MockClock()
    gated = _GatedStore(inner)
    ran: dict[str, list[str]] = defaultdict(list)
    release_a, release_b = anyio.Event(), anyio.Event()
    commits: dict[str, list[int]] = defaultdict(list)

    class Hooks(EngineHooks):
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def committed(self, instance_id: str, record: Any) -> None:
            commits[self.tag].append(record.seq)

    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            durable.Runtime(gated_registry("a", ran, release_a), store=gated, clock=clock,
                            fleet=fleet("a"), _hooks=Hooks("a"))
        )  # fmt: skip
        stack.callback(gated.resume.set)  # whatever happens, a can stop
        await settle(lambda: len(a.partitions) == N, "a takes every partition")
        handle = await a.start("twice", 5, instance_id="wf")
        await settle(lambda: ran["wf"] == ["a"], "a runs the first step")

        gated.paused = True  # a stalls: its renewals stop reaching the store
        b = await stack.enter_async_context(
            durable.Runtime(gated_registry("b", ran, release_b), store=inner, clock=clock,
                            fleet=fleet("b"), _hooks=Hooks("b"))
        )  # fmt: skip
        await advance_until(clock, lambda: len(b.partitions) == N, "b takes over after the TTL")
        await settle(lambda: ran["wf"] == ["a", "b"], "b re-runs the step a has in flight")

        # a's step returns while a still believes it holds the partition, and before b
        # has written the next turn: only the lease check stands between a and seq 2
        release_a.set()
        for _ in range(5):
            await anyio.wait_all_tasks_blocked()
        assert commits["a"] == [1], f"a committed after its lease ran out: {commits}"
        assert await inner.list("instances/wf/log") == [f"{s:012d}" for s in range(2)]

        release_b.set()
        assert await outcome(clock, b.client.get_handle("wf")) == 20
        assert commits["b"] == [2, 3]
        assert ran["wf"] == ["a", "b", "b"]

        gated.paused = False
        gated.resume.set()  # a wakes: its renewals fail and it lets go
        await advance_until(
            clock, lambda: a._engine.local("wf") is None, "a lets go of what it no longer runs"
        )
        assert a.partitions == []
        assert await outcome(clock, handle) == 20
        assert commits["a"] == [1]


class _FailingLeaseStore(_GatedStore):
    """Like a throttled S3 prefix: this process's lease and heartbeat writes fail with
    transient errors while ``failing``, and nothing else does."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.failing = False

    async def _gate(self, key: str) -> None:
        if self.failing and re.match(r"(leases|members)/", key):
            raise durable.StoreError(f"503 SlowDown on {key}", key=key, transient=True)


async def test_an_owner_whose_renewals_fail_hands_new_work_to_the_store() -> None:
    """Its leases lapse: it stops counting as the owner at once, so a start made through
    its runtime and a start from another client both reach the process that took over,
    instead of being kept (or their bell deleted) by one that can no longer commit."""
    inner, clock = MemoryStore(), durable.MockClock()
    failing = _FailingLeaseStore(inner)
    ran: dict[str, list[str]] = defaultdict(list)
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            durable.Runtime(registry("a", ran), store=failing, clock=clock, fleet=fleet("a"),
                            poll_interval=1.0)
        )  # fmt: skip
        await settle(lambda: len(a.partitions) == N, "a takes every partition")
        failing.failing = True  # from now on a cannot renew (nor free) its leases
        b = await stack.enter_async_context(
            durable.Runtime(registry("b", ran), store=inner, clock=clock, fleet=fleet("b"),
                            poll_interval=1.0)
        )  # fmt: skip
        await advance_until(clock, lambda: len(b.partitions) == N, "b takes over")
        assert a.partitions == []  # lapsed: not a's to run, though a could not renew

        through_a = await a.start("twice", 5, instance_id="x")
        outside = durable.Client(inner, clock=clock)
        from_outside = await outside.start("twice", 6, instance_id="y")
        assert await outcome(clock, through_a) == 20
        assert await outcome(clock, from_outside) == 24
        assert ran["x"] == ["b", "b"]
        assert ran["y"] == ["b", "b"]
        failing.failing = False


async def test_two_processes_given_one_owner_name_never_share_a_partition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A misconfiguration: two live processes run as the same owner. Each lease is held
    by one of them (a lease is the owner's name and its incarnation), every workflow
    still runs, and the mistake is logged."""
    store, clock = MemoryStore(), durable.MockClock()
    ran: dict[str, list[str]] = defaultdict(list)
    one = durable.Runtime(registry("one", ran), store=store, clock=clock, fleet=fleet("twin"))
    two = durable.Runtime(registry("two", ran), store=store, clock=clock, fleet=fleet("twin"))
    async with one:
        await settle(lambda: one.partitions == list(range(N)), "the first takes all")
        async with two:
            for _ in range(6):  # rounds of both: the second must not take what is held
                clock.advance(RENEW)
                await anyio.wait_all_tasks_blocked()
                assert not set(one.partitions) & set(two.partitions)
            assert two.partitions == []  # nothing expired: nothing free to take
            handles = [await two.start("twice", n) for n in range(8)]
            assert [await outcome(clock, h) for h in handles] == [4 * n for n in range(8)]
    assert "another live process runs as fleet owner 'twin'" in caplog.text


async def test_a_restart_under_the_same_name_waits_for_its_old_leases() -> None:
    """A process killed and started again as the same owner is a new incarnation: it
    takes its old partitions when their leases expire, as any newcomer would."""
    store, clock = MemoryStore(), durable.MockClock()
    ran: dict[str, list[str]] = defaultdict(list)
    first = durable.Runtime(registry("a", ran), store=store, clock=clock, fleet=fleet("a"))
    await first.__aenter__()
    await settle(lambda: first.partitions == list(range(N)), "takes all")
    first._engine._leases._held.clear()  # dies without releasing (its objects stay)
    first._engine._leases.release_all = _nothing  # type: ignore[method-assign]
    await first.__aexit__(None, None, None)
    again = durable.Runtime(registry("a", ran), store=store, clock=clock, fleet=fleet("a"))
    async with again:
        await anyio.wait_all_tasks_blocked()
        assert again.partitions == []  # the old leases are still live
        await advance_until(clock, lambda: again.partitions == list(range(N)), "after expiry")


async def _nothing() -> None:
    return None
