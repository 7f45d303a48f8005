"""History retention (issue 16): ended instances older than ``history_retention`` are
deleted whole by a sweeper on the Clock, never one that runs or ran again since."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_index_active import entries_of, registry

import durable
from durable import MockClock, Registry, WorkflowContext
from durable._core._events import WorkflowStarted
from durable._core._state import WorkflowStatus
from durable._log._records import TurnRecord, encode, log_key
from durable._log._retention import ENDED, sweep_history
from durable.store import MemoryStore, ObjectStore

pytestmark = pytest.mark.anyio

DAYS = timedelta(days=30)
YEAR = timedelta(days=365)  # a sweep interval the tests never reach: they sweep by hand


def retaining(store: ObjectStore, clock: MockClock) -> durable.Runtime:
    """A runtime with history retention whose own sweeps never come (tests sweep)."""
    return durable.Runtime(
        registry(), store=store, clock=clock, history_retention=DAYS, memo_sweep_interval=YEAR
    )


async def left(store: ObjectStore) -> list[str]:
    return await store.list("instances")


async def test_an_old_ended_instance_is_deleted_whole(store: ObjectStore) -> None:
    """Issue 16: nothing was ever deleted; now an instance ended longer ago than the
    retention goes (log, meta, memo, markers), a running one and a recent one stay."""
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(
        registry(),
        store=store,
        clock=clock,
        history_retention=DAYS,
        memo_retention=DAYS,
        memo_sweep_interval=YEAR,
    ) as rt:
        assert await (await rt.start("quick", 1, instance_id="old")) == 1
        await rt.start("waiter", 1, instance_id="running")
        await anyio.wait_all_tasks_blocked()
        clock.advance(timedelta(days=31))
        assert await (await rt.start("quick", 2, instance_id="recent")) == 2
        clock.advance(timedelta(hours=2))
        assert await rt.sweep_history() == 1
        assert await left(store) == ["recent", "running"]
        assert await store.list("memo-terminal") == ["recent"]
        assert sorted(await entries_of(store)) == ["running"]
        assert len(await store.list(ENDED)) == 1  # the recent one's partition
        with pytest.raises(durable.InstanceNotFoundError):
            await rt.client.get_handle("old").describe()


async def test_the_sweeper_runs_on_the_clock() -> None:
    """Issue 16: a sweeper on the Clock, like the memo sweeper, does it unasked."""
    store = MemoryStore()
    clock = MockClock()
    async with durable.Runtime(
        registry(), store=store, clock=clock, history_retention=DAYS,
        memo_sweep_interval=timedelta(hours=1),
    ) as rt:  # fmt: skip
        handle = await rt.start("quick", 1, instance_id="q")
        await anyio.wait_all_tasks_blocked()
        assert await handle == 1
        for _ in range(24 * 31 + 2):
            clock.advance(timedelta(hours=1))
            await anyio.wait_all_tasks_blocked()
        assert await left(store) == []


async def test_an_instance_started_again_and_ended_is_kept() -> None:
    """Issue 16: the marker of an old end must not delete a reuse of the instance that
    ended since (its log no longer ends where the marker says)."""
    store = MemoryStore()
    clock = MockClock(auto_advance=True)
    async with retaining(store, clock) as rt:
        assert await (await rt.start("quick", 1, instance_id="x")) == 1
        clock.advance(timedelta(days=31))
        assert await (await rt.start("quick", 2, instance_id="x", reuse=True)) == 2
        clock.advance(timedelta(hours=2))
        assert await rt.sweep_history() == 0
        assert (await rt.client.get_handle("x").describe()).output == 2
        clock.advance(timedelta(days=31))
        assert await rt.sweep_history() == 1
        assert await left(store) == []


class PauseAt:
    """Pauses the first put-if-absent of a purge claim (the sweeper's), runs ``meanwhile``
    there, then lets the claim go on."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.meanwhile: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_if_absent(self, key: str, data: bytes) -> str:
        if self.meanwhile is not None and b'"purging":true' in data:
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile()
        return await self.inner.put_if_absent(key, data)


async def test_a_reuse_between_the_sweepers_check_and_its_claim_wins() -> None:
    """Issue 16: a reuse that lands after the sweeper read the log, before it claimed
    the next record, runs; the sweep gives up on it."""
    inner = MemoryStore()
    store = PauseAt(inner)
    clock = MockClock(auto_advance=True)
    async with retaining(store, clock) as rt:
        assert await (await rt.start("quick", 1, instance_id="x")) == 1
        clock.advance(timedelta(days=31))

        async def reuse() -> None:
            await durable.Client(inner, clock=clock).start("waiter", 5, instance_id="x", reuse=True)

        store.meanwhile = reuse
        assert await rt.sweep_history() == 0
        state = await rt.client.get_handle("x").describe()
        assert not state.status.is_terminal
        assert list(await entries_of(inner)) == ["x"]
        await rt.client.get_handle("x").raise_event("go", 7)
        assert await rt.client.get_handle("x").result() == 7


async def test_a_sweep_cut_short_is_finished_by_the_next() -> None:
    """Issue 16: a purge the sweeper began and did not finish (log/0 already a purge
    record) is finished by the next sweep, whose marker is still there."""
    store = MemoryStore()
    clock = MockClock(auto_advance=True)
    async with retaining(store, clock) as rt:
        assert await (await rt.start("quick", 1, instance_id="x")) == 1
        clock.advance(timedelta(days=31))
        mark = TurnRecord(seq=0, status=WorkflowStatus.TERMINATED, purging=True)
        await store.put(
            log_key("x", 2), encode(TurnRecord(seq=2, status="COMPLETED", purging=True))
        )
        await store.put(log_key("x", 0), encode(mark))  # as a purge killed midway leaves it
        assert await rt.sweep_history() == 1
        assert await left(store) == []
        assert await store.list(ENDED) == []


def parent_registry() -> Registry:
    reg = registry()

    @reg.workflow
    async def parent(ctx: WorkflowContext, n: int) -> int:
        return int(await ctx.call_workflow("quick", n, instance_id="kid"))

    return reg


async def test_a_child_whose_id_is_being_purged_waits_for_the_purge() -> None:
    """Found by the simulation once retention swept sub-workflows: a parent starting a
    child whose id was half purged (log/0 already a purge record) went from start to
    settle and back without end (RecursionError: the runtime died). Now it tries again
    on the Clock, and once the purge is plainly cut short (a minute old) finishes it and
    starts the child."""
    store = MemoryStore()
    clock = MockClock()
    now = clock.now()
    started = WorkflowStarted(event_id=0, timestamp=now, name="quick", run_id="r0")
    first = TurnRecord(seq=0, status="PENDING", next_run=[started])
    await store.put(log_key("kid", 0), encode(first))
    await store.put(log_key("kid", 1), encode(TurnRecord(seq=1, status="COMPLETED")))
    for seq in (2, 0):  # the claim, then log/0: a purge killed before it deleted anything
        mark = TurnRecord(seq=seq, status="COMPLETED", purging=True, purged_at=now)
        await store.put(log_key("kid", seq), encode(mark))
    async with durable.Runtime(parent_registry(), store=store, clock=clock) as rt:
        handle = await rt.start("parent", 4, instance_id="p")
        for _ in range(10):
            await anyio.wait_all_tasks_blocked()
            clock.advance(timedelta(seconds=2))
        assert not (await handle.describe()).status.is_terminal
        for _ in range(40):
            await anyio.wait_all_tasks_blocked()
            clock.advance(timedelta(seconds=2))
        assert await handle == 4


async def test_each_process_sweeps_only_the_partitions_it_is_given() -> None:
    """Issue 16: in a fleet each process sweeps the partitions it holds."""
    store = MemoryStore()
    clock = MockClock(auto_advance=True)
    async with retaining(store, clock) as rt:
        for i in range(8):
            assert await (await rt.start("quick", i, instance_id=f"q{i}")) == i
        index = rt._engine.index
        clock.advance(timedelta(days=31))
        mine = {index.partition(f"q{i}") for i in range(4)}
        swept = await sweep_history(
            index, None, sorted(mine), before=clock.now() - DAYS, now=clock.now()
        )
        kept = [f"q{i}" for i in range(8) if index.partition(f"q{i}") not in mine]
        assert swept == 8 - len(kept)
        assert await left(store) == sorted(kept)


def test_durable_purge_ended_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16: ``durable purge --ended-before 30d [--status] [--dry-run]`` does by hand
    what the sweeper does."""
    from durable.cli import main

    url = f"file://{tmp_path / 'store'}"

    async def make() -> None:  # a MockClock's instances end on 2026-01-01
        async with durable.Runtime(registry(), store=url, clock=MockClock(auto_advance=True)) as rt:
            for i in range(3):
                assert await (await rt.start("quick", i, instance_id=f"q{i}")) == i
            await rt.start("waiter", 0, instance_id="w")
            await anyio.wait_all_tasks_blocked()

    anyio.run(make)
    main(["purge", "--store", url, "--ended-before", "30d", "--dry-run"])
    out = capsys.readouterr()
    assert out.out.split() == ["q0", "q1", "q2"]
    assert "would purge 3" in out.err
    main(["purge", "--store", url, "--ended-before", "30d", "--status", "FAILED"])
    assert "purged 0" in capsys.readouterr().out
    main(["purge", "--store", url, "--ended-before", "2025-12-31"])
    assert "purged 0" in capsys.readouterr().out
    main(["purge", "--store", url, "--ended-before", "30d"])
    assert "purged 3" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "store" / "instances").iterdir()) == ["w"]
