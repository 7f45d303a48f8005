"""An event handed over while an instance's inbox is read must reach the instance as
it is when the read ends: the read may outlast the copy it began with (evicted after
a turn meanwhile). Forced by a store wrapper that pauses the read; nothing sleeps."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import durable
from durable import Registry, WorkflowContext
from durable._core._events import EventRaised
from durable._log._instances import send_message
from durable._log._records import inbox_prefix
from durable.store import MemoryStore

sys.path.insert(0, str(Path(__file__).parent))
from test_core_open4_repair import Pausing
from test_core_reuse_purge import _outcome

pytestmark = pytest.mark.anyio


def _family() -> Registry:
    registry = Registry()

    @registry.workflow
    async def kid(ctx: WorkflowContext) -> int:
        got: int = await ctx.wait_for_event("go")
        return got

    @registry.workflow
    async def mom(ctx: WorkflowContext) -> int:
        got: int = await ctx.call_workflow(kid, instance_id="c")
        return got

    return registry


async def test_an_answer_handed_over_during_a_read_that_outlived_its_copy_is_applied() -> None:
    """Pins a parent that never heard its child end (soak seed 963 at 32272fe, the kind
    of seed 138): the parent's inbox was read twice in one handover (a second wakeup
    during the first load); during the second read the parent took a turn and was
    evicted (no room to keep it), and its child's answer, delivered in memory, waited
    behind the read. When the read ended it handed the answer to the evicted copy: lost,
    and its call still armed here, so no reload asked the child again."""
    inner, clock = MemoryStore(), durable.MockClock(auto_advance=True)
    store = Pausing(inner)
    async with durable.Runtime(
        _family(),
        store=store,  # type: ignore[arg-type]
        clock=clock,
        max_resident_workflows=0,
    ) as rt:
        engine = rt._engine
        handle = await rt.start("mom", instance_id="m")
        await rt.wait_idle()
        assert "m" not in engine._instances  # waiting on its child: evicted
        noise = EventRaised(name="noise", input=durable._core._events.NULL)
        await send_message(inner, "m", "00000000000000000001-noise", noise)  # a turn to take
        inbox = inbox_prefix("m")
        first = store.pause("list", inbox)
        second = store.pause("list", inbox)
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.recover, "m")
            await first.entered.wait()  # the load reads the inbox
            await engine.recover("m")  # a second wakeup: the handover reads once more
            first.release.set()
            await second.entered.wait()  # the second read is slow...
            while "m" in engine._instances:  # ...the turn runs, and the copy is evicted
                await anyio.lowlevel.checkpoint()
            await rt.client.get_handle("c").raise_event("go", 5)  # the child ends
            while not engine._handovers["m"].events:  # its answer waits behind the read
                await anyio.lowlevel.checkpoint()
            second.release.set()
        assert await _outcome(rt, handle) == 5
