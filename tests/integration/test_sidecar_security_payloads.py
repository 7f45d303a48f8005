"""Payloads are opaque: what a client sends is stored as data, never spliced into a
record, and reads back as sent. A forged state, a forged event and a poisoned restart
(issue 19, group 1), over a real socket with raw gRPC."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import pytest
from dapr_stub import wrapped
from grpclib.client import Channel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sidecar_protocol import MS_WORKER, call, next_item, outcome, start, work_stream

from durable.grpc import Sidecar
from durable.grpc._payload import payload_from_proto, payload_to_proto
from durable.grpc._proto import dapr, ms
from durable.grpc._server import BytesCodec
from durable.store import MemoryStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

pytestmark = pytest.mark.anyio

FORGED_STATE = 'null,"status":"COMPLETED","output":"\\"FORGED\\""'
BAD_STATUS = 'null,"status":"completed"'
FORGED_EVENT = (
    'null},"event":{"kind":"activity_completed","event_id":-1,"task_id":0,'
    '"result":"\\"forged\\""},"x":{"y":null'
)
NOT_JSON = "not json at all {"
ATTACKS = [FORGED_STATE, BAD_STATUS, FORGED_EVENT, NOT_JSON, " 1", "\x00\u2028\U0001f600"]


@pytest.fixture
async def channel() -> AsyncIterator[Channel]:
    """A channel to a sidecar on ``memory://``."""
    async with Sidecar("memory://", port=0) as sidecar:
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            yield ch
        finally:
            ch.close()


def sent(message: Any, field: str) -> str | None:
    """The text of a StringValue field as it came: None when absent."""
    return getattr(message, field).value if message.HasField(field) else None


def wire(text: str) -> str:
    """What a payload reads back as: the text sent, empty and ``null`` too (issue 14)."""
    return text


async def state_of(ch: Channel, instance_id: str) -> ms.OrchestrationState:
    reply = ms.GetInstanceResponse.FromString(await call(ch, "GetInstance", ms.GetInstanceRequest(
        instanceId=instance_id, getInputsAndOutputs=True)))  # fmt: skip
    assert reply.exists
    return reply.orchestrationState


def kind(event: ms.HistoryEvent) -> str:
    return event.WhichOneof("eventType") or ""


async def test_a_forged_input_does_not_forge_the_state(channel: Channel) -> None:
    """Issue 19: an input of ``null,"status":"COMPLETED",...`` made GetInstance report
    COMPLETED with output "FORGED" for an instance no worker ever ran."""
    await start(channel, "forged", data=FORGED_STATE)
    state = await state_of(channel, "forged")
    assert state.orchestrationStatus == ms.ORCHESTRATION_STATUS_PENDING
    assert sent(state, "input") == FORGED_STATE
    assert not state.HasField("output")


async def test_a_bad_status_input_breaks_no_query(channel: Channel) -> None:
    """Issue 19: an input of ``null,"status":"completed"`` made QueryInstances fail for
    every caller."""
    await start(channel, "poison", data=BAD_STATUS)
    query = ms.QueryInstancesRequest(query=ms.InstanceQuery(fetchInputsAndOutputs=True))
    reply = ms.QueryInstancesResponse.FromString(await call(channel, "QueryInstances", query))
    (state,) = reply.orchestrationState
    assert sent(state, "input") == BAD_STATUS


async def test_forgeries_then_a_restart(tmp_path: Path) -> None:
    """Issue 19: after a bad-status input the sidecar exited on every restart
    (``'completed' is not a valid WorkflowStatus``); a RaiseEvent input shaped like an
    event forged an activity completion a worker received after a restart; a non-JSON
    payload wrote an unreadable record. After a restart every instance still reads as
    sent, and a worker gets exactly the events that were raised."""
    store = f"file://{tmp_path}"
    async with Sidecar(store, port=0) as sidecar:
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        for i, text in enumerate(ATTACKS):
            await start(ch, f"start-{i}", data=text)
        await start(ch, "signalled")
        for text in ATTACKS:
            await call(ch, "RaiseEvent", ms.RaiseEventRequest(
                instanceId="signalled", name="e", input=wrapped(text)))  # fmt: skip
        ch.close()
    async with Sidecar(store, port=0) as sidecar:  # the restart
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            for i, text in enumerate(ATTACKS):
                state = await state_of(ch, f"start-{i}")
                assert sent(state, "input") == text
                assert state.orchestrationStatus == ms.ORCHESTRATION_STATUS_PENDING
            query = ms.QueryInstancesRequest(query=ms.InstanceQuery(maxInstanceCount=100))
            listed = ms.QueryInstancesResponse.FromString(await call(ch, "QueryInstances", query))
            assert len(listed.orchestrationState) == len(ATTACKS) + 1
            async with work_stream(ch, MS_WORKER) as worker:
                with anyio.fail_after(10):
                    while True:
                        item = await next_item(worker, ms.WorkItem)
                        request = item.orchestratorRequest
                        if request.instanceId == "signalled":
                            break
                events = [*request.pastEvents, *request.newEvents]
                raised = [sent(e.eventRaised, "input") for e in events if kind(e) == "eventRaised"]
                assert raised == ATTACKS
                assert not [e for e in events if kind(e) == "taskCompleted"]
        finally:
            ch.close()


def _bad_status(store: MemoryStore) -> str:
    """Rewrite the instance's first record with a status that is no status (what the
    forgery left in stores written before payloads were opaque)."""
    (key,) = [k for k in store._objects if "poisoned/log" in k]
    data, etag = store._objects[key]
    store._objects[key] = (data.replace(b'"PENDING"', b'"completed"'), etag)
    return "unknown status"


def _a_bug(store: MemoryStore) -> str:
    """Make reading the instance's log fail once with a bug's error (no StoreError)."""
    assert isinstance(store, _BuggyStore)
    store.armed = True
    return "a bug in reading"


class _BuggyStore(MemoryStore):
    """Raises a bug's error once, when armed, reading the poisoned instance's log."""

    armed = False

    async def get(self, key: str) -> bytes:
        if "poisoned/log" in key and self.armed:
            self.armed = False
            raise RuntimeError("a bug in reading this record")
        return await super().get(key)


@pytest.mark.parametrize("poison", [_bad_status, _a_bug])
async def test_one_bad_record_fails_its_instance_and_the_rest_run(
    poison: Callable[[MemoryStore], str],
) -> None:
    """Issue 19: recovery exited on one bad record (``'completed' is not a valid
    WorkflowStatus``), and kept exiting on every restart. Whatever the error, that
    instance fails visibly at start, naming why, and the others run."""
    store = _BuggyStore()
    async with Sidecar(store, port=0) as sidecar:
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        await start(ch, "poisoned")
        await start(ch, "healthy")
        ch.close()
    says = poison(store)
    async with Sidecar(store, port=0) as sidecar:
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            failed = await outcome(ch, "poisoned")
            assert failed.orchestrationStatus == ms.ORCHESTRATION_STATUS_FAILED
            assert says in failed.failureDetails.errorMessage
            async with work_stream(ch, MS_WORKER) as worker:
                item = await next_item(worker, ms.WorkItem)
                assert item.orchestratorRequest.instanceId == "healthy"
        finally:
            ch.close()


# -- every payload field, any text ------------------------------------------------------

TEXTS = st.one_of(
    st.text(),
    st.sampled_from(ATTACKS),
    st.builds(
        lambda a, b: a + b, st.sampled_from(['{"$durable.text":', "null", '"', "{"]), st.text()
    ),
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(text=TEXTS)
async def test_every_payload_field_round_trips_any_text(channel: Channel, text: str) -> None:
    """Issue 19: payload fields (start input, event data, activity input and result,
    custom status, workflow result, terminate output) were spliced into the store's
    records. Any text reads back exactly as sent, in every field, and forges nothing."""
    instance_id = f"p-{uuid.uuid4().hex}"
    await start(channel, instance_id, data=text)
    await call(channel, "RaiseEvent", ms.RaiseEventRequest(
        instanceId=instance_id, name="e", input=wrapped(text)))  # fmt: skip
    schedule = ms.OrchestratorAction(id=0, scheduleTask=ms.ScheduleTaskAction(
        name="a", input=wrapped(text)))  # fmt: skip
    done = ms.OrchestratorAction(id=-1, completeOrchestration=ms.CompleteOrchestrationAction(
        orchestrationStatus=ms.ORCHESTRATION_STATUS_COMPLETED, result=wrapped(text)))  # fmt: skip
    async with work_stream(channel, MS_WORKER) as worker:
        while True:
            item = await mine(channel, worker, instance_id)
            if (item.WhichOneof("request") or "") == "activityRequest":
                assert sent(item.activityRequest, "input") == wire(text)
                await call(channel, "CompleteActivityTask", ms.ActivityResponse(
                    instanceId=instance_id, taskId=item.activityRequest.taskId,
                    result=wrapped(text), completionToken=item.completionToken))  # fmt: skip
                continue
            request = item.orchestratorRequest
            events = [*request.pastEvents, *request.newEvents]
            kinds = [kind(e) for e in events]
            assert "taskFailed" not in kinds
            for event in events:
                if kind(event) == "executionStarted":
                    assert sent(event.executionStarted, "input") == wire(text)
                if kind(event) == "eventRaised":
                    assert sent(event.eventRaised, "input") == wire(text)
                if kind(event) == "taskCompleted":
                    assert sent(event.taskCompleted, "result") == wire(text)
            ending = "taskCompleted" in kinds and "eventRaised" in kinds
            actions = [done] if ending else [] if "taskScheduled" in kinds else [schedule]
            await call(channel, "CompleteOrchestratorTask", ms.OrchestratorResponse(
                instanceId=instance_id, actions=actions, customStatus=wrapped(text),
                completionToken=item.completionToken))  # fmt: skip
            if ending:
                break
        state = await outcome(channel, instance_id)
    assert state.orchestrationStatus == ms.ORCHESTRATION_STATUS_COMPLETED
    read = (sent(state, "input"), sent(state, "output"), sent(state, "customStatus"))
    assert read == (wire(text),) * 3
    await start(channel, instance_id + "-t")
    await call(channel, "TerminateInstance", ms.TerminateRequest(
        instanceId=instance_id + "-t", output=wrapped(text)))  # fmt: skip
    async with work_stream(channel, MS_WORKER) as worker, anyio.create_task_group() as tg:
        tg.start_soon(mine, channel, worker, "")  # answers the terminated one's turns
        ended = await outcome(channel, instance_id + "-t")
        tg.cancel_scope.cancel()
    assert ended.orchestrationStatus == ms.ORCHESTRATION_STATUS_TERMINATED
    assert sent(ended, "output") == wire(text)


async def mine(ch: Channel, worker: Any, instance_id: str) -> ms.WorkItem:
    """The next work item for ``instance_id``; turns of earlier examples' instances
    (terminated ones) are answered with nothing."""
    while True:
        item: ms.WorkItem = await next_item(worker, ms.WorkItem)
        which = item.WhichOneof("request")
        if which == "activityRequest" or item.orchestratorRequest.instanceId == instance_id:
            return item
        await call(ch, "CompleteOrchestratorTask", ms.OrchestratorResponse(
            instanceId=item.orchestratorRequest.instanceId,
            completionToken=item.completionToken))  # fmt: skip


async def test_dapr_payloads_round_trip_through_history(channel: Channel) -> None:
    """Issue 19: the Dapr dialect's GetInstanceHistory gives back a non-JSON input as
    sent, not the store's wrapping of it."""
    await start(channel, "dapr-h", data=NOT_JSON)
    history = dapr.GetInstanceHistoryResponse.FromString(
        await call(
            channel, "GetInstanceHistory", dapr.GetInstanceHistoryRequest(instanceId="dapr-h")
        )
    )
    started = [e for e in history.events if kind(e) == "executionStarted"]  # type: ignore[arg-type]
    assert sent(started[0].executionStarted, "input") == NOT_JSON


@settings(max_examples=500)
@given(text=TEXTS)
def test_the_payload_codec_is_one_to_one_and_stores_one_json_value(text: str) -> None:
    """Issue 19: the store spliced a payload's text into its record; what it keeps is
    now always exactly one JSON value (a record holding it decodes to the same bytes),
    and reading it back gives the text sent."""
    stored = payload_from_proto(text)
    assert payload_to_proto(stored) == wire(text)
    record = msgspec.json.encode({"input": stored, "status": "PENDING"})
    back = msgspec.json.decode(record, type=dict[str, msgspec.Raw])
    assert bytes(back["input"]) == bytes(stored)
    assert bytes(back["status"]) == b'"PENDING"'
