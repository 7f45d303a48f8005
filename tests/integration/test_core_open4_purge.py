"""A purge that paused *inside* a delete (its check that it still holds ``log/0`` done,
the request not yet at the store) was taken over a minute later; the purge that took
it over finished, and the id was started again. When the paused request landed it
removed what the new start had written under the same key. Each race is forced by a
store wrapper that pauses the one call; time flows through a MockClock."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

import durable
from durable import MockClock
from durable._log._reader import read_meta
from durable._log._records import inbox_prefix, log_key
from durable.store import MemoryStore

sys.path.insert(0, str(Path(__file__).parent))
from test_core_open4_repair import Pausing
from test_core_open_purge import _start_after_a_takeover
from test_core_reuse_purge import T0, _run_to_its_end, _waiting

pytestmark = pytest.mark.anyio


async def _purge_paused_in_delete_of(key: str) -> None:
    """The race of :func:`_start_after_a_takeover`, the first purge paused inside its
    delete of ``key`` (before the request reached the store); and the new run's meta
    must stand, ended."""
    inner = await _start_after_a_takeover(key, after=False)
    found = await read_meta(inner, "w")
    assert found is not None, "the new run's meta was deleted"
    assert found[0].status == durable.WorkflowStatus.COMPLETED


async def test_a_purge_paused_inside_its_delete_of_log_0_leaves_a_later_start_alone() -> None:
    """Pins an acknowledged start erased by a purge: the first purge checked that it
    still held ``log/0`` and sent its delete, which landed after a takeover, the end of
    the other purge and a new start: the new run's ``log/0`` went. A purge deletes
    ``log/0`` by the ETag it holds (``delete_if_match``)."""
    await _purge_paused_in_delete_of(log_key("w", 0))


async def test_a_purge_paused_inside_its_delete_of_a_record_leaves_a_later_start_alone() -> None:
    """Same race at ``log/1``: the new run's first turn there was deleted, a hole in
    its log. Each record is deleted by the ETag read while ``log/0`` was still held."""
    await _purge_paused_in_delete_of(log_key("w", 1))


async def test_a_purge_paused_inside_its_delete_of_the_meta_leaves_a_later_start_alone() -> None:
    """Same race at the meta: the new run's meta was deleted, and as a meta deleted
    under a writer is never written again (only a purge deletes one), the instance was
    listed with no meta for good. The meta is deleted by the ETag read while held."""
    await _purge_paused_in_delete_of("meta")


async def test_a_purge_paused_inside_its_inbox_delete_leaves_a_later_starts_event() -> None:
    """Same race at the inbox: the paused delete of the whole inbox (by prefix) took
    the event sent to the new start, which then waited for it forever. A purge lists
    the inbox while it holds ``log/0`` and deletes those messages only."""
    inner, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    async with durable.Runtime(_waiting(), store=inner, clock=clock) as rt:
        await _run_to_its_end(rt)
    slow_store = Pausing(inner)
    prefix = inbox_prefix("w")
    pause = slow_store.pause_at(lambda op, k: op in ("list", "delete_prefix") and k == prefix)
    slow = durable.Client(slow_store, clock=clock)  # type: ignore[arg-type]
    client = durable.Client(inner, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(slow.purge, "w")
        await pause.entered.wait()
        clock.advance(timedelta(minutes=2))
        await client.purge("w")  # takes it over
        second: durable.WorkflowHandle[Any] = await client.start(
            "waiter", "b", instance_id="w"
        )  # fmt: skip
        await second.raise_event("go", "new")  # waits in the inbox: no runtime runs
        pause.release.set()
    assert await inner.list(prefix), "the new start's event was deleted"
    async with durable.Runtime(_waiting(), store=inner, clock=clock) as rt:
        with anyio.fail_after(30):
            assert await rt.client.get_handle("w").result() == "new"
