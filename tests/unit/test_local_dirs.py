"""Directories on the local store (issue 18): what a start, an end and a purge cost in
``mkdir`` and ``rmdir``, which on this disk (ext4 with discard) take milliseconds each
for a directory that held files.

The active index keeps one flat object per entry beside the partition's others, so a
run's start and end make and remove no directory of their own; a store whose entries
sit in a directory per instance (written before) still opens, and recovery moves them.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import anyio
import pytest

import durable
from durable import MockClock
from durable._fleet._partitions import load_config
from durable._log._active import ACTIVE, SEP, Entry, parse_key
from durable._log._search import find, stored_entries
from durable.store import LocalStore
from durable.store._localfs import OsFiles
from tests.integration.test_index_active import entries_of, registry

pytestmark = pytest.mark.anyio


class _CountingDirs(OsFiles):
    """The operating system's calls, noting every directory made or removed."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[str] = []
        self.removed: list[str] = []

    def makedirs(self, path: str) -> None:
        self.made.append(path)
        super().makedirs(path)

    def rmdir(self, path: str) -> None:
        super().rmdir(path)
        self.removed.append(path)  # only those it did remove


def _index_keys(root: str) -> list[str]:
    """Every object under ``active/``, as keys."""
    found = []
    for directory, _, files in os.walk(f"{root}/{ACTIVE}"):
        found += [os.path.relpath(f"{directory}/{f}", root) for f in files if f[0] != "."]
    return sorted(found)


async def test_a_run_s_start_and_end_make_no_index_directory(tmp_path: Path) -> None:
    """Issue 18: each active-index entry was an object in a directory of its own
    (``active/{p}/{id}/{seq}-{run}``), so on ``file://`` every start made a directory
    and every end removed it: 2,999 ``rmdir`` took 16.6 s of a profile of 1,000
    concurrent workflows, on the event loop. Entries are now flat: with other runs
    in flight (the partition directory stays), a start and an end touch no directory
    under ``active/``."""
    root = str(tmp_path)
    files = _CountingDirs()
    store = LocalStore(root, files=files)
    await load_config(store, 1)  # one partition
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(registry(), store=store, clock=clock) as rt:
        await rt.start("waiter", 0, instance_id="keeps-the-partition")
        await anyio.wait_all_tasks_blocked()
        files.made.clear()
        for i in range(5):
            assert await (await rt.start("quick", i, instance_id=f"q{i}")) == i
        (name,) = os.listdir(f"{root}/{ACTIVE}/0000")  # one file: the waiter's entry
        assert name.startswith(f"keeps-the-partition{SEP}")
        assert _index_keys(root) == [f"{ACTIVE}/0000/{name}"]
        await rt.client.get_handle("keeps-the-partition").raise_event("go", 7)
        assert await rt.client.get_handle("keeps-the-partition").result() == 7
    index_dirs = [p for p in files.made + files.removed if p.startswith(f"{root}/{ACTIVE}/0000/")]
    assert index_dirs == []
    assert _index_keys(root) == []
    await store.close()


async def _make_legacy(store: LocalStore) -> None:
    """Turn every flat entry into the layout of a store written before (a directory
    per instance), and add legacy entries of an instance that ended and of one that
    no longer exists (both left by a crash)."""
    for key in _index_keys(store.root):
        found = parse_key(key)
        assert found is not None, key
        instance_id, entry = found
        assert not entry.legacy
        partition = key.split("/")[1]
        await store.put(f"{ACTIVE}/{partition}/{instance_id}/{entry.name}", b"")
        await store.delete(key)
    for instance_id in ("e0", "ghost"):
        await store.put(f"{ACTIVE}/0000/{instance_id}/000000000000-0123456789abcdef01234567", b"")


async def test_a_store_with_entries_in_a_directory_each_opens_and_moves_them(
    tmp_path: Path,
) -> None:
    """Issue 18, migration: a store whose index entries sit in a directory per instance
    (the layout before flat entries) opens; its running instances are recovered and
    run on, their entries moved to flat names, and the stale entries of an ended
    instance and of a gone one are dropped, directories and all."""
    store = LocalStore(tmp_path)
    await load_config(store, 1)  # one partition
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(registry(), store=store, clock=clock) as rt:
        assert await (await rt.start("quick", 0, instance_id="e0")) == 0
        for i in range(3):
            await rt.start("waiter", i, instance_id=f"r{i}")
        await anyio.wait_all_tasks_blocked()
    await _make_legacy(store)
    assert sorted(os.listdir(f"{tmp_path}/{ACTIVE}/0000")) == ["e0", "ghost", "r0", "r1", "r2"]
    async with durable.Runtime(registry(), store=store, clock=clock) as rt:
        await anyio.wait_all_tasks_blocked()
        keys = _index_keys(str(tmp_path))
        assert [parse_key(k)[0] for k in keys] == ["r0", "r1", "r2"]  # type: ignore[index]
        assert all(k.count("/") == 2 for k in keys), keys  # flat
        assert sorted(await entries_of(store)) == ["r0", "r1", "r2"]
        for i in range(3):
            await rt.client.get_handle(f"r{i}").raise_event("go", i)
        for i in range(3):
            assert await rt.client.get_handle(f"r{i}").result() == i
    assert _index_keys(str(tmp_path)) == []
    assert ACTIVE not in await store.list("")  # no directory left behind
    await store.close()


async def test_an_id_too_long_for_a_flat_entry_keeps_a_directory(tmp_path: Path) -> None:
    """Issue 18: a flat entry's name is the id and 38 more bytes, past the 255 a file
    name may have when the id is near the longest allowed; such an entry keeps its
    own directory, and its run is recovered and ends like any other."""
    long_id = "L" * 240
    store = LocalStore(tmp_path)
    await load_config(store, 1)  # one partition
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(registry(), store=store, clock=clock) as rt:
        await rt.start("waiter", 1, instance_id=long_id)
        await anyio.wait_all_tasks_blocked()
    keys = _index_keys(str(tmp_path))
    assert len(keys) == 1
    assert keys[0].startswith(f"{ACTIVE}/0000/{long_id}/")
    assert parse_key(keys[0]) == (long_id, Entry.parse(keys[0].rpartition("/")[2]))
    async with durable.Runtime(registry(), store=store, clock=clock) as rt:
        await anyio.wait_all_tasks_blocked()
        assert _index_keys(str(tmp_path)) == keys  # recovered, nothing to move
        await rt.client.get_handle(long_id).raise_event("go", 5)
        assert await rt.client.get_handle(long_id).result() == 5
    assert _index_keys(str(tmp_path)) == []
    await store.close()


class _RemovalsSeen(OsFiles):
    """The operating system's calls, noting the thread of every directory removed,
    and pausing (until ``release``) the removal of ``paused``, once it is under way."""

    def __init__(self, paused: str = "") -> None:
        super().__init__()
        self.on_loop: list[str] = []
        self.off_loop: list[str] = []
        self.paused = paused
        self.entered = threading.Event()
        self.release = threading.Event()

    def rmdir(self, path: str) -> None:
        if path == self.paused:
            self.entered.set()
            self.release.wait(10)
        super().rmdir(path)
        on_loop = threading.current_thread() is threading.main_thread()
        (self.on_loop if on_loop else self.off_loop).append(path)


async def test_a_purge_removes_the_instance_s_directories_off_the_event_loop(
    tmp_path: Path,
) -> None:
    """Issue 18, purge speed: a purge on ``file://`` removed ``instances/{id}/log`` and
    ``instances/{id}`` inline on the event loop, 4.6 ms each on this disk: about 70% of
    a purge (41 instances/s in a profile of 500). Emptied directories are now removed
    by a thread of the store, and a listing still never shows them."""
    root = str(tmp_path)
    files = _RemovalsSeen()
    store = LocalStore(root, files=files)
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(registry(), store=store, clock=clock) as rt:
        for i in range(3):
            assert await (await rt.start("quick", i, instance_id=f"q{i}")) == i
        for i in range(3):
            await rt.client.purge(f"q{i}")
        assert await store.list("instances") == []
    await store.close()
    assert files.on_loop == []
    assert {f"{root}/instances/q{i}/log" for i in range(3)} <= set(files.off_loop)
    assert {f"{root}/instances/q{i}" for i in range(3)} <= set(files.off_loop)


async def test_a_listing_waits_for_the_removal_of_a_directory_under_way(
    tmp_path: Path,
) -> None:
    """Issue 18: emptied directories are removed by the store's thread after the delete
    returns; a listing that came while one was being removed showed the name with
    nothing beneath it. The removal is paused inside the file system: the listing
    waits for it, and one elsewhere does not."""
    root = str(tmp_path)
    files = _RemovalsSeen(paused=f"{root}/a/b")
    store = LocalStore(root, files=files)
    await store.put("a/b/x", b"1")
    await store.put("c/y", b"2")
    await store.delete("a/b/x")
    await anyio.to_thread.run_sync(files.entered.wait, 10)
    assert await store.list("c") == ["y"]  # elsewhere: no wait
    listed: list[list[str]] = []

    async def list_a() -> None:
        listed.append(await store.list("a"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(list_a)
        await anyio.wait_all_tasks_blocked()
        assert listed == []  # waiting for the removal
        files.release.set()
    assert listed == [[]]
    assert await store.list("") == ["c"]
    await store.close()


async def test_a_write_into_a_directory_being_removed_stays(tmp_path: Path) -> None:
    """Issue 18: the store's thread removes a directory a delete emptied while a new
    object is written there (paused inside the removal): the removal fails, as the
    directory is not empty, and the object stays."""
    root = str(tmp_path)
    files = _RemovalsSeen(paused=f"{root}/a/b")
    store = LocalStore(root, files=files)
    await store.put_if_absent("a/b/x", b"1")
    await store.delete("a/b/x")
    await anyio.to_thread.run_sync(files.entered.wait, 10)
    await store.put_if_absent("a/b/y", b"2")
    files.release.set()
    await store.close()  # waits for the thread
    assert await store.list("a/b") == ["y"]
    assert await store.get("a/b/y") == b"2"


class _CountingFlushes(OsFiles):
    """The operating system's calls, counting whole-file-system flushes, and those
    before any name was published (flushes of contents alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0
        self.before_names = 0
        self.links = 0

    def link(self, src: str, dst: str) -> None:
        self.links += 1
        super().link(src, dst)

    def sync_all(self, path: str) -> bool:
        self.flushes += 1
        self.before_names += self.links == 0
        return super().sync_all(path)


def _wait_for_changes(store: LocalStore, count: int) -> None:
    """Spin until the store has counted ``count`` changes (both leaders' temp files
    written): a worker thread's wait, bounded."""
    for _ in range(10_000_000):
        if store._change_count() >= count:
            return
        os.sched_yield()
    raise AssertionError("the leaders never counted their changes")


async def test_leaders_waiting_for_one_flush_share_it(tmp_path: Path) -> None:
    """Issue 18, group commit on ``file://?fsync=1``: the store's two leaders each
    flushed the whole file system for their own batch, two ``syncfs`` at once where
    one covered both (each flush cost ~4 ms under load, and creating files beside a
    flush under way cost 3x). Now one flush runs at a time, and a leader whose
    changes a flush begun since has covered skips its own. Both leaders are held at
    the flush (the store's own lock, held here) with their files written."""
    if not OsFiles().sync_all(str(tmp_path)):
        pytest.skip("no syncfs here: each leader flushes its own files")
    files = _CountingFlushes()
    store = LocalStore(tmp_path, fsync=True, files=files)
    store._flushing.acquire()  # the flush is busy: both leaders wait for it
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.put_if_absent, "a/x", b"1")
        tg.start_soon(store.put_if_absent, "b/y", b"2")
        try:
            await anyio.to_thread.run_sync(_wait_for_changes, store, 2)
            assert files.flushes == 0
        finally:
            store._flushing.release()
    assert files.before_names == 1  # one flush covered both batches' contents
    assert files.flushes <= 3  # and one or two their names (as their leaders meet)
    assert await store.get("a/x") == b"1"
    assert await store.get("b/y") == b"2"
    await store.close()


class _PausingFlush(OsFiles):
    """The operating system's calls, pausing the next flush once ``armed``."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def sync_all(self, path: str) -> bool:
        if self.armed:
            self.armed = False
            self.entered.set()
            self.release.wait(10)
        return super().sync_all(path)


async def test_a_read_does_not_wait_for_a_flush_under_way(tmp_path: Path) -> None:
    """Issue 18, ``file://?fsync=1``: a read was queued with the writes and waited for
    the flush of the batch in flight (milliseconds), though a read needs no flush.
    Reads now run at once, as without fsync. The flush is paused inside the file
    system while the read is made."""
    files = _PausingFlush()
    store = LocalStore(tmp_path, fsync=True, files=files)
    await store.put_if_absent("b/old", b"before")
    files.armed = True
    got: list[bytes] = []

    async def read() -> None:
        got.append(await store.get("b/old"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(store.put_if_absent, "a/new", b"during")
        await anyio.to_thread.run_sync(files.entered.wait, 10)
        try:
            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            assert got == [b"before"]  # done while the flush is still paused
        finally:
            files.release.set()
    assert await store.get("a/new") == b"during"
    await store.close()


def search_registry() -> durable.Registry:
    reg = durable.Registry()

    @reg.workflow
    async def order(ctx: durable.WorkflowContext, n: int) -> int:
        """Upserts its stage and waits."""
        ctx.upsert_search_attributes({"stage": "paid"})
        return int(await ctx.wait_for_event("go"))

    return reg


async def test_search_entries_make_no_directory_per_instance_and_old_ones_are_found(
    tmp_path: Path,
) -> None:
    """Issue 18: a search entry was an object in a directory per instance and value
    (``search/{name}/{value}/{id}/{at}``), a ``mkdir`` at each upsert and an ``rmdir``
    at each change or purge, on ``file://``. Entries are now flat beside the other
    instances' (``{id}^{at}``); an entry in the older layout is still found."""
    root = str(tmp_path)
    files = _CountingDirs()
    store = LocalStore(root, files=files)
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(search_registry(), store=store, clock=clock) as rt:
        await rt.start("order", 1, instance_id="o1")
        await rt.start("order", 2, instance_id="o2")
        await anyio.wait_all_tasks_blocked()
        files.made.clear()
        await rt.start("order", 3, instance_id="o3")
        await anyio.wait_all_tasks_blocked()
        assert [p for p in files.made if "/search/" in p] == []
        keys = sorted(await stored_entries(store))
        assert all(k.count("/") == 3 and SEP in k for k in keys), keys
        # an entry as a store written before holds it: found by a lookup
        old = next(k for k in keys if k.startswith("search/stage/") and "o1" in k)
        prefix, _, name = old.rpartition("/")
        await store.put(f"{prefix}/o9/{name.partition(SEP)[2]}", b"")
        assert sorted(await find(store, {"stage": "s:paid"})) == [
            "o1", "o2", "o3", "o9"
        ]  # fmt: skip
        found = [s.instance_id async for s in rt.client.list(search={"stage": "paid"})]
        assert found == ["o1", "o2", "o3"]  # o9 has no meta: the hit is checked
