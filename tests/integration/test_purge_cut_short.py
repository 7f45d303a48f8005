"""A purge cut short (simulation seed 32): its process died after claiming the log, so
until a purge of it came again the id gave contradictory answers (listed RUNNING
forever by its meta, absent to ``describe``, taken to ``start`` with no status), and
nothing finished it. Now a purge marks the meta (listings skip it), a start gets
``InstancePurgingError``, and the runtime's sweeper finishes purges cut short from the
``purging/`` index.

A crash is forced at every write of a purge by a store wrapper that raises, at the
chosen write, a ``BaseException`` nothing in durable catches; time flows through a
MockClock, so nothing sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

import durable
from durable import MockClock, Registry, WorkflowContext, WorkflowStatus
from durable._log._purge import _PURGE_TAKEOVER
from durable._log._purging import PURGING, finish_purges
from durable._log._reader import load_run, read_meta
from durable._log._records import encode, meta_key
from durable._log._search import SEARCH, write_meta_indexed
from durable.store import LocalStore, MemoryStore, ObjectStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_WRITES = ("put", "put_if_absent", "put_if_match", "delete", "delete_if_match", "delete_prefix")


class _Died(BaseException):
    """The purge's process died here (nothing in durable catches it)."""


class CrashAt:
    """Wraps a store; counts writes, and the write numbered ``at`` (from 0) lands, then
    the caller dies (``after``), or dies before it reaches the store. ``at`` None:
    only counts."""

    def __init__(self, inner: ObjectStore, at: int | None = None, after: bool = True) -> None:
        self._inner = inner
        self.at, self.after = at, after
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in _WRITES:
            return attr

        async def call(key: str, *args: Any) -> Any:
            number, self.writes = self.writes, self.writes + 1
            if number == self.at and not self.after:
                raise _Died(f"{name} {key}")
            result = await attr(key, *args)
            if number == self.at:
                raise _Died(f"{name} {key}")
            return result

        return call


def _registry() -> Registry:
    registry = Registry()

    @registry.workflow
    async def done(ctx: WorkflowContext, x: int) -> int:
        return x

    return registry


@pytest.fixture(name="store", params=["memory", "file"])
def store_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """A fresh store on memory:// and file://."""
    if request.param == "memory":
        yield MemoryStore()
    else:
        yield LocalStore(tmp_path / "store", url=f"file://{tmp_path / 'store'}")


async def _ended_with_lagging_meta(store: ObjectStore, clock: MockClock) -> None:
    """Instance ``w``, COMPLETED in its log, with a search attribute, and a meta that
    still says RUNNING (its process died before writing it: seed 32)."""
    async with durable.Runtime(_registry(), store=store, clock=clock) as rt:
        handle = await rt.start("done", 7, instance_id="w", search_attributes={"k": "v"})
        assert await handle.result() == 7
    found = await read_meta(store, "w")
    assert found is not None
    meta = msgspec.structs.replace(found[0], status=WorkflowStatus.RUNNING, seq=found[0].seq - 1)
    await store.put(meta_key("w"), encode(meta))


async def _keys(store: ObjectStore, prefix: str) -> list[str]:
    """Every key under ``prefix`` (walked with the store's one-level listing)."""
    found: list[str] = []
    for name in await store.list(prefix):
        below = await _keys(store, f"{prefix}/{name}")
        found += below or [f"{prefix}/{name}"]
    return found


async def _reads(client: durable.Client) -> tuple[bool, set[str]]:
    """Whether ``describe`` finds ``w``; where a listing without a status filter,
    by RUNNING and by its search attribute finds it."""
    try:
        await client.get_handle("w").describe()
        described = True
    except durable.InstanceNotFoundError:
        described = False
    listed = set()
    for where, filters in (("all", {}), ("running", {"status": "RUNNING"}),
                           ("search", {"search": {"k": "v"}})):  # fmt: skip
        if [s async for s in client.list(**filters) if s.instance_id == "w"]:
            listed.add(where)
    return described, listed


async def _purge_writes(store: ObjectStore) -> int:
    """How many writes a whole purge of ``w`` makes on a store like ``store``."""
    clock = MockClock(T0, auto_advance=True)
    await _ended_with_lagging_meta(store, clock)
    counting = CrashAt(store)
    await durable.Client(counting, clock=clock).purge("w")  # type: ignore[arg-type]
    return counting.writes


async def _cut_short(store: ObjectStore, at: int, after: bool) -> MockClock:
    """``w`` as a purge that died at its write ``at`` left it."""
    clock = MockClock(T0, auto_advance=True)
    await _ended_with_lagging_meta(store, clock)
    with pytest.raises(_Died):
        await durable.Client(CrashAt(store, at, after), clock=clock).purge("w")  # type: ignore[arg-type]
    return clock


async def _check_agrees(store: ObjectStore, clock: MockClock) -> None:
    """Every read agrees: ``w`` is there (COMPLETED, listed, found by its attribute) or
    absent everywhere, and then a start is refused naming the purge under way."""
    client = durable.Client(store, clock=clock)
    described, listed = await _reads(client)
    if described:
        assert listed == {"all", "search"}, listed  # (its meta lags: not by RUNNING)
        with pytest.raises(durable.InstanceExistsError) as caught:
            await client.start("done", 1, instance_id="w")
        assert caught.value.status == WorkflowStatus.COMPLETED
        return
    found = await read_meta(store, "w")
    if found is not None and found[0].purging is None:  # died between the claim and the
        # meta's mark (two writes, one window): listed until the sweeper finishes it
        assert listed == {"all", "search"}, listed
    else:
        assert listed == set(), listed
    with pytest.raises(durable.InstanceNotFoundError):
        await client.get_handle("w").raise_event("e")
    if await store.list("instances/w/log"):
        for reuse in (False, True):  # (too young to finish: refused either way)
            with pytest.raises(durable.InstancePurgingError, match="being purged"):
                await client.start("done", 1, instance_id="w", reuse=reuse)


async def _check_finished(store: ObjectStore, clock: MockClock) -> None:
    """A minute on, the sweeper's pass leaves nothing half-purged: ``w`` is whole (the
    purge died before its claim) or gone, with its search entries and markers."""
    clock.advance(_PURGE_TAKEOVER)
    client = durable.Client(store, clock=clock)
    index = await client._active()
    await finish_purges(index, None, range(index.partitions or 0), now=clock.now())
    assert await _keys(store, PURGING) == []
    if await load_run(store, "w") is not None:
        assert await store.list(SEARCH)
        return
    assert await store.list("instances/w") == []
    assert await _keys(store, SEARCH) == []


async def test_a_purge_cut_short_at_any_write_reads_one_way_and_is_finished(
    store: ObjectStore, tmp_path: Path
) -> None:
    """Pins seed 32: a purge died after its claim and the mark of ``log/0``; the meta
    (RUNNING) was listed forever, ``describe`` said not found, a start said "exists"
    with no status, and nothing ever finished it. At every write of a purge, landed or
    not, every read now agrees and the sweeper's pass finishes it."""
    total = await _purge_writes(MemoryStore())
    assert total >= 8
    for at in range(total):
        for after in (False, True):
            fresh: ObjectStore = (
                MemoryStore() if isinstance(store, MemoryStore)
                else LocalStore(tmp_path / f"s{at}{after}", url=f"file://{tmp_path}/s{at}{after}")
            )  # fmt: skip
            clock = await _cut_short(fresh, at, after)
            await _check_agrees(fresh, clock)
            await _check_finished(fresh, clock)


async def test_a_runtime_finishes_a_purge_cut_short(store: ObjectStore) -> None:
    """Pins seed 32's second half: nothing finished a purge cut short (recovery reads
    the active index, the retention sweeper the ended one). A runtime's sweeper
    finishes it once it is ``_PURGE_TAKEOVER`` old."""
    clock = await _cut_short(store, 4, after=True)  # as seed 32: log/0 marked, then died
    assert await load_run(store, "w") is None
    assert await store.list(PURGING) == ["w"]
    async with durable.Runtime(_registry(), store=store, clock=clock) as rt:
        await rt.wait_idle()
        assert await store.list("instances/w/log")  # too young yet
        clock.advance(_PURGE_TAKEOVER + timedelta(seconds=1))
        for _ in range(100):
            await rt.wait_idle()
            if not await store.list("instances/w"):
                break
        assert await store.list("instances/w") == []
        assert await store.list(PURGING) == []
        handle = await rt.start("done", 2, instance_id="w")  # the id is free again
        assert await handle.result() == 2


async def test_a_start_with_reuse_finishes_an_old_purge_cut_short(store: ObjectStore) -> None:
    """A start with ``reuse`` of an id whose purge was cut short a minute ago finishes
    it and starts (before, it said "already exists" with no status, forever)."""
    clock = await _cut_short(store, 5, after=True)
    client = durable.Client(store, clock=clock)
    with pytest.raises(durable.InstancePurgingError):
        await client.start("done", 1, instance_id="w", reuse=True)
    clock.advance(_PURGE_TAKEOVER)
    with pytest.raises(durable.InstancePurgingError):
        await client.start("done", 1, instance_id="w")  # without reuse: refused still
    await client.start("done", 1, instance_id="w", reuse=True)
    run = await load_run(store, "w")
    assert run is not None
    assert run.last_seq == 0
    assert await store.list(PURGING) == []


async def test_a_meta_writer_behind_a_purge_does_not_unmark_it(store: ObjectStore) -> None:
    """A writer of the meta that read it before the purge marked it (the engine rolling
    the lagging meta forward) must not write it back: it would be listed again."""
    await _cut_short(store, 2, after=True)  # claimed, meta marked
    found = await read_meta(store, "w")
    assert found is not None
    assert found[0].purging is not None
    stale = msgspec.structs.replace(found[0], purging=None, status=WorkflowStatus.COMPLETED)
    with pytest.raises(durable.store.ObjectNotFoundError):
        await write_meta_indexed(store, stale, "stale-etag", None)
    again = await read_meta(store, "w")
    assert again is not None
    assert again[0].purging is not None


async def test_the_purging_index_on_s3(moto_server: Any) -> None:
    """The ``purging/`` index on S3: a purge cut short after its claim is listed there
    and finished by the sweeper's pass, leaving the bucket's instance and index empty."""
    store = moto_server.store()
    try:
        clock = await _cut_short(store, 4, after=True)
        assert await store.list(PURGING) == ["w"]
        await _check_agrees(store, clock)
        await _check_finished(store, clock)
        assert await store.list("instances") == []
    finally:
        await store.close()
