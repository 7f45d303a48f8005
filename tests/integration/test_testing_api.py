"""durable.testing as a user meets it: only the public API, the way a test suite uses it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings

import durable
from durable import ActivityContext, RetryPolicy, WorkflowContext
from durable.testing import Faults, Replayer, WorkflowEnvironment, simulate
from durable.testing.strategies import (
    expected_result,
    fault_schedules,
    program_registry,
    seeds,
    workflow_programs,
)

pytestmark = pytest.mark.anyio

registry = durable.Registry()


@registry.activity
async def send_reminder(ctx: ActivityContext, user: str) -> str:
    return f"reminded {user}"


@registry.workflow
async def trial_period(ctx: WorkflowContext, user: str) -> str:
    await ctx.sleep(timedelta(days=30))
    return await ctx.call_activity(send_reminder, user)


@registry.workflow
async def approval(ctx: WorkflowContext, _: None) -> str:
    try:
        return await ctx.wait_for_event("approve", timeout=timedelta(days=7))
    except durable.TimeoutError:
        return "expired"


@registry.activity
async def reserve(ctx: ActivityContext, item: int) -> int:
    return item * 10


@registry.workflow
async def fulfil(ctx: WorkflowContext, items: list[int]) -> int:
    retry = RetryPolicy(max_attempts=4, initial_interval=timedelta(seconds=5))
    reserved = await ctx.all([ctx.call_activity(reserve, i, retry=retry) for i in items])
    await ctx.sleep(timedelta(hours=2))
    total = await ctx.call_activity(reserve, sum(reserved), retry=retry)
    return total


async def test_a_thirty_day_sleep_on_virtual_time() -> None:
    async with WorkflowEnvironment(registry) as env:
        start = env.clock.now()
        assert await env.run(trial_period, "ada") == "reminded ada"
        assert env.clock.now() - start == timedelta(days=30)


async def test_a_seven_day_event_timeout_on_virtual_time() -> None:
    async with WorkflowEnvironment(registry) as env:
        start = env.clock.now()
        assert await env.run(approval) == "expired"
        assert env.clock.now() - start == timedelta(days=7)


async def test_an_event_before_the_timeout(durable_env_factory: Any) -> None:
    async with durable_env_factory(registry, clock=durable.MockClock()) as env:
        handle = await env.start(approval)
        await env.wait_idle()
        await handle.raise_event("approve", "yes")
        assert await handle == "yes"


async def test_fixtures_share_the_clock(durable_env_factory: Any, mock_clock: Any) -> None:
    async with durable_env_factory(registry) as env:
        assert env.clock is mock_clock
        await env.run(trial_period, "bo")
    assert mock_clock.now().year == 2026


async def test_the_replayer_accepts_unchanged_code_and_names_the_changed_event(
    tmp_path: Path,
) -> None:
    async with WorkflowEnvironment(registry) as env:
        handle = await env.start(fulfil, [1, 2])
        await handle
        history = await handle.history()
    Replayer(registry).check(history)
    saved = tmp_path / "fulfil.json"
    saved.write_bytes(msgspec.json.encode(history))
    Replayer(registry).check(saved)

    changed = durable.Registry()

    @changed.activity(name="reserve")
    async def reserve_v2(ctx: ActivityContext, item: int) -> int:
        return item

    @changed.activity
    async def audit(ctx: ActivityContext, items: list[int]) -> None:
        pass

    @changed.workflow(name="fulfil")
    async def fulfil_v2(ctx: WorkflowContext, items: list[int]) -> int:
        await ctx.call_activity(audit, items)  # a new first step
        reserved = await ctx.all([ctx.call_activity(reserve_v2, i) for i in items])
        return sum(reserved)

    with pytest.raises(durable.NonDeterminismError) as caught:
        Replayer(changed).check(saved)
    assert caught.value.event_id == 2
    assert "history event 2" in str(caught.value)


async def test_the_same_seed_gives_the_same_trace() -> None:
    faults = Faults(crash_rate=0.2, duplicate_rate=0.2, activity_error_rate=0.2)
    first = await simulate(registry, fulfil, [1, 2, 3], seed=1234, faults=faults)
    again = await simulate(registry, fulfil, [1, 2, 3], seed=1234, faults=faults)
    assert first.trace == again.trace
    assert first.result == again.result == 600
    assert first.format_trace().startswith("simulate(seed=1234)")
    other = await simulate(registry, fulfil, [1, 2, 3], seed=4321, faults=faults)
    assert other.trace != first.trace


def assert_no_turn_applied_twice(history: list[Any]) -> None:
    assert [e.event_id for e in history] == list(range(len(history)))
    scheduled = [e.task_id for e in history if type(e).__name__ == "ActivityScheduled"]
    answered = [
        e.task_id for e in history if type(e).__name__ in ("ActivityCompleted", "ActivityErrored")
    ]
    assert len(scheduled) == len(set(scheduled))
    assert len(answered) == len(set(answered))
    assert set(answered) <= set(scheduled)


async def test_two_hundred_seeds_with_every_fault() -> None:
    faults = Faults(
        crash_rate=0.15, duplicate_rate=0.2, activity_error_rate=0.25, store_error_rate=0.03
    )
    crashes = injected = 0
    for seed in range(200):
        run = await simulate(registry, fulfil, [1, 2, 3, 4], seed=seed, faults=faults)
        assert run.result == 1000, run.format_trace()
        assert_no_turn_applied_twice(run.history)
        crashes += run.crashes
        injected += sum("activity error" in line for line in run.trace)
    assert crashes > 50  # the faults really happened
    assert injected > 50


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=workflow_programs(), faults=fault_schedules(), seed=seeds())
def test_random_programs_survive_random_faults(program: Any, faults: Faults, seed: int) -> None:
    import anyio

    async def check() -> None:
        run = await simulate(program_registry, "run_program", program, seed=seed, faults=faults)
        assert run.result == expected_result(program), run.format_trace()
        assert_no_turn_applied_twice(run.history)

    anyio.run(check)
