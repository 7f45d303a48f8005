"""RemoteWorker and RemoteClient (MS dialect) against ``durabletask``'s in-memory backend:
a real gRPC server on a free loopback port, in this process, speaking Microsoft's
dialect. The backend's timers are real threads, so durations here are short."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
import pytest

import durable
from durable import ActivityContext, RetryPolicy, WorkflowContext, WorkflowStatus
from durable._core._events import ActivityScheduled, TimerCreated, WorkflowStarted
from durable.grpc import RemoteClient, RemoteWorker

testing = pytest.importorskip("durabletask.testing", reason="the `bench` extra (durabletask)")

registry = durable.Registry()
attempts: dict[str, int] = {}


@registry.activity
async def double(ctx: ActivityContext, x: int) -> int:
    return 2 * x


@registry.activity
def shout(ctx: ActivityContext, text: str) -> str:  # a plain def: runs in a thread
    return text.upper() + "!"


@registry.activity
async def flaky(ctx: ActivityContext, key: str) -> str:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] < 3:
        raise ConnectionError(f"try {attempts[key]} of {key} failed")
    return f"{key} after {attempts[key]}"


@registry.activity
async def broken(ctx: ActivityContext) -> None:
    raise ValueError("the card was declined")


@registry.workflow
async def child(ctx: WorkflowContext, x: int) -> str:
    return await ctx.call_activity(shout, f"child {x}")


@registry.workflow
async def order(ctx: WorkflowContext, n: int) -> dict[str, Any]:
    a = await ctx.call_activity(double, n)
    b = await ctx.call_activity(double, a)
    legs = await ctx.all([ctx.call_activity(double, i) for i in range(5)])
    ctx.set_custom_status({"stage": "waiting"})
    await ctx.sleep(timedelta(milliseconds=100))
    approved = await ctx.wait_for_event("approval")
    kid = await ctx.call_workflow(child, b)
    return {"a": a, "b": b, "legs": legs, "approved": approved, "child": kid}


@registry.workflow
async def retrying(ctx: WorkflowContext, key: str) -> str:
    policy = RetryPolicy(max_attempts=3, initial_interval=timedelta(milliseconds=20))
    return await ctx.call_activity(flaky, key, retry=policy)


@registry.workflow
async def failing(ctx: WorkflowContext) -> None:
    await ctx.call_activity(broken)


@registry.workflow
async def counter(ctx: WorkflowContext, n: int) -> int:
    n = await ctx.call_activity(double, 1) if n == 0 else n + 1
    if n < 4:
        ctx.continue_as_new(n)
    return n


@registry.workflow
async def waiter(ctx: WorkflowContext) -> Any:
    return await ctx.wait_for_event("go")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Remote:
    worker: RemoteWorker
    client: RemoteClient
    port: int


@pytest.fixture
async def remote() -> AsyncIterator[Remote]:
    port = _free_port()
    backend = testing.create_test_backend(port)
    try:
        async with (
            RemoteWorker(registry, f"127.0.0.1:{port}", dialect="ms") as worker,
            RemoteClient(
                f"127.0.0.1:{port}", dialect="ms", registry=registry, poll_interval=0.02
            ) as client,
        ):
            with anyio.fail_after(10):
                await worker.wait_connected()
            yield Remote(worker, client, port)
    finally:
        await anyio.to_thread.run_sync(backend.stop, 0)


@pytest.mark.anyio
async def test_sequential_fan_out_timer_event_and_sub_workflow(remote: Remote) -> None:
    handle = await remote.client.start(order, 5, instance_id="order-1")
    await handle.raise_event("approval", {"by": "ann"})  # buffered until asked for
    with anyio.fail_after(20):
        result = await handle
    assert result == {
        "a": 10,
        "b": 20,
        "legs": [0, 2, 4, 6, 8],
        "approved": {"by": "ann"},
        "child": "CHILD 20!",
    }
    state = await handle.describe()
    assert state.status is WorkflowStatus.COMPLETED
    assert state.name == "order"
    assert state.input == 5
    assert state.custom_status == {"stage": "waiting"}
    history = await handle.history()
    assert isinstance(history[0], WorkflowStarted) or isinstance(history[1], WorkflowStarted)
    scheduled = [e for e in history if isinstance(e, ActivityScheduled)]
    assert [e.name for e in scheduled] == ["double"] * 7
    assert sum(isinstance(e, TimerCreated) for e in history) == 1
    # every turn after the first found its run in the cache: no history was replayed
    stats = remote.worker.cache_stats()
    assert stats.misses == 2  # the first turns of order-1 and of its child
    assert stats.hits >= 6
    assert stats.entries == 0  # both runs ended: nothing is kept


@pytest.mark.anyio
async def test_failing_activity_with_retry_policy(remote: Remote) -> None:
    handle = await remote.client.start(retrying, "k1")
    with anyio.fail_after(20):
        assert await handle == "k1 after 3"
    history = await handle.history()
    assert sum(isinstance(e, ActivityScheduled) for e in history) == 3
    assert [e.purpose for e in history if isinstance(e, TimerCreated)] == ["sleep", "sleep"]


@pytest.mark.anyio
async def test_activity_failure_fails_the_workflow(remote: Remote) -> None:
    handle = await remote.client.start(failing)
    with anyio.fail_after(20), pytest.raises(durable.WorkflowFailed) as err:
        await handle
    assert err.value.failure.type == "ValueError"
    assert "the card was declined" in err.value.failure.message
    state = await handle.describe()
    assert state.status is WorkflowStatus.FAILED


@pytest.mark.anyio
async def test_continue_as_new(remote: Remote) -> None:
    handle = await remote.client.start(counter, 0)
    with anyio.fail_after(20):
        assert await handle == 4  # runs with inputs 0, 2, 3
    state = await handle.describe()
    assert state.input == 3


@pytest.mark.anyio
async def test_terminate(remote: Remote) -> None:
    handle = await remote.client.start(waiter)
    await _until(handle, WorkflowStatus.RUNNING)
    await handle.terminate(reason="enough", output={"stopped": True})
    with anyio.fail_after(20), pytest.raises(durable.WorkflowFailed) as err:
        await handle
    assert err.value.failure.type == "Terminated"
    state = await handle.describe()
    assert state.status is WorkflowStatus.TERMINATED
    assert state.output == {"stopped": True}
    assert handle.instance_id not in remote.worker.cache


@pytest.mark.anyio
async def test_suspend_and_resume(remote: Remote) -> None:
    handle = await remote.client.start(waiter)
    await _until(handle, WorkflowStatus.RUNNING)
    await handle.suspend("maintenance")
    await _until(handle, WorkflowStatus.SUSPENDED)
    await handle.raise_event("go", 7)
    assert (await handle.describe()).status is WorkflowStatus.SUSPENDED
    await handle.resume()
    with anyio.fail_after(20):
        assert await handle == 7


@pytest.mark.anyio
async def test_purge(remote: Remote) -> None:
    running = await remote.client.start(waiter)
    await _until(running, WorkflowStatus.RUNNING)
    with pytest.raises(durable.InstanceRunningError):
        await remote.client.purge(running.instance_id)
    done = await remote.client.start(double_it, 4)
    with anyio.fail_after(20):
        assert await done == 8
    await remote.client.purge(done.instance_id)
    with pytest.raises(durable.InstanceNotFoundError):
        await done.describe()


@registry.workflow
async def double_it(ctx: WorkflowContext, x: int) -> int:
    return await ctx.call_activity(double, x)


@pytest.mark.anyio
async def test_unknown_workflow_answers_failed(remote: Remote) -> None:
    """A turn the worker cannot take is answered with a FAILED completion."""
    async with RemoteClient(f"127.0.0.1:{remote.port}", dialect="ms", poll_interval=0.02) as bare:
        handle = await bare.start("nobody-registered-this", 1)  # no registry: any name
        with anyio.fail_after(20), pytest.raises(durable.WorkflowFailed) as err:
            await handle
    assert err.value.failure.type == "durable.UnknownWorkflowError"
    # the worker is still serving
    with anyio.fail_after(20):
        assert await (await remote.client.start(double_it, 1)) == 2


@pytest.mark.anyio
async def test_client_errors_are_durable_errors(remote: Remote) -> None:
    client = remote.client
    with pytest.raises(durable.InstanceNotFoundError):
        await client.get_handle("no-such-instance").describe()
    with pytest.raises(durable.InstanceNotFoundError):
        await client.get_handle("no-such-instance").raise_event("x")
    with pytest.raises(durable.InstanceNotFoundError):
        await client.purge("no-such-instance")
    await client.start(waiter, instance_id="taken")
    with pytest.raises(durable.InstanceExistsError):
        await client.start(waiter, instance_id="taken")
    with pytest.raises(durable.InvalidInstanceIdError):
        client.get_handle("../escape")
    with pytest.raises(NotImplementedError):
        await client.rerun("taken", 1)
    with pytest.raises(durable.TimeoutError):
        await client.get_handle("taken").result(timeout=0.05)


@pytest.mark.anyio
async def test_list(remote: Remote) -> None:
    a = await remote.client.start(double_it, 1)
    b = await remote.client.start(double_it, 2)
    w = await remote.client.start(waiter)
    with anyio.fail_after(20):
        await a
        await b
    done = [s.instance_id async for s in remote.client.list(status="COMPLETED", page_size=1)]
    assert sorted(done) == sorted([a.instance_id, b.instance_id])
    named = [s.instance_id async for s in remote.client.list(name="waiter")]
    assert named == [w.instance_id]
    assert len([s async for s in remote.client.list(limit=2)]) == 2


async def _until(handle: Any, status: WorkflowStatus) -> None:
    """Poll until the instance reaches ``status``, at the client's poll interval on its
    Clock (the backend is a real server), within a bound."""
    client = handle._client
    with anyio.fail_after(20):
        while (await handle.describe()).status is not status:
            await client.clock.sleep_until(
                client.clock.now() + timedelta(seconds=client.poll_interval)
            )
