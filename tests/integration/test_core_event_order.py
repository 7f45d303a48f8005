"""One sender's events reach the run in the order sent (issue 13: the simulation's
event-order and hang kinds).

An event reaches a run either handed over at once, in memory, or read from the
instance's inbox. Each race below made a later event from one sender overtake an older
one through the other way. Races are forced with a store wrapper that pauses one chosen
call; time flows through a MockClock advanced by hand, so nothing sleeps."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

import durable
from durable import Fleet
from durable._errors import StoreError
from durable._log._records import inbox_prefix
from durable.store import MemoryStore

sys.path.insert(0, str(Path(__file__).parent))
from test_core_inbox_fleet import HookStore, registry, run_clock

pytestmark = pytest.mark.anyio


async def test_a_message_sent_while_a_load_reads_the_inbox_keeps_its_place() -> None:
    """Found by the simulation (seed 24): a message announced while a load of the
    evicted instance was reading its inbox waited for a load of its own, and the next
    message, announced once the first load had put the instance in memory, was handed
    over at once, ahead of it."""
    inner, clock = MemoryStore(), durable.MockClock()
    store = HookStore(inner)
    async with durable.Runtime(registry(), store=store, clock=clock) as rt:
        handle = await rt.start("collect", 3, instance_id="c")
        await anyio.wait_all_tasks_blocked()
        clock.advance(timedelta(minutes=16))  # waiting past its eviction TTL: evicted
        await anyio.wait_all_tasks_blocked()
        assert not rt._engine.is_resident("c")
        reading, listed_again = anyio.Event(), anyio.Event()
        release_read, release_list = anyio.Event(), anyio.Event()
        lists = 0

        async def hold(op: str, key: str) -> None:
            nonlocal lists
            if op == "get" and key.startswith(inbox_prefix("c") + "/") and not reading.is_set():
                reading.set()  # the load listed the inbox (message 1 alone) and reads it
                await release_read.wait()
            if op == "list" and key == inbox_prefix("c"):
                lists += 1
                if lists == 2:  # the next read of the inbox, after the load
                    listed_again.set()
                    await release_list.wait()

        store.hook = hold
        async with anyio.create_task_group() as tg:
            tg.start_soon(handle.raise_event, "e", 1)  # evicted: a load begins
            await reading.wait()
            await handle.raise_event("e", 2)  # written after the load listed the inbox
            release_read.set()
            await listed_again.wait()  # the load is done: "c" is in memory
            await handle.raise_event("e", 3)
            await anyio.wait_all_tasks_blocked()
            release_list.set()
        store.hook = None
        await run_clock(clock, 3)
        assert await handle.result() == [1, 2, 3]


@pytest.mark.parametrize("resident", [True, False], ids=["resident", "evicted"])
async def test_one_senders_events_keep_their_order_across_a_lapsed_lease(resident: bool) -> None:
    """The runtime's client raises 1 while the partition's lease has lapsed (it goes to
    the inbox, the bell rung), then 2 once the lease is renewed (handed over at once).
    Evicted (suspected in issue 13, proved): the load that 2 began queued 2 before it
    read the inbox, so 1 came after it. Resident (found by the simulation): the
    instance stayed in memory through the lapse and took 2 at once, while 1 waited in
    its inbox for the next poll."""
    inner, clock = MemoryStore(), durable.MockClock()
    store = HookStore(inner)
    one = Fleet(partitions=1, lease_ttl=timedelta(seconds=15), owner="a")
    async with durable.Runtime(
        registry(), store=store, clock=clock, fleet=one,
        max_resident_workflows=None if resident else 0,
    ) as rt:  # fmt: skip
        await anyio.wait_all_tasks_blocked()
        handle = await rt.start("collect", 2, instance_id="c")
        await anyio.wait_all_tasks_blocked()
        assert rt._engine.is_resident("c") is resident

        async def lease_writes_fail(op: str, key: str) -> None:
            if key.startswith("leases/"):
                raise StoreError(f"injected: {op} {key}", key=key, transient=True)

        store.hook = lease_writes_fail
        await run_clock(clock, 15)
        assert rt.partitions == []
        await handle.raise_event("e", 1)  # not owned here: to the inbox, bell rung
        gate = anyio.Event()

        async def hold_recovery_and_polls(op: str, key: str) -> None:
            if op == "list" and (key == "instances" or key.startswith("wakeups/")):
                await gate.wait()

        store.hook = hold_recovery_and_polls
        for _ in range(10):
            if rt.partitions == [0]:
                break
            await run_clock(clock, 1)
        assert rt.partitions == [0]
        await handle.raise_event("e", 2)  # owned again: delivered at once
        await anyio.wait_all_tasks_blocked()
        gate.set()
        store.hook = None
        await run_clock(clock, 3)
        assert await handle.result() == [1, 2]


async def test_a_suspend_sent_to_a_suspended_run_is_not_kept_for_after_the_resume() -> None:
    """Found by the simulation (seed 2, once one sender's events kept their order): a
    suspend that reached a run already suspended was held like any event, so the
    resume released it and the run was suspended again, for ever (a parked instance,
    which applies control messages without the code, resumed it)."""
    clock = durable.MockClock()
    async with durable.Runtime(registry(), store=MemoryStore(), clock=clock) as rt:
        handle = await rt.start("collect", 1, instance_id="c")
        await handle.suspend("one")
        await handle.suspend("two")
        await run_clock(clock, 1)
        await handle.resume()
        await handle.raise_event("e", 1)
        await run_clock(clock, 1)
        state = await handle.describe()
        assert state.status == durable.WorkflowStatus.COMPLETED, state
        assert await handle.result() == [1]


async def test_a_load_waiting_for_room_gets_in_when_a_queued_turn_is_dropped() -> None:
    """Found by the simulation (seed 579, once a lapsed lease let go of the partition's
    instances): under ``max_resident_workflows``, a load waits for room while a turn is
    queued; the queued instance was let go of before its turn ran, and the skipped turn
    did not let the waiting load in, so it waited for ever and its event never arrived."""
    inner, clock = MemoryStore(), durable.MockClock()
    store = HookStore(inner)
    outside = durable.Client(inner, clock=clock)  # another process: it rings wakeups
    async with durable.Runtime(
        registry(), store=store, clock=clock, max_resident_workflows=0,
        max_concurrent_workflows=1,
    ) as rt:  # fmt: skip
        handles = {i: await rt.start("collect", 1, instance_id=i) for i in "cab"}
        await anyio.wait_all_tasks_blocked()
        assert not any(rt._engine.is_resident(i) for i in "cab")
        committing, release = anyio.Event(), anyio.Event()

        async def hold_the_turn_of_c(op: str, key: str) -> None:
            if op == "put_if_absent" and key.startswith("instances/c/log/"):
                committing.set()
                await release.wait()

        store.hook = hold_the_turn_of_c
        async with anyio.create_task_group() as tg:
            tg.start_soon(handles["c"].raise_event, "e", 1)
            await committing.wait()  # the one turn worker is busy with c
            await outside.get_handle("a").raise_event("e", 2)
            await run_clock(clock, 2)  # a wakeup loads a: queued behind c's turn
            assert rt._engine.local("a") is not None
            await handles["b"].raise_event("e", 3)  # b's load waits for room
            await anyio.wait_all_tasks_blocked()
            rt._engine.forget("a")  # let go of (as a lapsed lease does) while queued
            release.set()
        store.hook = None
        await run_clock(clock, 3)
        state = await outside.get_handle("b").describe()
        assert state.status == durable.WorkflowStatus.COMPLETED, state
