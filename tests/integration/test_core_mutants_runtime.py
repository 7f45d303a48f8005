"""Tests that fail when the core is broken on purpose, where breaking it needs a runtime.

Each test names the deliberate breakage (mutant) it kills: a review applied these by
hand and the whole suite still passed.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread
import pytest

import durable
from durable import ActivityContext, MockClock, Registry, WorkflowContext, WorkflowStatus
from durable._core._events import ActivityCompleted, TimerCreated
from durable.store import MemoryStore
from durable.testing import Faults, simulate

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


core = Registry()


@core.activity
async def echo(ctx: ActivityContext, value: Any) -> Any:
    return value


@core.workflow
async def rolls(ctx: WorkflowContext, _: None) -> list[Any]:
    drawn = [ctx.random().random(), str(ctx.uuid4())]
    recorded = await ctx.call_activity(echo, drawn)  # the first draw, kept in history
    await ctx.sleep(timedelta(seconds=1))  # evicted here: the rest is a replay
    return [recorded, drawn]


@core.workflow
async def fan_out(ctx: WorkflowContext, n: int) -> list[int]:
    return await ctx.all([ctx.call_activity(echo, i) for i in range(n)])


async def test_random_and_uuid4_replay_the_same_values_and_differ_per_run() -> None:
    """Mutant: ``ctx.random()``/``ctx.uuid4()`` unseeded (or seeded from the instance id).

    Replay after eviction must draw what the first execution drew, and each run (even of
    the same instance id) must draw its own values."""
    async with durable.Runtime(
        core, store=MemoryStore(), clock=MockClock(T0, auto_advance=True),
        max_resident_workflows=0,
    ) as rt:  # fmt: skip
        first = await (await rt.start("rolls", instance_id="dice"))
        other = await (await rt.start("rolls", instance_id="other-dice"))
        await rt.client.purge("dice")
        again = await (await rt.start("rolls", instance_id="dice"))
    for recorded, replayed in (first, other, again):
        assert recorded == replayed  # the replay drew the same numbers and the same uuid
    draws = {tuple(run[0]) for run in (first, other, again)}
    assert len(draws) == 3  # three runs, three different draws
    assert {durable_uuid_version(run[0][1]) for run in (first, other, again)} == {4}


def durable_uuid_version(text: str) -> int | None:
    import uuid

    return uuid.UUID(text).version


async def test_a_sync_activity_runs_in_a_thread_and_never_blocks_the_loop() -> None:
    """Mutant: sync activities called inline on the event loop instead of in a thread.

    The sync activity blocks on a ``threading.Event`` that only the event loop sets, once
    it sees the activity waiting: inline, the loop never gets to set it."""
    entered, gate = threading.Event(), threading.Event()
    loop_thread = threading.get_ident()
    registry = Registry()

    @registry.activity
    def blocking(ctx: ActivityContext) -> list[bool]:
        entered.set()
        opened = gate.wait(timeout=10)  # reached only when the mutant blocks the loop
        return [opened, threading.get_ident() != loop_thread]

    @registry.workflow
    async def calls_blocking(ctx: WorkflowContext) -> list[bool]:
        return await ctx.call_activity(blocking)

    async def open_gate_from_the_loop() -> None:
        await anyio.to_thread.run_sync(entered.wait)
        gate.set()

    async with (
        durable.Runtime(registry, store=MemoryStore(), clock=MockClock(T0)) as rt,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(open_gate_from_the_loop)
        result = await (await rt.start(calls_blocking, instance_id="sync"))
    assert result == [True, True]


def completion_order(history: list[Any]) -> tuple[int, ...]:
    return tuple(e.task_id for e in history if isinstance(e, ActivityCompleted))


async def test_simulate_reorders_concurrent_completions() -> None:
    """Mutant: ``simulate`` no longer reordering concurrent completions (``Faults.reorder``).

    Across seeds the completions of one fan-out arrive in different orders; the same seed
    keeps its order; with ``reorder=False`` every seed sees the same order."""
    orders = []
    for seed in range(12):
        run = await simulate(core, fan_out, 6, seed=seed)
        assert run.result == list(range(6))
        orders.append(completion_order(run.history))
    assert len(set(orders)) > 1, orders
    again = await simulate(core, fan_out, 6, seed=3)
    assert completion_order(again.history) == orders[3]
    calm = {
        completion_order(
            (await simulate(core, fan_out, 6, seed=s, faults=Faults(reorder=False))).history
        )
        for s in range(4)
    }
    assert len(calm) == 1


def sleeper_registry(when: datetime) -> Registry:
    registry = Registry()

    @registry.workflow
    async def wake_at(ctx: WorkflowContext) -> list[str]:
        before = ctx.now()
        await ctx.sleep_until(when)
        return [before.isoformat(), ctx.now().isoformat()]

    return registry


@pytest.mark.parametrize("resident", [None, 0])
async def test_sleep_until_waits_for_the_given_time_and_replays(resident: int | None) -> None:
    """Mutant: ``ctx.sleep_until`` removed (or firing at the wrong time).

    On a MockClock the workflow wakes exactly at the given time, not a moment before, and
    (evicted after each turn) replays the same timer."""
    when = T0 + timedelta(hours=1, minutes=30)
    registry = sleeper_registry(when)
    clock = MockClock(T0)
    async with durable.Runtime(
        registry, store=MemoryStore(), clock=clock, max_resident_workflows=resident
    ) as rt:
        handle = await rt.start("wake_at", instance_id="alarm")
        await rt.wait_idle()
        clock.advance(timedelta(hours=1, minutes=29, seconds=59))
        await rt.wait_idle()
        assert (await handle.describe()).status is WorkflowStatus.RUNNING
        clock.advance(timedelta(seconds=1))
        assert await handle == [T0.isoformat(), when.isoformat()]
        timers = [e for e in await handle.history() if isinstance(e, TimerCreated)]
    assert [t.fire_at for t in timers] == [when]
