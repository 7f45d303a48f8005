"""The simulation's open core bugs of trust: a stale meta written back over a start
under the same id after a purge, and an engine that died without a word. Each test
pins one bug at the mechanism that caused it; time flows through a MockClock."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import anyio.lowlevel
import pytest

import durable
from durable import ActivityContext, Registry, WorkflowContext
from durable._core._events import NULL, WorkflowTerminated
from durable._core._state import WorkflowStatus
from durable._errors import EngineFailedError, ObjectNotFoundError
from durable._log._active import ActiveIndex, repair
from durable._log._instances import create_instance, purge_instance
from durable._log._reader import read_meta, write_meta
from durable._log._records import InstanceMeta, TurnRecord, encode, log_key, meta_key
from durable.store import MemoryStore

pytestmark = pytest.mark.anyio


def _hanging(started: anyio.Event) -> Registry:
    registry = Registry()

    @registry.activity
    async def hang(ctx: ActivityContext) -> None:
        started.set()
        await anyio.Event().wait()  # a call that never answers: only a cancel ends it

    @registry.workflow
    async def stuck(ctx: WorkflowContext) -> None:
        await ctx.call_activity(hang)

    return registry


async def test_a_stray_cancel_of_a_worker_fails_the_runtime_loudly() -> None:
    """A worker task that ended by a cancellation nobody asked for (a stray
    ``task.cancel()``, as the double cancel of an attempt made) ended the engine's whole
    task group without an error: the process kept running with no turns, timers or
    leases. The engine now fails loudly with ``EngineFailedError``."""
    started = anyio.Event()
    clock = durable.MockClock()
    with pytest.raises(BaseExceptionGroup) as caught:  # noqa: PT012
        async with durable.Runtime(_hanging(started), store=MemoryStore(), clock=clock) as rt:
            await rt.start("stuck", instance_id="s")
            await started.wait()
            (attempt,) = rt._engine._attempts.values()
            assert attempt.task is not None
            attempt.task.cancel()  # the stray cancel: no scope asked for it
            task = attempt.task
            while not task.done():  # the engine's failure cancels this wait
                await anyio.lowlevel.checkpoint()
            await anyio.wait_all_tasks_blocked()
            assert rt._engine.running, "the engine stopped without an error"
    assert caught.group_contains(EngineFailedError)


_NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def _ended_then_purged_then_started_again() -> tuple[ActiveIndex, InstanceMeta, str]:
    """Instance ``x``: a run (start ``old``) that ended at seq 1 and whose ended meta
    was never written (its writer holds it), then a purge, then a new start ``new``
    under the id. Returns the index, that meta and the ETag of the run's first meta."""
    store = MemoryStore()
    index = ActiveIndex(store, 1)
    created = await create_instance(index, _NOW, "x", "wf", NULL, run_id="old")
    assert created.meta_etag is not None
    ended = TurnRecord(seq=1, status=WorkflowStatus.TERMINATED,
                       events=[WorkflowTerminated(event_id=1, timestamp=_NOW)])  # fmt: skip
    await store.put_if_absent(log_key("x", 1), encode(ended))
    stale = InstanceMeta(
        instance_id="x", name="wf", status=WorkflowStatus.TERMINATED, seq=1, run_start=0,
        created_at=_NOW, updated_at=_NOW, origin="old",
    )  # fmt: skip
    assert await purge_instance(index, "x", now=_NOW)
    await create_instance(index, _NOW, "x", "wf", NULL, run_id="new")
    return index, stale, created.meta_etag


async def test_an_old_runs_meta_is_not_written_back_after_a_purge_and_a_new_start() -> None:
    """Found by the simulation (seed 229): a run's first meta write failed, so its
    writer kept no ETag and wrote the meta by put-if-absent. After a purge deleted the
    meta and a new start (whose own meta write failed) took the id, the old run's
    TERMINATED meta (seq 1) was written back: ``repair`` trusted it and ended the new
    run's active-index entry at seq 0, and the acknowledged start never ran."""
    index, stale, _ = await _ended_then_purged_then_started_again()
    await index.store.delete(meta_key("x"))  # the new start's meta write failed
    with pytest.raises(ObjectNotFoundError):
        await write_meta(index.store, stale, None)
    assert await read_meta(index.store, "x") is None
    await repair(index, "x", await index.entries("x"))
    (entry,) = await index.entries("x")
    assert entry.seq == 0
    assert entry.run_id == "new"


async def test_an_old_runs_meta_does_not_replace_a_new_starts_meta() -> None:
    """Same bug, the other way in: the new start's meta stood (seq 0), and the old
    run's writer, holding the ETag of the run's first meta, was refused, read the new
    meta and replaced it because its own seq (1) was higher; seqs order the metas of
    one log only, not of a log a purge replaced."""
    index, stale, etag = await _ended_then_purged_then_started_again()
    await write_meta(index.store, stale, etag)
    found = await read_meta(index.store, "x")
    assert found is not None
    assert found[0].origin == "new"
    assert found[0].status == WorkflowStatus.PENDING
