"""Activity timeouts and heartbeats through the public API, on memory:// and file://
(and s3:// where heartbeat details are stored), on a MockClock that skips the timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pytest
from _semantics import runtime_fixture, store_fixture  # noqa: F401 (fixtures)

import durable
import durable.testing
from durable import ActivityContext, MockClock, Registry, RetryPolicy, WorkflowContext
from durable._core._events import ActivityErrored, ActivityScheduled
from durable.store import ObjectStore

pytestmark = pytest.mark.anyio

SECOND = timedelta(seconds=1)


def count_heartbeat_writes(store: ObjectStore) -> list[str]:
    """Record every store write of heartbeat details (the store's ``put`` patched)."""
    writes: list[str] = []
    put = store.put

    async def counting(key: str, data: bytes) -> str:
        if key.endswith("/~heartbeat"):
            writes.append(data.decode())
        return await put(key, data)

    store.put = counting  # type: ignore[method-assign]
    return writes


async def test_start_to_close_times_out_a_stuck_attempt_and_the_retry_runs(
    runtime: Callable[..., Any],
) -> None:
    """A stuck attempt (waiting for ever) fails with ActivityTimeoutError after its
    start_to_close_timeout, sees its cancel signal, and the retry runs; the MockClock
    skips the 30 seconds."""
    registry = Registry()
    seen: list[tuple[int, bool]] = []

    @registry.activity
    async def fetch(ctx: ActivityContext) -> str:
        if ctx.attempt == 1:
            try:
                await ctx.cancelled.wait()  # a call that never answers
            finally:
                seen.append((ctx.attempt, ctx.cancelled.is_set()))
        return f"attempt {ctx.attempt}"

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> str:
        result: str = await ctx.call_activity(
            fetch, start_to_close_timeout=30 * SECOND, retry=RetryPolicy(max_attempts=2)
        )
        return result

    async with runtime(registry) as rt:
        handle = await rt.start(flow)
        assert await handle == "attempt 2"
        history = await handle.history()
    assert seen == [(1, True)]
    errored = [e for e in history if isinstance(e, ActivityErrored)]
    assert [e.failure.type for e in errored] == ["durable.ActivityTimeoutError"]
    assert errored[0].failure.message.startswith("start_to_close timeout of 0:00:30")
    scheduled = [e for e in history if isinstance(e, ActivityScheduled)]
    assert scheduled[0].timeouts is not None
    assert scheduled[0].timeouts.start_to_close == 30 * SECOND
    # the retry began 30 seconds (the timeout) and 1 second (the backoff) later
    assert scheduled[1].timestamp - scheduled[0].timestamp == 31 * SECOND


async def test_timeout_error_names_the_timeout_and_replays(runtime: Callable[..., Any]) -> None:
    """Without a retry, the caller catches ActivityTimeoutError (an ActivityFailed)
    naming the timeout; the run replays from its history to the same end."""
    registry = Registry()

    @registry.activity
    async def hang(ctx: ActivityContext) -> None:
        await ctx.cancelled.wait()

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> list[str]:
        caught: list[str] = []
        try:
            await ctx.call_activity(hang, start_to_close_timeout=5 * SECOND)
        except durable.ActivityTimeoutError as err:
            caught.append(err.timeout)
            caught.append(type(err).__name__)
            caught.append(str(isinstance(err, durable.ActivityFailed)))
        await ctx.sleep(SECOND)
        return caught

    async with runtime(registry) as rt:
        handle = await rt.start(flow, instance_id="t1")
        assert await handle == ["start_to_close", "ActivityTimeoutError", "True"]
        history = await handle.history()
    replayer = durable.testing.Replayer(registry)
    replayer.check(history)


async def test_heartbeat_timeout_and_details_reach_the_next_attempt(
    runtime: Callable[..., Any], store: ObjectStore
) -> None:
    """An attempt that records progress and then stops heartbeating fails after its
    heartbeat_timeout; the next attempt reads the last details in heartbeat_details."""
    registry = Registry()
    details_seen: list[Any] = []

    @registry.activity
    async def crunch(ctx: ActivityContext, rows: int) -> int:
        details_seen.append(ctx.heartbeat_details)
        start = ctx.heartbeat_details or 0
        for row in range(start, rows):
            ctx.heartbeat(row)
            if ctx.attempt == 1 and row == 3:
                await ctx.cancelled.wait()  # hangs: no more heartbeats
        return rows

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> int:
        done: int = await ctx.call_activity(
            crunch, 6, heartbeat_timeout=10 * SECOND, retry=RetryPolicy(max_attempts=3)
        )
        return done

    async with runtime(registry) as rt:
        handle = await rt.start(flow)
        assert await handle == 6
        history = await handle.history()
    assert details_seen == [None, 3]
    errored = [e for e in history if isinstance(e, ActivityErrored)]
    assert errored[0].failure.message.startswith("heartbeat timeout of 0:00:10")


async def test_heartbeats_keep_a_slow_attempt_alive(runtime: Callable[..., Any]) -> None:
    """An attempt that heartbeats more often than its heartbeat_timeout is not timed
    out, however long it runs in all (the clock moved by hand, past the timeout)."""
    registry = Registry()
    clock = MockClock()
    arrived: list[anyio.Event] = [anyio.Event()]
    go_on: list[anyio.Event] = []

    @registry.activity
    async def slow(ctx: ActivityContext) -> str:
        for _ in range(4):
            ctx.heartbeat()
            go_on.append(anyio.Event())
            arrived[-1].set()
            await go_on[-1].wait()
        return "done"

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> str:
        out: str = await ctx.call_activity(slow, heartbeat_timeout=10 * SECOND)
        return out

    async with runtime(registry, clock) as rt:
        handle = await rt.start(flow)
        with anyio.fail_after(10):
            for _ in range(4):
                await arrived[-1].wait()
                arrived.append(anyio.Event())
                clock.advance(8 * SECOND)  # 32 seconds in all: past the 10 s timeout
                go_on[-1].set()
            assert await handle == "done"


async def test_heartbeat_writes_are_throttled(
    runtime: Callable[..., Any], store: ObjectStore
) -> None:
    """A thousand heartbeats within one throttle interval cost one store write, not a
    thousand; a failed attempt's last details are written before it ends."""
    writes = count_heartbeat_writes(store)
    registry = Registry()
    seen: list[Any] = []

    @registry.activity
    async def busy(ctx: ActivityContext) -> int:
        seen.append(ctx.heartbeat_details)
        for i in range(1000):
            ctx.heartbeat(i)
            await anyio.lowlevel.checkpoint()
        if ctx.attempt == 1:
            raise RuntimeError("fails once")
        return 0

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> int:
        out: int = await ctx.call_activity(
            busy, heartbeat_timeout=60 * SECOND, retry=RetryPolicy(max_attempts=2)
        )
        return out

    async with runtime(registry) as rt:
        assert await (await rt.start(flow)) == 0
    assert seen == [None, 999]
    # attempt 1: one early heartbeat, then its last on failing; attempt 2: one early only
    assert len(writes) == 3
    assert writes[1] == "999"


async def test_sync_activity_polls_its_cancel_signal(runtime: Callable[..., Any]) -> None:
    """A sync activity (in a worker thread) sees ``ctx.cancelled`` set once its
    start_to_close_timeout passes, and stops; its late result is not applied."""
    registry = Registry()
    clock = MockClock()
    running = anyio.Event()
    stopped = threading.Event()

    @registry.activity
    def spin(ctx: ActivityContext) -> str:
        anyio.from_thread.run_sync(running.set)
        while not ctx.cancelled.is_set():
            time.sleep(0.001)
        stopped.set()
        return "late result"

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> str:
        try:
            await ctx.call_activity(spin, start_to_close_timeout=5 * SECOND)
        except durable.ActivityTimeoutError as err:
            return err.timeout
        return "no timeout"

    async with runtime(registry, clock) as rt:
        handle = await rt.start(flow)
        with anyio.fail_after(10):
            await running.wait()
            clock.advance(6 * SECOND)
            assert await handle == "start_to_close"
            assert await anyio.to_thread.run_sync(stopped.wait, 10)


async def test_schedule_to_close_bounds_all_attempts(runtime: Callable[..., Any]) -> None:
    """schedule_to_close_timeout bounds every attempt and backoff together: retries
    stop when it passes, and the error names it."""
    registry = Registry()
    attempts: list[int] = []

    @registry.activity
    async def flaky(ctx: ActivityContext) -> None:
        attempts.append(ctx.attempt)
        await ctx.cancelled.wait()

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> str:
        try:
            await ctx.call_activity(
                flaky,
                start_to_close_timeout=10 * SECOND,
                schedule_to_close_timeout=25 * SECOND,
                retry=RetryPolicy(
                    max_attempts=100, initial_interval=SECOND, backoff_coefficient=1.0
                ),
            )
        except durable.ActivityTimeoutError as err:
            return err.timeout
        return "no timeout"

    async with runtime(registry) as rt:
        handle = await rt.start(flow)
        assert await handle == "schedule_to_close"
        history = await handle.history()
    # 0-10 s attempt 1, 11-21 s attempt 2, 22 s attempt 3 cut at 25 s
    assert attempts == [1, 2, 3]
    errored = [e for e in history if isinstance(e, ActivityErrored)]
    assert errored[-1].failure.message.startswith("schedule_to_close timeout of 0:00:25")
    assert errored[-1].timestamp - history[0].timestamp == 25 * SECOND


@pytest.mark.parametrize(
    "option", ["start_to_close_timeout", "schedule_to_close_timeout", "heartbeat_timeout"]
)
async def test_a_timeout_that_is_not_positive_is_refused(
    runtime: Callable[..., Any], option: str
) -> None:
    """A timeout of zero or less is an InvalidArgumentError (a ValueError) at the call."""
    registry = Registry()

    @registry.activity
    async def noop(ctx: ActivityContext) -> None:
        return None

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> str:
        try:
            await ctx.call_activity(noop, **{option: timedelta(0)})
        except durable.InvalidArgumentError as err:
            return f"{isinstance(err, ValueError)}: {err}"
        return "accepted"

    async with runtime(registry) as rt:
        answer = await (await rt.start(flow))
    assert answer == f"True: {option} must be positive, not 0:00:00"
