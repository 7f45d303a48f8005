"""StreamInstanceHistory (the SDKs' ``get_orchestration_history``) and Dapr's
``get_workflow_history`` (issue 14, item 2): real SDK clients, each in a process of
its own, read an instance's history as Durable Task history events; big histories
come in several chunks; an unknown instance is NOT_FOUND."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest
from dapr_stub import wrapped
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.const import Cardinality
from test_sidecar_protocol import MS_WORKER, call, next_item, outcome, start, work_stream
from test_sidecar_sdks import HERE, run_sdk, sidecar  # noqa: F401  (a fixture)

from durable._core._events import WorkflowStarted
from durable.grpc import RemoteClient, Sidecar
from durable.grpc._history import CHUNK_BYTES
from durable.grpc._proto import dapr, ms
from durable.grpc._server import BytesCodec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


@pytest.fixture
async def channel(sidecar: Sidecar) -> AsyncIterator[Channel]:  # noqa: F811
    ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
    try:
        yield ch
    finally:
        ch.close()


async def stream_history(ch: Channel, request: ms.StreamInstanceHistoryRequest) -> list[bytes]:
    """The chunks StreamInstanceHistory sends, as bytes."""
    path = "/TaskHubSidecarService/StreamInstanceHistory"
    chunks = []
    async with ch.request(path, Cardinality.UNARY_STREAM, bytes, bytes, timeout=10) as stream:
        await stream.send_message(request.SerializeToString(), end=True)
        while (chunk := await stream.recv_message()) is not None:
            chunks.append(chunk)
    return chunks


def kind(event: ms.HistoryEvent | dapr.HistoryEvent) -> str:
    return event.WhichOneof("eventType") or ""


async def test_durabletask_sdk_reads_history_as_its_own_backend_gives_it(
    sidecar: Sidecar,  # noqa: F811
) -> None:
    """Issue 14: ``get_orchestration_history`` answered UNIMPLEMENTED. The events the
    SDK reads (kinds, names, payloads, task ids) are those its in-memory backend gives
    for the same orchestration, and an unknown instance is NOT_FOUND."""
    script = str(HERE / "sdk_history_durabletask.py")
    ours = await run_sdk(sys.executable, script, f"127.0.0.1:{sidecar.port}")
    theirs = await run_sdk(sys.executable, script, "inmemory")
    assert ours.pop("timestamps") is True
    theirs.pop("timestamps")
    for result in ours, theirs:  # the event may come before or after the activity's end
        result["events"].sort(key=repr)
    assert ours == theirs
    assert ours["unknown"] == "NOT_FOUND"
    assert sorted(e[0] for e in ours["events"]) == sorted([
        "ExecutionStartedEvent", "TaskScheduledEvent", "EventRaisedEvent",
        "TaskCompletedEvent", "TimerCreatedEvent", "TimerFiredEvent",
        "SubOrchestrationInstanceCreatedEvent", "SubOrchestrationInstanceCompletedEvent",
        "ExecutionCompletedEvent",
    ])  # fmt: skip


async def test_dapr_sdk_reads_history(sidecar: Sidecar) -> None:  # noqa: F811
    """Issue 14: Dapr's ``get_workflow_history`` gives the workflow's events with the
    ids rerun takes, and NOT_FOUND for an unknown instance."""
    result = await run_sdk(sys.executable, str(HERE / "sdk_history_dapr.py"), str(sidecar.port))
    assert result["status"] == "COMPLETED"
    assert result["unknown"] == "NOT_FOUND"
    events = result["events"]
    assert events[0] == ["EXECUTION_STARTED", -1, "main", None]
    assert events[-1] == ["EXECUTION_COMPLETED", -1, None, None]
    assert sorted(events, key=repr) == sorted(
        [
            ["EXECUTION_STARTED", -1, "main", None],
            ["TASK_SCHEDULED", 1, "greet", None],
            ["EVENT_RAISED", -1, "go", None],
            ["TASK_COMPLETED", -1, None, 1],
            ["TIMER_CREATED", 2, None, None],
            ["TIMER_FIRED", -1, None, None],
            ["CHILD_WORKFLOW_INSTANCE_CREATED", 3, "child", None],
            ["CHILD_WORKFLOW_INSTANCE_COMPLETED", -1, None, 3],
            ["EXECUTION_COMPLETED", -1, None, None],
        ],
        key=repr,
    )  # the event may come before or after the activity's end


async def test_a_big_history_comes_in_chunks(channel: Channel) -> None:
    """Issue 14: a history bigger than one chunk is streamed in several, each at most
    CHUNK_BYTES unless one event is bigger, and together they are the whole history,
    the same events GetInstanceHistory gives."""
    big = '"' + "x" * (CHUNK_BYTES // 3) + '"'
    await start(channel, "big", data=big)
    for n in range(4):
        await call(channel, "RaiseEvent", ms.RaiseEventRequest(
            instanceId="big", name=f"e{n}", input=wrapped(big)))  # fmt: skip
    done = ms.OrchestratorAction(id=-1, completeOrchestration=ms.CompleteOrchestrationAction(
        orchestrationStatus=ms.ORCHESTRATION_STATUS_COMPLETED, result=wrapped(big)))  # fmt: skip
    async with work_stream(channel, MS_WORKER) as worker:
        while True:  # until a turn has seen the four events, then end the run
            item = await next_item(worker, ms.WorkItem)
            request = item.orchestratorRequest
            events = [*request.pastEvents, *request.newEvents]
            seen = [e for e in events if kind(e) == "eventRaised"]
            await call(channel, "CompleteOrchestratorTask", ms.OrchestratorResponse(
                instanceId="big", completionToken=item.completionToken,
                actions=[done] if len(seen) == 4 else []))  # fmt: skip
            if len(seen) == 4:
                break
        await outcome(channel, "big")
    chunks = await stream_history(channel, ms.StreamInstanceHistoryRequest(instanceId="big"))
    assert len(chunks) >= 2
    events = [e for c in chunks for e in ms.HistoryChunk.FromString(c).events]
    assert all(len(c) <= CHUNK_BYTES for c in chunks)
    asked = dapr.GetInstanceHistoryRequest(instanceId="big")
    whole = dapr.GetInstanceHistoryResponse.FromString(
        await call(channel, "GetInstanceHistory", asked)
    )
    kinds = [kind(e) for e in events]
    assert [(e.eventId, e.timestamp) for e in events] == [
        (e.eventId, e.timestamp) for e in whole.events]  # fmt: skip
    assert kinds.count("eventRaised") == 4
    assert [e.eventRaised.input.value for e in events if kind(e) == "eventRaised"] == [big] * 4


async def test_unknown_and_missing_ids(channel: Channel) -> None:
    """Issue 14: an unknown instance is NOT_FOUND, a request without an id INVALID_ARGUMENT."""
    with pytest.raises(GRPCError) as err:
        await stream_history(channel, ms.StreamInstanceHistoryRequest(instanceId="nope"))
    assert err.value.status == Status.NOT_FOUND
    with pytest.raises(GRPCError) as err:
        await stream_history(channel, ms.StreamInstanceHistoryRequest())
    assert err.value.status == Status.INVALID_ARGUMENT


async def test_remote_client_reads_history_in_the_ms_dialect(sidecar: Sidecar) -> None:  # noqa: F811
    """Issue 14: durable's RemoteClient in the MS dialect read history through
    StreamInstanceHistory, which answered UNIMPLEMENTED."""
    async with RemoteClient(f"127.0.0.1:{sidecar.port}", dialect="ms") as client:
        await client.start("wf", {"a": 1}, instance_id="h-1")
        history = await client.get_handle("h-1").history()
    assert [type(e) for e in history] == [WorkflowStarted]
    assert bytes(history[0].input) == b'{"a":1}'  # type: ignore[attr-defined]
