"""Connection limits (issue 19): idle connections are closed, their number is capped
below the file-descriptor limit, and accept errors do not flood the log. Over real
sockets on loopback; one test runs ``durable sidecar`` under a low descriptor limit."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from grpclib.client import Channel
from test_sidecar_protocol import MS_WORKER, ROOT, call, start, work_stream

from durable import MockClock
from durable.grpc import Sidecar
from durable.grpc._proto import ms
from durable.grpc._server import BytesCodec

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


async def closed_by_peer(sock: anyio.abc.SocketStream) -> bool:
    """Whether the sidecar closed the connection (the first bytes it sends, its HTTP/2
    settings, are read past)."""
    try:
        with anyio.fail_after(10):
            while await sock.receive():
                pass
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
        return True
    return False


async def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() -> None:
    """Issue 19: no connection was ever closed: idle TCP connections that never send a
    request piled up. One with no call open is closed after ``idle_timeout`` of the
    sidecar's clock; a worker's open GetWorkItems keeps its connection."""
    clock = MockClock()
    async with Sidecar("memory://", port=0, clock=clock, idle_timeout=5) as sidecar:
        idle = await anyio.connect_tcp("127.0.0.1", sidecar.port)
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            async with work_stream(ch, MS_WORKER):
                with anyio.fail_after(10):
                    while len(sidecar.connections.open) < 2 or not sidecar.dispatcher.streams:
                        await anyio.lowlevel.checkpoint()
                clock.advance(timedelta(seconds=4))
                await anyio.sleep(0.05)
                assert len(sidecar.connections.open) == 2  # not yet
                clock.advance(timedelta(seconds=2))
                assert await closed_by_peer(idle)
                assert len(sidecar.dispatcher.streams) == 1  # the worker's stays
                assert await call(ch, "Hello", b"") == b""
        finally:
            ch.close()
            await idle.aclose()


async def test_a_client_calling_now_and_then_keeps_its_connection() -> None:
    """Found by the remote crash test: a client making a short call every second or two
    was closed as idle (idle time was reckoned only from when a sweep saw no call
    open), and its next call failed with "Connection lost". Idle means silent."""
    clock = MockClock()
    async with Sidecar("memory://", port=0, clock=clock, idle_timeout=5) as sidecar:
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            for _ in range(10):  # 20 s of the clock, a call every 2 s
                assert await call(ch, "Hello", b"") == b""
                clock.advance(timedelta(seconds=2))
                await anyio.sleep(0.02)  # the sweep runs
            assert sidecar.connections.closed_idle == 0
        finally:
            ch.close()


async def test_at_the_cap_a_new_connection_takes_the_place_of_the_idlest() -> None:
    """Issue 19: idle connections starved real clients. At ``max_connections`` a new
    connection closes the one idle longest, and its calls are served."""
    async with Sidecar("memory://", port=0, max_connections=3) as sidecar:
        idle = [await anyio.connect_tcp("127.0.0.1", sidecar.port) for _ in range(3)]
        with anyio.fail_after(10):
            while len(sidecar.connections.open) < 3:
                await anyio.lowlevel.checkpoint()
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            await start(ch, "served")
            reply = await call(ch, "GetInstance", ms.GetInstanceRequest(instanceId="served"))
            assert ms.GetInstanceResponse.FromString(reply).exists
            assert await closed_by_peer(idle[0])
            assert len(sidecar.connections.open) == 3
        finally:
            ch.close()
            for sock in idle:
                await sock.aclose()


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


async def test_idle_connections_under_a_low_descriptor_limit(tmp_path: Path) -> None:
    """Issue 19: with 256 file descriptors and ``file://``, about 270 idle connections
    starved real clients (store access failed with EMFILE), and the log grew by
    megabytes a second from accept errors. 300 idle connections now leave a client's
    calls served, the log short, and are closed after the idle timeout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("DURABLE_API_TOKEN", None)
    command = [sys.executable, "-m", "durable", "sidecar", "--store", f"file://{tmp_path}",
               "--listen", "127.0.0.1:0", "--api-token", "t0ken",
               "--idle-timeout", "3"]  # fmt: skip
    log = tmp_path / "stderr.log"
    with (
        log.open("wb") as stderr,
        subprocess.Popen(  # noqa: ASYNC220 (started once; it runs beside the test)
            command, env=env, stdout=subprocess.PIPE, stderr=stderr, preexec_fn=_low_fd_limit
        ) as process,
    ):
        try:
            assert process.stdout is not None
            line = await anyio.to_thread.run_sync(process.stdout.readline)
            port = int(line.decode().rsplit(":", 1)[1])
            idle = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(300)]
            token = {"dapr-api-token": "t0ken"}
            ch = Channel("127.0.0.1", port, codec=BytesCodec())
            try:
                with anyio.fail_after(30):
                    for i in range(20):  # each call on the file store opens files
                        created = ms.CreateInstanceRequest(instanceId=f"i{i}", name="wf")
                        await call(ch, "StartInstance", created, metadata=token)
                        reply = await call(ch, "GetInstance",
                                           ms.GetInstanceRequest(instanceId=f"i{i}"),
                                           metadata=token)  # fmt: skip
                        assert ms.GetInstanceResponse.FromString(reply).exists
            finally:
                ch.close()
            with anyio.fail_after(20):  # the idle timeout is real time here: 3 s
                closed = [await closed_by_peer(sock) for sock in idle]
            assert all(closed)
            for sock in idle:
                await sock.aclose()
        finally:
            process.terminate()
            process.wait(timeout=20)
    assert log.stat().st_size < 20_000, log.read_text()[-2000:]
    text = log.read_text()
    assert "EMFILE" not in text
    assert "Too many open files" not in text
