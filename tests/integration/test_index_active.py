"""The active index (issue 16): start-up, recovery and lease takeover cost what runs,
not what ever ran; the index survives a crash at every write of a run's life; a store
written before the index is indexed once, by a scan that resumes after a kill."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

import durable
from durable import Fleet, MockClock, Registry, WorkflowContext
from durable._fleet._partitions import load_config
from durable._log import _active
from durable._log._active import ACTIVE, INDEXED, INDEXING, SEP, Entry, parse_key
from durable._log._reader import load_run
from durable.store import LocalStore, MemoryStore, ObjectStore

pytestmark = pytest.mark.anyio

_WRITES = ("put", "put_if_absent", "put_if_match", "delete", "delete_prefix")


class Crash(BaseException):
    """The process dies here."""


class Recording:
    """A store wrapper that counts calls and, when told, kills its process at one
    write (before or after it lands): every call after that dies too."""

    def __init__(self, inner: ObjectStore, crash_at: int | None = None, after: bool = False):
        self.inner = inner
        self.crash_at = crash_at
        self.after = after
        self.writes = 0
        self.calls: Counter[str] = Counter()
        self.keys: list[tuple[str, str]] = []
        self.crashed = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def metas_read(self) -> list[str]:
        return [k for op, k in self.keys if op.startswith("get") and k.endswith("/meta")]

    def _call(self, op: str, key: str, call: Any) -> Any:
        async def run() -> Any:
            if self.crashed:
                raise Crash(f"dead since {self.crashed}")
            self.calls[op] += 1
            self.keys.append((op, key))
            if op in _WRITES:
                number, self.writes = self.writes, self.writes + 1
                if number == self.crash_at:
                    self.crashed = f"{op} {key} ({'after' if self.after else 'before'})"
                    if self.after:
                        await call()
                    raise Crash(self.crashed)
            return await call()

        return run()

    def get(self, key: str) -> Any:
        return self._call("get", key, lambda: self.inner.get(key))

    def get_with_etag(self, key: str) -> Any:
        return self._call("get_with_etag", key, lambda: self.inner.get_with_etag(key))

    def put(self, key: str, data: bytes) -> Any:
        return self._call("put", key, lambda: self.inner.put(key, data))

    def put_if_absent(self, key: str, data: bytes) -> Any:
        return self._call("put_if_absent", key, lambda: self.inner.put_if_absent(key, data))

    def put_if_match(self, key: str, data: bytes, etag: str) -> Any:
        return self._call("put_if_match", key, lambda: self.inner.put_if_match(key, data, etag))

    def list(self, prefix: str) -> Any:
        return self._call("list", prefix, lambda: self.inner.list(prefix))

    def delete(self, key: str) -> Any:
        return self._call("delete", key, lambda: self.inner.delete(key))

    def delete_prefix(self, prefix: str) -> Any:
        return self._call("delete_prefix", prefix, lambda: self.inner.delete_prefix(prefix))

    async def close(self) -> None:
        await self.inner.close()


def registry() -> Registry:
    reg = Registry()

    @reg.workflow
    async def hopper(ctx: WorkflowContext, n: int) -> int:
        """Continues as new once, sleeps, and ends."""
        if n < 1:
            ctx.continue_as_new(n + 1)
        await ctx.sleep(timedelta(seconds=1))
        return n

    @reg.workflow
    async def waiter(ctx: WorkflowContext, n: int) -> int:
        return int(await ctx.wait_for_event("go"))

    @reg.workflow
    async def quick(ctx: WorkflowContext, n: int) -> int:
        return n

    return reg


async def entries_of(store: ObjectStore) -> dict[str, list[Entry]]:
    """Every index entry in the store, by instance."""
    found: dict[str, list[Entry]] = {}
    for partition in await store.list(ACTIVE):
        for name in await store.list(f"{ACTIVE}/{partition}"):
            keys = [f"{ACTIVE}/{partition}/{name}"]
            if SEP not in name:  # a directory of entries
                keys = [f"{keys[0]}/{n}" for n in await store.list(keys[0])]
            for instance_id, entry in filter(None, map(parse_key, keys)):
                found.setdefault(instance_id, []).append(entry)
    return found


async def unindexed(store: ObjectStore) -> list[str]:
    """The instances whose log says they have not ended, and that have no entry (for
    their current run, or one before it that recovery moves on): the index's invariant
    is that there are none."""
    entries = await entries_of(store)
    missing = []
    for instance_id in await store.list("instances"):
        run = await load_run(store, instance_id)
        if run is None or run.status.is_terminal:
            continue
        if not entries.get(instance_id):
            missing.append(instance_id)
    return missing


async def old_store(store: ObjectStore, running: int, ended: int) -> None:
    """A store as today's code leaves it: ``ended`` instances ended, ``running`` waiting
    for an event, and (after) no index at all."""
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(registry(), store=store, clock=clock) as rt:
        for i in range(ended):
            assert await (await rt.start("quick", i, instance_id=f"e{i:05d}")) == i
        for i in range(running):
            await rt.start("waiter", i, instance_id=f"r{i:05d}")
        await anyio.wait_all_tasks_blocked()
    await store.delete_prefix(ACTIVE)
    await store.delete_prefix(INDEXED)


async def test_start_up_reads_only_active_instances(
    store: ObjectStore, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Issue 16: starting a Runtime listed every instance and read the meta and next
    record of every ended one; now its requests are the same with 30 ended as with 0."""
    if isinstance(store, MemoryStore):
        empty: ObjectStore = MemoryStore()
    elif isinstance(store, LocalStore):
        empty = LocalStore(tmp_path / "zero", url=f"file://{tmp_path / 'zero'}")
    else:
        empty = request.getfixturevalue("moto_server").store()
    costs = []
    for inner, ended in ((empty, 0), (store, 30)):
        await old_store(inner, running=3, ended=ended)
        async with durable.Runtime(registry(), store=inner, clock=MockClock(auto_advance=True)):
            await anyio.wait_all_tasks_blocked()  # the one-time scan
        counted = Recording(inner)
        async with durable.Runtime(registry(), store=counted, clock=MockClock(auto_advance=True)):
            await anyio.wait_all_tasks_blocked()
        costs.append(dict(counted.calls))
        assert sorted(await entries_of(inner)) == [f"r{i:05d}" for i in range(3)]
        client = durable.Client(inner)
        for i in range(3):
            await client.get_handle(f"r{i:05d}").raise_event("go", i)
        async with durable.Runtime(registry(), store=inner, clock=MockClock(auto_advance=True)):
            for i in range(3):
                assert await client.get_handle(f"r{i:05d}").result() == i
        assert await entries_of(inner) == {}
    if empty is not store:
        await empty.close()
    assert costs[0] == costs[1]


async def test_listing_active_never_reads_an_ended_instance() -> None:
    """Issue 16: recovery made 2 GETs per ended instance; with 200 ended and 2 running,
    a start-up reads only the 2 running ones (and the store's few fixed objects)."""
    inner = MemoryStore()
    await old_store(inner, running=2, ended=200)
    async with durable.Runtime(registry(), store=inner, clock=MockClock(auto_advance=True)):
        await anyio.wait_all_tasks_blocked()  # the one-time scan reads them all, once
    counted = Recording(inner)
    async with durable.Runtime(registry(), store=counted, clock=MockClock(auto_advance=True)):
        await anyio.wait_all_tasks_blocked()
    assert sorted(counted.metas_read()) == ["instances/r00000/meta", "instances/r00001/meta"]
    assert not [k for _, k in counted.keys if k.startswith("instances/e")]


async def _life(rt: durable.Runtime) -> None:
    """A start, a continue-as-new, an end; a reuse and its end; a second instance
    started by an outside client (left for the next start to run)."""
    handle = await rt.start("hopper", 0, instance_id="x")
    assert await handle == 1
    handle = await rt.start("hopper", 1, instance_id="x", reuse=True)
    assert await handle == 1
    await durable.Client(rt.store, clock=rt.clock).start("hopper", 1, instance_id="y")


async def _writes_of_a_life() -> int:
    store = Recording(MemoryStore())
    async with durable.Runtime(registry(), store=store, clock=MockClock(auto_advance=True)) as rt:
        await _life(rt)
    return store.writes


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
async def test_a_crash_at_every_write_of_a_life_is_repaired(after: bool) -> None:
    """Issue 16: the index is crash-safe. A process killed at any write of a run's start,
    continue-as-new, end or reuse (before or after it lands) leaves every run not ended
    indexed; the next start finishes every run and leaves no entry behind."""
    total = await _writes_of_a_life()
    assert total > 20
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
        assert await unindexed(inner) == [], crashy.crashed
        async with durable.Runtime(registry(), store=inner, clock=clock) as rt:
            for instance_id in await inner.list("instances"):
                if await load_run(inner, instance_id) is not None:
                    with anyio.fail_after(30):
                        await rt.client.get_handle(instance_id).result()
        left = await entries_of(inner)
        for instance_id, entries in left.items():  # a start that died before its record
            run = await load_run(inner, instance_id)
            last_seq = -1 if run is None else run.last_seq
            assert all(e.seq > last_seq for e in entries), (crashy.crashed, left)


async def test_a_store_from_before_the_index_is_indexed_on_first_start(
    store: ObjectStore,
) -> None:
    """Issue 16, migration: a store written before the index opens, is scanned once,
    and its running instances run on."""
    await old_store(store, running=3, ended=4)
    assert await store.list(ACTIVE) == []
    async with durable.Runtime(registry(), store=store, clock=MockClock(auto_advance=True)) as rt:
        await anyio.wait_all_tasks_blocked()
        assert sorted(await entries_of(store)) == ["r00000", "r00001", "r00002"]
        assert len(await store.list(INDEXED)) == 16
        for i in range(3):
            await rt.client.get_handle(f"r{i:05d}").raise_event("go", i)
        for i in range(3):
            assert await rt.client.get_handle(f"r{i:05d}").result() == i
    assert await entries_of(store) == {}


async def test_a_migration_killed_midway_resumes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16, migration: a scan killed after a checkpoint goes on from it, not from
    the start, and still indexes everything."""
    monkeypatch.setattr(_active, "_CHECKPOINT", 4)
    monkeypatch.setattr(_active, "_BATCH", 2)
    inner = MemoryStore()
    await load_config(inner, 1)  # one partition, so its progress is easy to follow
    await old_store(inner, running=6, ended=40)
    crashy = Recording(inner, crash_at=3)  # the first writes: entries, then a checkpoint
    with pytest.raises(BaseException):  # noqa: B017 (the process dies)
        async with durable.Runtime(registry(), store=crashy, clock=MockClock(auto_advance=True)):
            await anyio.wait_all_tasks_blocked()
    assert crashy.crashed
    assert await inner.list(INDEXED) == []
    progress = await inner.get(f"{INDEXING}/0000")
    assert b'"after"' in progress
    counted = Recording(inner)
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(registry(), store=counted, clock=clock) as rt:
        await anyio.wait_all_tasks_blocked()
        assert await inner.list(INDEXED) == ["0000"]
        assert sorted(await entries_of(inner)) == [f"r{i:05d}" for i in range(6)]
        for i in range(6):
            await rt.client.get_handle(f"r{i:05d}").raise_event("go", i)
        for i in range(6):
            assert await rt.client.get_handle(f"r{i:05d}").result() == i
    assert await inner.list(INDEXING) == []
    read = counted.metas_read()  # resumed after the checkpoint: the first ones are not read
    assert "instances/e00000/meta" not in read
    assert "instances/e00039/meta" in read


async def test_lease_takeover_reads_only_active_instances() -> None:
    """Issue 16: taking a partition's lease listed it and read the meta of every
    instance in it, ended ones included; now only the active ones."""
    inner = MemoryStore()
    clock = MockClock()
    fleet = Fleet(
        partitions=2, lease_ttl=timedelta(seconds=9), renew_interval=timedelta(seconds=3),
        owner="a",
    )  # fmt: skip
    async with durable.Runtime(registry(), store=inner, clock=clock, fleet=fleet) as rt:
        await anyio.wait_all_tasks_blocked()
        for i in range(60):
            await rt.start("quick", i, instance_id=f"e{i:05d}")
        await rt.start("waiter", 1, instance_id="w")
        await anyio.wait_all_tasks_blocked()
        for i in range(60):
            assert await rt.client.get_handle(f"e{i:05d}").result() == i
    counted = Recording(inner)
    fleet_b = Fleet(
        partitions=2, lease_ttl=timedelta(seconds=9), renew_interval=timedelta(seconds=3),
        owner="b",
    )  # fmt: skip
    clock.advance(timedelta(seconds=60))  # a's leases lapsed
    async with durable.Runtime(registry(), store=counted, clock=clock, fleet=fleet_b) as rt:
        for _ in range(20):
            await anyio.wait_all_tasks_blocked()
            if len(rt.partitions) == 2 and rt._engine.local("w") is not None:
                break
            clock.advance(timedelta(seconds=1))
        assert rt._engine.local("w") is not None
    assert counted.metas_read() == ["instances/w/meta"]


async def test_a_stale_entry_of_an_ended_run_goes_at_the_next_start() -> None:
    """Issue 16: a crash after a run's meta said it ended, before its entry was
    dropped, leaves the entry; the next start reads the log and drops it."""
    inner = MemoryStore()
    async with durable.Runtime(registry(), store=inner, clock=MockClock(auto_advance=True)) as rt:
        assert await (await rt.start("quick", 1, instance_id="q")) == 1
        run = await load_run(inner, "q")
        assert run is not None
        await rt._engine.index.begin("q", run.run_start, run.started.run_id)  # as if
    assert list(await entries_of(inner)) == ["q"]
    async with durable.Runtime(registry(), store=inner, clock=MockClock(auto_advance=True)):
        await anyio.wait_all_tasks_blocked()
    assert await entries_of(inner) == {}
