"""The active index's repair against a purge and a new start under the same id: the
new run's entry must stand. Each race is forced by a store wrapper that pauses chosen
calls and runs the other side of the race there; nothing sleeps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from durable._core._events import NULL, WorkflowTerminated
from durable._core._state import WorkflowStatus
from durable._errors import StoreError
from durable._log._active import ActiveIndex, Entry, repair
from durable._log._instances import Created, create_instance, purge_instance
from durable._log._reader import load_run, write_meta
from durable._log._records import TurnRecord, encode, log_key
from durable.store import MemoryStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from durable.store import ObjectStore

pytestmark = pytest.mark.anyio

_NOW = datetime(2026, 1, 1, tzinfo=UTC)


class _Pause:
    """One paused call: it waits before it reaches the store until ``release`` is set;
    ``entered`` tells the test it waits."""

    def __init__(self, match: Callable[[str, str], bool]) -> None:
        self.match = match
        self.entered = anyio.Event()
        self.release = anyio.Event()


class Pausing:
    """Wraps a store; the first call each pause matches waits (see :class:`_Pause`)."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner
        self._pauses: list[_Pause] = []
        self.never_suspends = False  # its calls may wait

    def pause(self, operation: str, key: str) -> _Pause:
        return self.pause_at(lambda o, k: o == operation and k == key)

    def pause_at(self, match: Callable[[str, str], bool]) -> _Pause:
        pause = _Pause(match)
        self._pauses.append(pause)
        return pause

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name == "close":
            return attr

        async def call(key: str, *args: Any) -> Any:
            for pause in self._pauses:
                if pause.match(name, key):
                    self._pauses.remove(pause)
                    pause.entered.set()
                    await pause.release.wait()
                    break
            return await attr(key, *args)

        return call


async def _ended() -> tuple[Pausing, ActiveIndex]:
    """Instance ``x`` whose run ``old`` ended at seq 1, its meta and index say so."""
    store = Pausing(MemoryStore())
    index = ActiveIndex(store, 1)  # type: ignore[arg-type]
    created = await create_instance(index, _NOW, "x", "wf", NULL, run_id="old")
    ended = TurnRecord(seq=1, status=WorkflowStatus.TERMINATED,
                       events=[WorkflowTerminated(event_id=1, timestamp=_NOW)])  # fmt: skip
    await store.put_if_absent(log_key("x", 1), encode(ended))
    run = await load_run(store, "x")  # type: ignore[arg-type]
    assert run is not None
    await write_meta(store, run.to_meta(), created.meta_etag)  # type: ignore[arg-type]
    await index.end("x", 0, "old")
    return store, index


async def _start_new(index: ActiveIndex, out: list[Created]) -> None:
    out.append(await create_instance(index, _NOW, "x", "wf", NULL, run_id="new"))


async def test_a_repair_before_a_purge_leaves_a_later_create_its_entry() -> None:
    """Pins an acknowledged start that a restart never ran (simulation seed 254's kind):
    a create of ``x`` entered its run at seq 0 and was slow to write ``log/0``, which
    the ended run still held. A recovery's repair read the ended meta, took the entry
    for a loser and deleted it; a purge then deleted the old run and the create's
    ``log/0`` landed: a run with no index entry. A create at seq 0 enters its run
    again once its record is written."""
    store, index = await _ended()
    put = store.pause("put_if_absent", log_key("x", 0))
    created: list[Created] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_start_new, index, created)
        await put.entered.wait()  # its entry is in, log/0 not yet
        await repair(index, "x", await index.entries("x"))
        assert await purge_instance(index, "x", now=_NOW)
        put.release.set()
    assert created[0].record.next_run[0].run_id == "new"  # type: ignore[attr-defined]
    assert await index.entries("x") == [Entry(0, "new")]


async def test_a_repair_slow_to_delete_leaves_a_later_create_its_entry() -> None:
    """Same bug, the other order: the repair read the ended meta, then its delete of the
    create's entry was slow; the purge and the create (its entry put again) finished
    before the delete landed. A repair looks at the log again after each delete and
    puts back the entry of a run that began meanwhile."""
    store, index = await _ended()
    put = store.pause("put_if_absent", log_key("x", 0))
    delete = store.pause("delete", index.key("x", Entry(0, "new")))
    created: list[Created] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_start_new, index, created)
        await put.entered.wait()
        entries = await index.entries("x")
        tg.start_soon(repair, index, "x", entries)
        await delete.entered.wait()  # the repair read the log: the entry is a loser's
        assert await purge_instance(index, "x", now=_NOW)
        put.release.set()
        await anyio.wait_all_tasks_blocked()
        assert created, "the create is acknowledged"
        delete.release.set()
    assert await index.entries("x") == [Entry(0, "new")]


class _FailsAgain(MemoryStore):
    """A memory store whose second put of ``key`` lands, then reports a transient error."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key, self.puts = key, 0

    async def put(self, key: str, data: bytes) -> str:
        etag = await super().put(key, data)
        if key == self.key:
            self.puts += 1
            if self.puts == 2:
                raise StoreError("lost answer", key=key, transient=True)
        return etag


async def test_a_create_whose_second_entry_put_fails_is_still_a_start() -> None:
    """The entry put again after a create's record (see above) failed transiently
    (simulation seed 390 on this branch): the create raised after its run existed, with
    no meta written, so the run stood unannounced with no meta. Like a failed meta
    write, it does not fail the start: the entry put first stands."""
    index = ActiveIndex(_FailsAgain(""), 1)
    store = index.store
    assert isinstance(store, _FailsAgain)
    store.key = index.key("x", Entry(0, "r"))
    created = await create_instance(index, _NOW, "x", "wf", NULL, run_id="r")
    assert store.puts == 2
    assert created.meta_etag is not None
    assert await index.entries("x") == [Entry(0, "r")]
