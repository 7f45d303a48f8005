"""Which action of workflow code each recorded event stands for, and how to name either
in an error: what replay matches, and what a ``NonDeterminismError`` says."""

from __future__ import annotations

from ._actions import (
    Action,
    CancelTask,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    ScheduleActivity,
    SendEvent,
    StartChildWorkflow,
    StartTimer,
    UpsertSearchAttributes,
)
from ._events import (
    ActivityScheduled,
    ChildWorkflowScheduled,
    ContinuedAsNew,
    Event,
    EventSent,
    SearchAttributesUpserted,
    TaskCancelled,
    TimerCreated,
    WorkflowCompleted,
    WorkflowErrored,
)

__all__ = ["FINAL_ACTIONS", "SCHEDULING_ACTIONS", "describe"]


def describe(item: Event | Action) -> str:
    """A short human description of a scheduling event or action, for error messages."""
    match item:
        case ActivityScheduled(name=name, task_id=tid) | ScheduleActivity(name=name, task_id=tid):
            return f"activity {name!r} (task {tid})"
        case TimerCreated(task_id=tid) | StartTimer(task_id=tid):
            return f"a timer (task {tid})"
        case (
            ChildWorkflowScheduled(name=name, task_id=tid)
            | StartChildWorkflow(name=name, task_id=tid)
        ):
            return f"sub-workflow {name!r} (task {tid})"
        case EventSent(name=name, task_id=tid) | SendEvent(name=name, task_id=tid):
            return f"event {name!r} sent (task {tid})"
        case TaskCancelled(task_id=tid) | CancelTask(task_id=tid):
            return f"the cancellation of task {tid}"
        case WorkflowCompleted() | CompleteWorkflow():
            return "completion of the workflow"
        case WorkflowErrored() | FailWorkflow():
            return "failure of the workflow"
        case ContinuedAsNew() | ContinueAsNew():
            return "continue-as-new"
        case SearchAttributesUpserted(attributes=a) | UpsertSearchAttributes(attributes=a):
            return f"an upsert of search attributes {a!r}"
    return type(item).__name__


SCHEDULING_ACTIONS: dict[type, type] = {
    ActivityScheduled: ScheduleActivity,
    TimerCreated: StartTimer,
    ChildWorkflowScheduled: StartChildWorkflow,
    EventSent: SendEvent,
}
FINAL_ACTIONS: dict[type, type] = {
    WorkflowCompleted: CompleteWorkflow,
    WorkflowErrored: FailWorkflow,
    ContinuedAsNew: ContinueAsNew,
}
