"""Sync activities and the local store's blocking I/O draw worker threads from limiters of
their own, so neither can starve the other (issue 18)."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

import durable
from durable import ActivityContext, MockClock, Registry, WorkflowContext
from durable.store import LocalStore

pytestmark = pytest.mark.anyio

_BLOCKED = 80
_GUARD = 20.0  # seconds: only a hang reaches it (the bug deadlocked until released)


def blocking_registry(entered: list[int], wake: anyio.Event, release: threading.Event) -> Registry:
    """A registry with a sync activity that blocks until ``release`` and a one-step
    workflow with a sync activity that returns at once."""
    registry = Registry()

    def arrived() -> None:
        entered.append(1)
        if len(entered) == _BLOCKED:
            wake.set()

    @registry.activity
    def block(ctx: ActivityContext, n: int) -> int:
        anyio.from_thread.run_sync(arrived)
        release.wait()
        return n

    @registry.activity
    def quick(ctx: ActivityContext, n: int) -> int:
        return n + 1

    @registry.workflow
    async def blocked(ctx: WorkflowContext, n: int) -> int:
        return await ctx.call_activity(block, n)

    @registry.workflow
    async def unrelated(ctx: WorkflowContext, n: int) -> int:
        return await ctx.call_activity(quick, n)

    return registry


async def test_blocking_sync_activities_do_not_starve_the_store(tmp_path: Path) -> None:
    """80 blocking sync activities held anyio's default 40 worker threads, which the
    fsync store's flushes also waited on: an unrelated one-step workflow (and the 80
    starts themselves) stalled until the activities returned. Now it completes while
    every one of the 80 still blocks, with no time passing on the clock."""
    entered: list[int] = []
    wake, release = anyio.Event(), threading.Event()
    clock = MockClock()
    start = clock.now()
    store = LocalStore(tmp_path / "store", fsync=True)
    registry = blocking_registry(entered, wake, release)
    try:
        async with durable.Runtime(registry, store=store, clock=clock) as rt:
            with anyio.fail_after(_GUARD):
                handles = [await rt.start("blocked", n) for n in range(_BLOCKED)]
                await wake.wait()  # all 80 in flight: more than anyio's default limiter
                handle = await rt.start("unrelated", 41)
                assert await handle == 42
                assert len(entered) == _BLOCKED
                assert not release.is_set()
                assert clock.now() == start
            release.set()
            with anyio.fail_after(_GUARD):
                assert [await h for h in handles] == list(range(_BLOCKED))
    finally:
        release.set()
        await store.close()


async def test_the_store_flushes_with_every_default_thread_taken(tmp_path: Path) -> None:
    """The fsync store ran its blocking I/O on anyio's default thread limiter, so any
    other user of that limiter (sync activities, a library's to_thread calls) could
    hold every token and stall every commit. It has threads of its own now."""
    default = anyio.to_thread.current_default_thread_limiter()
    borrowers = [object() for _ in range(int(default.total_tokens))]
    for borrower in borrowers:
        await default.acquire_on_behalf_of(borrower)
    store = LocalStore(tmp_path / "store", fsync=True)
    try:
        with anyio.fail_after(_GUARD):
            await store.put("a/b", b"1")
            assert await store.get("a/b") == b"1"
            assert await store.list("a") == ["b"]
    finally:
        for borrower in borrowers:
            default.release_on_behalf_of(borrower)
        await store.close()
