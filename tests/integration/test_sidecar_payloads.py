"""Every payload the Durable Task SDKs send reads back exactly as sent (issue 14).

A payload (an input, a result, an event's data, a custom status, a terminate output,
a failure's details) is text the sidecar never interprets: JSON or not, empty or not,
``null``, unicode, large. The table tests take every payload field of every message
the converters carry, in both dialects, through the sidecar's whole path: wire bytes,
durable's event, the store's JSON record, and back to wire bytes. The SDK tests do the
same through the real ``durabletask`` and ``dapr`` SDKs, each in a process of its own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from dapr_stub import wrapped
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import ListValue, Struct, Value
from sdk_texts import TEXTS as SDK_TEXTS
from test_sidecar_sdks import HERE, run_sdk, sidecar  # noqa: F401  (a fixture)

from durable._core._events import HistoryEvent
from durable.grpc import Sidecar
from durable.grpc import _convert as cv
from durable.grpc._proto import dapr, ms

pytestmark = pytest.mark.anyio

LARGE = "large " + "\u00e9\U0001f600x" * 200_000  # about 1.2 MB of UTF-8
TEXTS = {**SDK_TEXTS, "unicode": "\x00" + SDK_TEXTS["unicode"], "large": LARGE}
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# (dialect module, HistoryEvent oneof field, body class, payload field, extra body fields)
EVENT_PAYLOADS: list[tuple[Any, str, str, str, dict[str, Any]]] = []
for _mod, _names in (
    (ms, {
        "executionStarted": ("ExecutionStartedEvent", "input", {"name": "wf"}),
        "taskScheduled": ("TaskScheduledEvent", "input", {"name": "a"}),
        "taskCompleted": ("TaskCompletedEvent", "result", {}),
        "subOrchestrationInstanceCreated": (
            "SubOrchestrationInstanceCreatedEvent", "input", {"name": "c", "instanceId": "c"}),
        "subOrchestrationInstanceCompleted": (
            "SubOrchestrationInstanceCompletedEvent", "result", {}),
        "eventRaised": ("EventRaisedEvent", "input", {"name": "e"}),
        "eventSent": ("EventSentEvent", "input", {"name": "e", "instanceId": "o"}),
        "executionTerminated": ("ExecutionTerminatedEvent", "input", {}),
        "executionCompleted": ("ExecutionCompletedEvent", "result", {"orchestrationStatus": 1}),
        "continueAsNew": ("ContinueAsNewEvent", "input", {}),
    }),
    (dapr, {
        "executionStarted": ("ExecutionStartedEvent", "input", {"name": "wf"}),
        "taskScheduled": ("TaskScheduledEvent", "input", {"name": "a"}),
        "taskCompleted": ("TaskCompletedEvent", "result", {}),
        "childWorkflowInstanceCreated": (
            "ChildWorkflowInstanceCreatedEvent", "input", {"name": "c", "instanceId": "c"}),
        "childWorkflowInstanceCompleted": ("ChildWorkflowInstanceCompletedEvent", "result", {}),
        "eventRaised": ("EventRaisedEvent", "input", {"name": "e"}),
        "eventSent": ("EventSentEvent", "input", {"name": "e", "instanceId": "o"}),
        "executionTerminated": ("ExecutionTerminatedEvent", "input", {}),
        "executionCompleted": ("ExecutionCompletedEvent", "result", {"workflowStatus": 1}),
        "continueAsNew": ("ContinueAsNewEvent", "input", {}),
    }),
):  # fmt: skip
    for _oneof, (_cls, _field, _extra) in _names.items():
        EVENT_PAYLOADS.append((_mod, _oneof, _cls, _field, _extra))

# Reasons (suspend, resume) are text durable keeps as a string: any text but the empty
# one reads back as sent, and empty reads back as no reason.
REASONS: list[tuple[Any, str, str, str, dict[str, Any]]] = [
    (mod, oneof, cls, "input", {})
    for mod in (ms, dapr)
    for oneof, cls in (("executionSuspended", "ExecutionSuspendedEvent"),
                       ("executionResumed", "ExecutionResumedEvent"))
]  # fmt: skip

# (dialect module, action oneof field, body class, payload field, extra body fields)
ACTION_PAYLOADS: list[tuple[Any, str, str, str, dict[str, Any]]] = [
    (ms, "scheduleTask", "ScheduleTaskAction", "input", {"name": "a"}),
    (ms, "createSubOrchestration", "CreateSubOrchestrationAction", "input",
     {"name": "c", "instanceId": "c"}),
    (ms, "sendEvent", "SendEventAction", "data", {"name": "e"}),
    (ms, "completeOrchestration", "CompleteOrchestrationAction", "result",
     {"orchestrationStatus": 1}),
    (ms, "completeOrchestration", "CompleteOrchestrationAction", "result",
     {"orchestrationStatus": 2}),
    (dapr, "scheduleTask", "ScheduleTaskAction", "input", {"name": "a"}),
    (dapr, "createChildWorkflow", "CreateChildWorkflowAction", "input",
     {"name": "c", "instanceId": "c"}),
    (dapr, "sendEvent", "SendEventAction", "data", {"name": "e"}),
    (dapr, "completeWorkflow", "CompleteWorkflowAction", "result", {"workflowStatus": 1}),
    (dapr, "completeWorkflow", "CompleteWorkflowAction", "result", {"workflowStatus": 2}),
]  # fmt: skip

# Payload fields carried by the RPCs (raw-gRPC tests in test_sidecar_security_payloads.py
# and the SDK tests below), and those of features the sidecar refuses.
RPC_PAYLOADS = {
    "ActivityRequest.input", "ActivityResponse.result", "CreateInstanceRequest.input",
    "OrchestrationState.input", "OrchestrationState.output", "OrchestrationState.customStatus",
    "OrchestratorResponse.customStatus", "RaiseEventRequest.input", "TerminateRequest.output",
    "WorkflowState.input", "WorkflowState.output", "WorkflowState.customStatus",
    "WorkflowResponse.customStatus", "RerunWorkflowFromEventRequest.input",
}  # fmt: skip
REFUSED = {  # entities, rewind, generic events, detached workflows: no counterpart
    "EntityBatchRequest.entityState", "EntityBatchResult.entityState",
    "EntityMetadata.serializedState", "EntityOperationCalledEvent.input",
    "EntityOperationCompletedEvent.output", "EntityOperationSignaledEvent.input",
    "EntityRequest.entityState", "OperationRequest.input", "OperationResultSuccess.result",
    "SendSignalAction.input", "SignalEntityRequest.input", "StartNewOrchestrationAction.input",
    "ExecutionRewoundEvent.input", "GenericEvent.data", "CreateDetachedWorkflowAction.input",
}  # fmt: skip
PAYLOAD_NAMES = {"input", "result", "output", "data", "customStatus", "entityState",
                 "serializedState"}  # fmt: skip


def over_the_wire(message: Message) -> Any:
    """``message`` as the peer parses it from its bytes."""
    return type(message).FromString(message.SerializeToString())


def stored(event: HistoryEvent) -> HistoryEvent:
    """``event`` as the store's JSON record keeps it and reads it back."""
    return msgspec.json.decode(msgspec.json.encode(event), type=HistoryEvent)  # type: ignore[arg-type]


def back_to(mod: Any) -> Callable[..., Any]:
    return cv.event_to_ms if mod is ms else cv.event_to_dapr


def test_the_tables_name_every_payload_field() -> None:
    """Issue 14: a payload field the tables miss is one whose round trip is not pinned."""
    carried = {f"{c}.{f}" for _, _, c, f, _ in EVENT_PAYLOADS + ACTION_PAYLOADS + REASONS}
    known = carried | RPC_PAYLOADS | REFUSED
    for mod in (ms, dapr):
        for name in dir(mod):
            cls = getattr(mod, name)
            if not (isinstance(cls, type) and issubclass(cls, Message)):
                continue
            for field in cls.DESCRIPTOR.fields:
                kind = field.message_type.full_name if field.message_type is not None else ""
                if kind == "google.protobuf.StringValue" and field.name in PAYLOAD_NAMES:
                    assert f"{name}.{field.name}" in known, f"{mod.__name__}.{name}.{field.name}"
                assert field.type != FieldDescriptor.TYPE_GROUP


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
@pytest.mark.parametrize(
    ("mod", "oneof", "cls", "field", "extra"),
    EVENT_PAYLOADS + REASONS,
    ids=[f"{m.__name__.rpartition('.')[2]}-{o}" for m, o, *_ in EVENT_PAYLOADS + REASONS],
)
def test_every_event_payload_round_trips(
    mod: Any, oneof: str, cls: str, field: str, extra: dict[str, Any], text: str
) -> None:
    """Issue 14: an SDK's history event payload (a raw custom status, a non-JSON or
    empty or ``null`` input) must survive wire -> durable -> store -> wire exactly;
    empty and ``null`` came back as no payload. A suspend or resume reason is the one
    exception, as the README says: durable keeps it as plain text, so an empty one reads
    back as no reason."""
    body = getattr(mod, cls)(**extra, **{field: wrapped(text)})
    event = mod.HistoryEvent(eventId=0, timestamp=AT, **{oneof: body})
    ours = cv.event_from_proto(over_the_wire(event), event_id=0)
    assert ours is not None
    out = back_to(mod)(stored(ours))
    assert out is not None
    back = getattr(over_the_wire(out), oneof)
    if text == "" and (mod, oneof, cls, field, extra) in REASONS:
        assert not back.HasField(field)
    else:
        assert getattr(back, field) == wrapped(text)


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
@pytest.mark.parametrize(
    ("mod", "oneof", "cls", "field", "extra"),
    ACTION_PAYLOADS,
    ids=[f"{m.__name__.rpartition('.')[2]}-{o}-{e}" for m, o, _, _, e in ACTION_PAYLOADS],
)
def test_every_action_payload_round_trips(
    mod: Any, oneof: str, cls: str, field: str, extra: dict[str, Any], text: str
) -> None:
    """Issue 14: an SDK's action payload (activity input, child input, sent event data,
    result, continue-as-new input) reads back from durable's action exactly as sent."""
    body = getattr(mod, cls)(**extra, **{field: wrapped(text)})
    action_type = mod.OrchestratorAction if mod is ms else mod.WorkflowAction
    action = cv.action_from_proto(over_the_wire(action_type(id=0, **{oneof: body})))
    assert action is not None
    out = (cv.action_to_ms if mod is ms else cv.action_to_dapr)(action)
    assert out is not None
    assert getattr(getattr(over_the_wire(out), oneof), field) == wrapped(text)


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
@pytest.mark.parametrize("mod", [ms, dapr], ids=["ms", "dapr"])
def test_activity_results_round_trip(mod: Any, text: str) -> None:
    """Issue 14: an activity's result reads back in its taskCompleted event as sent."""
    ours = cv.activity_result_from_proto(over_the_wire(mod.ActivityResponse(result=wrapped(text))))
    out = back_to(mod)(stored(msgspec.structs.replace(ours, timestamp=AT)))
    assert over_the_wire(out).taskCompleted.result == wrapped(text)


def failure_of(mod: Any, text: str) -> Any:
    """Failure details with ``text`` in every text field, and MS ``properties``."""
    extra: dict[str, Any] = {}
    if mod is ms:
        extra["properties"] = {
            "text": Value(string_value=text), "n": Value(number_value=1.5),
            "flag": Value(bool_value=True), "none": Value(null_value=0),  # type: ignore[arg-type]
            "nested": Value(struct_value=Struct(fields={"list": Value(list_value=ListValue(
                values=[Value(string_value=text), Value(number_value=-2.0)]))})),
        }  # fmt: skip
    return mod.TaskFailureDetails(
        errorType=text, errorMessage=text, stackTrace=wrapped(text or None), isNonRetriable=True,
        innerFailure=mod.TaskFailureDetails(errorType="Inner", errorMessage=text),
        **extra,
    )  # fmt: skip


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
@pytest.mark.parametrize("mod", [ms, dapr], ids=["ms", "dapr"])
def test_failure_details_round_trip(mod: Any, text: str) -> None:
    """Issue 14: a failure's details (type, message, stack, inner failure) come back as
    sent, and so do ``isNonRetriable`` and MS ``properties``, which were dropped."""
    details = failure_of(mod, text)
    response = over_the_wire(mod.ActivityResponse(failureDetails=details))
    ours = stored(msgspec.structs.replace(cv.activity_result_from_proto(response), timestamp=AT))
    out = over_the_wire(back_to(mod)(ours))
    assert out.taskFailed.failureDetails == details
    event = mod.HistoryEvent(timestamp=AT, executionCompleted=mod.ExecutionCompletedEvent(
        failureDetails=details, **{("orchestrationStatus" if mod is ms else
                                     "workflowStatus"): 3}))  # fmt: skip
    ours = stored(cv.event_from_proto(over_the_wire(event)))  # type: ignore[arg-type]
    out = over_the_wire(back_to(mod)(ours))
    assert out.executionCompleted.failureDetails == details


SDK_KEYS = [k for k in TEXTS if k != "empty"]


async def test_durabletask_sdk_payloads_read_back_as_sent(sidecar: Sidecar) -> None:  # noqa: F811
    """Issue 14: through the real ``durabletask`` SDK with a converter that sends
    strings as they are, every payload (input, custom status, activity and child
    input and result, event data, output, terminate output, continue-as-new input,
    failure message and properties) reads back as sent; ``null`` came back as no
    payload and failure properties were dropped."""
    result = await run_sdk(sys.executable, str(HERE / "sdk_payloads_durabletask.py"),
                           f"127.0.0.1:{sidecar.port}")  # fmt: skip
    failed = {"message": "=", "properties": {"n": 2.0, "text": "="}}
    for key in SDK_KEYS:
        assert result[key] == ["COMPLETED", "=", "=", "=", None, "TERMINATED", "=",
                               "COMPLETED", True, "COMPLETED", failed], key  # fmt: skip
    # the SDK itself reads an empty payload as none (so the failing one got None)
    assert result["empty"] == ["COMPLETED", None, None, None, None, "TERMINATED", None,
                               "COMPLETED", True, "COMPLETED",
                               {"message": "", "properties": {"n": 2.0, "text": ""}}]  # fmt: skip


async def test_dapr_sdk_raw_custom_status_reads_back_as_sent(sidecar: Sidecar) -> None:  # noqa: F811
    """Issue 14: Dapr's ``set_custom_status("foobaz")`` sends raw text, which wrote a
    turn record that could never be read again; any custom status (``null`` included,
    which came back as none) and the JSON payloads read back as sent."""
    result = await run_sdk(sys.executable, str(HERE / "sdk_payloads_dapr.py"), str(sidecar.port))
    for key in SDK_KEYS:
        assert result[key] == ["COMPLETED", "=", "=", "=", None, "TERMINATED", "=", "="], key
    # the SDK sends no empty terminate output, and reads an empty custom status as none
    assert result["empty"] == ["COMPLETED", "=", "=", None, None, "TERMINATED", None, None]
