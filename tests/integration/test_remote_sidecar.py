"""RemoteWorker and RemoteClient against durable's own sidecar (``durable.grpc.Sidecar``),
in both dialects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio
import pytest

import durable
import durable.grpc
from durable import ActivityContext, WorkflowContext, WorkflowStatus
from durable.grpc import RemoteClient, RemoteWorker, Sidecar

registry = durable.Registry()


@registry.activity
async def step(ctx: ActivityContext, x: int) -> int:
    return x + 1


@registry.workflow
async def small(ctx: WorkflowContext, x: int) -> int:
    return await ctx.call_activity(step, x)


@registry.workflow
async def chain(ctx: WorkflowContext, n: int) -> int:
    total = 0
    for _ in range(n):
        total = await ctx.call_activity(step, total)
    await ctx.sleep(timedelta(milliseconds=50))
    fan = await ctx.all([ctx.call_activity(step, i) for i in range(3)])
    got = await ctx.wait_for_event("go", type=int)
    kid = await ctx.call_workflow(small, got)
    return total + sum(fan) + kid


@registry.workflow
async def looping(ctx: WorkflowContext, n: int) -> int:
    n = await ctx.call_activity(step, n)
    if n < 3:
        ctx.continue_as_new(n)
    return n


@registry.workflow
async def patchy(ctx: WorkflowContext, n: int) -> list[int]:
    out = [await ctx.call_activity(step, 0)]
    if ctx.patched("extra-step"):
        out.append(await ctx.call_activity(step, 100))
    out.append(await ctx.wait_for_event("go", type=int))
    out.append(await ctx.call_activity(step, out[-1]))
    return out


@registry.workflow
async def waiter(ctx: WorkflowContext) -> Any:
    return await ctx.wait_for_event("go")


@pytest.fixture(params=["dapr", "ms"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any, Any]]:
    dialect = request.param
    async with Sidecar("memory://", port=0) as sidecar:
        target = f"127.0.0.1:{sidecar.port}"
        async with (
            RemoteWorker(registry, target, dialect=dialect) as worker,
            RemoteClient(target, dialect=dialect, registry=registry, poll_interval=0.02) as rc,
        ):
            with anyio.fail_after(10):
                await worker.wait_connected()
            yield sidecar, worker, rc


@pytest.mark.anyio
async def test_workflows_through_durable_sidecar(env: tuple[Any, Any, Any]) -> None:
    sidecar, worker, client = env
    with anyio.fail_after(30):
        handle = await client.start(chain, 5, instance_id="chain-1")
        await handle.raise_event("go", 10)
        assert await handle == 5 + (1 + 2 + 3) + 11
        assert await (await client.start(looping, 0)) == 3
        patched = await client.start(patchy, 0)
        await patched.raise_event("go", 5)
        assert await patched == [1, 101, 5, 6]
        paused = await client.start(waiter)
        while (await paused.describe()).status is not WorkflowStatus.RUNNING:
            await client.clock.sleep_until(client.clock.now() + timedelta(seconds=0.02))
        await paused.suspend()
        await paused.raise_event("go", 1)
        await paused.resume()
        assert await paused == 1
        stopped = await client.start(waiter)
        await stopped.terminate(output="bye")
        with pytest.raises(durable.WorkflowFailed):
            await stopped
        await client.purge(stopped.instance_id)
    assert worker.history_fetches == 0
    assert worker.cache_stats().hits >= 15
    turns = [t for t in sidecar.sent if t.instance_id == "chain-1"]
    if worker.dialect == "dapr":  # stateful history: deltas after the second turn
        assert all(t.cached is not None for t in turns[2:])
        assert max(t.past for t in turns[2:]) <= 5
    else:  # full histories, growing
        assert all(t.cached is None for t in turns)
        assert turns[-1].past > 20


@pytest.mark.anyio
@pytest.mark.parametrize("stateful", [True, False])
async def test_stateful_history_can_be_turned_off(stateful: bool) -> None:
    """``stateful_history=False``: a Dapr worker that does not advertise the capability
    gets each turn's whole history; with it, deltas after the second turn."""
    async with Sidecar("memory://", port=0) as sidecar:
        target = f"127.0.0.1:{sidecar.port}"
        worker = RemoteWorker(registry, target, stateful_history=stateful)
        assert worker.stateful_history is stateful
        assert ("stateful_history=False" in repr(worker)) is not stateful
        async with (
            worker,
            RemoteClient(target, registry=registry, poll_interval=0.02) as client,
        ):
            with anyio.fail_after(30):
                await worker.wait_connected()
                handle = await client.start(chain, 8, instance_id="chain-s")
                await handle.raise_event("go", 10)
                assert await handle == 8 + (1 + 2 + 3) + 11
            (stream,) = sidecar.dispatcher._streams  # how the sidecar read the request
            assert (stream.dialect, stream.stateful, stream.pings) == ("dapr", stateful, True)
    turns = [t for t in sidecar.sent if t.instance_id == "chain-s"]
    assert len(turns) >= 10
    if stateful:
        assert all(t.cached is not None for t in turns[2:])
        assert max(t.past for t in turns[2:]) <= 5
    else:
        assert all(t.cached is None for t in turns)
        pasts = [t.past for t in turns]
        assert pasts == sorted(pasts)  # the whole history every time, growing
        assert pasts[-1] > 25
    assert worker.history_fetches == 0
    assert worker.cache_stats().hits >= len(turns) - 2  # full histories still extend the cache


def test_stateful_history_is_a_dapr_capability() -> None:
    assert RemoteWorker(registry, dialect="dapr").stateful_history
    assert not RemoteWorker(registry, dialect="dapr", stateful_history=False).stateful_history
    assert not RemoteWorker(registry, dialect="ms").stateful_history  # MS never advertises it


# -- the memo across the wire: per step, over retries and runs ---------------------------

memo_registry = durable.Registry()
charges: list[tuple[str, int]] = []
failed_once: set[str] = set()


@memo_registry.activity
async def charge(ctx: ActivityContext, n: int) -> int:
    paid = await ctx.memo.get("paid", int)
    if paid is None:
        paid = n * 10
        charges.append((ctx.instance_id, n))  # the side effect the memo must not repeat
        await ctx.memo.put("paid", paid)
    key = f"{ctx.instance_id}/{n}"
    if key not in failed_once:  # fail once after paying: the retry must find the memo
        failed_once.add(key)
        raise RuntimeError("the line dropped after the charge went through")
    return paid


@memo_registry.workflow
async def billing(ctx: WorkflowContext, n: int) -> int:
    retry = durable.RetryPolicy(max_attempts=3, initial_interval=timedelta(milliseconds=1))
    paid = await ctx.call_activity(charge, n, retry=retry)
    if n < 3:
        ctx.continue_as_new(n + 1)
    return paid


@pytest.mark.anyio
@pytest.mark.parametrize("dialect", ["dapr", "ms"])
async def test_a_remote_memo_is_per_step_across_retries_and_runs(dialect: str) -> None:
    """The sidecar sends durable's step number with each activity and the worker sends
    it back with each retry: a retry finds the memo its failed attempt wrote, and a later
    run of the instance (continue-as-new numbers wire task ids from 0 again) does not."""
    charges.clear()
    failed_once.clear()
    async with Sidecar("memory://", port=0) as sidecar:
        target = f"127.0.0.1:{sidecar.port}"
        memo = durable.MemoStore("memory://")
        async with (
            RemoteWorker(memo_registry, target, dialect=dialect, memo_store=memo),
            RemoteClient(target, dialect=dialect, registry=memo_registry) as client,
        ):
            with anyio.fail_after(30):
                assert await (await client.start(billing, 1, instance_id="bill")) == 30
    assert charges == [("bill", 1), ("bill", 2), ("bill", 3)]  # once per run, retries free
