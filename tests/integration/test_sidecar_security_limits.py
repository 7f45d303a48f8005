"""Message size limits (issue 19): a request over ``max_message_size`` is refused
before it is read, and a work item over it fails its instance instead of being sent
again forever. Over real sockets: raw HTTP/2 for a message that never ends, raw gRPC
for the rest."""

from __future__ import annotations

import socket

import anyio
import anyio.to_thread
import h2.config
import h2.connection
import h2.events
import pytest
from dapr_stub import wrapped
from grpclib import Status
from grpclib.client import Channel
from test_sidecar_protocol import MS_WORKER, PATH, call, next_item, outcome, start, work_stream

from durable.grpc import Sidecar
from durable.grpc._proto import ms
from durable.grpc._server import BytesCodec

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


def announce_then_stall(port: int, size: int, sent: int) -> dict[str, str]:
    """Open a StartInstance whose message says ``size`` bytes, send ``sent`` of them
    and stall; the trailers the sidecar answers with (it must not wait for the rest)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", PATH + "StartInstance"),
                   (":authority", "sidecar"), ("content-type", "application/grpc"),
                   ("te", "trailers")]  # fmt: skip
        conn.send_headers(1, headers)
        conn.send_data(1, b"\0" + size.to_bytes(4, "big") + b"x" * sent)
        sock.sendall(conn.data_to_send())
        while True:
            data = sock.recv(65_536)
            assert data, "the sidecar closed the connection without an answer"
            for event in conn.receive_data(data):
                headers = getattr(event, "headers", None)
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    found = {_text(k): _text(v) for k, v in headers or []}
                    if "grpc-status" in found:
                        return found
            sock.sendall(conn.data_to_send())


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def test_an_oversize_request_is_refused_before_it_is_read() -> None:
    """Issue 19: a 512 MiB message of junk pushed the sidecar to 2.7 GiB. A request
    that announces more than the limit is refused at once, from its length prefix,
    with nothing but the first bytes sent."""
    async with Sidecar("memory://", port=0) as sidecar:
        with anyio.fail_after(20):
            trailers = await anyio.to_thread.run_sync(
                announce_then_stall, sidecar.port, 512 * MiB, 1024
            )
    assert trailers["grpc-status"] == str(Status.RESOURCE_EXHAUSTED.value)
    assert "over the limit of 4194304 bytes" in trailers.get("grpc-message", "").replace("%20", " ")


async def test_a_valid_but_oversize_start_is_refused_and_not_stored() -> None:
    """Issue 19: a valid 512 MiB StartInstance was accepted and written to disk. Over
    ``max_message_size`` (4 MiB by default) it is RESOURCE_EXHAUSTED, and no instance
    exists; under it, it starts. (grpcio sends any size unless told otherwise.)"""
    async with Sidecar("memory://", port=0) as sidecar:
        big = '"' + "x" * (5 * MiB) + '"'
        with anyio.fail_after(30):
            code, details = await anyio.to_thread.run_sync(grpcio_start, sidecar.port, "big", big)
        assert code == "RESOURCE_EXHAUSTED"
        assert "over the limit of 4194304 bytes" in details
        fits = '"' + "x" * (3 * MiB) + '"'
        with anyio.fail_after(30):
            code, _ = await anyio.to_thread.run_sync(grpcio_start, sidecar.port, "fits", fits)
        assert code == "OK"
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            for instance_id, exists in (("big", False), ("fits", True)):
                reply = await call(ch, "GetInstance", ms.GetInstanceRequest(instanceId=instance_id))
                assert ms.GetInstanceResponse.FromString(reply).exists is exists
        finally:
            ch.close()


def grpcio_start(port: int, instance_id: str, data: str) -> tuple[str, str]:
    """StartInstance through grpcio: (status code name, details)."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.unary_unary(PATH + "StartInstance")
        request = ms.CreateInstanceRequest(
            instanceId=instance_id, name="wf", input=wrapped(data)
        ).SerializeToString()
        try:
            method(request, timeout=20)
        except grpc.RpcError as err:
            return err.code().name, err.details() or ""
    return "OK", ""


async def test_a_work_item_over_the_limit_fails_its_instance_and_the_rest_run() -> None:
    """Issue 19: an input under the limit made a work item over grpcio's 4 MiB (the
    history adds up); the worker's stream failed, and the item was sent again first on
    every reconnect, forever: the instances behind it never ran. It fails its instance
    with a clear reason, and the next instance's turn comes."""
    async with Sidecar("memory://", port=0, max_message_size=1 * MiB) as sidecar:
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            payload = '"' + "x" * 400_000 + '"'
            await start(ch, "heavy", data=payload)
            async with work_stream(ch, MS_WORKER) as worker:
                turn = await next_item(worker, ms.WorkItem)
                schedule = ms.OrchestratorAction(id=0, scheduleTask=ms.ScheduleTaskAction(
                    name="a", input=wrapped(payload)))  # fmt: skip
                await call(ch, "CompleteOrchestratorTask", ms.OrchestratorResponse(
                    instanceId="heavy", actions=[schedule],
                    completionToken=turn.completionToken))  # fmt: skip
                task = await next_item(worker, ms.WorkItem)
                await call(ch, "CompleteActivityTask", ms.ActivityResponse(
                    instanceId="heavy", taskId=0, result=wrapped(payload),
                    completionToken=task.completionToken))  # fmt: skip
                # the next turn holds three payloads: 1.2 MB, over the limit
                failed = await outcome(ch, "heavy")
                assert failed.orchestrationStatus == ms.ORCHESTRATION_STATUS_FAILED
                assert failed.failureDetails.errorType == "MessageTooLarge"
                assert "1048576-byte message limit" in failed.failureDetails.errorMessage
                await start(ch, "next")
                turn = await next_item(worker, ms.WorkItem)
                assert turn.orchestratorRequest.instanceId == "next"
        finally:
            ch.close()
