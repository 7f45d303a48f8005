"""A turn's actions to and from either wire dialect (see :mod:`durable.grpc._convert`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, assert_never

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
    UpsertSearchAttributes,
)
from durable._core._events import EventRaised, HistoryEvent
from durable._core._state import WorkflowStatus
from durable.grpc._convert_activities import DURABLE_ID, STEP_TAG, step_of
from durable.grpc._convert_events import child_fields, event_from_proto, events_to_proto
from durable.grpc._convert_values import (
    dapr_timer_purpose,
    failure_from_proto,
    failure_to_proto,
    payload_in,
    payload_out,
    status_from_proto,
    time_from_proto,
    time_to_proto,
    timer_origin,
)
from durable.grpc._dialect import DAPR, MS, Dialect, dialect_of
from durable.grpc._framing import ENTITIES_UNSUPPORTED, NotSupportedError, ProtocolError
from durable.grpc._proto import dapr, ms

if TYPE_CHECKING:
    from collections.abc import Collection

    from msgspec import Raw

__all__ = [
    "action_from_proto",
    "action_to_dapr",
    "action_to_ms",
    "action_to_proto",
    "patches_from_proto",
]

A = TypeVar("A")


def action_to_proto(
    dialect: Dialect[Any, A, Any, Any], action: Action, *, task_base: int = 0, instance_id: str = ""
) -> A | None:
    """``action`` as the dialect's action; ends of the run get id -1. ``None`` for
    RecordPatch, which travels in the Dapr ``WorkflowResponse.version.patches`` (the MS
    dialect has no patches). An activity's step number (the task id of its first
    attempt, so equal for its retries) goes in its MS tags; its Dapr ``taskExecutionId``
    is the worker's own or ``durable:{instance_id}:{step}``: the same for every attempt
    of a step, as Dapr means it."""
    d = dialect
    kind: str
    body: dict[str, Any]
    match action:
        case ScheduleActivity():
            kind, body = "scheduleTask", {"name": action.name, "input": payload_out(action.input)}
            step = action.step - task_base
            if d.execution_ids:
                body["taskExecutionId"] = action.execution_id or f"{DURABLE_ID}{instance_id}:{step}"
            else:
                body["tags"] = {STEP_TAG: str(step)}
        case StartTimer():
            kind = "createTimer"
            body = {"fireAt": time_to_proto(action.fire_at), **timer_origin(d, action.purpose)}
        case StartChildWorkflow():
            kind, body = d.create_child, child_fields(action)
        case SendEvent():
            kind = "sendEvent"
            body = {
                "instance": {"instanceId": action.instance_id},
                "name": action.name,
                "data": payload_out(action.input),
            }
        case CompleteWorkflow():
            kind = d.complete
            body = {
                d.status: d.statuses[WorkflowStatus.COMPLETED],
                "result": payload_out(action.result),
            }
        case FailWorkflow():
            kind = d.complete
            body = {
                d.status: d.statuses[WorkflowStatus.FAILED],
                "failureDetails": failure_to_proto(d, action.failure),
            }
        case ContinueAsNew():
            kind = d.complete
            body = {
                d.status: d.statuses[WorkflowStatus.CONTINUED_AS_NEW],
                "result": payload_out(action.input),
                "carryoverEvents": events_to_proto(d, action.carryover),
            }
        case RecordPatch() | CancelTask() | CompleteUpdate() | UpsertSearchAttributes():
            return None  # not carried: the protocol has no cancellation of tasks, no updates
        case _:
            assert_never(action)
    if isinstance(action, CompleteWorkflow | FailWorkflow | ContinueAsNew):
        return d.action(id=-1, **{kind: body})  # the run's end
    return d.action(id=action.task_id - task_base, **{kind: body})


def action_to_ms(action: Action, *, task_base: int = 0) -> ms.OrchestratorAction | None:
    """:func:`action_to_proto` in the MS dialect."""
    return action_to_proto(MS, action, task_base=task_base)


def action_to_dapr(
    action: Action, *, task_base: int = 0, instance_id: str = ""
) -> dapr.WorkflowAction | None:
    """:func:`action_to_proto` in the Dapr dialect."""
    return action_to_proto(DAPR, action, task_base=task_base, instance_id=instance_id)


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
    kind = action.WhichOneof(dialect_of(action).action_type)
    body = getattr(action, kind) if kind is not None else None
    task_id = action.id + task_base
    match body:
        case ms.ScheduleTaskAction() | dapr.ScheduleTaskAction():
            input = payload_in(body, "input")
            step = step_of(body)  # a retry of a step, from durable's RemoteWorker
            execution_id = ""  # a Dapr SDK's own id for the call, kept for its retries
            if isinstance(body, dapr.ScheduleTaskAction) and not body.taskExecutionId.startswith(
                DURABLE_ID
            ):
                execution_id = body.taskExecutionId
            step = task_id if step is None else step + task_base
            return ScheduleActivity(task_id, body.name, input, 1, step, execution_id)
        case ms.CreateTimerAction():
            return StartTimer(task_id, time_from_proto(body.fireAt), "sleep")
        case dapr.CreateTimerAction():
            return StartTimer(task_id, time_from_proto(body.fireAt), dapr_timer_purpose(body))
        case ms.CreateSubOrchestrationAction() | dapr.CreateChildWorkflowAction():
            input = payload_in(body, "input")
            # an ended instance under the id is replaced, as the Durable Task backends do
            return StartChildWorkflow(
                task_id,
                body.name,
                body.instanceId,
                input,
                replace_ended=True,
                version=body.version.value,
            )
        case ms.SendEventAction() | dapr.SendEventAction():
            return SendEvent(task_id, body.instance.instanceId, body.name, payload_in(body, "data"))
        case ms.CompleteOrchestrationAction() | dapr.CompleteWorkflowAction():
            status = getattr(body, dialect_of(body).status)
            carryover = [event_from_proto(e) for e in body.carryoverEvents]
            return _end(status, payload_in(body, "result"), body.failureDetails, carryover)
        case ms.SendEntityMessageAction():
            raise NotSupportedError(f"{ENTITIES_UNSUPPORTED} (action id {action.id})")
    raise ProtocolError(f"{kind or 'empty'} action (id {action.id}) has no counterpart in durable")


def _end(
    status: int,
    result: Raw,
    failure: ms.TaskFailureDetails | dapr.TaskFailureDetails,
    carryover: list[HistoryEvent | None],
) -> Action | None:
    """The action for completeOrchestration / completeWorkflow, by its status."""
    match status_from_proto(status):
        case WorkflowStatus.COMPLETED:
            return CompleteWorkflow(result)
        case WorkflowStatus.FAILED:
            return FailWorkflow(failure_from_proto(failure))
        case WorkflowStatus.CONTINUED_AS_NEW:
            raised = tuple(e for e in carryover if isinstance(e, EventRaised))
            if len(raised) != len(carryover):
                raise ProtocolError("continue-as-new can carry over only eventRaised events")
            return ContinueAsNew(result, raised)
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
    if isinstance(response, ms.OrchestratorResponse):
        return []
    seen = set(recorded)
    out: list[RecordPatch] = []
    for patch in response.version.patches:
        if patch not in seen:
            seen.add(patch)
            out.append(RecordPatch(patch))
    return out
