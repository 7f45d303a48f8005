"""An activity attempt's control (its cancel signal and heartbeats) is made on first
use only: a plain call pays for none of it, and one made after the attempt was
stopped starts cancelled."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest
from _semantics import runtime_fixture, store_fixture  # noqa: F401 (fixtures)

import durable
from durable import ActivityContext, Registry, WorkflowContext
from durable._activity import Attempt

pytestmark = pytest.mark.anyio


async def test_a_control_made_after_the_cancel_reads_cancelled(
    runtime: Callable[..., Any],
) -> None:
    """An attempt cancelled before its activity ever looked at ``ctx.cancelled`` (no
    control made yet) reads it as set afterwards: the lazily made control must start
    cancelled, not fresh."""
    registry = Registry()
    started = anyio.Event()
    seen: list[bool] = []

    @registry.activity
    async def unaware(ctx: ActivityContext) -> str:
        started.set()
        try:
            await anyio.Event().wait()  # never set: only the cancel ends this
        finally:
            seen.append(ctx.cancelled.is_set())
        return "never applied"

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> str:
        future = ctx.call_activity(unaware)
        await ctx.wait_for_event("go")
        future.cancel()
        try:
            await future
        except durable.CancelledError:
            return "cancelled"
        return "not cancelled"

    async with runtime(registry) as rt:
        handle = await rt.start(flow)
        await started.wait()
        await handle.raise_event("go")
        assert await handle == "cancelled"
        await rt.wait_idle()
    assert seen == [True]


async def test_plain_calls_make_no_control(
    runtime: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cost that activity timeouts and cancellation added to every step: an
    attempt that neither reads ``ctx.cancelled`` nor beats (a ``start_to_close``
    timeout included) makes no ``Attempt``; one that reads ``ctx.cancelled`` makes one."""
    made: list[Attempt] = []
    init = Attempt.__init__

    def counting(self: Attempt, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Attempt, "__init__", counting)
    registry = Registry()

    @registry.activity
    async def plain(ctx: ActivityContext, n: int) -> int:
        return n + 1

    @registry.activity
    async def asks(ctx: ActivityContext) -> bool:
        return ctx.cancelled.is_set()

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> list[Any]:
        n = 0
        for _ in range(5):
            n = await ctx.call_activity(plain, n)
        n = await ctx.call_activity(plain, n, start_to_close_timeout=timedelta(seconds=5))
        return [n, await ctx.call_activity(asks)]

    async with runtime(registry) as rt:
        assert await (await rt.start(flow)) == [6, False]
    assert len(made) == 1


async def test_a_sync_activity_heartbeats_from_its_thread(runtime: Callable[..., Any]) -> None:
    """A sync activity's control is made on the loop's thread before its worker thread
    starts (made lazily in the thread, it took that thread for the loop's): details a
    sync attempt beats reach the next attempt."""
    registry = Registry()
    seen: list[Any] = []

    @registry.activity
    def beats(ctx: ActivityContext) -> str:
        seen.append(ctx.heartbeat_details)
        ctx.heartbeat(f"from attempt {ctx.attempt}")
        if ctx.attempt == 1:
            raise RuntimeError("fails once")
        return "done"

    @registry.workflow
    async def flow(ctx: WorkflowContext) -> str:
        out: str = await ctx.call_activity(beats, retry=durable.RetryPolicy(max_attempts=2))
        return out

    async with runtime(registry) as rt:
        with anyio.fail_after(10):
            assert await (await rt.start(flow)) == "done"
    assert seen == [None, "from attempt 1"]
