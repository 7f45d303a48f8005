"""Sub-workflow starts racing a purge of the child's id: the race is lost or won,
never the runtime. Each race is forced by a store wrapper that pauses one call."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

import durable
from durable import Registry, WorkflowContext
from durable._log._reader import load_run
from durable._log._records import decode_record, log_key, meta_key
from durable.store import MemoryStore

sys.path.insert(0, str(Path(__file__).parent))
from test_core_open4_announced import Crash, CrashAt
from test_core_open4_repair import Pausing

pytestmark = pytest.mark.anyio


def _family() -> Registry:
    registry = Registry()

    @registry.workflow
    async def kid(ctx: WorkflowContext, n: int) -> int:
        return n

    @registry.workflow
    async def mom(ctx: WorkflowContext, n: int) -> int:
        got: int = await ctx.call_workflow(kid, n, instance_id="c")
        return got

    return registry


async def test_a_child_purged_under_its_replacing_start_is_started_anew() -> None:
    """Pins a runtime killed by a sub-workflow start (simulation seed 384): a parent
    started again (``reuse``) called its child id again; the old child had ended, so the
    new call replaced it (a start after its last record), and a purge of the child
    deleted that log just before the start's record landed. The start withdrew its
    record and raised ``InstanceNotFoundError``, which nothing caught: the runtime's
    task group died. The parent's call now looks again, finds no child and starts it
    anew (as after a rewind's, see ``_rewind_child``)."""
    inner, clock = MemoryStore(), durable.MockClock(auto_advance=True)
    store = Pausing(inner)
    async with durable.Runtime(_family(), store=store, clock=clock) as rt:  # type: ignore[arg-type]
        assert await (await rt.start("mom", 1, instance_id="m")).result() == 1
        old = await load_run(inner, "c")
        assert old is not None
        replace = store.pause("put_if_absent", log_key("c", old.last_seq + 1))
        again = await rt.start("mom", 2, instance_id="m", reuse=True)
        await replace.entered.wait()  # the new call replaces the ended child
        assert await durable.Client(inner, clock=clock).purge("c") == 1
        replace.release.set()
        with anyio.fail_after(30):
            assert await again.result() == 2
        assert rt._engine.running


@pytest.mark.parametrize("at", ["parent", "child meta"])
async def test_a_child_that_ended_as_its_process_died_is_told_to_its_parent(at: str) -> None:
    """Seed 138's kind (a child's completion never told to its parent): the child's
    last turn committed, and the process died before the parent recorded the result
    (before the parent's commit, or before the child's ended meta). The next process
    recovers both: the parent's open call finds the child ended in its log and the
    parent gets the result."""
    inner, clock = MemoryStore(), durable.MockClock(auto_advance=True)
    key = log_key("m", 2) if at == "parent" else meta_key("c")
    crashing = CrashAt(inner, lambda k: k == key and (at == "parent" or _ended(inner, "c")))
    with pytest.raises(BaseExceptionGroup) as died:  # noqa: PT012
        async with durable.Runtime(_family(), store=crashing, clock=clock) as rt:  # type: ignore[arg-type]
            await rt.start("mom", 3, instance_id="m")
            with anyio.fail_after(10):
                await anyio.sleep_forever()
    assert died.group_contains(Crash), died.value
    child = await load_run(inner, "c")
    assert child is not None
    assert child.status is durable.WorkflowStatus.COMPLETED
    async with durable.Runtime(_family(), store=inner, clock=clock) as rt:
        with anyio.fail_after(30):
            assert await rt.client.get_handle("m").result() == 3


def _ended(inner: MemoryStore, instance_id: str) -> bool:
    """Whether the instance's record at seq 1 (its last, here) ends it."""
    found = inner._objects.get(log_key(instance_id, 1))
    return found is not None and decode_record(found[0], "").status == "COMPLETED"
