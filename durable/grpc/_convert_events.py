"""History events to and from either wire dialect (see :mod:`durable.grpc._convert`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, assert_never

import msgspec

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
from durable._core._state import WorkflowStatus
from durable.grpc._convert_values import (
    dapr_timer_purpose,
    failure_from_proto,
    failure_to_proto,
    payload_in,
    payload_out,
    status_from_proto,
    text,
    time_from_proto,
    time_to_proto,
    timer_origin,
    trace_context_from_proto,
)
from durable.grpc._dialect import DAPR, MS, Dialect, dialect_of
from durable.grpc._framing import ProtocolError
from durable.grpc._proto import dapr, ms

if TYPE_CHECKING:
    from collections.abc import Iterable

    from msgspec import Raw

    from durable._core._actions import StartChildWorkflow

__all__ = [
    "child_fields",
    "event_from_proto",
    "event_to_dapr",
    "event_to_ms",
    "event_to_proto",
    "events_from_proto",
    "events_to_dapr",
    "events_to_ms",
    "events_to_proto",
]

E = TypeVar("E")


# ---------------------------------------------------------------------------------------
# History events going out, either dialect
# ---------------------------------------------------------------------------------------


def event_to_proto(
    dialect: Dialect[E, Any, Any, Any],
    event: HistoryEvent,
    *,
    instance_id: str = "",
    task_base: int = 0,
) -> E | None:
    """``event`` as the dialect's HistoryEvent. ``instance_id`` fills executionStarted's
    instance; ``task_base`` is the run's ``first_task_id``. ``None`` for PatchApplied,
    which has no event of its own (:func:`events_to_proto` puts it in its turn's
    workflowStarted in the Dapr dialect, and drops it in the MS one)."""
    d = dialect
    event_id = -1  # a scheduling event's is its action id
    kind: str
    body: dict[str, Any]
    match event:
        case WorkflowStarted():
            kind = "executionStarted"
            body = {
                "name": event.name,
                "version": text(event.version),
                "input": payload_out(event.input),
                d.instance: {"instanceId": instance_id, "executionId": text(event.replay_seed)},
            }
            if event.trace_parent:
                body["parentTraceContext"] = {
                    "traceParent": event.trace_parent, "traceState": text(event.trace_state),
                }  # fmt: skip
            if event.parent is not None:
                parent = event.parent
                parent_run = {"instanceId": parent.instance_id, "executionId": text(parent.run_id)}
                body["parentInstance"] = {"taskScheduledId": parent.task_id, d.instance: parent_run}
        case TurnStarted():
            kind, body = d.turn_started, {}
        case ActivityScheduled():
            event_id = event.task_id - task_base
            kind, body = "taskScheduled", {"name": event.name, "input": payload_out(event.input)}
            if d.execution_ids:
                body["taskExecutionId"] = event.execution_id
        case ActivityCompleted():
            kind = "taskCompleted"
            body = {
                "taskScheduledId": event.task_id - task_base,
                "result": payload_out(event.result),
            }
        case ActivityErrored():
            kind = "taskFailed"
            body = {
                "taskScheduledId": event.task_id - task_base,
                "failureDetails": failure_to_proto(d, event.failure),
            }
        case TimerCreated():
            event_id = event.task_id - task_base
            kind = "timerCreated"
            body = {"fireAt": time_to_proto(event.fire_at), **timer_origin(d, event.purpose)}
        case TimerFired():
            kind = "timerFired"
            body = {"fireAt": time_to_proto(event.fire_at), "timerId": event.task_id - task_base}
        case ChildWorkflowScheduled():
            event_id = event.task_id - task_base
            kind, body = d.child_created, child_fields(event)
        case ChildWorkflowCompleted():
            kind = d.child_completed
            body = {
                "taskScheduledId": event.task_id - task_base,
                "result": payload_out(event.result),
            }
        case ChildWorkflowErrored():
            kind = d.child_failed
            body = {
                "taskScheduledId": event.task_id - task_base,
                "failureDetails": failure_to_proto(d, event.failure),
            }
        case EventRaised():
            kind, body = "eventRaised", {"name": event.name, "input": payload_out(event.input)}
        case EventSent():
            event_id = event.task_id - task_base
            kind = "eventSent"
            body = {
                "instanceId": event.instance_id,
                "name": event.name,
                "input": payload_out(event.input),
            }
        case WorkflowSuspended():
            kind, body = "executionSuspended", {"input": text(event.reason)}
        case WorkflowResumed():
            kind, body = "executionResumed", {"input": text(event.reason)}
        case WorkflowTerminated():
            kind, body = "executionTerminated", {"input": payload_out(event.output)}
        case WorkflowCompleted():
            kind = "executionCompleted"
            body = {
                d.status: d.statuses[WorkflowStatus.COMPLETED],
                "result": payload_out(event.result),
            }
        case WorkflowErrored():
            kind = "executionCompleted"
            body = {
                d.status: d.statuses[WorkflowStatus.FAILED],
                "failureDetails": failure_to_proto(d, event.failure),
            }
        case ContinuedAsNew():
            kind, body = "continueAsNew", {"input": payload_out(event.input)}
        case PatchApplied() | TaskCancelled() | WorkflowCancelRequested() | ExecutionTimedOut():
            return None  # not carried: the protocol has no cancellation nor execution timeout
        case WorkflowRewound():
            return None  # not carried: the history before it is the rewound one already
        case UpdateRequested() | UpdateCompleted() | SearchAttributesUpserted():
            return None  # not carried: the protocol has no updates, no search attributes
        case _:
            assert_never(event)
    timestamp = time_to_proto(event.timestamp)
    return d.history_event(eventId=event_id, timestamp=timestamp, **{kind: body})


def child_fields(child: ChildWorkflowScheduled | StartChildWorkflow) -> dict[str, Any]:
    """The fields a child's start shares in its event and its action, either dialect."""
    return {
        "instanceId": child.instance_id,
        "name": child.name,
        "input": payload_out(child.input),
        "version": text(child.version),
    }


def event_to_ms(
    event: HistoryEvent, *, instance_id: str = "", task_base: int = 0
) -> ms.HistoryEvent | None:
    """:func:`event_to_proto` in the MS dialect."""
    return event_to_proto(MS, event, instance_id=instance_id, task_base=task_base)


def event_to_dapr(
    event: HistoryEvent, *, instance_id: str = "", task_base: int = 0
) -> dapr.HistoryEvent | None:
    """:func:`event_to_proto` in the Dapr dialect."""
    return event_to_proto(DAPR, event, instance_id=instance_id, task_base=task_base)


def events_to_proto(
    dialect: Dialect[E, Any, Any, Any],
    events: Iterable[HistoryEvent],
    *,
    instance_id: str = "",
    task_base: int = 0,
) -> list[E]:
    """:func:`event_to_proto` over a list, without the events it has no form for. In
    the Dapr dialect each PatchApplied goes into the ``version.patches`` of its turn's
    workflowStarted (or, with no turn start before it in ``events``, into a
    workflowStarted of its own at its place), and every turn's workflowStarted names
    the run's version in ``version.name``.

    So the list can be shorter than ``events``. Stateful-history counts are counts of
    these messages: a history cut at a turn start converts to a prefix of the whole.
    """
    if not dialect.patches:
        every = (event_to_proto(dialect, e, instance_id=instance_id, task_base=task_base)
                 for e in events)  # fmt: skip
        return [w for w in every if w is not None]  # no patches to place
    out: list[E] = []
    turn: Any = None  # the last workflowStarted
    run_version: str | None = None
    for event in events:
        if isinstance(event, WorkflowStarted):
            run_version = event.version or None
        if isinstance(event, PatchApplied):
            if turn is None:
                timestamp = time_to_proto(event.timestamp)
                carrier = dialect.history_event(
                    eventId=-1, timestamp=timestamp, **{dialect.turn_started: {}}
                )
                turn = getattr(carrier, dialect.turn_started)
                out.append(carrier)
            turn.version.patches.append(event.patch_id)
            if run_version is not None:
                turn.version.name = run_version
            continue
        converted = event_to_proto(dialect, event, instance_id=instance_id, task_base=task_base)
        if converted is None:
            continue  # no form in the protocol (a run of this process's own code)
        if isinstance(event, TurnStarted):
            turn = getattr(converted, dialect.turn_started)
            if run_version is not None:
                turn.version.name = run_version
        out.append(converted)
    return out


def events_to_ms(
    events: Iterable[HistoryEvent], *, instance_id: str = "", task_base: int = 0
) -> list[ms.HistoryEvent]:
    """:func:`events_to_proto` in the MS dialect."""
    return events_to_proto(MS, events, instance_id=instance_id, task_base=task_base)


def events_to_dapr(
    events: Iterable[HistoryEvent], *, instance_id: str = "", task_base: int = 0
) -> list[dapr.HistoryEvent]:
    """:func:`events_to_proto` in the Dapr dialect."""
    return events_to_proto(DAPR, events, instance_id=instance_id, task_base=task_base)


# ---------------------------------------------------------------------------------------
# History events coming in, either dialect
# ---------------------------------------------------------------------------------------


def event_from_proto(
    event: ms.HistoryEvent | dapr.HistoryEvent, *, event_id: int = -1, task_base: int = 0
) -> HistoryEvent | None:
    """durable's event for a HistoryEvent of either dialect, at position ``event_id``;
    ``None`` for the kinds durable has no counterpart for (see :mod:`durable.grpc._convert`)."""
    kind = event.WhichOneof("eventType")
    if kind is None:
        return None
    body = getattr(event, kind)
    common: dict[str, Any] = {"event_id": event_id, "timestamp": time_from_proto(event.timestamp)}
    own_task = event.eventId + task_base  # the action id of a scheduling event
    match body:
        case ms.ExecutionStartedEvent() | dapr.ExecutionStartedEvent():
            parent = body.parentInstance
            instance = dialect_of(body).instance
            run: ms.OrchestrationInstance | dapr.WorkflowInstance = getattr(body, instance)
            parent_run: ms.OrchestrationInstance | dapr.WorkflowInstance = getattr(parent, instance)
            trace_parent, trace_state = trace_context_from_proto(body.parentTraceContext) or (
                "",
                "",
            )
            return WorkflowStarted(
                **common,
                name=body.name,
                input=payload_in(body, "input"),
                run_id=run.executionId.value,
                version=body.version.value,
                parent=ParentRef(
                    parent_run.instanceId, parent.taskScheduledId, parent_run.executionId.value
                )
                if body.HasField("parentInstance")
                else None,
                first_task_id=task_base,
                trace_parent=trace_parent,
                trace_state=trace_state,
            )
        case ms.OrchestratorStartedEvent() | dapr.WorkflowStartedEvent():
            return TurnStarted(**common)
        case ms.TaskScheduledEvent() | dapr.TaskScheduledEvent():
            input = payload_in(body, "input")
            execution_id = body.taskExecutionId if isinstance(body, dapr.TaskScheduledEvent) else ""
            return ActivityScheduled(
                **common, task_id=own_task, name=body.name, input=input, step=own_task,
                execution_id=execution_id,
            )  # fmt: skip
        case ms.TaskCompletedEvent() | dapr.TaskCompletedEvent():
            task_id = body.taskScheduledId + task_base
            return ActivityCompleted(**common, task_id=task_id, result=payload_in(body, "result"))
        case ms.TaskFailedEvent() | dapr.TaskFailedEvent():
            task_id = body.taskScheduledId + task_base
            failure = failure_from_proto(body.failureDetails)
            return ActivityErrored(**common, task_id=task_id, failure=failure)
        case ms.TimerCreatedEvent():
            fire_at = time_from_proto(body.fireAt)
            return TimerCreated(**common, task_id=own_task, fire_at=fire_at)
        case dapr.TimerCreatedEvent():
            purpose = dapr_timer_purpose(body)
            fire_at = time_from_proto(body.fireAt)
            return TimerCreated(**common, task_id=own_task, fire_at=fire_at, purpose=purpose)
        case ms.TimerFiredEvent() | dapr.TimerFiredEvent():
            task_id = body.timerId + task_base
            return TimerFired(**common, task_id=task_id, fire_at=time_from_proto(body.fireAt))
        case ms.SubOrchestrationInstanceCreatedEvent() | dapr.ChildWorkflowInstanceCreatedEvent():
            input = payload_in(body, "input")
            return ChildWorkflowScheduled(
                **common,
                task_id=own_task,
                name=body.name,
                instance_id=body.instanceId,
                input=input,
                version=body.version.value,
            )
        case (
            ms.SubOrchestrationInstanceCompletedEvent() | dapr.ChildWorkflowInstanceCompletedEvent()
        ):
            task_id = body.taskScheduledId + task_base
            result = payload_in(body, "result")
            return ChildWorkflowCompleted(**common, task_id=task_id, result=result)
        case ms.SubOrchestrationInstanceFailedEvent() | dapr.ChildWorkflowInstanceFailedEvent():
            task_id = body.taskScheduledId + task_base
            failure = failure_from_proto(body.failureDetails)
            return ChildWorkflowErrored(**common, task_id=task_id, failure=failure)
        case ms.EventRaisedEvent() | dapr.EventRaisedEvent():
            return EventRaised(**common, name=body.name, input=payload_in(body, "input"))
        case ms.EventSentEvent() | dapr.EventSentEvent():
            input = payload_in(body, "input")
            return EventSent(
                **common, task_id=own_task, instance_id=body.instanceId, name=body.name,
                input=input,
            )  # fmt: skip
        case ms.ExecutionSuspendedEvent() | dapr.ExecutionSuspendedEvent():
            return WorkflowSuspended(**common, reason=body.input.value)
        case ms.ExecutionResumedEvent() | dapr.ExecutionResumedEvent():
            return WorkflowResumed(**common, reason=body.input.value)
        case ms.ExecutionTerminatedEvent() | dapr.ExecutionTerminatedEvent():
            return WorkflowTerminated(**common, output=payload_in(body, "input"))
        case ms.ExecutionCompletedEvent() | dapr.ExecutionCompletedEvent():
            status = getattr(body, dialect_of(body).status)
            return _completed(common, status, payload_in(body, "result"), body.failureDetails)
        case ms.ContinueAsNewEvent() | dapr.ContinueAsNewEvent():
            return ContinuedAsNew(**common, input=payload_in(body, "input"))
    return None


def _patches_of(event: ms.HistoryEvent | dapr.HistoryEvent) -> list[str]:
    """The patches a Dapr workflowStarted records."""
    if isinstance(event, ms.HistoryEvent) or event.WhichOneof("eventType") != "workflowStarted":
        return []
    return list(event.workflowStarted.version.patches)


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
    result: Raw,
    failure: ms.TaskFailureDetails | dapr.TaskFailureDetails,
) -> HistoryEvent:
    """The event for executionCompleted, by its status."""
    match status_from_proto(status):
        case WorkflowStatus.COMPLETED:
            return WorkflowCompleted(**common, result=result)
        case WorkflowStatus.FAILED:
            return WorkflowErrored(**common, failure=failure_from_proto(failure))
        case WorkflowStatus.TERMINATED | WorkflowStatus.CANCELED:
            return WorkflowTerminated(**common, output=result)
        case WorkflowStatus.CONTINUED_AS_NEW:
            return ContinuedAsNew(**common, input=result)
    raise ProtocolError(f"executionCompleted with a non-final status ({int(status)})")
