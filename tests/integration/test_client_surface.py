"""One test body, three clients: ``durable.Client`` of an embedded Runtime, and
``RemoteClient`` with a ``RemoteWorker`` over each wire dialect (MS: durabletask's
in-memory backend; Dapr: the in-test sidecar of ``dapr_stub``). What a caller sees
(results, states, errors) must not depend on which one it holds."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from dapr_stub import DaprStub, serve

import durable
from durable import ActivityContext, WorkflowContext, WorkflowStatus
from durable.grpc import RemoteClient, RemoteWorker
from durable.store import MemoryStore

registry = durable.Registry()


@registry.activity
async def shout(ctx: ActivityContext, text: str) -> str:
    return text.upper() + "!"


@registry.workflow
async def greet(ctx: WorkflowContext, name: str) -> str:
    title = await ctx.wait_for_event("title", type=str)
    return await ctx.call_activity(shout, f"hello {title} {name}")


@registry.workflow
async def idle(ctx: WorkflowContext) -> None:
    await ctx.wait_for_event("never")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(params=["local", "remote-ms", "remote-dapr"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "local":
        async with durable.Runtime(registry, store=MemoryStore()) as runtime:
            yield runtime.client
        return
    if request.param == "remote-ms":
        testing = pytest.importorskip("durabletask.testing")
        port = _free_port()
        backend = testing.create_test_backend(port)
        try:
            target = f"127.0.0.1:{port}"
            async with (
                RemoteWorker(registry, target, dialect="ms") as worker,
                RemoteClient(target, dialect="ms", registry=registry, poll_interval=0.02) as rc,
            ):
                with anyio.fail_after(10):
                    await worker.wait_connected()
                yield rc
        finally:
            await anyio.to_thread.run_sync(backend.stop, 0)
        return
    stub = DaprStub()
    server, port = await serve(stub)
    try:
        target = f"127.0.0.1:{port}"
        async with (
            RemoteWorker(registry, target) as worker,
            RemoteClient(target, registry=registry, poll_interval=0.02) as rc,
        ):
            with anyio.fail_after(10):
                await worker.wait_connected()
            yield rc
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.anyio
async def test_the_client_surface(client: Any) -> None:
    handle = await client.start(greet, "ann", instance_id="greet-1")
    assert handle.instance_id == "greet-1"
    await handle.raise_event("title", "dr")
    with anyio.fail_after(20):
        assert await handle == "HELLO DR ANN!"
    assert await client.get_handle("greet-1").result() == "HELLO DR ANN!"
    state = await handle.describe()
    assert (state.instance_id, state.name, state.status) == (
        "greet-1",
        "greet",
        WorkflowStatus.COMPLETED,
    )
    assert (state.input, state.output, state.failure) == ("ann", "HELLO DR ANN!", None)

    with pytest.raises(durable.InstanceExistsError):
        await client.start(greet, "bob", instance_id="greet-1")
    nobody = client.get_handle("nobody")
    with pytest.raises(durable.InstanceNotFoundError):
        await nobody.describe()
    with pytest.raises(durable.InstanceNotFoundError):
        await nobody.raise_event("title", "x")
    with pytest.raises(durable.InvalidInstanceIdError):
        client.get_handle("a/../b")

    stuck = await client.start(idle)
    with pytest.raises(durable.TimeoutError):
        await stuck.result(timeout=0.05)
    with pytest.raises(durable.InstanceRunningError):
        await client.purge(stuck.instance_id)
    await stuck.terminate(output="stop")
    with anyio.fail_after(20), pytest.raises(durable.WorkflowFailed) as err:
        await stuck
    assert err.value.failure.type == "Terminated"
    assert (await stuck.describe()).status is WorkflowStatus.TERMINATED

    completed = [s.instance_id async for s in client.list(status="COMPLETED")]
    assert completed == ["greet-1"]
    named = [s.instance_id async for s in client.list(name="idle")]
    assert named == [stuck.instance_id]

    await client.purge("greet-1")
    with pytest.raises(durable.InstanceNotFoundError):
        await handle.describe()
