"""The sidecar at the wire: hand-written worker streams and calls over a real socket.

Authentication, malformed requests, a workflow that waits for a worker, re-dispatch
when a worker goes away mid work item, stale completions, health pings per dialect,
GetInstanceHistory, and the ``durable sidecar`` command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from dapr_stub import wrapped
from google.protobuf.message import Message
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import StreamTerminatedError

import durable
from durable.grpc import Sidecar
from durable.grpc._proto import dapr, ms
from durable.grpc._server import BytesCodec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from grpclib.client import Stream

pytestmark = pytest.mark.anyio

PATH = "/TaskHubSidecarService/"
ROOT = Path(durable.__file__).resolve().parent.parent


@pytest.fixture
async def sidecar() -> AsyncIterator[Sidecar]:
    async with Sidecar("memory://", port=0, ping_interval=0.05) as running:
        yield running


@pytest.fixture
async def channel(sidecar: Sidecar) -> AsyncIterator[Channel]:
    ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
    try:
        yield ch
    finally:
        ch.close()


async def call(ch: Channel, method: str, data: bytes | Message, **kw: Any) -> bytes:
    """One unary call with raw bytes (or a message of either dialect)."""
    with anyio.fail_after(10):
        async with ch.request(PATH + method, Cardinality.UNARY_UNARY, bytes, bytes, **kw) as s:
            await s.send_message(
                data if isinstance(data, bytes) else data.SerializeToString(), end=True
            )
            reply = await s.recv_message()
            await s.recv_trailing_metadata()
    assert reply is not None
    return reply


async def first_work_item(ch: Channel, data: bytes, **kw: Any) -> bytes | None:
    """Open GetWorkItems with ``data`` as the request; its first message."""
    with anyio.fail_after(10):
        async with ch.request(PATH + "GetWorkItems", Cardinality.UNARY_STREAM,
                              bytes, bytes, **kw) as s:  # fmt: skip
            await s.send_message(data, end=True)
            return await s.recv_message()


@asynccontextmanager
async def work_stream(ch: Channel, request: Message | bytes) -> AsyncIterator[Stream[bytes, bytes]]:
    """A worker's GetWorkItems call; leaving the block drops it (a disconnect)."""
    data = request if isinstance(request, bytes) else request.SerializeToString()
    async with ch.request(PATH + "GetWorkItems", Cardinality.UNARY_STREAM, bytes, bytes) as s:
        await s.send_message(data, end=True)
        yield s
        await s.cancel()


async def next_item(
    stream: Stream[bytes, bytes], cls: type[Any], *, skip_pings: bool = True
) -> Any:
    with anyio.fail_after(10):
        while True:
            data = await stream.recv_message()
            assert data is not None, "the work-item stream ended"
            item = cls.FromString(data)
            if skip_pings and (item.WhichOneof("request") or "") == "healthPing":
                continue
            return item


async def start(ch: Channel, instance_id: str, name: str = "wf", data: str = '"in"') -> None:
    created = ms.CreateInstanceResponse.FromString(
        await call(ch, "StartInstance", ms.CreateInstanceRequest(
            instanceId=instance_id, name=name, input=wrapped(data)))
    )  # fmt: skip
    assert created.instanceId == instance_id


def completion(item: ms.WorkItem, result: str, token: str | None = None) -> bytes:
    request = item.orchestratorRequest
    done = ms.OrchestratorAction(id=-1, completeOrchestration=ms.CompleteOrchestrationAction(
        orchestrationStatus=ms.ORCHESTRATION_STATUS_COMPLETED, result=wrapped(result)))  # fmt: skip
    return ms.OrchestratorResponse(
        instanceId=request.instanceId,
        actions=[done],
        completionToken=item.completionToken if token is None else token,
    ).SerializeToString()


async def outcome(ch: Channel, instance_id: str) -> ms.OrchestrationState:
    reply = ms.GetInstanceResponse.FromString(await call(ch, "WaitForInstanceCompletion",
        ms.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True)))  # fmt: skip
    assert reply.exists
    return reply.orchestrationState


MS_WORKER = ms.GetWorkItemsRequest(maxConcurrentOrchestrationWorkItems=4)


# -- security and bad input -------------------------------------------------------------


async def test_api_token_is_checked_on_every_call() -> None:
    async with Sidecar("memory://", port=0, api_token="s3cret") as sidecar:
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            for metadata in (None, {"dapr-api-token": "wrong"}):
                for method in ("Hello", "StartInstance", "GetInstance"):
                    with pytest.raises(GRPCError) as err:
                        await call(ch, method, b"", metadata=metadata)
                    assert err.value.status is Status.UNAUTHENTICATED
                with pytest.raises(GRPCError) as err:
                    await first_work_item(ch, b"", metadata=metadata)
                assert err.value.status is Status.UNAUTHENTICATED
            assert await call(ch, "Hello", b"", metadata={"dapr-api-token": "s3cret"}) == b""
        finally:
            ch.close()


@pytest.mark.parametrize(
    ("method", "data", "status", "says"),
    [
        ("StartInstance", b"\xff\xff\xff", Status.INVALID_ARGUMENT, "varint"),
        ("StartInstance", ms.CreateInstanceRequest(instanceId="x"),
         Status.INVALID_ARGUMENT, "name"),
        ("StartInstance", ms.CreateInstanceRequest(instanceId="../etc", name="wf"),
         Status.INVALID_ARGUMENT, "instance id"),
        ("RaiseEvent", ms.RaiseEventRequest(instanceId="nobody", name="e"),
         Status.NOT_FOUND, "nobody"),
        ("GetInstanceHistory", dapr.GetInstanceHistoryRequest(instanceId="nobody"),
         Status.NOT_FOUND, "nobody"),
        ("GetInstance", ms.GetInstanceRequest(), Status.INVALID_ARGUMENT, "instanceId"),
        ("PurgeInstances", ms.PurgeInstancesRequest(), Status.INVALID_ARGUMENT, "names no"),
        ("CompleteOrchestratorTask", b"\x0a\xff", Status.INVALID_ARGUMENT, "cannot parse"),
        ("GetWorkItems", b"\x08", Status.INVALID_ARGUMENT, "varint"),
        ("RerunWorkflowFromEvent", dapr.RerunWorkflowFromEventRequest(
            sourceInstanceID="nobody", eventID=1), Status.NOT_FOUND, "nobody"),
    ],
)  # fmt: skip
async def test_malformed_requests_get_invalid_argument(
    channel: Channel, method: str, data: bytes | Message, status: Status, says: str
) -> None:
    if isinstance(data, Message):
        data = data.SerializeToString()
    send = first_work_item if method == "GetWorkItems" else partial(call, method=method)
    with pytest.raises(GRPCError) as err:
        await send(channel, data=data)
    assert err.value.status is status
    assert says in (err.value.message or "")
    assert await call(channel, "Hello", b"") == b""  # still serving


async def test_unknown_instance_does_not_exist(channel: Channel) -> None:
    reply = ms.GetInstanceResponse.FromString(
        await call(channel, "GetInstance", ms.GetInstanceRequest(instanceId="nobody"))
    )
    assert not reply.exists


# -- work items -------------------------------------------------------------------------


async def test_workflow_waits_for_a_worker_then_completes(
    sidecar: Sidecar, channel: Channel
) -> None:
    await start(channel, "lonely")
    with anyio.fail_after(10):
        while sidecar.dispatcher.waiting == 0:  # the first turn waits for a worker
            await anyio.lowlevel.checkpoint()
    state = ms.GetInstanceResponse.FromString(
        await call(channel, "GetInstance", ms.GetInstanceRequest(instanceId="lonely"))
    ).orchestrationState
    assert state.orchestrationStatus == ms.ORCHESTRATION_STATUS_PENDING  # waiting, not failed
    async with work_stream(channel, MS_WORKER) as worker:
        item = await next_item(worker, ms.WorkItem)
        request = item.orchestratorRequest
        assert request.instanceId == "lonely"
        kinds = [(e.WhichOneof("eventType") or "") for e in request.newEvents]
        assert kinds == ["orchestratorStarted", "executionStarted"]  # the SDKs' order
        assert request.pastEvents == []
        await call(channel, "CompleteOrchestratorTask", completion(item, '"done"'))
        state = await outcome(channel, "lonely")
    assert state.orchestrationStatus == ms.ORCHESTRATION_STATUS_COMPLETED
    assert state.output.value == '"done"'
    history = dapr.GetInstanceHistoryResponse.FromString(
        await call(
            channel, "GetInstanceHistory", dapr.GetInstanceHistoryRequest(instanceId="lonely")
        )
    )
    kinds = [(e.WhichOneof("eventType") or "") for e in history.events]
    assert kinds == ["workflowStarted", "executionStarted", "executionCompleted"]


async def test_disconnect_mid_item_redispatches_and_stale_completions_drop(
    sidecar: Sidecar, channel: Channel
) -> None:
    await start(channel, "moved")
    async with work_stream(channel, MS_WORKER) as first:
        lost = await next_item(first, ms.WorkItem)
        assert lost.orchestratorRequest.instanceId == "moved"
    # the first worker went away without answering: the item goes to the next one
    async with work_stream(channel, MS_WORKER) as second:
        again = await next_item(second, ms.WorkItem)
        assert again.orchestratorRequest.instanceId == "moved"
        assert again.orchestratorRequest.newEvents == lost.orchestratorRequest.newEvents
        await call(channel, "CompleteOrchestratorTask", completion(again, '"second"'))
        assert (await outcome(channel, "moved")).output.value == '"second"'
        # a late answer to the same item, and one with a token nobody issued: dropped
        assert await call(channel, "CompleteOrchestratorTask",
                          completion(lost, '"first"')) == b""  # fmt: skip
        assert await call(channel, "CompleteOrchestratorTask",
                          completion(lost, '"forged"', token="nobody-1")) == b""  # fmt: skip
    assert (await outcome(channel, "moved")).output.value == '"second"'
    turns = [s for s in sidecar.sent if s.instance_id == "moved"]
    assert len(turns) == 2  # sent twice, applied once


async def test_a_tokenless_late_answer_to_an_earlier_turn_is_dropped(
    sidecar: Sidecar, channel: Channel
) -> None:
    """durabletask-js sends no completion token, so its answers are matched by instance:
    an answer to turn 1 that comes late (its worker went quiet, the turn was sent again
    and answered elsewhere) must not be taken as the answer to turn 2."""
    schedule = ms.OrchestratorAction(id=0, scheduleTask=ms.ScheduleTaskAction(
        name="step", input=wrapped('"x"')))  # fmt: skip
    await start(channel, "late")
    async with work_stream(channel, MS_WORKER) as quiet:
        lost = await next_item(quiet, ms.WorkItem)
    async with work_stream(channel, MS_WORKER) as worker:
        turn = await next_item(worker, ms.WorkItem)
        assert turn.orchestratorRequest.instanceId == "late"
        await call(channel, "CompleteOrchestratorTask", ms.OrchestratorResponse(
            instanceId="late", actions=[schedule], completionToken=""))  # fmt: skip
        task = await next_item(worker, ms.WorkItem)
        await call(
            channel,
            "CompleteActivityTask",
            ms.ActivityResponse(
                instanceId="late", taskId=task.activityRequest.taskId, result=wrapped('"r"')
            ),
        )
        second = await next_item(worker, ms.WorkItem)  # turn 2 is out
        assert second.orchestratorRequest.newEvents[1].taskCompleted.result.value == '"r"'
        # the quiet worker's answer to turn 1 arrives now, without a token
        assert lost.orchestratorRequest.instanceId == "late"
        await call(channel, "CompleteOrchestratorTask", ms.OrchestratorResponse(
            instanceId="late", actions=[schedule], completionToken=""))  # fmt: skip
        await call(channel, "CompleteOrchestratorTask", completion(second, '"ok"', token=""))
        assert (await outcome(channel, "late")).output.value == '"ok"'
    history = dapr.GetInstanceHistoryResponse.FromString(
        await call(channel, "GetInstanceHistory", dapr.GetInstanceHistoryRequest(instanceId="late"))
    )
    kinds = [(e.WhichOneof("eventType") or "") for e in history.events]
    assert kinds.count("taskScheduled") == 1


async def test_a_worker_that_stops_reading_loses_its_items() -> None:
    """A frozen worker process reads nothing: what the sidecar writes to it piles up
    unsent, and a polite close after its unanswered PING would wait for that forever,
    holding the items. The connection is dropped all the same (TCP_USER_TIMEOUT), and
    the items go to a worker that answers."""
    import socket

    import h2.config
    import h2.connection
    import h2.settings

    big = 2**31 - 1
    async with Sidecar("memory://", port=0, keepalive=2.0, keepalive_timeout=1.0) as sidecar:
        frozen = socket.create_connection(("127.0.0.1", sidecar.port))
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: big})
        conn.increment_flow_control_window(big - 65_535)  # it would take anything...
        headers = [(":method", "POST"), (":scheme", "http"), (":path", PATH + "GetWorkItems"),
                   (":authority", "sidecar"), ("content-type", "application/grpc")]  # fmt: skip
        conn.send_headers(1, [*headers, ("te", "trailers")])
        request = ms.GetWorkItemsRequest(
            maxConcurrentOrchestrationWorkItems=100
        ).SerializeToString()
        conn.send_data(1, b"\0" + len(request).to_bytes(4, "big") + request, end_stream=True)
        frozen.sendall(conn.data_to_send())  # ...but never reads again
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            with anyio.fail_after(10):
                while not sidecar.dispatcher.streams:
                    await sidecar.dispatcher.changed.wait()
            (stuck,) = sidecar.dispatcher.streams
            payload = '"' + "x" * 400_000 + '"'
            names = [f"big-{i}" for i in range(30)]  # 12 MB for the frozen worker
            for name in names:
                await start(ch, name, data=payload)
            with anyio.fail_after(10):  # all held by it, before its first PING is due
                while len(stuck.held) < len(names):
                    await anyio.lowlevel.checkpoint()
            # the live worker reads its items on one connection and answers on another:
            # items it has not read yet must not hold up the answers' replies
            answers = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
            async with work_stream(ch, MS_WORKER) as worker:
                done: set[str] = set()
                with anyio.fail_after(60):
                    while done != set(names):
                        item = await next_item(worker, ms.WorkItem)
                        instance_id = item.orchestratorRequest.instanceId
                        await call(answers, "CompleteOrchestratorTask", completion(item, '"ok"'))
                        done.add(instance_id)
            assert all([(await outcome(answers, n)).output.value == '"ok"' for n in names])
            answers.close()
        finally:
            ch.close()
            frozen.close()


async def test_activity_redispatch_and_abandon(channel: Channel) -> None:
    await start(channel, "act")
    async with work_stream(channel, MS_WORKER) as worker:
        item = await next_item(worker, ms.WorkItem)
        schedule = ms.OrchestratorAction(id=0, scheduleTask=ms.ScheduleTaskAction(
            name="step", input=wrapped('"x"')))  # fmt: skip
        await call(
            channel,
            "CompleteOrchestratorTask",
            ms.OrchestratorResponse(
                instanceId="act", actions=[schedule], completionToken=item.completionToken
            ).SerializeToString(),
        )
        task = await next_item(worker, ms.WorkItem)
        assert task.activityRequest.name == "step"
        await call(
            channel,
            "AbandonTaskActivityWorkItem",
            ms.AbandonActivityTaskRequest(completionToken=task.completionToken),
        )
        task = await next_item(worker, ms.WorkItem)  # given back, it comes again
        assert task.activityRequest.name == "step"
        await call(channel, "CompleteActivityTask", ms.ActivityResponse(
            instanceId="act", taskId=task.activityRequest.taskId, result=wrapped('"r"'),
            completionToken=task.completionToken))  # fmt: skip
        turn = await next_item(worker, ms.WorkItem)
        kinds = [(e.WhichOneof("eventType") or "")
                 for e in turn.orchestratorRequest.newEvents]  # fmt: skip
        assert kinds == ["orchestratorStarted", "taskCompleted"]
        assert turn.orchestratorRequest.newEvents[1].taskCompleted.result.value == '"r"'
        await call(channel, "CompleteOrchestratorTask", completion(turn, '"ok"'))
        assert (await outcome(channel, "act")).output.value == '"ok"'


async def test_health_pings_only_where_accepted(sidecar: Sidecar, channel: Channel) -> None:
    async with work_stream(channel, MS_WORKER) as ms_stream:
        for _ in range(2):
            ping = await next_item(ms_stream, ms.WorkItem, skip_pings=False)
            assert (ping.WhichOneof("request") or "") == "healthPing"
    pinged = dapr.GetWorkItemsRequest(capabilities=[dapr.WORKER_CAPABILITY_HEALTH_PING])
    async with work_stream(channel, pinged) as dapr_stream:
        ping = await next_item(dapr_stream, dapr.WorkItem, skip_pings=False)
        assert (ping.WhichOneof("request") or "") == "healthPing"
    for request in (
        dapr.GetWorkItemsRequest(capabilities=[dapr.WORKER_CAPABILITY_STATEFUL_HISTORY]),
        dapr.GetWorkItemsRequest(),
    ):
        async with work_stream(channel, request) as quiet:
            # several ping intervals go by: the first thing sent is still the work item
            await start(channel, f"quiet-{len(request.capabilities)}")
            item = await next_item(quiet, dapr.WorkItem, skip_pings=False)
            assert (item.WhichOneof("request") or "") == "workflowRequest"


# -- the command ------------------------------------------------------------------------


def test_cli_sidecar_serves_with_a_token(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "durable", "sidecar", "--store", f"file://{tmp_path}",
               "--listen", "127.0.0.1:0", "--api-token", "t0ken"]  # fmt: skip
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("durable sidecar listening on 127.0.0.1:"), line
            port = int(line.rsplit(":", 1)[1])

            async def check() -> None:
                ch = Channel("127.0.0.1", port, codec=BytesCodec())
                try:
                    with pytest.raises(GRPCError) as err:
                        await call(ch, "Hello", b"")
                    assert err.value.status is Status.UNAUTHENTICATED
                    token = {"dapr-api-token": "t0ken"}
                    assert await call(ch, "Hello", b"", metadata=token) == b""
                finally:
                    ch.close()

            anyio.run(check)
        finally:
            process.terminate()
            process.wait(timeout=10)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (cryptography comes with moto, a dev dep)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "durable-test")])
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=365 * 100))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


async def test_tls(tmp_path: Path) -> None:
    import ssl

    cert, key = self_signed(tmp_path)
    async with Sidecar("memory://", port=0, tls_cert=str(cert), tls_key=str(key)) as sidecar:
        context = ssl.create_default_context(cafile=str(cert))
        context.set_alpn_protocols(["h2"])
        secure = Channel("127.0.0.1", sidecar.port, ssl=context, codec=BytesCodec())
        try:
            assert await call(secure, "Hello", b"") == b""
            await start(secure, "over-tls")
        finally:
            secure.close()

        async def plain_text() -> None:
            plain = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
            try:
                await call(plain, "Hello", b"")
            finally:
                plain.close()

        # In a loop of its own: grpclib's client cancels the calling task when the
        # connection drops, which would leak into this test's task.
        with pytest.raises(StreamTerminatedError):
            await anyio.to_thread.run_sync(anyio.run, plain_text)


async def test_an_action_durable_cannot_apply_fails_the_instance(channel: Channel) -> None:
    await start(channel, "sender")
    async with work_stream(channel, MS_WORKER) as worker:
        item = await next_item(worker, ms.WorkItem)
        stop = ms.TerminateOrchestrationAction(instanceId="other")
        send = ms.OrchestratorAction(id=0, terminateOrchestration=stop)
        response = ms.OrchestratorResponse(instanceId="sender", actions=[send],
                                           completionToken=item.completionToken)  # fmt: skip
        with pytest.raises(GRPCError) as err:
            await call(channel, "CompleteOrchestratorTask", response)
        assert err.value.status is Status.INVALID_ARGUMENT
        state = await outcome(channel, "sender")
    assert state.orchestrationStatus == ms.ORCHESTRATION_STATUS_FAILED
    assert "terminateOrchestration" in state.failureDetails.errorMessage
