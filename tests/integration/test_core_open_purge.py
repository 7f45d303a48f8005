"""The simulation's open core bugs (issue: no acknowledged start may be lost), the purge
side: a purge that paused and was taken over must never touch what came after it.

Each race is forced by a store wrapper that pauses one call at a chosen point and runs
the other side of the race there; time flows through a MockClock, so nothing sleeps."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

import durable
from durable import MockClock
from durable._log._reader import load_run
from durable._log._records import log_key, meta_key
from durable.store import MemoryStore

sys.path.insert(0, str(Path(__file__).parent))
from test_core_reuse_purge import (
    DELETES,
    T0,
    Hold,
    _run_to_its_end,
    _second_run_ends,
    _waiting,
)

pytestmark = pytest.mark.anyio


async def _start_after_a_takeover(held_at: str, after: bool) -> MemoryStore:
    """Purge ``w`` through a store that pauses the purge at ``held_at`` (its claim, its
    delete of the meta, or its delete of that key); meanwhile a minute passes, a second
    purge takes the first one over and finishes it, and ``w`` starts again
    (acknowledged). Then the first purge goes on: the new run must run. Returns the
    store."""
    inner, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    async with durable.Runtime(_waiting(), store=inner, clock=clock) as rt:
        await _run_to_its_end(rt)
        run = await load_run(inner, "w")
        assert run is not None
        claim = log_key("w", run.last_seq + 1)
        keys = {"claim": claim, "meta": meta_key("w")}
        slow_store = Hold(inner)
        slow = durable.Client(slow_store, clock=clock)
        ops = ("put_if_absent",) if held_at == "claim" else DELETES  # the claim, or the meta
        held = keys.get(held_at, held_at)
        slow_store.hold_at(lambda o, key: o in ops and key == held, after=after)
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow.purge, "w")
            await slow_store.entered.wait()
            clock.advance(timedelta(minutes=2))  # the first purge looks cut short
            await durable.Client(inner, clock=clock).purge("w")  # takes it over
            assert await load_run(inner, "w") is None
            second: durable.WorkflowHandle[Any] = await rt.client.start(
                "waiter", "b", instance_id="w"
            )  # acknowledged: it must run
            await rt.wait_idle()
            slow_store.release.set()
        await _second_run_ends(rt, inner, second)
    return inner


async def test_a_purge_taken_over_after_its_claim_leaves_a_later_start_alone() -> None:
    """Pins an acknowledged start that never runs (simulation seed 171's kind): a purge
    paused just after claiming the seq after the last record; a minute later another
    purge took it over and finished, and the id was started again at ``log/0``. The
    first purge, going on, wrote its purge record over the new run's ``log/0`` and
    deleted its records. A purge holds ``log/0`` by its ETag: one taken over finds it
    changed and stops."""
    await _start_after_a_takeover("claim", after=True)


async def test_a_purge_taken_over_midway_leaves_a_later_start_alone() -> None:
    """Pins an acknowledged start erased by a purge (the records of seed 171's kind: a
    run's records beside no ``log/0``): a purge paused just after deleting the meta; a
    minute later another purge took it over and finished, and the id was started again
    at ``log/0``. The first purge, going on, deleted the new run's inbox and records,
    ``log/0`` among them. Before each delete a purge checks ``log/0`` still holds its
    own record, and one taken over stops there."""
    await _start_after_a_takeover("meta", after=True)
