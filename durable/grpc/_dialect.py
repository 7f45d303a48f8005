"""The two wire dialects as data: what one converter per direction needs to know of each
(see :mod:`durable.grpc._convert`).

Microsoft's ``durabletask`` (``ms``) and Dapr 1.19 (``dapr``) share their field numbers
and most names; a :class:`Dialect` holds the message classes a converter builds, the
names in which the two differ (``subOrchestration…`` vs ``childWorkflow…``,
``orchestrationStatus`` vs ``workflowStatus``...) and the features only one of them has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from durable._core._state import WorkflowStatus
from durable.grpc._proto import dapr, ms

__all__ = ["DAPR", "MS", "STATUS_NUMBERS", "Dialect", "dialect_of"]

E = TypeVar("E")
A = TypeVar("A")
F = TypeVar("F")
R = TypeVar("R")

STATUS_NUMBERS = {
    WorkflowStatus.RUNNING: 0,
    WorkflowStatus.COMPLETED: 1,
    WorkflowStatus.CONTINUED_AS_NEW: 2,
    WorkflowStatus.FAILED: 3,
    WorkflowStatus.CANCELED: 4,
    WorkflowStatus.TERMINATED: 5,
    WorkflowStatus.PENDING: 6,
    WorkflowStatus.SUSPENDED: 7,
}
"""OrchestrationStatus numbers, the same in both dialects."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialect(Generic[E, A, F, R]):
    """One dialect's HistoryEvent (``E``), action (``A``), TaskFailureDetails (``F``)
    and ActivityRequest (``R``) classes, its names where the two differ, and what only
    it carries."""

    name: str
    history_event: Callable[..., E]
    action: Callable[..., A]
    failure: Callable[..., F]
    activity_request: Callable[..., R]
    statuses: Mapping[WorkflowStatus, Any]
    """durable's statuses as the module's typed OrchestrationStatus constants."""
    instance: str
    """The instance field of executionStarted, parentInstance and ActivityRequest."""
    status: str
    """The status field of executionCompleted and of the run's completing action."""
    turn_started: str
    child_created: str
    child_completed: str
    child_failed: str
    action_type: str
    """The name of the action's oneof."""
    create_child: str
    complete: str
    execution_ids: bool
    """Whether an activity call carries ``taskExecutionId`` (else, MS, a step tag)."""
    timer_origins: bool
    """Whether a timer carries its ``origin`` (its purpose)."""
    patches: bool
    """Whether workflowStarted carries the turn's patches."""
    failure_properties: bool
    """Whether TaskFailureDetails has ``properties``."""


def _statuses(module: Any) -> dict[WorkflowStatus, Any]:
    """``STATUS_NUMBERS`` as the module's typed enum constants (the wire numbers)."""
    values = module.DESCRIPTOR.enum_types_by_name["OrchestrationStatus"].values_by_number
    return {
        status: getattr(module, values[number].name) for status, number in STATUS_NUMBERS.items()
    }


MS: Dialect[ms.HistoryEvent, ms.OrchestratorAction, ms.TaskFailureDetails, ms.ActivityRequest] = (
    Dialect(
        name="ms",
        history_event=ms.HistoryEvent,
        action=ms.OrchestratorAction,
        failure=ms.TaskFailureDetails,
        activity_request=ms.ActivityRequest,
        statuses=_statuses(ms),
        instance="orchestrationInstance",
        status="orchestrationStatus",
        turn_started="orchestratorStarted",
        child_created="subOrchestrationInstanceCreated",
        child_completed="subOrchestrationInstanceCompleted",
        child_failed="subOrchestrationInstanceFailed",
        action_type="orchestratorActionType",
        create_child="createSubOrchestration",
        complete="completeOrchestration",
        execution_ids=False,
        timer_origins=False,
        patches=False,
        failure_properties=True,
    )
)
"""Microsoft's ``durabletask``."""

DAPR: Dialect[
    dapr.HistoryEvent, dapr.WorkflowAction, dapr.TaskFailureDetails, dapr.ActivityRequest
] = Dialect(
    name="dapr",
    history_event=dapr.HistoryEvent,
    action=dapr.WorkflowAction,
    failure=dapr.TaskFailureDetails,
    activity_request=dapr.ActivityRequest,
    statuses=_statuses(dapr),
    instance="workflowInstance",
    status="workflowStatus",
    turn_started="workflowStarted",
    child_created="childWorkflowInstanceCreated",
    child_completed="childWorkflowInstanceCompleted",
    child_failed="childWorkflowInstanceFailed",
    action_type="workflowActionType",
    create_child="createChildWorkflow",
    complete="completeWorkflow",
    execution_ids=True,
    timer_origins=True,
    patches=True,
    failure_properties=False,
)
"""Dapr 1.19."""


def dialect_of(message: Any) -> Dialect[Any, Any, Any, Any]:
    """The dialect a message of either generated module belongs to."""
    return DAPR if type(message).__module__ == dapr.__name__ else MS
