"""History events to and from either wire dialect (see :mod:`durable.grpc._convert`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_never

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
    dapr_timer_origin,
    dapr_timer_purpose,
    failure_from_proto,
    failure_to_dapr,
    failure_to_ms,
    payload_in,
    payload_out,
    status_from_proto,
    status_to_dapr,
    status_to_ms,
    text,
    time_from_proto,
    time_to_proto,
    trace_context_from_proto,
    trace_context_to_dapr,
    trace_context_to_ms,
)
from durable.grpc._framing import ProtocolError
from durable.grpc._proto import dapr, ms

if TYPE_CHECKING:
    from collections.abc import Iterable

    from msgspec import Raw

__all__ = [
    "event_from_proto",
    "event_to_dapr",
    "event_to_ms",
    "events_from_proto",
    "events_to_dapr",
    "events_to_ms",
]


# ---------------------------------------------------------------------------------------
# History events, MS dialect
# ---------------------------------------------------------------------------------------


def event_to_ms(
    event: HistoryEvent, *, instance_id: str = "", task_base: int = 0
) -> ms.HistoryEvent | None:
    """``event`` as an MS HistoryEvent. ``instance_id`` fills executionStarted's
    orchestrationInstance; ``task_base`` is the run's ``first_task_id``. ``None`` for
    PatchApplied: the MS dialect has no patches."""
    out = ms.HistoryEvent(eventId=-1, timestamp=time_to_proto(event.timestamp))
    match event:
        case WorkflowStarted():
            started = ms.ExecutionStartedEvent(
                name=event.name,
                version=text(event.version),
                input=payload_out(event.input),
                orchestrationInstance=ms.OrchestrationInstance(
                    instanceId=instance_id, executionId=text(event.replay_seed)
                ),
            )
            if event.trace_parent:
                started.parentTraceContext.CopyFrom(
                    trace_context_to_ms(event.trace_parent, event.trace_state)
                )
            if event.parent is not None:
                started.parentInstance.CopyFrom(
                    ms.ParentInstanceInfo(
                        taskScheduledId=event.parent.task_id,
                        orchestrationInstance=ms.OrchestrationInstance(
                            instanceId=event.parent.instance_id,
                            executionId=text(event.parent.run_id),
                        ),
                    )
                )
            out.executionStarted.CopyFrom(started)
        case TurnStarted():
            out.orchestratorStarted.CopyFrom(ms.OrchestratorStartedEvent())
        case ActivityScheduled():
            out.eventId = event.task_id - task_base
            out.taskScheduled.CopyFrom(
                ms.TaskScheduledEvent(name=event.name, input=payload_out(event.input))
            )
        case ActivityCompleted():
            out.taskCompleted.CopyFrom(
                ms.TaskCompletedEvent(
                    taskScheduledId=event.task_id - task_base,
                    result=payload_out(event.result),
                )
            )
        case ActivityErrored():
            out.taskFailed.CopyFrom(
                ms.TaskFailedEvent(
                    taskScheduledId=event.task_id - task_base,
                    failureDetails=failure_to_ms(event.failure),
                )
            )
        case TimerCreated():
            out.eventId = event.task_id - task_base
            out.timerCreated.CopyFrom(ms.TimerCreatedEvent(fireAt=time_to_proto(event.fire_at)))
        case TimerFired():
            out.timerFired.CopyFrom(
                ms.TimerFiredEvent(
                    fireAt=time_to_proto(event.fire_at), timerId=event.task_id - task_base
                )
            )
        case ChildWorkflowScheduled():
            out.eventId = event.task_id - task_base
            out.subOrchestrationInstanceCreated.CopyFrom(
                ms.SubOrchestrationInstanceCreatedEvent(
                    instanceId=event.instance_id,
                    name=event.name,
                    input=payload_out(event.input),
                    version=text(event.version),
                )
            )
        case ChildWorkflowCompleted():
            out.subOrchestrationInstanceCompleted.CopyFrom(
                ms.SubOrchestrationInstanceCompletedEvent(
                    taskScheduledId=event.task_id - task_base,
                    result=payload_out(event.result),
                )
            )
        case ChildWorkflowErrored():
            out.subOrchestrationInstanceFailed.CopyFrom(
                ms.SubOrchestrationInstanceFailedEvent(
                    taskScheduledId=event.task_id - task_base,
                    failureDetails=failure_to_ms(event.failure),
                )
            )
        case EventRaised():
            out.eventRaised.CopyFrom(
                ms.EventRaisedEvent(name=event.name, input=payload_out(event.input))
            )
        case EventSent():
            out.eventId = event.task_id - task_base
            out.eventSent.CopyFrom(
                ms.EventSentEvent(
                    instanceId=event.instance_id,
                    name=event.name,
                    input=payload_out(event.input),
                )
            )
        case WorkflowSuspended():
            out.executionSuspended.CopyFrom(ms.ExecutionSuspendedEvent(input=text(event.reason)))
        case WorkflowResumed():
            out.executionResumed.CopyFrom(ms.ExecutionResumedEvent(input=text(event.reason)))
        case WorkflowTerminated():
            out.executionTerminated.CopyFrom(
                ms.ExecutionTerminatedEvent(input=payload_out(event.output))
            )
        case WorkflowCompleted():
            out.executionCompleted.CopyFrom(
                ms.ExecutionCompletedEvent(
                    orchestrationStatus=status_to_ms(WorkflowStatus.COMPLETED),
                    result=payload_out(event.result),
                )
            )
        case WorkflowErrored():
            out.executionCompleted.CopyFrom(
                ms.ExecutionCompletedEvent(
                    orchestrationStatus=status_to_ms(WorkflowStatus.FAILED),
                    failureDetails=failure_to_ms(event.failure),
                )
            )
        case ContinuedAsNew():
            out.continueAsNew.CopyFrom(ms.ContinueAsNewEvent(input=payload_out(event.input)))
        case PatchApplied() | TaskCancelled() | WorkflowCancelRequested() | ExecutionTimedOut():
            return None  # not carried: the protocol has no cancellation nor execution timeout
        case WorkflowRewound():
            return None  # not carried: the history before it is the rewound one already
        case UpdateRequested() | UpdateCompleted() | SearchAttributesUpserted():
            return None  # not carried: the protocol has no updates, no search attributes
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


def event_to_dapr(
    event: HistoryEvent, *, instance_id: str = "", task_base: int = 0
) -> dapr.HistoryEvent | None:
    """``event`` as a Dapr HistoryEvent; see :func:`event_to_ms`. ``None`` for
    PatchApplied, which has no event of its own: :func:`events_to_dapr` puts it in its
    turn's workflowStarted."""
    out = dapr.HistoryEvent(eventId=-1, timestamp=time_to_proto(event.timestamp))
    match event:
        case WorkflowStarted():
            started = dapr.ExecutionStartedEvent(
                name=event.name,
                version=text(event.version),
                input=payload_out(event.input),
                workflowInstance=dapr.WorkflowInstance(
                    instanceId=instance_id, executionId=text(event.replay_seed)
                ),
            )
            if event.trace_parent:
                started.parentTraceContext.CopyFrom(
                    trace_context_to_dapr(event.trace_parent, event.trace_state)
                )
            if event.parent is not None:
                started.parentInstance.CopyFrom(
                    dapr.ParentInstanceInfo(
                        taskScheduledId=event.parent.task_id,
                        workflowInstance=dapr.WorkflowInstance(
                            instanceId=event.parent.instance_id,
                            executionId=text(event.parent.run_id),
                        ),
                    )
                )
            out.executionStarted.CopyFrom(started)
        case TurnStarted():
            out.workflowStarted.CopyFrom(dapr.WorkflowStartedEvent())
        case ActivityScheduled():
            out.eventId = event.task_id - task_base
            out.taskScheduled.CopyFrom(dapr.TaskScheduledEvent(
                name=event.name, input=payload_out(event.input),
                taskExecutionId=event.execution_id,
            ))  # fmt: skip
        case ActivityCompleted():
            out.taskCompleted.CopyFrom(
                dapr.TaskCompletedEvent(
                    taskScheduledId=event.task_id - task_base,
                    result=payload_out(event.result),
                )
            )
        case ActivityErrored():
            out.taskFailed.CopyFrom(
                dapr.TaskFailedEvent(
                    taskScheduledId=event.task_id - task_base,
                    failureDetails=failure_to_dapr(event.failure),
                )
            )
        case TimerCreated():
            out.eventId = event.task_id - task_base
            timer = dapr.TimerCreatedEvent(fireAt=time_to_proto(event.fire_at))
            dapr_timer_origin(timer, event.purpose)
            out.timerCreated.CopyFrom(timer)
        case TimerFired():
            out.timerFired.CopyFrom(
                dapr.TimerFiredEvent(
                    fireAt=time_to_proto(event.fire_at), timerId=event.task_id - task_base
                )
            )
        case ChildWorkflowScheduled():
            out.eventId = event.task_id - task_base
            out.childWorkflowInstanceCreated.CopyFrom(
                dapr.ChildWorkflowInstanceCreatedEvent(
                    instanceId=event.instance_id,
                    name=event.name,
                    input=payload_out(event.input),
                    version=text(event.version),
                )
            )
        case ChildWorkflowCompleted():
            out.childWorkflowInstanceCompleted.CopyFrom(
                dapr.ChildWorkflowInstanceCompletedEvent(
                    taskScheduledId=event.task_id - task_base,
                    result=payload_out(event.result),
                )
            )
        case ChildWorkflowErrored():
            out.childWorkflowInstanceFailed.CopyFrom(
                dapr.ChildWorkflowInstanceFailedEvent(
                    taskScheduledId=event.task_id - task_base,
                    failureDetails=failure_to_dapr(event.failure),
                )
            )
        case EventRaised():
            out.eventRaised.CopyFrom(
                dapr.EventRaisedEvent(name=event.name, input=payload_out(event.input))
            )
        case EventSent():
            out.eventId = event.task_id - task_base
            out.eventSent.CopyFrom(
                dapr.EventSentEvent(
                    instanceId=event.instance_id,
                    name=event.name,
                    input=payload_out(event.input),
                )
            )
        case WorkflowSuspended():
            out.executionSuspended.CopyFrom(dapr.ExecutionSuspendedEvent(input=text(event.reason)))
        case WorkflowResumed():
            out.executionResumed.CopyFrom(dapr.ExecutionResumedEvent(input=text(event.reason)))
        case WorkflowTerminated():
            out.executionTerminated.CopyFrom(
                dapr.ExecutionTerminatedEvent(input=payload_out(event.output))
            )
        case WorkflowCompleted():
            out.executionCompleted.CopyFrom(
                dapr.ExecutionCompletedEvent(
                    workflowStatus=status_to_dapr(WorkflowStatus.COMPLETED),
                    result=payload_out(event.result),
                )
            )
        case WorkflowErrored():
            out.executionCompleted.CopyFrom(
                dapr.ExecutionCompletedEvent(
                    workflowStatus=status_to_dapr(WorkflowStatus.FAILED),
                    failureDetails=failure_to_dapr(event.failure),
                )
            )
        case ContinuedAsNew():
            out.continueAsNew.CopyFrom(dapr.ContinueAsNewEvent(input=payload_out(event.input)))
        case PatchApplied() | TaskCancelled() | WorkflowCancelRequested() | ExecutionTimedOut():
            return None  # not carried: the protocol has no cancellation nor execution timeout
        case WorkflowRewound():
            return None  # not carried: the history before it is the rewound one already
        case UpdateRequested() | UpdateCompleted() | SearchAttributesUpserted():
            return None  # not carried: the protocol has no updates, no search attributes
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
                carrier = dapr.HistoryEvent(eventId=-1, timestamp=time_to_proto(event.timestamp))
                turn = carrier.workflowStarted
                turn.SetInParent()
                out.append(carrier)
            turn.version.patches.append(event.patch_id)
            if run_version is not None:
                turn.version.name = run_version
            continue
        converted = event_to_dapr(event, instance_id=instance_id, task_base=task_base)
        if converted is None:
            continue  # no form in the protocol (a run of this process's own code)
        if isinstance(event, TurnStarted):
            turn = converted.workflowStarted
            if run_version is not None:
                turn.version.name = run_version
        out.append(converted)
    return out


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
            run: ms.OrchestrationInstance | dapr.WorkflowInstance
            parent_run: ms.OrchestrationInstance | dapr.WorkflowInstance
            if isinstance(body, ms.ExecutionStartedEvent):
                run = body.orchestrationInstance
            else:
                run = body.workflowInstance
            if isinstance(parent, ms.ParentInstanceInfo):
                parent_run = parent.orchestrationInstance
            else:
                parent_run = parent.workflowInstance
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
        case ms.ExecutionCompletedEvent():
            return _completed(
                common, body.orchestrationStatus, payload_in(body, "result"), body.failureDetails
            )
        case dapr.ExecutionCompletedEvent():
            return _completed(
                common, body.workflowStatus, payload_in(body, "result"), body.failureDetails
            )
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
