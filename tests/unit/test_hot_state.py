"""The state a turn reads on every step lives in slots (issue 13: benchmarks no slower).

CPython 3.11 keeps at most 29 attributes of an instance inline; past that, every read of
one is a dict lookup and every method call on it takes a slower path. The engine grew
its 30th attribute in issue 13, and a sequential workflow's steps got several percent
slower for it alone. These tests name the attribute that is missing from ``__slots__``.
"""

from __future__ import annotations

import anyio

from durable import ActivityContext, Registry, Runtime, WorkflowContext
from durable._core._codec import JsonCodec
from durable._core._replay import WorkflowRun
from durable._engine import Engine
from durable.store import MemoryStore

registry = Registry()


@registry.activity
async def echo(ctx: ActivityContext, i: int) -> int:
    return i


@registry.workflow
async def two_steps(ctx: WorkflowContext, k: int) -> int:
    for i in range(k):
        await ctx.call_activity(echo, i)
    return k


def test_engine_state_is_in_slots() -> None:
    """Every attribute the engine sets while it runs a workflow is one of
    ``_EngineBase.__slots__`` (none lands in the instance's ``__dict__``): add a new one
    there."""
    engines: list[Engine] = []

    async def main() -> None:
        async with Runtime(registry, store=MemoryStore()) as rt:
            handle = await rt.start(two_steps, 2)
            assert await handle == 2
            engines.extend(v for v in vars(rt).values() if isinstance(v, Engine))

    anyio.run(main)
    assert len(engines) == 1
    assert vars(engines[0]) == {}


def test_workflow_run_state_is_in_slots() -> None:
    """Every attribute a run sets is one of ``WorkflowRun.__slots__``: add a new one there."""
    definition = registry.get_workflow("two_steps")
    run = WorkflowRun("i", definition, registry, JsonCodec())
    assert vars(run) == {}
