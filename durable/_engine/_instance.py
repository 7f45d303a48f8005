"""What the engine keeps in memory for one instance, and small pure helpers over it.

Nothing here does I/O: the record, the types of what waits for a turn, and the functions
that read a turn's events against what the instance still waits for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Raw

from durable._core._events import (
    NULL,
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowErrored,
    ChildWorkflowScheduled,
    Event,
    ExecutionTimedOut,
    HistoryEvent,
    ParentRef,
    TaskCancelled,
    TimerCreated,
    TimerFired,
    WorkflowCancelRequested,
    WorkflowStarted,
    WorkflowTerminated,
)
from durable._core._failure import FailureDetails
from durable._core._state import WorkflowStatus
from durable._errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
)
from durable._log._search import Indexing

from ._lifecycle import InstanceState

if TYPE_CHECKING:
    from durable._core._search import Indexed

    from ._executor import TurnRunner


__all__ = ["Pending", "Sent", "_ActivityWork", "_Instance"]

_SCHEDULING = (ActivityScheduled, TimerCreated, ChildWorkflowScheduled)
# completion event type -> the scheduling event type it must answer
_ANSWERS: dict[type, type] = {
    ActivityCompleted: ActivityScheduled,
    ActivityErrored: ActivityScheduled,
    TimerFired: TimerCreated,
    ChildWorkflowCompleted: ChildWorkflowScheduled,
    ChildWorkflowErrored: ChildWorkflowScheduled,
}
_ANY_RUN = -1
# the store's answers to a conditional call: a race lost, not a broken object
_ANSWERS_OF_STORE = (ObjectNotFoundError, ObjectExistsError, PreconditionFailedError)

Pending = tuple[str | None, int, Event]  # (inbox message id, run it belongs to, event)
# (instance, the run's start, the run's first seq, the attempt)
_ActivityWork = tuple[str, WorkflowStarted, int, ActivityScheduled]


class _Instance:
    """What the engine keeps in memory for one instance."""

    __slots__ = (
        "consumed",
        "created_at",
        "custom_status",
        "failure",
        "id",
        "meta_etag",
        "meta_indexed",
        "meta_seq",
        "meta_status",
        "name",
        "next_event_id",
        "output",
        "outstanding",
        "parent",
        "pending",
        "reason",
        "received",
        "residency",
        "run",
        "run_start",
        "search",
        "seq",
        "seq_at_turn_start",
        "started",
        "state",
        "status",
    )  # fmt: skip

    def __init__(self, instance_id: str, started: WorkflowStarted, created_at: Any) -> None:
        self.id = instance_id
        self.name = started.name
        self.started = started
        self.parent: ParentRef | None = started.parent
        self.created_at = created_at
        self.seq = 0
        self.seq_at_turn_start = -1
        self.run_start = 0
        self.next_event_id = 0
        self.status = WorkflowStatus.PENDING
        self.custom_status: Raw = NULL
        self.run: TurnRunner | None = None
        self.pending: list[Pending] = []
        self.outstanding: dict[int, HistoryEvent] = {}
        self.consumed: set[str] = set()
        self.received: dict[str, str] = {}  # watermarks of senders: see _messages
        self.state = InstanceState.LOADING  # its life in memory: see _lifecycle
        self.reason = ""  # why it makes no progress, for describe()
        self.residency = -1  # set by Residency: which stay in memory this object is
        self.meta_etag: str | None = None
        self.meta_indexed = (
            Indexing.empty()
        )  # what the meta at meta_etag says of its search entries
        self.search: dict[str, Indexed] = {}  # the run's search attributes, as the log has them
        self.meta_seq = -1
        self.meta_status = ""
        self.output: Raw = NULL
        self.failure: FailureDetails | None = None


def _parent_event(
    parent: ParentRef,
    child_id: str,
    status: WorkflowStatus,
    output: Raw,
    failure: FailureDetails | None,
) -> HistoryEvent:
    """What a parent's run receives when its sub-workflow ``child_id`` ends."""
    if status is WorkflowStatus.COMPLETED:
        return ChildWorkflowCompleted(
            task_id=parent.task_id, result=output, instance_id=child_id, parent_run=parent.run_id,
            scheduled=parent.scheduled,
        )  # fmt: skip
    return ChildWorkflowErrored(
        task_id=parent.task_id, instance_id=child_id, parent_run=parent.run_id,
        failure=failure or FailureDetails("Terminated", "terminated"), scheduled=parent.scheduled,
    )  # fmt: skip


def _child_of(inst: _Instance, scheduled: ChildWorkflowScheduled) -> ParentRef:
    """The parent link of the sub-workflow that ``inst``'s current run schedules."""
    return ParentRef(inst.id, scheduled.task_id, inst.started.run_id, scheduled.event_id)


class Sent(Event, frozen=True):
    """In place of an inbox message sent to another start of the instance than the one
    that read it (an ended one: a start, reuse or rerun before it): a turn consumes the
    message, and applies nothing. Never written: the message stays as it was sent."""

    to: str = ""


# the kinds of event that name a run of the instance or of its parent, built once (this
# check runs for every event of every turn)
_CHILD_ANSWERS = (ChildWorkflowCompleted, ChildWorkflowErrored)
_PARENT_ORDERS = (WorkflowTerminated, WorkflowCancelRequested)
# every kind :func:`_addressed_elsewhere` may say yes to: a turn asks it of these alone
# (the call cost every event of every turn more than the checks inside)
_NAMES_A_RUN = frozenset({Sent, *_CHILD_ANSWERS, *_PARENT_ORDERS, ExecutionTimedOut})


def _addressed_elsewhere(inst: _Instance, event: Event) -> bool:
    """Whether ``event`` names a run that is not the instance's current one: a child's
    answer to another run of this parent, a terminate or cancel for the children of
    another run of its parent, the execution deadline of an earlier start, or a message
    sent to another start. Such an event is consumed and never applied."""
    if isinstance(event, Sent):
        return True
    if isinstance(event, _CHILD_ANSWERS):
        return event.parent_run not in ("", inst.started.run_id)
    if isinstance(event, _PARENT_ORDERS) and event.parent is not None:
        return inst.parent is None or not inst.parent.same_run(event.parent)
    if isinstance(event, ExecutionTimedOut):  # the deadline of an earlier start's runs
        return event.deadline != inst.started.deadline
    return False


def _numbered(events: list[HistoryEvent], first_id: int) -> list[HistoryEvent]:
    """``events`` with their ids in order from ``first_id``."""
    return [msgspec.structs.replace(e, event_id=first_id + i) for i, e in enumerate(events)]


def _for_good(err: StoreError) -> bool:
    """Whether no retry can fix ``err``: an unreadable object, a key the store refuses."""
    return not err.transient and not isinstance(err, _ANSWERS_OF_STORE)


def _fold(outstanding: dict[int, HistoryEvent], events: list[HistoryEvent]) -> None:
    """Track which scheduled operations still wait for their outcome."""
    for event in events:
        if isinstance(event, _SCHEDULING):
            outstanding[event.task_id] = event
        elif type(event) in _ANSWERS or type(event) is TaskCancelled:
            outstanding.pop(event.task_id, None)  # type: ignore[union-attr]
