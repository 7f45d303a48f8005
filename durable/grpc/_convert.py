"""Conversions between durable's model and the Durable Task protocol's messages.

Pure functions for the two wire dialects (``ms``: Microsoft's ``durabletask``;
``dapr``: Dapr 1.19). Going out there is one function per dialect (``event_to_ms``,
``event_to_dapr``...), since the message classes differ; coming in, one function takes
either dialect's message (``event_from_proto``...). Protobuf types never leave
``durable.grpc``: the sidecar calls these at its edge and hands the engine msgspec
structs only.

Ids
---
durable numbers things twice: ``event_id`` is an event's position in the run's
history, and ``task_id`` names an activity, timer or sub-workflow; task ids start at
``WorkflowStarted.first_task_id`` so they stay unique across continue-as-new. A
Durable Task worker numbers its actions ``0, 1, 2...`` afresh in every run and
expects, on replay::

    taskScheduled / timerCreated / subOrchestrationInstanceCreated  eventId = action id
    taskCompleted / taskFailed / sub-orchestration completed|failed  taskScheduledId = action id
    timerFired                                                       timerId = action id
    every other event                                                eventId = -1

So the mapping is: **action id = task_id - task_base**, where ``task_base`` is the
run's ``WorkflowStarted.first_task_id`` (0 unless the instance continued as new).
The sidecar passes the same ``task_base`` both ways. Positions do not travel: going
out, non-scheduling events carry ``eventId = -1``; coming in, ``events_from_proto``
numbers the events it keeps from ``first_event_id`` (the count of events already
known, e.g. a stateful-history ``CachedHistory.eventCount``).

Events
------
==========================  ===========================================================
durable                     Durable Task (MS name | Dapr name where they differ)
==========================  ===========================================================
WorkflowStarted             executionStarted {name, version, input, instance{id, seed},
                            parentInstance{taskScheduledId = parent task id (absolute),
                            instance{id, run_id}}}; the executionId is the run's seed
                            (its run id, or for a rerun the run whose history it keeps),
                            so a remote worker replays the values the run drew
TurnStarted                 orchestratorStarted | workflowStarted
ActivityScheduled           taskScheduled {name, input}, eventId = action id
ActivityCompleted/Errored   taskCompleted {result} / taskFailed {failureDetails}
TimerCreated                timerCreated {fireAt} (Dapr: origin from ``purpose``)
TimerFired                  timerFired {fireAt, timerId}
ChildWorkflowScheduled      subOrchestrationInstanceCreated | childWorkflowInstanceCreated
ChildWorkflowCompleted/...  subOrchestrationInstanceCompleted/Failed | childWorkflow...
EventRaised                 eventRaised {name, input}
EventSent                   eventSent {instanceId, name, input}, eventId = action id
WorkflowSuspended/Resumed   executionSuspended/Resumed {input = reason text}
WorkflowTerminated          executionTerminated {input = output}
WorkflowCompleted/Errored   executionCompleted {COMPLETED, result} / {FAILED, failure}
ContinuedAsNew              continueAsNew {input}
PatchApplied                Dapr: in its turn's workflowStarted {version {patches}}; MS: none
==========================  ===========================================================

Coming in, orchestratorCompleted/workflowCompleted, entity, rewind, stalled
and other events durable has no counterpart for are skipped (``None``).

Patches (Dapr only). A Dapr worker learns the patches a run took from the
``workflowStarted.version.patches`` of the history, as it replays: a patch must sit on
the workflowStarted of the turn that took it, before the code of that turn runs again.
durable records PatchApplied at the end of that turn, so :func:`events_to_dapr` moves
each one into its turn's workflowStarted (the Dapr sidecar does the same), and
:func:`events_from_proto` moves them back to the end of the turn. The Dapr list is then
shorter than durable's: stateful-history counts (``CachedHistory.eventCount``) count
Dapr messages. RecordPatch is no action on the wire: a worker lists its patches in
``WorkflowResponse.version``, read by :func:`patches_from_proto`.

What does not survive a round trip (no field for it on the wire): an activity's
``attempt`` and ``step`` (they come back as ``1`` and ``task_id``: a Durable Task
retry is a new task); a timer's ``purpose`` in the MS dialect (comes back "sleep");
Dapr keeps "sleep", "retry" and "event_timeout" in the timer's ``origin``;
``first_task_id`` (comes back as ``task_base``); ``WorkflowTerminated.reason``;
``ChildWorkflowCompleted/Errored.instance_id``; ``ContinuedAsNew.carryover`` (the
next run's history carries those events); ``FailureDetails.bases``; event positions
of carried-over events.

Payloads are opaque text both sides: ``msgspec.Raw`` ↔ ``google.protobuf.StringValue``,
with ``null`` ↔ absent (what the SDKs send for ``None``); text that is not one JSON
value is stored as data (see :mod:`durable.grpc._payload`). Time is UTC; betterproto
keeps microseconds, except that Dapr's "never" sentinel ``9999-12-31T23:59:59.999999999Z``
(timers of indefinite waits, compared to the nanosecond) maps to ``datetime.max`` and
back exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, assert_never, cast

import betterproto
import msgspec
from betterproto.lib.google.protobuf import Timestamp

from durable._core._actions import (
    Action,
    CancelTask,
    CompleteUpdate,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    RecordPatch,
    ScheduleActivity,
    SendEvent,
    StartChildWorkflow,
    StartTimer,
)
from durable._core._events import (
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
    WorkflowStarted,
    WorkflowSuspended,
    WorkflowTerminated,
)
from durable._core._failure import FailureDetails
from durable._core._state import WorkflowStatus
from durable.grpc._framing import (
    FIXED32,
    FIXED64,
    LENGTH_DELIMITED,
    VARINT,
    ProtocolError,
    wire_fields,
)
from durable.grpc._payload import payload_from_proto, payload_to_proto
from durable.grpc._proto import dapr, ms

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

__all__ = [
    "FIXED32",
    "FIXED64",
    "LENGTH_DELIMITED",
    "NEVER",
    "STEP_TAG",
    "VARINT",
    "ProtocolError",
    "action_from_proto",
    "action_to_dapr",
    "action_to_ms",
    "activity_request_to_dapr",
    "activity_request_to_ms",
    "activity_result_from_proto",
    "event_from_proto",
    "event_to_dapr",
    "event_to_ms",
    "events_from_proto",
    "events_to_dapr",
    "events_to_ms",
    "failure_from_proto",
    "failure_to_dapr",
    "failure_to_ms",
    "patches_from_proto",
    "payload_from_proto",
    "payload_to_proto",
    "status_from_proto",
    "status_to_dapr",
    "status_to_ms",
    "step_of_activity_request",
    "wire_fields",
]


NEVER = datetime.max.replace(tzinfo=UTC)
"""``datetime.max``: durable's side of Dapr's "never" timer sentinel."""

_NEVER_SECONDS, _NEVER_NANOS = 253_402_300_799, 999_999_999

# ---------------------------------------------------------------------------------------
# Values shared by both dialects
# ---------------------------------------------------------------------------------------


def _time_to_proto(at: datetime) -> datetime:
    """A datetime for a Timestamp field: UTC, and the "never" sentinel to the nanosecond.

    betterproto encodes datetimes with microseconds only; a Timestamp message placed in
    the field is encoded as is, which is how ``NEVER`` keeps its 999,999,999 nanos.
    """
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if at == NEVER:
        return cast("datetime", Timestamp(seconds=_NEVER_SECONDS, nanos=_NEVER_NANOS))
    return at


_STATUS = {
    WorkflowStatus.RUNNING: 0,
    WorkflowStatus.COMPLETED: 1,
    WorkflowStatus.CONTINUED_AS_NEW: 2,
    WorkflowStatus.FAILED: 3,
    WorkflowStatus.TERMINATED: 5,
    WorkflowStatus.PENDING: 6,
    WorkflowStatus.SUSPENDED: 7,
    WorkflowStatus.CANCELED: 4,
}
_STATUS_BACK = {number: status for status, number in _STATUS.items()}
_STALLED = 8


def status_to_ms(status: WorkflowStatus) -> ms.OrchestrationStatus:
    """The MS OrchestrationStatus of ``status``."""
    return ms.OrchestrationStatus(_STATUS[status])


def status_to_dapr(status: WorkflowStatus) -> dapr.OrchestrationStatus:
    """The Dapr OrchestrationStatus of ``status``."""
    return dapr.OrchestrationStatus(_STATUS[status])


def status_from_proto(status: int) -> WorkflowStatus:
    """durable's status for an OrchestrationStatus of either dialect: Dapr's STALLED
    (stuck until an operator acts) counts as RUNNING."""
    number = int(status)
    if number == _STALLED:
        return WorkflowStatus.RUNNING
    try:
        return _STATUS_BACK[number]
    except KeyError:
        raise ProtocolError(f"unknown OrchestrationStatus {number}") from None


def failure_to_ms(failure: FailureDetails) -> ms.TaskFailureDetails:
    """``failure`` as MS TaskFailureDetails (``bases`` has no field: dropped)."""
    out = ms.TaskFailureDetails(
        error_type=failure.type,
        error_message=failure.message,
        stack_trace=failure.stack_trace or None,
    )
    if failure.cause is not None:
        out.inner_failure = failure_to_ms(failure.cause)
    return out


def failure_to_dapr(failure: FailureDetails) -> dapr.TaskFailureDetails:
    """``failure`` as Dapr TaskFailureDetails (``bases`` has no field: dropped)."""
    out = dapr.TaskFailureDetails(
        error_type=failure.type,
        error_message=failure.message,
        stack_trace=failure.stack_trace or None,
    )
    if failure.cause is not None:
        out.inner_failure = failure_to_dapr(failure.cause)
    return out


def failure_from_proto(details: ms.TaskFailureDetails | dapr.TaskFailureDetails) -> FailureDetails:
    """durable's FailureDetails for TaskFailureDetails of either dialect (the two share
    fields 1-5; ``isNonRetriable`` and MS ``properties`` are dropped)."""
    inner = details.inner_failure
    return FailureDetails(
        type=details.error_type,
        message=details.error_message,
        stack_trace=details.stack_trace or "",
        cause=failure_from_proto(inner) if _present(inner) else None,
    )


def _present(message: betterproto.Message) -> bool:
    """Whether a sub-message was set (betterproto returns a default one when not)."""
    return betterproto.serialized_on_wire(message)


def trace_context_from_proto(
    context: ms.TraceContext | dapr.TraceContext | None,
) -> tuple[str, str] | None:
    """A W3C ``(traceparent, tracestate)`` an SDK sent (``parentTraceContext``); None if
    it sent none."""
    if context is None or not _present(context) or not context.trace_parent:
        return None
    return context.trace_parent, context.trace_state or ""


def trace_context_to_ms(parent: str, state: str = "") -> ms.TraceContext:
    return ms.TraceContext(trace_parent=parent, trace_state=state or None)


def trace_context_to_dapr(parent: str, state: str = "") -> dapr.TraceContext:
    return dapr.TraceContext(trace_parent=parent, trace_state=state or None)


# ---------------------------------------------------------------------------------------
# History events, MS dialect
# ---------------------------------------------------------------------------------------


def event_to_ms(
    event: HistoryEvent, *, instance_id: str = "", task_base: int = 0
) -> ms.HistoryEvent | None:
    """``event`` as an MS HistoryEvent. ``instance_id`` fills executionStarted's
    orchestrationInstance; ``task_base`` is the run's ``first_task_id``. ``None`` for
    PatchApplied: the MS dialect has no patches."""
    out = ms.HistoryEvent(event_id=-1, timestamp=_time_to_proto(event.timestamp))
    match event:
        case WorkflowStarted():
            started = ms.ExecutionStartedEvent(
                name=event.name,
                version=event.version or None,
                input=payload_to_proto(event.input),
                orchestration_instance=ms.OrchestrationInstance(
                    instance_id=instance_id, execution_id=event.replay_seed or None
                ),
            )
            if event.trace_parent:
                started.parent_trace_context = trace_context_to_ms(
                    event.trace_parent, event.trace_state
                )
            if event.parent is not None:
                started.parent_instance = ms.ParentInstanceInfo(
                    task_scheduled_id=event.parent.task_id,
                    orchestration_instance=ms.OrchestrationInstance(
                        instance_id=event.parent.instance_id,
                        execution_id=event.parent.run_id or None,
                    ),
                )
            out.execution_started = started
        case TurnStarted():
            out.orchestrator_started = ms.OrchestratorStartedEvent()
        case ActivityScheduled():
            out.event_id = event.task_id - task_base
            out.task_scheduled = ms.TaskScheduledEvent(
                name=event.name, input=payload_to_proto(event.input)
            )
        case ActivityCompleted():
            out.task_completed = ms.TaskCompletedEvent(
                task_scheduled_id=event.task_id - task_base, result=payload_to_proto(event.result)
            )
        case ActivityErrored():
            out.task_failed = ms.TaskFailedEvent(
                task_scheduled_id=event.task_id - task_base,
                failure_details=failure_to_ms(event.failure),
            )
        case TimerCreated():
            out.event_id = event.task_id - task_base
            out.timer_created = ms.TimerCreatedEvent(fire_at=_time_to_proto(event.fire_at))
        case TimerFired():
            out.timer_fired = ms.TimerFiredEvent(
                fire_at=_time_to_proto(event.fire_at), timer_id=event.task_id - task_base
            )
        case ChildWorkflowScheduled():
            out.event_id = event.task_id - task_base
            out.sub_orchestration_instance_created = ms.SubOrchestrationInstanceCreatedEvent(
                instance_id=event.instance_id, name=event.name, input=payload_to_proto(event.input)
            )
        case ChildWorkflowCompleted():
            out.sub_orchestration_instance_completed = ms.SubOrchestrationInstanceCompletedEvent(
                task_scheduled_id=event.task_id - task_base, result=payload_to_proto(event.result)
            )
        case ChildWorkflowErrored():
            out.sub_orchestration_instance_failed = ms.SubOrchestrationInstanceFailedEvent(
                task_scheduled_id=event.task_id - task_base,
                failure_details=failure_to_ms(event.failure),
            )
        case EventRaised():
            out.event_raised = ms.EventRaisedEvent(
                name=event.name, input=payload_to_proto(event.input)
            )
        case EventSent():
            out.event_id = event.task_id - task_base
            out.event_sent = ms.EventSentEvent(
                instance_id=event.instance_id, name=event.name, input=payload_to_proto(event.input)
            )
        case WorkflowSuspended():
            out.execution_suspended = ms.ExecutionSuspendedEvent(input=event.reason or None)
        case WorkflowResumed():
            out.execution_resumed = ms.ExecutionResumedEvent(input=event.reason or None)
        case WorkflowTerminated():
            out.execution_terminated = ms.ExecutionTerminatedEvent(
                input=payload_to_proto(event.output)
            )
        case WorkflowCompleted():
            out.execution_completed = ms.ExecutionCompletedEvent(
                orchestration_status=status_to_ms(WorkflowStatus.COMPLETED),
                result=payload_to_proto(event.result),
            )
        case WorkflowErrored():
            out.execution_completed = ms.ExecutionCompletedEvent(
                orchestration_status=status_to_ms(WorkflowStatus.FAILED),
                failure_details=failure_to_ms(event.failure),
            )
        case ContinuedAsNew():
            out.continue_as_new = ms.ContinueAsNewEvent(input=payload_to_proto(event.input))
        case PatchApplied() | TaskCancelled() | WorkflowCancelRequested() | ExecutionTimedOut():
            return None  # not carried: the protocol has no cancellation nor execution timeout
        case UpdateRequested() | UpdateCompleted():
            return None  # not carried: the protocol has no updates
        case _:
            assert_never(event)
    return out


def events_to_ms(
    events: Iterable[HistoryEvent], *, instance_id: str = "", task_base: int = 0
) -> list[ms.HistoryEvent]:
    """:func:`event_to_ms` over a list, without the events it has no form for."""
    converted = (event_to_ms(e, instance_id=instance_id, task_base=task_base) for e in events)
    return [e for e in converted if e is not None]


# ---------------------------------------------------------------------------------------
# History events, Dapr dialect
# ---------------------------------------------------------------------------------------

_PURPOSE_TO_ORIGIN = {
    "sleep": "create_timer",
    "retry": "activity_retry",
    "event_timeout": "external_event",
}
_ORIGIN_TO_PURPOSE = {
    "create_timer": "sleep",
    "activity_retry": "retry",
    "child_workflow_retry": "retry",
    "external_event": "event_timeout",
}


def _dapr_timer_origin(
    timer: dapr.TimerCreatedEvent | dapr.CreateTimerAction, purpose: str
) -> None:
    """Record ``purpose`` in the timer's ``origin`` (names and ids are not known)."""
    match _PURPOSE_TO_ORIGIN.get(purpose):
        case "create_timer":
            timer.create_timer = dapr.TimerOriginCreateTimer()
        case "activity_retry":
            timer.activity_retry = dapr.TimerOriginActivityRetry()
        case "external_event":
            timer.external_event = dapr.TimerOriginExternalEvent()


def _dapr_timer_purpose(timer: dapr.TimerCreatedEvent | dapr.CreateTimerAction) -> str:
    origin, _ = betterproto.which_one_of(timer, "origin")
    return _ORIGIN_TO_PURPOSE.get(origin, "sleep")


def event_to_dapr(
    event: HistoryEvent, *, instance_id: str = "", task_base: int = 0
) -> dapr.HistoryEvent | None:
    """``event`` as a Dapr HistoryEvent; see :func:`event_to_ms`. ``None`` for
    PatchApplied, which has no event of its own: :func:`events_to_dapr` puts it in its
    turn's workflowStarted."""
    out = dapr.HistoryEvent(event_id=-1, timestamp=_time_to_proto(event.timestamp))
    match event:
        case WorkflowStarted():
            started = dapr.ExecutionStartedEvent(
                name=event.name,
                version=event.version or None,
                input=payload_to_proto(event.input),
                workflow_instance=dapr.WorkflowInstance(
                    instance_id=instance_id, execution_id=event.replay_seed or None
                ),
            )
            if event.trace_parent:
                started.parent_trace_context = trace_context_to_dapr(
                    event.trace_parent, event.trace_state
                )
            if event.parent is not None:
                started.parent_instance = dapr.ParentInstanceInfo(
                    task_scheduled_id=event.parent.task_id,
                    workflow_instance=dapr.WorkflowInstance(
                        instance_id=event.parent.instance_id,
                        execution_id=event.parent.run_id or None,
                    ),
                )
            out.execution_started = started
        case TurnStarted():
            out.workflow_started = dapr.WorkflowStartedEvent()
        case ActivityScheduled():
            out.event_id = event.task_id - task_base
            out.task_scheduled = dapr.TaskScheduledEvent(
                name=event.name, input=payload_to_proto(event.input),
                task_execution_id=event.execution_id,
            )  # fmt: skip
        case ActivityCompleted():
            out.task_completed = dapr.TaskCompletedEvent(
                task_scheduled_id=event.task_id - task_base, result=payload_to_proto(event.result)
            )
        case ActivityErrored():
            out.task_failed = dapr.TaskFailedEvent(
                task_scheduled_id=event.task_id - task_base,
                failure_details=failure_to_dapr(event.failure),
            )
        case TimerCreated():
            out.event_id = event.task_id - task_base
            timer = dapr.TimerCreatedEvent(fire_at=_time_to_proto(event.fire_at))
            _dapr_timer_origin(timer, event.purpose)
            out.timer_created = timer
        case TimerFired():
            out.timer_fired = dapr.TimerFiredEvent(
                fire_at=_time_to_proto(event.fire_at), timer_id=event.task_id - task_base
            )
        case ChildWorkflowScheduled():
            out.event_id = event.task_id - task_base
            out.child_workflow_instance_created = dapr.ChildWorkflowInstanceCreatedEvent(
                instance_id=event.instance_id, name=event.name, input=payload_to_proto(event.input)
            )
        case ChildWorkflowCompleted():
            out.child_workflow_instance_completed = dapr.ChildWorkflowInstanceCompletedEvent(
                task_scheduled_id=event.task_id - task_base, result=payload_to_proto(event.result)
            )
        case ChildWorkflowErrored():
            out.child_workflow_instance_failed = dapr.ChildWorkflowInstanceFailedEvent(
                task_scheduled_id=event.task_id - task_base,
                failure_details=failure_to_dapr(event.failure),
            )
        case EventRaised():
            out.event_raised = dapr.EventRaisedEvent(
                name=event.name, input=payload_to_proto(event.input)
            )
        case EventSent():
            out.event_id = event.task_id - task_base
            out.event_sent = dapr.EventSentEvent(
                instance_id=event.instance_id, name=event.name, input=payload_to_proto(event.input)
            )
        case WorkflowSuspended():
            out.execution_suspended = dapr.ExecutionSuspendedEvent(input=event.reason or None)
        case WorkflowResumed():
            out.execution_resumed = dapr.ExecutionResumedEvent(input=event.reason or None)
        case WorkflowTerminated():
            out.execution_terminated = dapr.ExecutionTerminatedEvent(
                input=payload_to_proto(event.output)
            )
        case WorkflowCompleted():
            out.execution_completed = dapr.ExecutionCompletedEvent(
                workflow_status=status_to_dapr(WorkflowStatus.COMPLETED),
                result=payload_to_proto(event.result),
            )
        case WorkflowErrored():
            out.execution_completed = dapr.ExecutionCompletedEvent(
                workflow_status=status_to_dapr(WorkflowStatus.FAILED),
                failure_details=failure_to_dapr(event.failure),
            )
        case ContinuedAsNew():
            out.continue_as_new = dapr.ContinueAsNewEvent(input=payload_to_proto(event.input))
        case PatchApplied() | TaskCancelled() | WorkflowCancelRequested() | ExecutionTimedOut():
            return None  # not carried: the protocol has no cancellation nor execution timeout
        case UpdateRequested() | UpdateCompleted():
            return None  # not carried: the protocol has no updates
        case _:
            assert_never(event)
    return out


def events_to_dapr(
    events: Iterable[HistoryEvent], *, instance_id: str = "", task_base: int = 0
) -> list[dapr.HistoryEvent]:
    """:func:`event_to_dapr` over a list; each PatchApplied goes into the
    ``version.patches`` of its turn's workflowStarted (or, with no turn start before it
    in ``events``, into a workflowStarted of its own at its place), and every turn's
    workflowStarted names the run's version in ``version.name``.

    So the list can be shorter than ``events``. Stateful-history counts are counts of
    these messages: a history cut at a turn start converts to a prefix of the whole.
    """
    out: list[dapr.HistoryEvent] = []
    turn: dapr.WorkflowStartedEvent | None = None
    run_version: str | None = None
    for event in events:
        if isinstance(event, WorkflowStarted):
            run_version = event.version or None
        if isinstance(event, PatchApplied):
            if turn is None:
                carrier = dapr.HistoryEvent(event_id=-1, timestamp=_time_to_proto(event.timestamp))
                carrier.workflow_started = turn = dapr.WorkflowStartedEvent()
                out.append(carrier)
            patches = turn.version.patches if turn.version is not None else []
            turn.version = dapr.WorkflowVersion(
                patches=[*patches, event.patch_id], name=run_version
            )
            continue
        converted = event_to_dapr(event, instance_id=instance_id, task_base=task_base)
        assert converted is not None  # only PatchApplied has no event of its own
        if isinstance(event, TurnStarted):
            turn = converted.workflow_started
            if run_version is not None:
                turn.version = dapr.WorkflowVersion(patches=[], name=run_version)
        out.append(converted)
    return out


def event_from_proto(
    event: ms.HistoryEvent | dapr.HistoryEvent, *, event_id: int = -1, task_base: int = 0
) -> HistoryEvent | None:
    """durable's event for a HistoryEvent of either dialect, at position ``event_id``;
    ``None`` for the kinds durable has no counterpart for (see the module docstring)."""
    _, body = betterproto.which_one_of(event, "eventType")
    common: dict[str, Any] = {"event_id": event_id, "timestamp": event.timestamp}
    own_task = event.event_id + task_base  # the action id of a scheduling event
    match body:
        case ms.ExecutionStartedEvent() | dapr.ExecutionStartedEvent():
            parent = body.parent_instance
            run: ms.OrchestrationInstance | dapr.WorkflowInstance
            parent_run: ms.OrchestrationInstance | dapr.WorkflowInstance
            if isinstance(body, ms.ExecutionStartedEvent):
                run = body.orchestration_instance
            else:
                run = body.workflow_instance
            if isinstance(parent, ms.ParentInstanceInfo):
                parent_run = parent.orchestration_instance
            else:
                parent_run = parent.workflow_instance
            trace_parent, trace_state = trace_context_from_proto(body.parent_trace_context) or (
                "",
                "",
            )
            return WorkflowStarted(
                **common,
                name=body.name,
                input=payload_from_proto(body.input),
                run_id=run.execution_id or "",
                version=body.version or "",
                parent=ParentRef(
                    parent_run.instance_id, parent.task_scheduled_id, parent_run.execution_id or ""
                )
                if _present(parent)
                else None,
                first_task_id=task_base,
                trace_parent=trace_parent,
                trace_state=trace_state,
            )
        case ms.OrchestratorStartedEvent() | dapr.WorkflowStartedEvent():
            return TurnStarted(**common)
        case ms.TaskScheduledEvent() | dapr.TaskScheduledEvent():
            input = payload_from_proto(body.input)
            execution_id = (
                body.task_execution_id if isinstance(body, dapr.TaskScheduledEvent) else ""
            )
            return ActivityScheduled(
                **common, task_id=own_task, name=body.name, input=input, step=own_task,
                execution_id=execution_id,
            )  # fmt: skip
        case ms.TaskCompletedEvent() | dapr.TaskCompletedEvent():
            task_id = body.task_scheduled_id + task_base
            return ActivityCompleted(
                **common, task_id=task_id, result=payload_from_proto(body.result)
            )
        case ms.TaskFailedEvent() | dapr.TaskFailedEvent():
            task_id = body.task_scheduled_id + task_base
            failure = failure_from_proto(body.failure_details)
            return ActivityErrored(**common, task_id=task_id, failure=failure)
        case ms.TimerCreatedEvent():
            return TimerCreated(**common, task_id=own_task, fire_at=body.fire_at)
        case dapr.TimerCreatedEvent():
            purpose = _dapr_timer_purpose(body)
            return TimerCreated(**common, task_id=own_task, fire_at=body.fire_at, purpose=purpose)
        case ms.TimerFiredEvent() | dapr.TimerFiredEvent():
            task_id = body.timer_id + task_base
            return TimerFired(**common, task_id=task_id, fire_at=body.fire_at)
        case ms.SubOrchestrationInstanceCreatedEvent() | dapr.ChildWorkflowInstanceCreatedEvent():
            input = payload_from_proto(body.input)
            return ChildWorkflowScheduled(
                **common,
                task_id=own_task,
                name=body.name,
                instance_id=body.instance_id,
                input=input,
            )
        case (
            ms.SubOrchestrationInstanceCompletedEvent() | dapr.ChildWorkflowInstanceCompletedEvent()
        ):
            task_id = body.task_scheduled_id + task_base
            result = payload_from_proto(body.result)
            return ChildWorkflowCompleted(**common, task_id=task_id, result=result)
        case ms.SubOrchestrationInstanceFailedEvent() | dapr.ChildWorkflowInstanceFailedEvent():
            task_id = body.task_scheduled_id + task_base
            failure = failure_from_proto(body.failure_details)
            return ChildWorkflowErrored(**common, task_id=task_id, failure=failure)
        case ms.EventRaisedEvent() | dapr.EventRaisedEvent():
            return EventRaised(**common, name=body.name, input=payload_from_proto(body.input))
        case ms.EventSentEvent() | dapr.EventSentEvent():
            input = payload_from_proto(body.input)
            return EventSent(
                **common, task_id=own_task, instance_id=body.instance_id, name=body.name,
                input=input,
            )  # fmt: skip
        case ms.ExecutionSuspendedEvent() | dapr.ExecutionSuspendedEvent():
            return WorkflowSuspended(**common, reason=body.input or "")
        case ms.ExecutionResumedEvent() | dapr.ExecutionResumedEvent():
            return WorkflowResumed(**common, reason=body.input or "")
        case ms.ExecutionTerminatedEvent() | dapr.ExecutionTerminatedEvent():
            return WorkflowTerminated(**common, output=payload_from_proto(body.input))
        case ms.ExecutionCompletedEvent():
            return _completed(common, body.orchestration_status, body.result, body.failure_details)
        case dapr.ExecutionCompletedEvent():
            return _completed(common, body.workflow_status, body.result, body.failure_details)
        case ms.ContinueAsNewEvent() | dapr.ContinueAsNewEvent():
            return ContinuedAsNew(**common, input=payload_from_proto(body.input))
    return None


def _patches_of(event: ms.HistoryEvent | dapr.HistoryEvent) -> list[str]:
    """The patches a Dapr workflowStarted records."""
    if isinstance(event, ms.HistoryEvent):
        return []
    _, started = betterproto.which_one_of(event, "eventType")
    if not isinstance(started, dapr.WorkflowStartedEvent) or started.version is None:
        return []
    return list(started.version.patches)


_RUN_ENDS = WorkflowCompleted | WorkflowErrored | WorkflowTerminated | ContinuedAsNew


def events_from_proto(
    events: Iterable[ms.HistoryEvent | dapr.HistoryEvent],
    *,
    first_event_id: int = 0,
    task_base: int = 0,
) -> list[HistoryEvent]:
    """:func:`event_from_proto` over a sequence, skipping what it skips; the events kept
    are numbered from ``first_event_id``. The patches a Dapr workflowStarted records
    become PatchApplied events at the end of that turn (before the run's end, if the
    turn ends it), where durable records them."""
    kept: list[HistoryEvent] = []
    patches: list[HistoryEvent] = []  # the current turn's, recorded at its end
    for event in events:
        converted = event_from_proto(event, task_base=task_base)
        if converted is None:
            continue
        if isinstance(converted, TurnStarted | _RUN_ENDS):
            kept += patches
            at = converted.timestamp
            patches = [PatchApplied(timestamp=at, patch_id=p) for p in _patches_of(event)]
        kept.append(converted)
    kept += patches
    return [msgspec.structs.replace(e, event_id=first_event_id + i) for i, e in enumerate(kept)]


def _completed(
    common: dict[str, Any],
    status: int,
    result: str | None,
    failure: ms.TaskFailureDetails | dapr.TaskFailureDetails,
) -> HistoryEvent:
    """The event for executionCompleted, by its status."""
    match status_from_proto(status):
        case WorkflowStatus.COMPLETED:
            return WorkflowCompleted(**common, result=payload_from_proto(result))
        case WorkflowStatus.FAILED:
            return WorkflowErrored(**common, failure=failure_from_proto(failure))
        case WorkflowStatus.TERMINATED | WorkflowStatus.CANCELED:
            return WorkflowTerminated(**common, output=payload_from_proto(result))
        case WorkflowStatus.CONTINUED_AS_NEW:
            return ContinuedAsNew(**common, input=payload_from_proto(result))
    raise ProtocolError(f"executionCompleted with a non-final status ({int(status)})")


# ---------------------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------------------


def action_to_ms(action: Action, *, task_base: int = 0) -> ms.OrchestratorAction | None:
    """``action`` as an MS OrchestratorAction; ends of the run get id -1. ``None`` for
    RecordPatch: the MS dialect has no patches. An activity's step number (the task id
    of its first attempt, so equal for its retries) goes in its tags."""
    match action:
        case ScheduleActivity():
            return ms.OrchestratorAction(
                id=action.task_id - task_base,
                schedule_task=ms.ScheduleTaskAction(
                    name=action.name, input=payload_to_proto(action.input),
                    tags={STEP_TAG: str(action.step - task_base)},
                ),
            )  # fmt: skip
        case StartTimer():
            return ms.OrchestratorAction(
                id=action.task_id - task_base,
                create_timer=ms.CreateTimerAction(fire_at=_time_to_proto(action.fire_at)),
            )
        case StartChildWorkflow():
            return ms.OrchestratorAction(
                id=action.task_id - task_base,
                create_sub_orchestration=ms.CreateSubOrchestrationAction(
                    instance_id=action.instance_id,
                    name=action.name,
                    input=payload_to_proto(action.input),
                ),
            )
        case SendEvent():
            return ms.OrchestratorAction(
                id=action.task_id - task_base,
                send_event=ms.SendEventAction(
                    instance=ms.OrchestrationInstance(instance_id=action.instance_id),
                    name=action.name,
                    data=payload_to_proto(action.input),
                ),
            )
        case CompleteWorkflow():
            end = ms.CompleteOrchestrationAction(
                orchestration_status=status_to_ms(WorkflowStatus.COMPLETED),
                result=payload_to_proto(action.result),
            )
        case FailWorkflow():
            end = ms.CompleteOrchestrationAction(
                orchestration_status=status_to_ms(WorkflowStatus.FAILED),
                failure_details=failure_to_ms(action.failure),
            )
        case ContinueAsNew():
            end = ms.CompleteOrchestrationAction(
                orchestration_status=status_to_ms(WorkflowStatus.CONTINUED_AS_NEW),
                result=payload_to_proto(action.input),
                carryover_events=events_to_ms(action.carryover),
            )
        case RecordPatch() | CancelTask() | CompleteUpdate():
            return None  # not carried: the protocol has no cancellation of tasks, no updates
        case _:
            assert_never(action)
    return ms.OrchestratorAction(id=-1, complete_orchestration=end)


def action_to_dapr(
    action: Action, *, task_base: int = 0, instance_id: str = ""
) -> dapr.WorkflowAction | None:
    """``action`` as a Dapr WorkflowAction; see :func:`action_to_ms`. ``None`` for
    RecordPatch, which travels in ``WorkflowResponse.version.patches`` instead. An
    activity's ``taskExecutionId`` is ``durable:{instance_id}:{step}``: the same for
    every attempt of a step, as Dapr means it."""
    match action:
        case ScheduleActivity():
            return dapr.WorkflowAction(
                id=action.task_id - task_base,
                schedule_task=dapr.ScheduleTaskAction(
                    name=action.name, input=payload_to_proto(action.input),
                    task_execution_id=action.execution_id
                    or f"{_DURABLE_ID}{instance_id}:{action.step - task_base}",
                ),
            )  # fmt: skip
        case StartTimer():
            timer = dapr.CreateTimerAction(fire_at=_time_to_proto(action.fire_at))
            _dapr_timer_origin(timer, action.purpose)
            return dapr.WorkflowAction(id=action.task_id - task_base, create_timer=timer)
        case StartChildWorkflow():
            return dapr.WorkflowAction(
                id=action.task_id - task_base,
                create_child_workflow=dapr.CreateChildWorkflowAction(
                    instance_id=action.instance_id,
                    name=action.name,
                    input=payload_to_proto(action.input),
                ),
            )
        case SendEvent():
            return dapr.WorkflowAction(
                id=action.task_id - task_base,
                send_event=dapr.SendEventAction(
                    instance=dapr.WorkflowInstance(instance_id=action.instance_id),
                    name=action.name,
                    data=payload_to_proto(action.input),
                ),
            )
        case CompleteWorkflow():
            end = dapr.CompleteWorkflowAction(
                workflow_status=status_to_dapr(WorkflowStatus.COMPLETED),
                result=payload_to_proto(action.result),
            )
        case FailWorkflow():
            end = dapr.CompleteWorkflowAction(
                workflow_status=status_to_dapr(WorkflowStatus.FAILED),
                failure_details=failure_to_dapr(action.failure),
            )
        case ContinueAsNew():
            end = dapr.CompleteWorkflowAction(
                workflow_status=status_to_dapr(WorkflowStatus.CONTINUED_AS_NEW),
                result=payload_to_proto(action.input),
                carryover_events=events_to_dapr(action.carryover),
            )
        case RecordPatch() | CancelTask() | CompleteUpdate():
            return None  # not carried: the protocol has no cancellation of tasks, no updates
        case _:
            assert_never(action)
    return dapr.WorkflowAction(id=-1, complete_workflow=end)


def action_from_proto(
    action: ms.OrchestratorAction | dapr.WorkflowAction, *, task_base: int = 0
) -> Action | None:
    """durable's action for an OrchestratorAction (MS) or WorkflowAction (Dapr).

    ``None`` for a completion with status TERMINATED or CANCELED: a worker answers a
    termination that way, and durable's engine has already recorded it. Raises
    :class:`ProtocolError` for the actions durable has no counterpart for:
    terminateOrchestration, MS entity messages and rewind, Dapr
    workflowVersionNotAvailable and createDetachedWorkflow.
    """
    if isinstance(action, ms.OrchestratorAction):
        kind, body = betterproto.which_one_of(action, "orchestratorActionType")
    else:
        kind, body = betterproto.which_one_of(action, "workflowActionType")
    task_id = action.id + task_base
    match body:
        case ms.ScheduleTaskAction() | dapr.ScheduleTaskAction():
            input = payload_from_proto(body.input)
            step = _step_of(body)  # a retry of a step, from durable's RemoteWorker
            execution_id = ""  # a Dapr SDK's own id for the call, kept for its retries
            if isinstance(body, dapr.ScheduleTaskAction) and not body.task_execution_id.startswith(
                _DURABLE_ID
            ):
                execution_id = body.task_execution_id
            step = task_id if step is None else step + task_base
            return ScheduleActivity(task_id, body.name, input, 1, step, execution_id)
        case ms.CreateTimerAction():
            return StartTimer(task_id, body.fire_at, "sleep")
        case dapr.CreateTimerAction():
            return StartTimer(task_id, body.fire_at, _dapr_timer_purpose(body))
        case ms.CreateSubOrchestrationAction() | dapr.CreateChildWorkflowAction():
            input = payload_from_proto(body.input)
            return StartChildWorkflow(task_id, body.name, body.instance_id, input)
        case ms.SendEventAction() | dapr.SendEventAction():
            return SendEvent(
                task_id, body.instance.instance_id, body.name, payload_from_proto(body.data)
            )
        case ms.CompleteOrchestrationAction():
            carryover = [event_from_proto(e) for e in body.carryover_events]
            return _end(body.orchestration_status, body.result, body.failure_details, carryover)
        case dapr.CompleteWorkflowAction():
            carryover = [event_from_proto(e) for e in body.carryover_events]
            return _end(body.workflow_status, body.result, body.failure_details, carryover)
    raise ProtocolError(f"{kind or 'empty'} action (id {action.id}) has no counterpart in durable")


def _end(
    status: int,
    result: str | None,
    failure: ms.TaskFailureDetails | dapr.TaskFailureDetails,
    carryover: list[HistoryEvent | None],
) -> Action | None:
    """The action for completeOrchestration / completeWorkflow, by its status."""
    match status_from_proto(status):
        case WorkflowStatus.COMPLETED:
            return CompleteWorkflow(payload_from_proto(result))
        case WorkflowStatus.FAILED:
            return FailWorkflow(failure_from_proto(failure))
        case WorkflowStatus.CONTINUED_AS_NEW:
            raised = tuple(e for e in carryover if isinstance(e, EventRaised))
            if len(raised) != len(carryover):
                raise ProtocolError("continue-as-new can carry over only eventRaised events")
            return ContinueAsNew(payload_from_proto(result), raised)
        case WorkflowStatus.TERMINATED | WorkflowStatus.CANCELED:
            return None
    raise ProtocolError(f"a run cannot end with status {int(status)}")


def patches_from_proto(
    response: ms.OrchestratorResponse | dapr.WorkflowResponse, *, recorded: Collection[str] = ()
) -> list[RecordPatch]:
    """The RecordPatch actions a completed turn asks for.

    A Dapr worker lists in ``WorkflowResponse.version.patches`` every patch its run took
    so far, recorded or not: pass the patches the history already records as
    ``recorded``. The MS dialect has no patches (its field 6 is a trace context).
    """
    if isinstance(response, ms.OrchestratorResponse) or response.version is None:
        return []
    seen = set(recorded)
    out: list[RecordPatch] = []
    for patch in response.version.patches:
        if patch not in seen:
            seen.add(patch)
            out.append(RecordPatch(patch))
    return out


# ---------------------------------------------------------------------------------------
# Activity work items and their results
# ---------------------------------------------------------------------------------------


STEP_TAG = "durable.step"
"""The MS ``ActivityRequest.tags`` entry that carries durable's step number."""
_DURABLE_ID = "durable:"
"""How a Dapr ``taskExecutionId`` made by durable begins."""


def activity_request_to_ms(
    event: ActivityScheduled,
    *,
    instance_id: str,
    run_id: str = "",
    task_base: int = 0,
    trace_parent: str = "",
) -> ms.ActivityRequest:
    """The MS ActivityRequest that runs ``event``'s activity; durable's step number
    (unique in the instance across runs, unlike the wire task id) goes in its tags;
    ``trace_parent`` (the attempt's span) in its ``parentTraceContext``."""
    request = ms.ActivityRequest(
        name=event.name,
        input=payload_to_proto(event.input),
        orchestration_instance=ms.OrchestrationInstance(
            instance_id=instance_id, execution_id=run_id or None
        ),
        task_id=event.task_id - task_base,
        tags={STEP_TAG: str(event.step)},
    )
    if trace_parent:
        request.parent_trace_context = trace_context_to_ms(trace_parent)
    return request


def activity_request_to_dapr(
    event: ActivityScheduled,
    *,
    instance_id: str,
    run_id: str = "",
    task_base: int = 0,
    trace_parent: str = "",
) -> dapr.ActivityRequest:
    """The Dapr ActivityRequest that runs ``event``'s activity. Its ``taskExecutionId``
    is the one the worker gave when it scheduled the call (Dapr SDKs keep one per call,
    over its retries), or else ``durable:{run id}:{step}``: the same for every attempt
    of the step, unique across runs and instances, and read back by durable's worker."""
    request = dapr.ActivityRequest(
        name=event.name,
        input=payload_to_proto(event.input),
        workflow_instance=dapr.WorkflowInstance(
            instance_id=instance_id, execution_id=run_id or None
        ),
        task_id=event.task_id - task_base,
        task_execution_id=event.execution_id or f"{_DURABLE_ID}{run_id}:{event.step}",
    )
    if trace_parent:
        request.parent_trace_context = trace_context_to_dapr(trace_parent)
    return request


def step_of_activity_request(request: ms.ActivityRequest | dapr.ActivityRequest) -> int | None:
    """Durable's step number carried by an activity request from durable's sidecar
    (None from another sidecar)."""
    return _step_of(request)


def _step_of(
    message: ms.ActivityRequest
    | dapr.ActivityRequest
    | ms.ScheduleTaskAction
    | dapr.ScheduleTaskAction,
) -> int | None:
    """The step number in MS tags or at the end of a durable-made Dapr
    ``taskExecutionId`` (``durable:…:{step}``); None otherwise (Dapr SDKs make their
    own, a UUID)."""
    if isinstance(message, ms.ActivityRequest | ms.ScheduleTaskAction):
        text = message.tags.get(STEP_TAG, "")
    elif message.task_execution_id.startswith(_DURABLE_ID):
        text = message.task_execution_id.rpartition(":")[2]
    else:
        return None
    return int(text) if text.isdigit() else None


def activity_result_from_proto(
    response: ms.ActivityResponse | dapr.ActivityResponse, *, task_base: int = 0
) -> ActivityCompleted | ActivityErrored:
    """The event an ActivityResponse of either dialect reports: failed if it carries
    failureDetails. Position and time are the engine's to stamp."""
    task_id = response.task_id + task_base
    if _present(response.failure_details):
        return ActivityErrored(
            task_id=task_id, failure=failure_from_proto(response.failure_details)
        )
    return ActivityCompleted(task_id=task_id, result=payload_from_proto(response.result))
