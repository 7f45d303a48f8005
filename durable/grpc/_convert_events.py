"""History events to and from either wire dialect (see :mod:`durable.grpc._convert`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_never

import betterproto
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
    present,
    status_from_proto,
    status_to_dapr,
    status_to_ms,
    time_to_proto,
    trace_context_from_proto,
    trace_context_to_dapr,
    trace_context_to_ms,
)
from durable.grpc._framing import ProtocolError
from durable.grpc._payload import payload_from_proto, payload_to_proto
from durable.grpc._proto import dapr, ms

if TYPE_CHECKING:
    from collections.abc import Iterable

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
    out = ms.HistoryEvent(event_id=-1, timestamp=time_to_proto(event.timestamp))
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
            out.timer_created = ms.TimerCreatedEvent(fire_at=time_to_proto(event.fire_at))
        case TimerFired():
            out.timer_fired = ms.TimerFiredEvent(
                fire_at=time_to_proto(event.fire_at), timer_id=event.task_id - task_base
            )
        case ChildWorkflowScheduled():
            out.event_id = event.task_id - task_base
            out.sub_orchestration_instance_created = ms.SubOrchestrationInstanceCreatedEvent(
                instance_id=event.instance_id, name=event.name, input=payload_to_proto(event.input),
                version=event.version or None,
            )  # fmt: skip
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
    out = dapr.HistoryEvent(event_id=-1, timestamp=time_to_proto(event.timestamp))
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
            timer = dapr.TimerCreatedEvent(fire_at=time_to_proto(event.fire_at))
            dapr_timer_origin(timer, event.purpose)
            out.timer_created = timer
        case TimerFired():
            out.timer_fired = dapr.TimerFiredEvent(
                fire_at=time_to_proto(event.fire_at), timer_id=event.task_id - task_base
            )
        case ChildWorkflowScheduled():
            out.event_id = event.task_id - task_base
            out.child_workflow_instance_created = dapr.ChildWorkflowInstanceCreatedEvent(
                instance_id=event.instance_id, name=event.name, input=payload_to_proto(event.input),
                version=event.version or None,
            )  # fmt: skip
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
                carrier = dapr.HistoryEvent(event_id=-1, timestamp=time_to_proto(event.timestamp))
                carrier.workflow_started = turn = dapr.WorkflowStartedEvent()
                out.append(carrier)
            patches = turn.version.patches if turn.version is not None else []
            turn.version = dapr.WorkflowVersion(
                patches=[*patches, event.patch_id], name=run_version
            )
            continue
        converted = event_to_dapr(event, instance_id=instance_id, task_base=task_base)
        if converted is None:
            continue  # no form in the protocol (a run of this process's own code)
        if isinstance(event, TurnStarted):
            turn = converted.workflow_started
            if run_version is not None:
                turn.version = dapr.WorkflowVersion(patches=[], name=run_version)
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
                if present(parent)
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
            purpose = dapr_timer_purpose(body)
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
                version=body.version or "",
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
