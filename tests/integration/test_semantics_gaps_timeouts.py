"""Gaps of timeouts and heartbeats closed (issue 15, part B review): a parked instance
(its workflow not registered where it runs) still ends at its execution timeout, and
heartbeats on s3://. On a MockClock that skips time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import test_semantics_timeouts as _timeouts
from test_core_parked_badobjects import parked, unrelated, until
from test_core_parked_badobjects import runtime as parked_runtime

import durable
import durable.testing
from durable import Registry, WorkflowContext, WorkflowStatus
from durable._core._events import ExecutionTimedOut
from durable.store import ObjectStore

pytestmark = pytest.mark.anyio

HOUR = timedelta(hours=1)
registry = Registry()


@registry.workflow
async def slow(ctx: WorkflowContext) -> str:
    await ctx.sleep(48 * HOUR)
    return "done"


async def test_a_parked_instance_times_out(store: ObjectStore) -> None:
    """Bug: an instance parked where its workflow is not registered kept its execution
    deadline pending with its other events, waiting for code: it never ended, however
    long past its execution_timeout. The deadline needs no code: it now ends the run
    FAILED with durable.TimeoutError there, and a worker with the code replays that."""
    clock = durable.MockClock()
    async with parked_runtime(unrelated(), store, clock) as rt:  # no code for "slow"
        client = durable.Client(store, clock=clock)
        handle = await client.start("slow", execution_timeout=24 * HOUR, instance_id="p")
        await until(rt, clock, lambda: parked(handle), "the instance parks")
        clock.advance(24 * HOUR)

        async def failed() -> bool:
            return (await handle.describe()).status is WorkflowStatus.FAILED

        await until(rt, clock, failed, "the execution timeout")
        with pytest.raises(durable.WorkflowFailed) as caught:
            await handle
        history = await handle.history()
    assert caught.value.failure.type == "durable.TimeoutError"
    timed_out = [e for e in history if isinstance(e, ExecutionTimedOut)]
    waited = timed_out[0].timestamp - history[0].timestamp
    assert 24 * HOUR <= waited <= 24 * HOUR + timedelta(minutes=1)  # polled each second
    durable.testing.Replayer(registry).check(history)


@pytest.fixture(name="runtime")
def runtime_on_every_store(runtime_factory: Callable[..., Any]) -> Callable[..., Any]:
    """The heartbeat test's ``runtime``, over conftest's stores: memory, file and s3."""
    return runtime_factory


# Heartbeats on s3:// too (moto): the details an attempt records before it stops
# heartbeating reach the next attempt (the test of test_semantics_timeouts, run here on
# every store).
test_heartbeat_details_on_every_store = (
    _timeouts.test_heartbeat_timeout_and_details_reach_the_next_attempt
)
