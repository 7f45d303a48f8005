"""Search attributes (issue 16): set at start and by ``ctx.upsert_search_attributes``,
recorded in history, found by ``list_page(search=...)`` through an index in the store
that costs the instances found, repaired after a crash at any write, and deleted with
the instance by a purge or the retention sweeper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import anyio
import pytest
from test_index_active import Recording
from test_index_retention import DAYS, YEAR

import durable
from durable import MockClock, Registry, SearchAttributeError, WorkflowContext, WorkflowStatus
from durable._log._reader import load_run, read_meta
from durable._log._records import SEP
from durable._log._search import entry_keys, stored_entries
from durable.store import MemoryStore, ObjectStore

pytestmark = pytest.mark.anyio

WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def registry(stage: str = "paid") -> Registry:
    reg = Registry()

    @reg.workflow
    async def order(ctx: WorkflowContext, n: int) -> int:
        """Upserts its stage, waits, then upserts again (dropping ``n``), and ends."""
        ctx.upsert_search_attributes({"stage": stage, "n": n})
        await ctx.wait_for_event("go")
        ctx.upsert_search_attributes({"stage": "shipped", "n": None})
        return n

    @reg.workflow
    async def looper(ctx: WorkflowContext, n: int) -> int:
        """Upserts, continues as new once (keeping its attributes), upserts, ends."""
        ctx.upsert_search_attributes({"round": n})
        if n < 1:
            ctx.continue_as_new(n + 1)
        await ctx.sleep(timedelta(seconds=1))
        ctx.upsert_search_attributes({"done": True})
        return n

    @reg.workflow
    async def bad(ctx: WorkflowContext, n: int) -> str:
        try:
            ctx.upsert_search_attributes({"x": [n]})
        except SearchAttributeError as err:
            return str(err)
        return "no error"

    @reg.workflow
    async def quick(ctx: WorkflowContext, n: int) -> int:
        return n

    return reg


async def entries(store: ObjectStore) -> set[str]:
    """Every search index entry in the store, as keys."""
    return await stored_entries(store)


async def expected(store: ObjectStore) -> set[str]:
    """The entries the instances' metas name: after a drain, exactly those exist."""
    keys: set[str] = set()
    for instance_id in await store.list("instances"):
        found = await read_meta(store, instance_id)
        if found is not None:
            keys |= entry_keys(instance_id, found[0].search)
    return keys


async def ids(client: durable.Client, **search: object) -> list[str]:
    return [s.instance_id async for s in client.list(search=search, page_size=3)]


async def test_attributes_are_set_changed_found_and_shown(store: ObjectStore) -> None:
    """Issue 16: attributes given at start and upserted by the workflow are shown by
    describe() and found by equality, the old value no longer finds the instance, an
    ended instance is still found; the index holds exactly the current attributes."""
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(registry(), store=store, clock=clock) as rt:
        a = await rt.start(
            "order", 1, instance_id="a",
            search_attributes={"customer": "ada", "since": WHEN, "vip": True},
        )  # fmt: skip
        await rt.start("order", 2, instance_id="b", search_attributes={"customer": "bob"})
        await rt.start("quick", 3, instance_id="c", search_attributes={"customer": "ada"})
        with anyio.fail_after(30):
            while (await a.describe()).search_attributes.get("stage") != "paid":
                await anyio.wait_all_tasks_blocked()
        state = await a.describe()
        assert state.search_attributes == {
            "customer": "ada", "since": WHEN, "vip": True, "stage": "paid", "n": 1,
        }  # fmt: skip
        client = rt.client
        assert await ids(client, customer="ada") == ["a", "c"]
        assert await ids(client, customer="ada", vip=True) == ["a"]
        assert await ids(client, since=WHEN.astimezone(timezone(timedelta(hours=2)))) == ["a"]
        assert await ids(client, stage="paid") == ["a", "b"]
        assert await ids(client, n=1) == ["a"]
        assert await ids(client, vip=False) == []
        await a.raise_event("go", None)
        assert await a == 1
        assert (await a.describe()).search_attributes == {
            "customer": "ada", "since": WHEN, "vip": True, "stage": "shipped",
        }  # fmt: skip
        assert await ids(client, stage="paid") == ["b"]
        assert await ids(client, stage="shipped") == ["a"]
        assert await ids(client, n=1) == []
        page = await client.list_page(search={"customer": "ada"}, status="COMPLETED")
        assert [s.instance_id for s in page.items] == ["a", "c"]
    assert await entries(store) == await expected(store)


async def test_bad_names_and_values_get_a_typed_error() -> None:
    """Issue 16: a bad name or type is refused, with ``SearchAttributeError`` naming the
    attribute, at start, in a listing and in the workflow, before anything is written."""
    store = MemoryStore()
    async with durable.Runtime(registry(), store=store, clock=MockClock(auto_advance=True)) as rt:
        for bad in [{"": 1}, {"1x": 1}, {"a/b": 1}, {"x": 1.5}, {"x": None}, {"x": [1]},
                    {"x": datetime(2026, 1, 1)}, {"x": "é" * 100}, {"x": 2**63}]:  # fmt: skip
            with pytest.raises(SearchAttributeError):
                await rt.start("quick", 1, instance_id="never", search_attributes=bad)
            with pytest.raises(SearchAttributeError):
                await rt.client.list_page(search=bad)
        with pytest.raises(durable.InvalidArgumentError, match="'x'"):
            await rt.start("quick", 1, search_attributes={"x": object()})
        assert await store.list("instances") == []
        assert await (await rt.start("bad", 1)) == (
            "search attribute 'x': expected str, int, bool or datetime, got list"
        )


async def test_a_changed_upsert_on_replay_is_a_non_determinism_error() -> None:
    """Issue 16: upserts are recorded in history, so a replay by code that upserts
    something else fails the instance with ``NonDeterminismError`` naming the event."""
    store = MemoryStore()
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(registry("paid"), store=store, clock=clock) as rt:
        handle = await rt.start("order", 1, instance_id="a")
        await anyio.wait_all_tasks_blocked()
    run = await load_run(store, "a")
    assert run is not None
    upsert = next(e for e in run.history if type(e).__name__ == "SearchAttributesUpserted")
    async with durable.Runtime(registry("billed"), store=store, clock=clock) as rt:
        handle = rt.client.get_handle("a")
        await handle.raise_event("go", None)
        with pytest.raises(durable.WorkflowFailed) as failed:
            await handle
    message = str(failed.value)
    assert f"history event {upsert.event_id}" in message, message
    assert "'s:paid'" in message, message
    assert "'s:billed'" in message, message


async def test_continue_as_new_keeps_the_attributes() -> None:
    """Issue 16: a continue-as-new carries the run's attributes (with its turn's upserts)
    into the new run; its replay agrees."""
    store = MemoryStore()
    async with durable.Runtime(registry(), store=store, clock=MockClock(auto_advance=True)) as rt:
        handle = await rt.start("looper", 0, instance_id="l", search_attributes={"k": "v"})
        assert await handle == 1
        state = await handle.describe()
        assert state.search_attributes == {"k": "v", "round": 1, "done": True}
        assert await ids(rt.client, k="v") == ["l"]
        assert await ids(rt.client, round=0) == []
    assert await entries(store) == await expected(store)


async def test_a_search_reads_the_instances_found_not_all() -> None:
    """Issue 16: ``list_page(search=...)`` for 10 matching among many costs at most 30
    store requests, whatever the number of instances that do not match."""
    store = MemoryStore()
    async with durable.Runtime(registry(), store=store, clock=MockClock(auto_advance=True)) as rt:
        for i in range(300):
            customer = "ada" if i % 30 == 0 else f"c{i}"
            await rt.start("quick", i, instance_id=f"i{i:04d}",
                           search_attributes={"customer": customer})  # fmt: skip
        await anyio.wait_all_tasks_blocked()
    counted = Recording(store)
    client = durable.Client(counted)
    await client.list_page(status="RUNNING", page_size=1)  # config and markers, once
    before = sum(counted.calls.values())
    page = await client.list_page(search={"customer": "ada"})
    assert len(page.items) == 10
    assert page.next_cursor is None
    assert sum(counted.calls.values()) - before <= 30, counted.calls
    first = await client.list_page(search={"customer": "ada"}, page_size=4)
    assert first.next_cursor is not None
    with pytest.raises(durable.InvalidArgumentError):
        await client.list_page(page_size=4, cursor=first.next_cursor)
    second = await client.list_page(search={"customer": "ada"}, page_size=6,
                                    cursor=first.next_cursor)  # fmt: skip
    assert [s.instance_id for s in first.items + second.items] == [
        f"i{i:04d}" for i in range(0, 300, 30)
    ]
    assert second.next_cursor is None


async def test_purge_and_retention_delete_the_entries() -> None:
    """Issue 16: a purge, and the history sweeper, delete an instance's entries with it."""
    store = MemoryStore()
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(
        registry(), store=store, clock=clock, history_retention=DAYS, memo_sweep_interval=YEAR
    ) as rt:
        await rt.start("quick", 1, instance_id="p", search_attributes={"c": "x"})
        await rt.start("quick", 2, instance_id="s", search_attributes={"c": "x"})
        handle = await rt.start("order", 3, instance_id="r", search_attributes={"c": "x"})
        await rt.client.get_handle("p").result()
        await rt.client.get_handle("s").result()
        await anyio.wait_all_tasks_blocked()
        await rt.client.purge("p")
        assert await ids(rt.client, c="x") == ["r", "s"]
        clock.advance(timedelta(days=31))
        assert await rt.sweep_history() == 1
        assert await ids(rt.client, c="x") == ["r"]
        assert await entries(store) == await expected(store)
        assert {k.split("/")[3].partition(SEP)[0] for k in await entries(store)} == {"r"}
        await handle.raise_event("go", None)
        await handle


async def _life(rt: durable.Runtime) -> None:
    """Starts with attributes, upserts, a continue-as-new, a reuse with others, an end,
    and a start by an outside client (left for the next runtime to run)."""
    handle = await rt.start("looper", 0, instance_id="x", search_attributes={"c": "a"})
    assert await handle == 1
    handle = await rt.start("looper", 1, instance_id="x", reuse=True,
                            search_attributes={"c": "b"})  # fmt: skip
    assert await handle == 1
    client = durable.Client(rt.store, clock=rt.clock)
    await client.start("looper", 0, instance_id="y", search_attributes={"c": "a"})


async def _writes_of_a_life() -> int:
    store = Recording(MemoryStore())
    async with durable.Runtime(registry(), store=store, clock=MockClock(auto_advance=True)) as rt:
        await _life(rt)
    return store.writes


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
async def test_a_crash_at_every_write_is_repaired(after: bool) -> None:
    """Issue 16: the search index is crash-safe. A process killed at any write of a life
    with attributes (before or after the write lands) leaves, once the next runtime has
    run every instance to its end, exactly the entries of the current attributes: none
    missing (a search finds every match) and none left over."""
    total = await _writes_of_a_life()
    assert total > 30
    for at in range(total):
        inner = MemoryStore()
        crashy = Recording(inner, crash_at=at, after=after)
        clock = MockClock(auto_advance=True)
        try:
            async with durable.Runtime(registry(), store=crashy, clock=clock) as rt:
                await _life(rt)
        except BaseException:
            if not crashy.crashed:
                raise
        assert crashy.crashed, at
        async with durable.Runtime(registry(), store=inner, clock=clock) as rt:
            for instance_id in await inner.list("instances"):
                if await load_run(inner, instance_id) is not None:
                    with anyio.fail_after(30):
                        await rt.client.get_handle(instance_id).result()
            assert await entries(inner) == await expected(inner), crashy.crashed
            for value in ("a", "b"):
                want = []
                for instance_id in await inner.list("instances"):
                    state = await rt.client.get_handle(instance_id).describe()
                    if state.search_attributes.get("c") == value:
                        want.append(instance_id)
                        assert state.status is WorkflowStatus.COMPLETED
                assert await ids(rt.client, c=value) == want, crashy.crashed
