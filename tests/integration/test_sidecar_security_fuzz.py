"""Clear errors (issue 19): junk on the wire gets INVALID_ARGUMENT with a message and
one log line, never INTERNAL with a traceback. A fuzz over every RPC, over a real
socket with raw gRPC."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.const import Cardinality
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sidecar_protocol import PATH, call

from durable.grpc import Sidecar
from durable.grpc._server import BytesCodec
from durable.grpc._worklink import WORK_STREAM

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

RPCS = sorted(
    [
        "Hello",
        "StartInstance",
        "GetInstance",
        "WaitForInstanceStart",
        "WaitForInstanceCompletion",
        "RaiseEvent",
        "TerminateInstance",
        "SuspendInstance",
        "ResumeInstance",
        "PurgeInstances",
        "QueryInstances",
        "ListInstanceIds",
        "ListInstanceIDs",
        "RerunWorkflowFromEvent",
        "RestartInstance",
        "RewindInstance",
        "GetInstanceHistory",
        "StreamInstanceHistory",
        "SignalEntity",
        "GetEntity",
        "QueryEntities",
        "CleanEntityStorage",
        "CompleteEntityTask",
        "AbandonTaskEntityWorkItem",
        "CompleteOrchestratorTask",
        "CompleteWorkflowTask",
        "CompleteActivityTask",
        "AbandonTaskOrchestratorWorkItem",
        "AbandonTaskActivityWorkItem",
        "GetWorkItems",
    ]
)
UNARY = [name for name in RPCS if name != "GetWorkItems"]
WIRE_VALUES = {
    0: [b"\x01", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"],  # varint: 1, -1
    1: [b"\xff" * 8],
    2: [b"\x00", b"\x02\x08\x01", b"\x01\xff"],  # empty, a message {1: 1}, bad UTF-8
    5: [b"\xff" * 4],
}


def one_field(number: int, wire: int, value: bytes) -> bytes:
    return bytes([number << 3 | wire]) + value if number < 16 else b""


CASES = [
    one_field(number, wire, value)
    for number in range(1, 16)
    for wire, values in WIRE_VALUES.items()
    for value in values
] + [b"", b"\x00", b"\x0b", b"\x0a\x05ab", b"\x80", b"\x08\x01" * 3 + b"\x12"]


@pytest.fixture
async def channel() -> AsyncIterator[Channel]:
    async with Sidecar("memory://", port=0) as sidecar:
        routes = set(sidecar.service.__mapping__()) - {WORK_STREAM}  # test_remote_stream
        assert sorted(n.removeprefix(PATH) for n in routes) == RPCS
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            yield ch
        finally:
            ch.close()


async def status_of(ch: Channel, method: str, data: bytes | None) -> Status | None:
    """The status the call ends with (None: it succeeded, or a stream still open)."""
    streaming = method in ("GetWorkItems", "StreamInstanceHistory")
    cardinality = Cardinality.UNARY_STREAM if streaming else Cardinality.UNARY_UNARY
    if data is None:  # grpclib's client would not send a unary call with no message
        cardinality = Cardinality.STREAM_STREAM
    try:
        with anyio.move_on_after(5):
            async with ch.request(PATH + method, cardinality, bytes, bytes) as stream:
                if data is None:
                    await stream.send_request(end=True)
                else:
                    await stream.send_message(data, end=True)
                if method == "GetWorkItems":
                    await stream.recv_initial_metadata()
                    with anyio.move_on_after(0.5):  # a valid request: a stream stays open
                        await stream.recv_message()
                    await stream.cancel()
                    return None
                await stream.recv_message()
                await stream.recv_trailing_metadata()
    except GRPCError as err:
        return err.status if err.message else Status.UNKNOWN  # a status says why
    return None


async def fuzz(ch: Channel, requests: list[tuple[str, bytes | None]]) -> dict[str, list[bytes]]:
    """Send every request (concurrently, on one connection); those answered INTERNAL
    or UNKNOWN, by method."""
    bad: dict[str, list[bytes]] = {}
    limiter = anyio.CapacityLimiter(32)

    async def one(method: str, data: bytes | None) -> None:
        async with limiter:
            status = await status_of(ch, method, data)
        if status in (Status.INTERNAL, Status.UNKNOWN):
            bad.setdefault(method, []).append(data or b"<none>")

    async with anyio.create_task_group() as tg:
        for method, data in requests:
            tg.start_soon(one, method, data)
    return bad


async def test_no_rpc_answers_malformed_requests_with_internal(
    channel: Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 19: 37 of 1,512 fuzzed requests (wrong wire types in QueryInstances,
    ListInstanceIds and abandon; a request with no message) got INTERNAL, with a full
    traceback in the log. Every field of every RPC, with every wire type, and a call
    with no message at all: no INTERNAL, no traceback."""
    caplog.set_level(logging.INFO)
    requests: list[tuple[str, bytes | None]] = [(m, None) for m in RPCS]
    requests += [(m, data) for m in RPCS for data in CASES]
    bad = await fuzz(channel, requests)
    assert bad == {}
    tracebacks = [
        r for r in caplog.records if r.exc_info and r.name.startswith(("durable", "grpclib"))
    ]
    assert tracebacks == []
    assert await status_of(channel, "Hello", b"") is None  # still serving


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(batch=st.lists(st.tuples(st.sampled_from(UNARY), st.binary(max_size=64)), min_size=20,
                      max_size=20))  # fmt: skip
async def test_random_bytes_to_every_rpc_get_no_internal(
    channel: Channel, batch: list[tuple[str, bytes]]
) -> None:
    """Issue 19: random bytes to any unary RPC get a clear status, never INTERNAL."""
    assert await fuzz(channel, list(batch)) == {}


async def test_a_malformed_request_gets_a_message_and_one_log_line(
    channel: Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 19: a QueryInstances whose query came as a number got INTERNAL and a
    traceback; it gets INVALID_ARGUMENT naming the field, and one line in the log."""
    caplog.set_level(logging.INFO, logger="durable.grpc.server")
    with pytest.raises(GRPCError) as err:
        await call(channel, "QueryInstances", b"\x08\x01")
    assert err.value.status is Status.INVALID_ARGUMENT
    assert "QueryInstancesRequest.query (field 1) sent with wire type 0" in str(err.value.message)
    (line,) = [r for r in caplog.records if r.name == "durable.grpc.server"]
    assert "QueryInstances refused" in line.getMessage()
    assert line.exc_info is None
