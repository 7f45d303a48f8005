"""durable's model <-> the Durable Task protocol's messages, in both wire dialects.

Round trips go through the wire (bytes) so serialization is covered too. What cannot
survive a round trip (see the ``_convert`` docstring) is normalized before comparing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import Raw

from durable._core._actions import (
    Action,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    RecordPatch,
    ScheduleActivity,
    StartChildWorkflow,
    StartTimer,
)
from durable._core._events import (
    EPOCH,
    NULL,
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowErrored,
    ChildWorkflowScheduled,
    ContinuedAsNew,
    EventRaised,
    EventSent,
    ExecutionTimedOut,
    HistoryEvent,
    ParentRef,
    PatchApplied,
    SearchAttributesUpserted,
    TaskCancelled,
    TimerCreated,
    TimerFired,
    TurnStarted,
    UpdateCompleted,
    UpdateRequested,
    WorkflowCancelRequested,
    WorkflowCompleted,
    WorkflowErrored,
    WorkflowResumed,
    WorkflowRewound,
    WorkflowStarted,
    WorkflowSuspended,
    WorkflowTerminated,
)
from durable._core._failure import FailureDetails
from durable._core._state import WorkflowStatus
from durable.grpc import _convert as cv
from durable.grpc._proto import dapr, ms

# --- strategies --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
payloads = json_values.map(lambda v: Raw(msgspec.json.encode(v)))
times = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)
)
fire_times = times | st.just(cv.NEVER)
names = st.text(max_size=12)
ids = st.text(min_size=1, max_size=12)
int32 = st.integers(0, 2**30)
failures = st.recursive(
    st.builds(
        FailureDetails,
        type=ids,
        message=names,
        stack_trace=names,
        bases=st.lists(ids, max_size=2).map(tuple),
    ),
    lambda inner: st.builds(
        FailureDetails, type=ids, message=names, stack_trace=names, cause=inner
    ),
    max_leaves=3,
)
purposes = st.sampled_from(["sleep", "retry", "event_timeout", "other"])


@st.composite
def events(draw: st.DrawFn, task_base: int) -> HistoryEvent:
    """Any history event, its task ids at or above ``task_base``."""
    common: dict[str, Any] = {"event_id": draw(int32), "timestamp": draw(times)}
    task_id = draw(st.integers(task_base, task_base + 2**20))
    kind = draw(st.integers(0, 17))
    match kind:
        case 0:
            parent = draw(st.none() | st.builds(ParentRef, ids, int32))
            return WorkflowStarted(
                **common, name=draw(names), input=draw(payloads), run_id=draw(names),
                version=draw(names), parent=parent, first_task_id=draw(int32),
            )  # fmt: skip
        case 1:
            return TurnStarted(**common)
        case 2:
            return ActivityScheduled(
                **common, task_id=task_id, name=draw(names), input=draw(payloads),
                attempt=draw(st.integers(1, 9)), step=draw(st.integers(-1, 99)),
            )  # fmt: skip
        case 3:
            return ActivityCompleted(**common, task_id=task_id, result=draw(payloads))
        case 4:
            return ActivityErrored(**common, task_id=task_id, failure=draw(failures))
        case 5:
            return TimerCreated(
                **common, task_id=task_id, fire_at=draw(fire_times), purpose=draw(purposes)
            )
        case 6:
            return TimerFired(**common, task_id=task_id, fire_at=draw(fire_times))
        case 7:
            return ChildWorkflowScheduled(
                **common, task_id=task_id, name=draw(names), instance_id=draw(names),
                input=draw(payloads),
            )  # fmt: skip
        case 8:
            return ChildWorkflowCompleted(
                **common, task_id=task_id, result=draw(payloads), instance_id=draw(names)
            )
        case 9:
            return ChildWorkflowErrored(
                **common, task_id=task_id, failure=draw(failures), instance_id=draw(names)
            )
        case 10:
            return EventRaised(**common, name=draw(names), input=draw(payloads))
        case 11:
            return WorkflowSuspended(**common, reason=draw(names))
        case 12:
            return WorkflowResumed(**common, reason=draw(names))
        case 13:
            return WorkflowTerminated(**common, reason=draw(names), output=draw(payloads))
        case 14:
            return WorkflowCompleted(**common, result=draw(payloads))
        case 15:
            return WorkflowErrored(**common, failure=draw(failures))
        case 16:
            return PatchApplied(**common, patch_id=draw(names))
        case _:
            carryover = draw(st.lists(st.builds(EventRaised, name=names, input=payloads)))
            return ContinuedAsNew(**common, input=draw(payloads), carryover=tuple(carryover))


@st.composite
def actions(draw: st.DrawFn, task_base: int) -> Action:
    """Any action, its task id at or above ``task_base``."""
    task_id = draw(st.integers(task_base, task_base + 2**20))
    match draw(st.integers(0, 6)):
        case 0:
            attempt, step = draw(st.integers(1, 9)), draw(st.integers(-1, 99))
            return ScheduleActivity(task_id, draw(names), draw(payloads), attempt, step)
        case 1:
            return StartTimer(task_id, draw(fire_times), draw(purposes))
        case 2:
            # a sub-orchestration from the wire replaces an ended holder of its id
            return StartChildWorkflow(
                task_id, draw(names), draw(names), draw(payloads), replace_ended=True
            )
        case 3:
            return CompleteWorkflow(draw(payloads))
        case 4:
            return FailWorkflow(draw(failures))
        case 5:
            return RecordPatch(draw(names))
        case _:
            carryover = st.builds(EventRaised, timestamp=times, name=names, input=payloads)
            return ContinueAsNew(draw(payloads), tuple(draw(st.lists(carryover, max_size=3))))


# --- what a round trip keeps ------------------------------------------------------------

DIALECTS = ["ms", "dapr"]
KNOWN_PURPOSES = {"sleep", "retry", "event_timeout"}


def _failure(f: FailureDetails) -> FailureDetails:
    cause = _failure(f.cause) if f.cause is not None else None
    return FailureDetails(f.type, f.message, f.stack_trace, (), cause)


def _purpose(purpose: str, dialect: str) -> str:
    return purpose if dialect == "dapr" and purpose in KNOWN_PURPOSES else "sleep"


def normalized(event: HistoryEvent, dialect: str, task_base: int) -> HistoryEvent:
    """``event`` as it comes back from the wire."""
    replace = msgspec.structs.replace
    match event:
        case WorkflowStarted():
            return replace(event, first_task_id=task_base)
        case ActivityScheduled():
            return replace(event, attempt=1, step=event.task_id)
        case ActivityErrored() | WorkflowErrored() | ChildWorkflowErrored():
            event = replace(event, failure=_failure(event.failure))
            return (
                replace(event, instance_id="") if isinstance(event, ChildWorkflowErrored) else event
            )
        case TimerCreated():
            return replace(event, purpose=_purpose(event.purpose, dialect))
        case ChildWorkflowCompleted():
            return replace(event, instance_id="")
        case WorkflowTerminated():
            return replace(event, reason="")
        case ContinuedAsNew():
            return replace(event, carryover=())
    return event


def normalized_action(action: Action, dialect: str, task_base: int = 0) -> Action:
    replace = msgspec.structs.replace
    match action:
        case ScheduleActivity():  # the step travels (from durable's worker), the attempt not
            step = action.step if action.step >= task_base else action.task_id
            return replace(action, attempt=1, step=step)
        case StartTimer():
            return replace(action, purpose=_purpose(action.purpose, dialect))
        case FailWorkflow():
            return FailWorkflow(_failure(action.failure))
        case ContinueAsNew():
            carryover = tuple(replace(e, event_id=-1) for e in action.carryover)
            return ContinueAsNew(action.input, carryover)
    return action


M = TypeVar("M", bound=Message)


def over_the_wire(message: M) -> M:
    return type(message).FromString(message.SerializeToString())


def event_to(dialect: str) -> Callable[..., ms.HistoryEvent | dapr.HistoryEvent | None]:
    return cv.event_to_ms if dialect == "ms" else cv.event_to_dapr


def action_to(dialect: str) -> Callable[..., ms.OrchestratorAction | dapr.WorkflowAction | None]:
    return cv.action_to_ms if dialect == "ms" else cv.action_to_dapr


# --- events -----------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), task_base=st.integers(0, 1000))
def test_event_round_trip(dialect: str, data: st.DataObject, task_base: int) -> None:
    event = data.draw(events(task_base))
    out = event_to(dialect)(event, instance_id="i-1", task_base=task_base)
    if isinstance(event, PatchApplied):
        assert out is None  # no event of its own: see test_patches_ride_on_their_turn
        return
    assert out is not None
    sent = out.SerializeToString()
    wire = (ms.HistoryEvent if dialect == "ms" else dapr.HistoryEvent).FromString(sent)
    back = cv.event_from_proto(wire, event_id=event.event_id, task_base=task_base)
    assert back == normalized(event, dialect, task_base)
    # what came back goes out and comes back the same
    again = event_to(dialect)(back, instance_id="i-1", task_base=task_base)
    assert again is not None
    wire = type(wire).FromString(again.SerializeToString())
    assert cv.event_from_proto(wire, event_id=event.event_id, task_base=task_base) == back


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_event_kind_is_covered(dialect: str) -> None:
    """The union is closed: each member converts (the strategy draws from all 17)."""
    kinds = HistoryEvent.__args__
    at = datetime(2024, 5, 1, tzinfo=UTC)
    samples: list[HistoryEvent] = [
        WorkflowStarted(timestamp=at, name="w"),
        TurnStarted(timestamp=at),
        ActivityScheduled(task_id=1, name="a"),
        ActivityCompleted(task_id=1),
        ActivityErrored(task_id=1, failure=FailureDetails("E", "m")),
        TimerCreated(task_id=2, fire_at=at),
        TimerFired(task_id=2, fire_at=at),
        ChildWorkflowScheduled(task_id=3, name="c", instance_id="c-1"),
        ChildWorkflowCompleted(task_id=3),
        ChildWorkflowErrored(task_id=3, failure=FailureDetails("E", "m")),
        EventRaised(name="e"),
        WorkflowSuspended(),
        WorkflowResumed(),
        WorkflowTerminated(),
        WorkflowCompleted(),
        WorkflowErrored(failure=FailureDetails("E", "m")),
        ContinuedAsNew(),
        PatchApplied(patch_id="p"),
        TaskCancelled(task_id=1),
        WorkflowCancelRequested(),
        ExecutionTimedOut(deadline=at),
        EventSent(task_id=4, instance_id="x", name="n"),
        UpdateRequested(update_id="u", name="n"),
        UpdateCompleted(update_id="u"),
        WorkflowRewound(run_id="r"),
        SearchAttributesUpserted(attributes={"a": "s:b"}),
    ]
    assert {type(s) for s in samples} == set(kinds), "a new event kind: map it in _convert"
    for sample in samples:
        out = event_to(dialect)(sample)
        if out is None:  # not carried by the protocol
            assert type(sample) in (
                PatchApplied,
                TaskCancelled,
                WorkflowCancelRequested,
                ExecutionTimedOut,
                UpdateRequested,
                UpdateCompleted,
                WorkflowRewound,
                SearchAttributesUpserted,
            )
            continue
        back = cv.event_from_proto(over_the_wire(out), event_id=-1)
        assert type(back) is type(sample)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_durable_task_id_convention(dialect: str) -> None:
    """Scheduling events carry eventId = action id; answers point at it; the rest -1."""
    base, at = 10, datetime(2024, 5, 1, tzinfo=UTC)
    history: list[HistoryEvent] = [
        WorkflowStarted(event_id=0, timestamp=at, name="w", first_task_id=base),
        TurnStarted(event_id=1, timestamp=at),
        ActivityScheduled(event_id=2, timestamp=at, task_id=10, name="a", step=10),
        TimerCreated(event_id=3, timestamp=at, task_id=11, fire_at=at),
        ChildWorkflowScheduled(event_id=4, timestamp=at, task_id=12, name="c", instance_id="c"),
        TurnStarted(event_id=5, timestamp=at),
        ActivityCompleted(event_id=6, timestamp=at, task_id=10),
        TimerFired(event_id=7, timestamp=at, task_id=11, fire_at=at),
        ChildWorkflowCompleted(event_id=8, timestamp=at, task_id=12),
    ]
    to = cv.events_to_ms if dialect == "ms" else cv.events_to_dapr
    wire = to(history, instance_id="i", task_base=base)
    assert [e.eventId for e in wire] == [-1, -1, 0, 1, 2, -1, -1, -1, -1]
    assert wire[6].taskCompleted.taskScheduledId == 0
    assert wire[7].timerFired.timerId == 1
    kind = wire[1].WhichOneof("eventType")
    assert kind == ("orchestratorStarted" if dialect == "ms" else "workflowStarted")
    started = wire[0].executionStarted
    instance = (
        started.orchestrationInstance
        if isinstance(started, ms.ExecutionStartedEvent)
        else started.workflowInstance
    )
    assert instance.instanceId == "i"
    assert cv.events_from_proto(wire, task_base=base) == history


def test_events_from_proto_skips_what_durable_does_not_model() -> None:
    at = datetime(2024, 5, 1, tzinfo=UTC)
    wire = [
        ms.HistoryEvent(
            eventId=-1, timestamp=at, orchestratorStarted=ms.OrchestratorStartedEvent()
        ),
        ms.HistoryEvent(
            eventId=-1, eventRaised=ms.EventRaisedEvent(name="go", input={"value": "1"})
        ),
        ms.HistoryEvent(orchestratorCompleted=ms.OrchestratorCompletedEvent()),
        ms.HistoryEvent(genericEvent=ms.GenericEvent(data={"value": "x"})),
        ms.HistoryEvent(),
    ]
    assert cv.events_from_proto(wire, first_event_id=7) == [
        TurnStarted(event_id=7, timestamp=at),
        EventRaised(event_id=8, name="go", input=Raw(b"1")),
    ]
    stalled = dapr.HistoryEvent(executionStalled=dapr.ExecutionStalledEvent(description="x"))
    assert cv.events_from_proto([stalled, over_the_wire(stalled)]) == []


@pytest.mark.parametrize("dialect", DIALECTS)
def test_execution_completed_statuses(dialect: str) -> None:
    def completed(status: int, result: str | None = None) -> ms.HistoryEvent | dapr.HistoryEvent:
        if dialect == "ms":
            done = ms.ExecutionCompletedEvent(orchestrationStatus=status, result=cv.text(result))  # type: ignore[arg-type]
            return ms.HistoryEvent(executionCompleted=done)
        return dapr.HistoryEvent(
            executionCompleted=dapr.ExecutionCompletedEvent(
                workflowStatus=status,
                result=cv.text(result),  # type: ignore[arg-type]
            )
        )

    assert cv.event_from_proto(completed(1, "2")) == WorkflowCompleted(result=Raw(b"2"))
    assert cv.event_from_proto(completed(2, "3")) == ContinuedAsNew(input=Raw(b"3"))
    assert cv.event_from_proto(completed(5, '"x"')) == WorkflowTerminated(output=Raw(b'"x"'))
    assert cv.event_from_proto(completed(4)) == WorkflowTerminated()  # CANCELED
    assert cv.event_from_proto(completed(3)) == WorkflowErrored(failure=FailureDetails("", ""))
    with pytest.raises(cv.ProtocolError, match="non-final"):
        cv.event_from_proto(completed(0))


# --- values -----------------------------------------------------------------------------


def test_payloads() -> None:
    assert cv.payload_to_proto(NULL) is None
    assert cv.payload_to_proto(Raw(b'{"a":[1,"\xc3\xa9"]}')) == '{"a":[1,"é"]}'
    assert cv.payload_from_proto(None) == NULL
    assert cv.payload_to_proto(cv.payload_from_proto("")) == ""  # issue 14: text, kept
    assert cv.payload_to_proto(cv.payload_from_proto("null")) == "null"
    assert cv.payload_from_proto('"x"') == Raw(b'"x"')
    wire = ms.TaskScheduledEvent(name="a", input=cv.payload_out(NULL)).SerializeToString()
    assert cv.wire_fields(wire) == [(1, cv.LENGTH_DELIMITED)]  # null is absent, not "null"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_never_keeps_its_nanoseconds(dialect: str) -> None:
    """Dapr matches its "never" timer sentinel to the nanosecond."""
    never = Timestamp(seconds=253_402_300_799, nanos=999_999_999).SerializeToString()
    timer = TimerCreated(task_id=0, fire_at=cv.NEVER, purpose="event_timeout")
    wire = event_to(dialect)(timer)
    assert wire is not None
    assert never in wire.SerializeToString()
    assert cv.event_from_proto(over_the_wire(wire)) == msgspec.structs.replace(
        timer, purpose=_purpose("event_timeout", dialect)
    )
    action = action_to(dialect)(StartTimer(0, cv.NEVER, "event_timeout"))
    assert action is not None
    assert never in action.SerializeToString()
    started = cv.action_from_proto(over_the_wire(action))
    assert isinstance(started, StartTimer)
    assert started.fire_at == cv.NEVER
    # a parsed message keeps its Timestamp as sent: re-encoding it keeps the nanos
    assert never in over_the_wire(action).SerializeToString()
    # a naive datetime is taken as UTC
    naive = TimerFired(task_id=0, fire_at=datetime(2030, 1, 1))
    back = cv.event_from_proto(over_the_wire(event_to(dialect)(naive)))
    assert isinstance(back, TimerFired)
    assert back.fire_at == datetime(2030, 1, 1, tzinfo=UTC)


def test_dapr_timer_origins() -> None:
    def origin(purpose: str) -> str:
        wire = cv.event_to_dapr(TimerCreated(task_id=0, fire_at=EPOCH, purpose=purpose))
        assert wire is not None
        return wire.timerCreated.WhichOneof("origin") or ""

    assert origin("sleep") == "createTimer"
    assert origin("retry") == "activityRetry"
    assert origin("event_timeout") == "externalEvent"
    assert origin("other") == ""
    retry = dapr.TimerCreatedEvent(
        childWorkflowRetry=dapr.TimerOriginChildWorkflowRetry(instanceId="c")
    )
    back = cv.event_from_proto(dapr.HistoryEvent(eventId=4, timerCreated=retry), task_base=1)
    assert back == TimerCreated(task_id=5, fire_at=EPOCH, purpose="retry")


@pytest.mark.parametrize("status", list(WorkflowStatus))
def test_statuses(status: WorkflowStatus) -> None:
    assert cv.status_from_proto(cv.status_to_ms(status)) is status
    assert cv.status_from_proto(cv.status_to_dapr(status)) is status
    assert int(cv.status_to_ms(status)) == int(cv.status_to_dapr(status))


def test_statuses_durable_lacks() -> None:
    assert cv.status_from_proto(ms.ORCHESTRATION_STATUS_CANCELED) is WorkflowStatus.CANCELED
    assert cv.status_from_proto(dapr.ORCHESTRATION_STATUS_STALLED) is WorkflowStatus.RUNNING
    with pytest.raises(cv.ProtocolError, match="99"):
        cv.status_from_proto(99)
    stalled = ms.ExecutionCompletedEvent.FromString(b"\x08\x08").orchestrationStatus
    assert cv.status_from_proto(stalled) is WorkflowStatus.RUNNING  # an MS parse of Dapr's 8


@settings(max_examples=150, deadline=None)
@given(failure=failures)
def test_failures(failure: FailureDetails) -> None:
    for to in (cv.failure_to_ms, cv.failure_to_dapr):
        assert cv.failure_from_proto(over_the_wire(to(failure))) == _failure(failure)


# --- actions ----------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), task_base=st.integers(0, 1000))
def test_action_round_trip(dialect: str, data: st.DataObject, task_base: int) -> None:
    action = data.draw(actions(task_base))
    out = action_to(dialect)(action, task_base=task_base)
    if isinstance(action, RecordPatch):
        assert out is None  # patches travel in WorkflowResponse.version, not as actions
        return
    assert out is not None
    sent = out.SerializeToString()
    wire = (ms.OrchestratorAction if dialect == "ms" else dapr.WorkflowAction).FromString(sent)
    if isinstance(action, ScheduleActivity | StartTimer | StartChildWorkflow):
        assert wire.id == action.task_id - task_base
    else:
        assert wire.id == -1
    back = cv.action_from_proto(wire, task_base=task_base)
    assert back == normalized_action(action, dialect, task_base)
    assert back is not None
    out_again = action_to(dialect)(back, task_base=task_base)
    assert out_again is not None
    again = type(wire).FromString(out_again.SerializeToString())
    assert cv.action_from_proto(again, task_base=task_base) == back


def test_dapr_schedule_task_action_from_a_dapr_worker() -> None:
    """What a Dapr worker sends: taskExecutionId set, and the timer's origin named."""
    scheduled = dapr.WorkflowAction(
        id=3,
        scheduleTask=dapr.ScheduleTaskAction(
            name="a", input={"value": "[1]"}, taskExecutionId="u-1"
        ),
    )
    assert cv.action_from_proto(over_the_wire(scheduled)) == ScheduleActivity(
        3, "a", Raw(b"[1]"), 1, 3, "u-1"
    )  # the worker's id for the call is kept, to hand back with every attempt
    event = ActivityScheduled(task_id=5, name="a", step=3, execution_id="u-1")
    request = cv.activity_request_to_dapr(event, instance_id="i", run_id="r", task_base=2)
    assert request.taskExecutionId == "u-1"
    assert cv.step_of_activity_request(request) is None  # not durable's: no step in it
    ours = cv.activity_request_to_dapr(msgspec.structs.replace(event, execution_id=""),
                                       instance_id="i", run_id="r", task_base=2)  # fmt: skip
    assert ours.taskExecutionId == "durable:r:3"
    assert cv.step_of_activity_request(ours) == 3
    foreign = dapr.ActivityRequest(taskExecutionId="order:12")  # digits, not durable's
    assert cv.step_of_activity_request(foreign) is None
    timer = dapr.CreateTimerAction(
        fireAt=datetime(2030, 1, 1, tzinfo=UTC),
        externalEvent=dapr.TimerOriginExternalEvent(name="approval"),
    )
    back = cv.action_from_proto(dapr.WorkflowAction(id=4, createTimer=timer), task_base=2)
    assert back == StartTimer(6, datetime(2030, 1, 1, tzinfo=UTC), "event_timeout")


@pytest.mark.parametrize("status", [4, 5])
def test_a_terminated_completion_is_no_action(status: int) -> None:
    end = ms.CompleteOrchestrationAction(orchestrationStatus=status)  # type: ignore[arg-type]
    assert cv.action_from_proto(ms.OrchestratorAction(id=7, completeOrchestration=end)) is None
    end_dapr = dapr.CompleteWorkflowAction(workflowStatus=status)  # type: ignore[arg-type]
    assert cv.action_from_proto(dapr.WorkflowAction(id=7, completeWorkflow=end_dapr)) is None


@pytest.mark.parametrize(
    "action",
    [
        ms.OrchestratorAction(
            id=1, terminateOrchestration=ms.TerminateOrchestrationAction(instanceId="x")
        ),
        ms.OrchestratorAction(id=1, sendEntityMessage=ms.SendEntityMessageAction()),
        ms.OrchestratorAction(id=1, rewindOrchestration=ms.RewindOrchestrationAction()),
        ms.OrchestratorAction(id=1),
        ms.OrchestratorAction(
            completeOrchestration=ms.CompleteOrchestrationAction(
                orchestrationStatus=ms.ORCHESTRATION_STATUS_RUNNING
            )
        ),
        ms.OrchestratorAction(
            completeOrchestration=ms.CompleteOrchestrationAction(
                orchestrationStatus=ms.ORCHESTRATION_STATUS_CONTINUED_AS_NEW,
                carryoverEvents=[ms.HistoryEvent(timerFired=ms.TimerFiredEvent(timerId=1))],
            )
        ),
        dapr.WorkflowAction(
            id=1, workflowVersionNotAvailable=dapr.WorkflowVersionNotAvailableAction()
        ),
        dapr.WorkflowAction(
            id=1, createDetachedWorkflow=dapr.CreateDetachedWorkflowAction(name="d")
        ),
    ],
)
def test_actions_durable_cannot_take(action: ms.OrchestratorAction | dapr.WorkflowAction) -> None:
    with pytest.raises(cv.ProtocolError):
        cv.action_from_proto(action)


# --- patches (Dapr) ---------------------------------------------------------------------


def test_patches_ride_on_their_turn() -> None:
    """A Dapr worker must see a patch on the workflowStarted of the turn that took it
    (checked against the dapr 1.19 executor); durable records it at the turn's end."""
    at, later = datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 2, tzinfo=UTC)
    history: list[HistoryEvent] = [
        WorkflowStarted(event_id=0, timestamp=at, name="w"),
        TurnStarted(event_id=1, timestamp=at),
        ActivityScheduled(event_id=2, timestamp=at, task_id=0, name="a", step=0),
        PatchApplied(event_id=3, timestamp=at, patch_id="fix-1"),
        PatchApplied(event_id=4, timestamp=at, patch_id="fix-2"),
        TurnStarted(event_id=5, timestamp=later),
        ActivityCompleted(event_id=6, timestamp=later, task_id=0),
        PatchApplied(event_id=7, timestamp=later, patch_id="fix-3"),
        WorkflowCompleted(event_id=8, timestamp=later),
    ]
    wire = cv.events_to_dapr(history)
    assert [e.WhichOneof("eventType") for e in wire] == [
        "executionStarted", "workflowStarted", "taskScheduled", "workflowStarted",
        "taskCompleted", "executionCompleted",
    ]  # fmt: skip
    assert wire[1].workflowStarted.version == dapr.WorkflowVersion(patches=["fix-1", "fix-2"])
    assert wire[3].workflowStarted.version == dapr.WorkflowVersion(patches=["fix-3"])
    assert cv.events_from_proto([over_the_wire(e) for e in wire]) == history
    # a history cut at a turn start converts to a prefix of the whole (stateful history)
    assert cv.events_to_dapr(history[:5]) == wire[:3]
    assert cv.events_to_dapr(history[5:]) == wire[3:]
    assert cv.events_from_proto(wire[3:], first_event_id=5) == history[5:]
    # with no turn start before it, a patch gets a workflowStarted of its own
    alone = cv.events_to_dapr(history[2:5])
    assert len(alone) == 2
    assert alone[1].workflowStarted.version == dapr.WorkflowVersion(patches=["fix-1", "fix-2"])
    assert len(cv.events_to_ms(history)) == 6  # the MS dialect has no patches


def test_patches_recorded_by_a_foreign_turn_start() -> None:
    named = dapr.WorkflowVersion(patches=["a", "b"], name="v2")
    started = dapr.HistoryEvent(workflowStarted=dapr.WorkflowStartedEvent(version=named))
    assert cv.event_from_proto(over_the_wire(started)) == TurnStarted()
    raised = dapr.HistoryEvent(eventRaised=dapr.EventRaisedEvent(name="go"))
    assert cv.events_from_proto([started, raised]) == [
        TurnStarted(event_id=0),
        EventRaised(event_id=1, name="go"),
        PatchApplied(event_id=2, patch_id="a"),
        PatchApplied(event_id=3, patch_id="b"),
    ]


def test_patches_from_proto() -> None:
    response = dapr.WorkflowResponse(
        instanceId="i", version=dapr.WorkflowVersion(patches=["old", "new", "new", "newer"])
    )
    assert cv.patches_from_proto(over_the_wire(response), recorded={"old"}) == [
        RecordPatch("new"),
        RecordPatch("newer"),
    ]
    assert cv.patches_from_proto(dapr.WorkflowResponse(instanceId="i")) == []
    traced = ms.OrchestratorResponse(
        orchestrationTraceContext=ms.OrchestrationTraceContext(spanID={"value": "s"})
    )
    assert cv.patches_from_proto(traced) == []


# --- activity work items ----------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_activity_request(dialect: str) -> None:
    scheduled = ActivityScheduled(task_id=12, name="quote", input=Raw(b'"sku"'), step=12)
    instance: ms.OrchestrationInstance | dapr.WorkflowInstance
    if dialect == "ms":
        request = over_the_wire(
            cv.activity_request_to_ms(scheduled, instance_id="order-42", run_id="r1", task_base=10)
        )
        instance = request.orchestrationInstance
        name, input, task_id = request.name, request.input.value, request.taskId
    else:
        request_d = over_the_wire(
            cv.activity_request_to_dapr(
                scheduled, instance_id="order-42", run_id="r1", task_base=10
            )
        )
        instance = request_d.workflowInstance
        name, input, task_id = request_d.name, request_d.input.value, request_d.taskId
    assert (name, input, task_id) == ("quote", '"sku"', 2)
    assert (instance.instanceId, instance.executionId.value) == ("order-42", "r1")


def test_activity_results() -> None:
    ok = ms.ActivityResponse(
        instanceId="i", taskId=2, result={"value": '{"p":1}'}, completionToken="t"
    )
    assert cv.activity_result_from_proto(over_the_wire(ok), task_base=10) == ActivityCompleted(
        task_id=12, result=Raw(b'{"p":1}')
    )
    empty = dapr.ActivityResponse(instanceId="i", taskId=0)
    assert cv.activity_result_from_proto(over_the_wire(empty)) == ActivityCompleted(task_id=0)
    failed = dapr.ActivityResponse(
        taskId=3,
        failureDetails=dapr.TaskFailureDetails(
            errorType="ValueError",
            errorMessage="bad",
            stackTrace={"value": "tb"},
            isNonRetriable=True,
        ),
    )
    assert cv.activity_result_from_proto(over_the_wire(failed)) == ActivityErrored(
        task_id=3, failure=FailureDetails("ValueError", "bad", "tb", non_retriable=True)
    )


# --- the wire: where the dialects collide -----------------------------------------------


def test_wire_fields() -> None:
    assert cv.wire_fields(b"") == []
    request = ms.GetWorkItemsRequest(
        maxConcurrentOrchestrationWorkItems=200, maxConcurrentActivityWorkItems=200
    )
    assert cv.wire_fields(request.SerializeToString()) == [(1, cv.VARINT), (2, cv.VARINT)]
    capabilities = dapr.GetWorkItemsRequest(
        capabilities=[dapr.WORKER_CAPABILITY_HEALTH_PING, dapr.WORKER_CAPABILITY_STATEFUL_HISTORY]
    )
    assert cv.wire_fields(capabilities.SerializeToString()) == [(4, cv.LENGTH_DELIMITED)]
    assert cv.wire_fields(b"\x0d\x00\x00\x00\x00\x11" + bytes(8)) == [
        (1, cv.FIXED32),
        (2, cv.FIXED64),
    ]
    for bad in (b"\x08", b"\x0a\x05ab", b"\x00\x01", b"\x0b", b"\x08" + b"\xff" * 11):
        with pytest.raises(cv.ProtocolError):
            cv.wire_fields(bad)


def test_an_ms_trace_context_is_not_a_dapr_version() -> None:
    """OrchestratorResponse 6 (MS orchestrationTraceContext) vs WorkflowResponse 6 (Dapr
    version). Parse a completion with the class of the stream it answers."""
    context = ms.OrchestrationTraceContext(
        spanID={"value": "00f067aa0ba902b7"}, spanStartTime=datetime(2024, 5, 1, 12, tzinfo=UTC)
    )
    response = ms.OrchestratorResponse(
        instanceId="i", orchestrationTraceContext=context
    ).SerializeToString()
    assert ms.OrchestratorResponse.FromString(response).orchestrationTraceContext == context
    # a span id alone is silently taken as a patch name: wrong, not an error
    span_only = ms.OrchestratorResponse(
        instanceId="i",
        orchestrationTraceContext=ms.OrchestrationTraceContext(spanID={"value": "abc"}),
    ).SerializeToString()
    misread = dapr.WorkflowResponse.FromString(span_only)
    assert list(misread.version.patches) == ["\n\x03abc"]
    # wire types cannot tell these apart (both LENGTH_DELIMITED): only the stream can
    versioned = dapr.WorkflowResponse(instanceId="i", version=dapr.WorkflowVersion(patches=["p"]))
    assert cv.wire_fields(span_only) == cv.wire_fields(versioned.SerializeToString())


def test_health_pings_do_not_cross_dialects() -> None:
    """MS pings in WorkItem 4, Dapr 1.19 in 6: the other side sees no work item at all
    (the Dapr SDK then raises and reconnects), so never ping a stream in the wrong one."""
    ms_ping = ms.WorkItem(healthPing=ms.HealthPing()).SerializeToString()
    dapr_ping = dapr.WorkItem(healthPing=dapr.HealthPing()).SerializeToString()
    assert ms.WorkItem.FromString(ms_ping).WhichOneof("request") == "healthPing"
    assert dapr.WorkItem.FromString(ms_ping).WhichOneof("request") is None
    assert ms.WorkItem.FromString(dapr_ping).WhichOneof("request") is None
    assert cv.wire_fields(ms_ping) == [(4, cv.LENGTH_DELIMITED)]
    assert cv.wire_fields(dapr_ping) == [(6, cv.LENGTH_DELIMITED)]


def test_create_instance_field_10_needs_a_wire_type_check() -> None:
    """MS requestTime (Timestamp) vs Dapr enforceUniqueInstanceId (bool) at 10: protobuf
    keeps a field of the wrong wire type as an unknown one, so the wrong class loses it
    silently (and reads the default)."""
    ms_request = ms.CreateInstanceRequest(
        instanceId="i", name="w", requestTime=datetime(2024, 5, 1, tzinfo=UTC)
    ).SerializeToString()
    misread = dapr.CreateInstanceRequest.FromString(ms_request)
    assert misread.enforceUniqueInstanceId is False  # no error, and not what was sent
    dapr_request = dapr.CreateInstanceRequest(
        instanceId="i", name="w", enforceUniqueInstanceId=True
    ).SerializeToString()
    assert (10, cv.LENGTH_DELIMITED) in cv.wire_fields(ms_request)
    assert (10, cv.VARINT) in cv.wire_fields(dapr_request)


def test_purge_fields_4_and_5_need_a_wire_type_check() -> None:
    """MS instanceBatch (message) | Dapr force (bool) at 4; MS isOrchestration (bool) |
    Dapr router (message) at 5. The MS client sets isOrchestration."""
    ms_request = ms.PurgeInstancesRequest(instanceId="i", isOrchestration=True)
    misread = dapr.PurgeInstancesRequest.FromString(ms_request.SerializeToString())
    assert not misread.HasField("router")  # the bool is dropped silently
    assert (5, cv.VARINT) in cv.wire_fields(ms_request.SerializeToString())
    dapr_request = dapr.PurgeInstancesRequest(
        instanceId="i", force=True, router=dapr.TaskRouter(sourceAppID="a")
    ).SerializeToString()
    assert {(4, cv.VARINT), (5, cv.LENGTH_DELIMITED)} <= set(cv.wire_fields(dapr_request))
    batch = ms.PurgeInstancesRequest(instanceBatch=ms.InstanceBatch(instanceIds=["a", "b"]))
    assert cv.wire_fields(batch.SerializeToString()) == [(4, cv.LENGTH_DELIMITED)]


def test_history_events_we_send_read_the_same_in_both_dialects() -> None:
    """Every field durable writes into a HistoryEvent is one the dialects share, so an
    event encoded in one dialect decodes to the same durable event in the other."""
    at = datetime(2024, 5, 1, tzinfo=UTC)
    history: list[HistoryEvent] = [
        WorkflowStarted(timestamp=at, name="w", input=Raw(b"1"), run_id="r",
                        parent=ParentRef("p", 4)),
        TurnStarted(timestamp=at),
        ActivityScheduled(task_id=0, name="a", step=0),
        ActivityErrored(task_id=0, failure=FailureDetails("E", "m", "tb",
                                                          cause=FailureDetails("C", "c"))),
        ChildWorkflowScheduled(task_id=1, name="c", instance_id="c-1"),
        TimerCreated(task_id=2, fire_at=at),
        WorkflowCompleted(result=Raw(b"2")),
    ]  # fmt: skip
    for event in history:
        to_ms, to_dapr = cv.event_to_ms(event), cv.event_to_dapr(event)
        assert to_ms is not None
        assert to_dapr is not None
        from_ms = dapr.HistoryEvent.FromString(to_ms.SerializeToString())
        from_dapr = ms.HistoryEvent.FromString(to_dapr.SerializeToString())
        assert cv.event_from_proto(from_ms) == cv.event_from_proto(from_dapr) == event


def test_dapr_turns_name_the_run_version_beside_its_patches() -> None:
    from durable._core._events import PatchApplied, TurnStarted, WorkflowStarted
    from durable.grpc._convert import events_to_dapr

    at = datetime(2026, 1, 1, tzinfo=UTC)
    history = [
        WorkflowStarted(event_id=0, timestamp=at, name="checkout", version="2"),
        TurnStarted(event_id=1, timestamp=at),
        PatchApplied(event_id=2, timestamp=at, patch_id="fast-reserve"),
        TurnStarted(event_id=3, timestamp=at),
    ]
    turns = [e.workflowStarted for e in events_to_dapr(history)[1:]]
    assert [t.version.name for t in turns] == ["2", "2"]
    assert [list(t.version.patches) for t in turns] == [["fast-reserve"], []]
    unversioned = events_to_dapr([WorkflowStarted(event_id=0, timestamp=at, name="x"),
                                  TurnStarted(event_id=1, timestamp=at)])  # fmt: skip
    assert not unversioned[1].workflowStarted.HasField("version")
