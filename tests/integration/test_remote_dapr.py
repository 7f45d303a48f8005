"""RemoteWorker and RemoteClient in the Dapr dialect, with stateful history, against the
in-test sidecar of ``dapr_stub`` (grpclib on loopback)."""

from __future__ import annotations

import random
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from dapr_stub import DaprStub, serve
from grpclib.server import Server

import durable
from durable import ActivityContext, WorkflowContext, WorkflowStatus
from durable._core._events import ActivityScheduled, WorkflowStarted
from durable.grpc import RemoteClient, RemoteWorker
from durable.grpc._proto import dapr

registry = durable.Registry()
gate = {"open": True}


@registry.activity
async def step(ctx: ActivityContext, x: int) -> int:
    return x + 1


@registry.workflow
async def chain(ctx: WorkflowContext, n: int) -> int:
    total = 0
    for _ in range(n):
        total = await ctx.call_activity(step, total)
    await ctx.sleep(timedelta(hours=1))  # the stub fires timers at once
    fan = await ctx.all([ctx.call_activity(step, i) for i in range(3)])
    got = await ctx.wait_for_event("go", type=int)
    kid = await ctx.call_workflow(small, got)
    ctx.set_custom_status("done")
    return total + sum(fan) + kid


@registry.workflow
async def small(ctx: WorkflowContext, x: int) -> int:
    return await ctx.call_activity(step, x)


@registry.workflow
async def waiter(ctx: WorkflowContext) -> Any:
    return await ctx.wait_for_event("go")


@registry.workflow
async def looping(ctx: WorkflowContext, n: int) -> int:
    n = await ctx.call_activity(step, n)
    if n < 3:
        ctx.continue_as_new(n)
    return n


class Env:
    def __init__(self, stub: DaprStub, worker: RemoteWorker, client: RemoteClient, port: int):
        self.stub, self.worker, self.client, self.port = stub, worker, client, port


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    stub = DaprStub(api_token="s3cret")
    server, port = await serve(stub)
    try:
        target = f"127.0.0.1:{port}"
        async with (
            RemoteWorker(
                registry,
                target,
                api_token="s3cret",
                reconnect_delay=timedelta(milliseconds=10),
            ) as worker,
            RemoteClient(
                target, api_token="s3cret", registry=registry, poll_interval=0.01
            ) as client,
        ):
            with anyio.fail_after(10):
                await worker.wait_connected()
            yield Env(stub, worker, client, port)
    finally:
        server.close()
        await server.wait_closed()


async def _until(handle: Any, status: WorkflowStatus) -> None:
    client = handle._client
    with anyio.fail_after(10):
        while (await handle.describe()).status is not status:
            await client.clock.sleep_until(
                client.clock.now() + timedelta(seconds=client.poll_interval)
            )


@pytest.mark.anyio
async def test_capabilities_and_deltas(env: Env) -> None:
    (request,) = env.stub.requests
    assert set(request.capabilities) == {
        dapr.WORKER_CAPABILITY_STATEFUL_HISTORY,
        dapr.WORKER_CAPABILITY_HEALTH_PING,
    }
    handle = await env.client.start(chain, 5, instance_id="chain-1")
    await handle.raise_event("go", 10)
    with anyio.fail_after(10):
        assert await handle == 5 + (1 + 2 + 3) + 11
    turns = [s for s in env.stub.sent if s.instance_id == "chain-1"]
    assert len(turns) >= 9
    # the first turn has no history, the second gets it whole, then only deltas
    assert turns[0].cached is None
    assert all(s.cached is not None for s in turns[2:])
    assert max(s.past for s in turns[2:]) <= 5  # what one turn committed, not the history
    assert sum(s.past for s in turns) < 40  # the history is 30 events by the end
    assert env.stub.history_calls == []  # never a miss
    stats = env.worker.cache_stats()
    assert stats.hits >= len(turns) - 1
    assert stats.entries == 0
    assert (await handle.describe()).custom_status == "done"
    history = await handle.history()
    assert sum(isinstance(e, WorkflowStarted) for e in history) == 1
    assert sum(isinstance(e, ActivityScheduled) for e in history) == 8


@pytest.mark.anyio
async def test_a_wrong_event_count_falls_back_to_get_instance_history(env: Env) -> None:
    handle = await env.client.start(waiter, instance_id="w-1")
    await _until(handle, WorkflowStatus.RUNNING)
    env.stub.warm["w-1"] = 1  # the sidecar's idea of what the worker holds is wrong
    await handle.raise_event("go", "x")
    with anyio.fail_after(10):
        assert await handle == "x"
    assert env.stub.history_calls == ["w-1"]
    assert env.worker.history_fetches == 1


@pytest.mark.anyio
async def test_reconnect_clears_the_cache_and_gets_full_histories(env: Env) -> None:
    handle = await env.client.start(waiter, instance_id="w-2")
    await _until(handle, WorkflowStatus.RUNNING)
    assert "w-2" in env.worker.cache
    env.stub.drop_stream()
    with anyio.fail_after(10):
        while env.stub.streams < 2:
            await env.client.clock.sleep_until(env.client.clock.now() + timedelta(seconds=0.01))
    await handle.raise_event("go", 1)
    with anyio.fail_after(10):
        assert await handle == 1
    assert env.worker.connects == 2
    last = [s for s in env.stub.sent if s.instance_id == "w-2"][-1]
    assert last.cached is None  # a new stream: the whole history
    assert last.past > 0


@pytest.mark.anyio
async def test_suspend_resume_terminate_and_purge(env: Env) -> None:
    handle = await env.client.start(waiter)
    await _until(handle, WorkflowStatus.RUNNING)
    await handle.suspend("pause")
    await _until(handle, WorkflowStatus.SUSPENDED)
    await handle.raise_event("go", 5)
    await handle.resume()
    with anyio.fail_after(10):
        assert await handle == 5
    other = await env.client.start(waiter)
    await _until(other, WorkflowStatus.RUNNING)
    with pytest.raises(durable.InstanceRunningError):
        await env.client.purge(other.instance_id)
    await other.terminate(output="bye")
    await _until(other, WorkflowStatus.TERMINATED)
    assert (await other.describe()).output == "bye"
    assert other.instance_id not in env.worker.cache
    await env.client.purge(other.instance_id)
    with pytest.raises(durable.InstanceNotFoundError):
        await other.describe()


@pytest.mark.anyio
async def test_continue_as_new_sends_full_histories(env: Env) -> None:
    handle = await env.client.start(looping, 0, instance_id="loop")
    with anyio.fail_after(10):
        assert await handle == 3
    assert env.stub.history_calls == []


@pytest.mark.anyio
async def test_api_token_is_checked(env: Env) -> None:
    async with RemoteClient(f"127.0.0.1:{env.port}", api_token="wrong") as bad:
        with pytest.raises(durable.DurableError, match="UNAUTHENTICATED"):
            await bad.get_handle("x").describe()


@pytest.mark.anyio
async def test_list_pages_through_ids(env: Env) -> None:
    ids = [(await env.client.start(small, i, instance_id=f"s-{i}")).instance_id for i in range(3)]
    for iid in ids:
        with anyio.fail_after(10):
            await env.client.get_handle(iid)
    listed = [s.instance_id async for s in env.client.list(page_size=2, name="small")]
    assert listed == ids
    with pytest.raises(durable.InstanceExistsError):
        await env.client.start(small, 1, instance_id="s-1")
    again = await env.client.start(small, 7, instance_id="s-1", reuse=True)
    with anyio.fail_after(10):
        assert await again == 8


class RecordingClock(durable.MockClock):
    """A MockClock that records how long each sleep asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.waiting = anyio.Event()

    async def sleep_until(self, deadline: datetime) -> None:
        self.waits.append((deadline - self.now()).total_seconds())
        self.waiting.set()
        await super().sleep_until(deadline)

    async def next_wait(self) -> float:
        with anyio.fail_after(10):
            await self.waiting.wait()
        self.waiting = anyio.Event()
        return self.waits[-1]


@pytest.mark.anyio
async def test_reconnects_with_jittered_backoff_on_the_clock() -> None:
    """Nothing listens: the worker retries after growing, jittered delays, waiting on
    its Clock (no real time passes); once a sidecar appears it connects."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    clock = RecordingClock()
    worker = RemoteWorker(
        registry, f"127.0.0.1:{port}", clock=clock, rng=random.Random(7),
        reconnect_delay=timedelta(seconds=1), reconnect_max_delay=timedelta(seconds=4),
    )  # fmt: skip
    async with worker:
        waits = []
        for _ in range(4):
            waits.append(await clock.next_wait())
            assert worker.connects == 0
            clock.advance(timedelta(seconds=waits[-1]))
        assert worker.attempts >= 4
        for wait, (low, high) in zip(waits, [(0.5, 1), (1, 2), (2, 4), (2, 4)], strict=True):
            assert low <= wait <= high
        assert len(set(waits)) == 4  # jittered
        stub = DaprStub()
        server, _ = await serve(stub, port)
        try:
            clock.advance(timedelta(seconds=4))
            with anyio.fail_after(10):
                await worker.wait_connected()
            assert worker.connects == 1  # Hello answered, the stream opened
        finally:
            server.close()
            await server.wait_closed()


@pytest.mark.anyio
async def test_a_silent_stream_is_dropped_and_reopened() -> None:
    stub = DaprStub()
    server, port = await serve(stub)
    clock = RecordingClock()
    try:
        async with RemoteWorker(
            registry, f"127.0.0.1:{port}", clock=clock, idle_timeout=timedelta(seconds=60),
            reconnect_delay=timedelta(seconds=1),
        ) as worker:  # fmt: skip
            await worker.wait_connected()
            assert await clock.next_wait() == 60  # the watchdog
            clock.advance(timedelta(seconds=59))
            assert worker.connects == 1
            clock.advance(timedelta(seconds=1))  # a minute of silence
            backoff = await clock.next_wait()
            assert 0.5 <= backoff <= 1
            clock.advance(timedelta(seconds=backoff))
            assert await clock.next_wait() == 60  # watching the new stream
            assert worker.connects == 2
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made by the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.anyio
async def test_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.set_alpn_protocols(["h2"])
    stub = DaprStub()
    server = Server([stub])
    await server.start("127.0.0.1", 0, ssl=server_ctx)
    port = server._server.sockets[0].getsockname()[1]
    target = f"127.0.0.1:{port}"
    try:
        async with (
            RemoteWorker(registry, target, ssl=ssl.create_default_context(cafile=cert)) as worker,
            RemoteClient(
                target, ssl=ssl.create_default_context(cafile=cert), poll_interval=0.01
            ) as client,
        ):
            with anyio.fail_after(10):
                await worker.wait_connected()
                assert await (await client.start("small", 1)) == 2
        # without trusting the certificate, nothing gets through
        async with RemoteClient(target, ssl=True) as untrusting:
            with pytest.raises(ssl.SSLError):
                await untrusting.get_handle("x").describe()
    finally:
        server.close()
        await server.wait_closed()


@registry.workflow
async def patchy(ctx: WorkflowContext, n: int) -> list[int]:
    out = [await ctx.call_activity(step, 0)]
    if ctx.patched("extra-step"):
        out.append(await ctx.call_activity(step, 100))
    out.append(await ctx.wait_for_event("go", type=int))
    out.append(await ctx.call_activity(step, out[-1]))
    return out


@pytest.mark.anyio
async def test_patches_travel_in_the_version_and_survive_a_miss(env: Env) -> None:
    """The patch the run takes is listed in every later WorkflowResponse.version; the
    sidecar records it, and after a miss the full replay finds it in workflowStarted."""
    handle = await env.client.start(patchy, 0, instance_id="p-1")
    await _until(handle, WorkflowStatus.RUNNING)
    with anyio.fail_after(10):
        while len(env.stub.patch_lists) < 3:  # the turn waiting for "go" was answered
            await env.client.clock.sleep_until(env.client.clock.now() + timedelta(seconds=0.01))
    env.stub.warm["p-1"] = 1  # force a miss: the next turn replays the whole history
    await handle.raise_event("go", 5)
    with anyio.fail_after(10):
        assert await handle == [1, 101, 5, 6]
    assert env.stub.history_calls == ["p-1"]
    assert env.stub.patch_lists[0] == []
    assert all(p == ["extra-step"] for p in env.stub.patch_lists[1:])


@pytest.mark.anyio
async def test_a_failed_history_fetch_drops_the_stream(env: Env) -> None:
    """The worker cannot take the turn without the history: it drops the stream, the
    sidecar re-dispatches on the next one, with the whole history."""
    handle = await env.client.start(waiter, instance_id="w-3")
    await _until(handle, WorkflowStatus.RUNNING)
    env.stub.warm["w-3"] = 1
    env.stub.fail_history = True
    await handle.raise_event("go", "late")
    with anyio.fail_after(10):
        assert await handle == "late"
    assert env.stub.history_calls == ["w-3"]
    assert env.stub.streams == 2
    assert env.worker.connects == 2
    assert env.stub.sent[-1].cached is None
