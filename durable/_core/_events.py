"""History events: the one model of what happened to an instance.

Each event is a frozen msgspec Struct with an explicit, stable tag: the log outlives
the code that wrote it, so tags never change and new fields get defaults. Every event
has ``event_id`` (its position in the run's history) and ``timestamp`` (the Clock time
of the turn that committed it). Payloads stay encoded (``msgspec.Raw``) until the code
that knows their type decodes them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from msgspec import Raw

from ._failure import FailureDetails

__all__ = [
    "CONTROL",
    "EPOCH",
    "NULL",
    "ActivityCompleted",
    "ActivityErrored",
    "ActivityScheduled",
    "ActivityTimeouts",
    "ChildWorkflowCompleted",
    "ChildWorkflowErrored",
    "ChildWorkflowScheduled",
    "ContinuedAsNew",
    "Event",
    "EventRaised",
    "EventSent",
    "ExecutionTimedOut",
    "HistoryEvent",
    "ParentRef",
    "PatchApplied",
    "SearchAttributesUpserted",
    "TaskCancelled",
    "TimerCreated",
    "TimerFired",
    "TurnStarted",
    "UpdateCompleted",
    "UpdateRequested",
    "WorkflowCancelRequested",
    "WorkflowCompleted",
    "WorkflowErrored",
    "WorkflowResumed",
    "WorkflowRewound",
    "WorkflowStarted",
    "WorkflowSuspended",
    "WorkflowTerminated",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NULL = Raw(b"null")


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", omit_defaults=True):
    """Fields every history event has."""

    event_id: int = -1
    timestamp: datetime = EPOCH


class ParentRef(msgspec.Struct, frozen=True):
    """The parent of a sub-workflow: where its result goes. ``run_id`` names the
    parent's run that started it (empty in logs written before: any run of the parent).
    ``scheduled`` is the event id of the ``ChildWorkflowScheduled`` that started it (-1
    in logs written before, and from a Durable Task worker): a Durable Task SDK retries
    a sub-orchestration under the same id and task id, and only this tells the retry
    from the call it retries."""

    instance_id: str
    task_id: int
    run_id: str = ""
    scheduled: int = -1

    def same_call(self, other: ParentRef) -> bool:
        """Whether both name one scheduling of one call of one run (one not recorded
        matches any)."""
        return self.same_run(other) and (
            self.scheduled == other.scheduled or self.scheduled < 0 or other.scheduled < 0
        )

    def same_run(self, other: ParentRef) -> bool:
        """Whether both name one call of one run of the parent (an unnamed run matches
        any run: the log predates run names)."""
        return (
            self.instance_id == other.instance_id
            and self.task_id == other.task_id
            and (self.run_id == other.run_id or not self.run_id or not other.run_id)
        )


class WorkflowStarted(Event, frozen=True, tag="workflow_started"):
    """A run of the workflow began with this input. Task ids of the run start at
    ``first_task_id``, so they stay unique across continue-as-new. ``seed`` is the run
    id whose random values, uuids and generated child ids the run draws: a rerun is a
    new run (a new ``run_id``) that replays the kept history of the run it reruns, so it
    keeps that run's seed (empty: ``run_id``). An activity's step (which keys its memo)
    is ``step_base`` plus its task id: a reuse or rerun starts above every step of the
    runs before it, so no memo is shared with them, nor deleted from under the new run
    when theirs is. ``origin`` is the run id of the start, reuse or rerun whose
    continue-as-new this run is (empty: the run began one itself): what a message
    from outside is addressed to. ``deadline``: when the start's ``execution_timeout``
    ends the run and its continue-as-new successors (None: never). ``trace_parent`` and
    ``trace_state`` are the W3C trace context of whoever started the run (empty: none),
    so the run's spans join that trace. ``rewinds``: the run ids of the failed runs
    this run rewinds, oldest first (a rewind of a rewind names both; empty: no rewind),
    so that a sub-workflow one of them started is rewound with it, not replaced.
    ``updates``: the outcomes of the updates the runs before it took (through
    continue-as-new), so that a retried update id is answered, never run again (the most
    recent ones, up to a bound: see :mod:`._updates`)."""

    name: str
    input: Raw = NULL
    run_id: str = ""
    version: str = ""
    parent: ParentRef | None = None
    first_task_id: int = 0
    seed: str = ""
    step_base: int = 0
    origin: str = ""
    trace_parent: str = ""
    trace_state: str = ""
    deadline: datetime | None = None
    rewinds: tuple[str, ...] = ()
    search_attributes: dict[str, str] = {}
    """The run's search attributes at its start, encoded (see :mod:`._search`)."""
    updates: tuple[UpdateCompleted, ...] = ()

    @property
    def replay_seed(self) -> str:
        """What seeds the run's random values, uuids and generated child ids."""
        return self.seed or self.run_id

    @property
    def origin_run(self) -> str:
        """The run id of the start, reuse or rerun this run belongs to (through its
        continue-as-new runs): events sent from outside are for it alone."""
        return self.origin or self.run_id


class TurnStarted(Event, frozen=True, tag="turn_started"):
    """A turn began; its timestamp is what ``ctx.now()`` returns during the turn."""


class ActivityTimeouts(msgspec.Struct, frozen=True, omit_defaults=True):
    """The time limits of one activity call. ``start_to_close`` bounds each attempt,
    ``heartbeat`` the time between two heartbeats of an attempt; ``close_by`` (the first
    attempt's schedule time plus ``schedule_to_close``) bounds every attempt and backoff
    together."""

    start_to_close: timedelta | None = None
    heartbeat: timedelta | None = None
    schedule_to_close: timedelta | None = None
    close_by: datetime | None = None


class ActivityScheduled(Event, frozen=True, tag="activity_scheduled"):
    """The workflow asked for an activity. ``step`` is the task id of the first
    attempt, shared by its retries; ``execution_id`` a remote worker's id for the call
    (Dapr's ``taskExecutionId``), empty for durable's own workers; ``timeouts`` the
    call's time limits, if any."""

    task_id: int
    name: str
    input: Raw = NULL
    attempt: int = 1
    step: int = -1
    execution_id: str = ""
    timeouts: ActivityTimeouts | None = None


class ActivityCompleted(Event, frozen=True, tag="activity_completed"):
    """An activity returned."""

    task_id: int
    result: Raw = NULL


class ActivityErrored(Event, frozen=True, tag="activity_failed"):
    """An activity raised."""

    task_id: int
    failure: FailureDetails


class TimerCreated(Event, frozen=True, tag="timer_created"):
    """The workflow started a durable timer (a sleep, a retry backoff, a wait timeout)."""

    task_id: int
    fire_at: datetime
    purpose: str = "sleep"


class TimerFired(Event, frozen=True, tag="timer_fired"):
    """A durable timer came due."""

    task_id: int
    fire_at: datetime


class ChildWorkflowScheduled(Event, frozen=True, tag="child_workflow_scheduled"):
    """The workflow started a sub-workflow. ``on_parent_close``: what happens to it if
    it still runs when this run ends (``terminate``, ``cancel``, ``abandon``; empty in
    logs written before: terminated only when the parent is). ``trace_parent``: the W3C
    trace context the child's run starts under (the parent run's span; empty when not
    traced). ``version``: the version the child runs at (empty: the newest)."""

    task_id: int
    name: str
    instance_id: str
    input: Raw = NULL
    trace_parent: str = ""
    on_parent_close: str = ""
    replace_ended: bool = False  # see StartChildWorkflow
    version: str = ""


class TaskCancelled(Event, frozen=True, tag="task_cancelled"):
    """The workflow cancelled its operation ``task_id`` (an activity, a timer, a
    sub-workflow): its outcome, should one come, is never applied."""

    task_id: int


class ChildWorkflowCompleted(Event, frozen=True, tag="child_workflow_completed"):
    """A sub-workflow completed. ``parent_run``: the parent's run it answers (applied to
    no other run; empty: any). ``scheduled``: the event id of the
    ``ChildWorkflowScheduled`` it answers (-1: any): a late copy of the answer to a
    call that a Durable Task SDK has since retried under the same task id is not the
    retry's answer."""

    task_id: int
    result: Raw = NULL
    instance_id: str = ""
    parent_run: str = ""
    scheduled: int = -1


class ChildWorkflowErrored(Event, frozen=True, tag="child_workflow_failed"):
    """A sub-workflow failed or was terminated. ``parent_run`` and ``scheduled`` as for
    completion."""

    task_id: int
    failure: FailureDetails
    instance_id: str = ""
    parent_run: str = ""
    scheduled: int = -1


class EventRaised(Event, frozen=True, tag="event_raised"):
    """An external event arrived (buffered until the workflow waits for it)."""

    name: str
    input: Raw = NULL


class EventSent(Event, frozen=True, tag="event_sent"):
    """The workflow sent event ``name`` to instance ``instance_id``. The engine posts it
    after the turn commits, under ``message_id`` (minted at the commit, so a post made
    again after a crash is the same message, applied once); the ids one instance sends
    sort in the order sent."""

    task_id: int
    instance_id: str
    name: str
    input: Raw = NULL
    message_id: str = ""


class UpdateRequested(Event, frozen=True, tag="update_requested"):
    """An update was accepted (its validator passed where the caller asked): the run
    calls its handler ``name`` with ``input``. One ``update_id`` is applied once per run:
    a second request with it (a caller's retry) is recorded and ignored."""

    update_id: str
    name: str
    input: Raw = NULL


class UpdateCompleted(Event, frozen=True, tag="update_completed"):
    """The handler of update ``update_id`` returned ``result``, or raised (``failure``)."""

    update_id: str
    result: Raw = NULL
    failure: FailureDetails | None = None


class PatchApplied(Event, frozen=True, tag="patch_applied"):
    """The run took the new path of ``ctx.patched(patch_id)`` (first reached live)."""

    patch_id: str


class SearchAttributesUpserted(Event, frozen=True, tag="search_attributes_upserted"):
    """The run set (or, with ``None``, removed) search attributes: values encoded (see
    :mod:`._search`)."""

    attributes: dict[str, str | None]


class WorkflowSuspended(Event, frozen=True, tag="workflow_suspended"):
    """The instance was suspended: new events wait until it resumes."""

    reason: str = ""


class WorkflowResumed(Event, frozen=True, tag="workflow_resumed"):
    """The instance was resumed."""

    reason: str = ""


class WorkflowRewound(Event, frozen=True, tag="workflow_rewound"):
    """The failed run ``run_id`` was rewound into this run: its history up to here is
    that run's without the failures it did not handle (see :mod:`durable._log._rewind`),
    so the steps that failed run again and those that succeeded keep their results."""

    run_id: str
    reason: str = ""


class WorkflowTerminated(Event, frozen=True, tag="workflow_terminated"):
    """The instance was terminated from outside. ``parent`` is set when the end of its
    parent's run terminated it: it then applies only to a child of that run.
    ``recursive``: its sub-workflows still running are terminated too."""

    reason: str = ""
    output: Raw = NULL
    parent: ParentRef | None = None
    recursive: bool = True


class ExecutionTimedOut(Event, frozen=True, tag="execution_timed_out"):
    """The start's ``execution_timeout`` passed (its ``deadline``): the run ends FAILED
    with ``durable.TimeoutError``."""

    deadline: datetime


class WorkflowCancelRequested(Event, frozen=True, tag="workflow_cancel_requested"):
    """A graceful cancel: the workflow gets ``durable.CancelledError`` at its current
    await and may clean up. ``parent`` as for a termination by the parent's end."""

    reason: str = ""
    parent: ParentRef | None = None


class WorkflowCompleted(Event, frozen=True, tag="workflow_completed"):
    """The workflow returned."""

    result: Raw = NULL


class WorkflowErrored(Event, frozen=True, tag="workflow_failed"):
    """The workflow raised, or could not be replayed."""

    failure: FailureDetails


class ContinuedAsNew(Event, frozen=True, tag="continued_as_new"):
    """The run ended by starting a fresh run with a new input; raised events that the
    old run had not consumed carry over."""

    input: Raw = NULL
    carryover: tuple[EventRaised, ...] = ()


# events from outside that change an instance's status and need no workflow code: all
# that a parked instance (its workflow is not registered where it runs) records
CONTROL = (WorkflowSuspended, WorkflowResumed, WorkflowTerminated)

HistoryEvent = (
    WorkflowStarted
    | TurnStarted
    | ActivityScheduled
    | ActivityCompleted
    | ActivityErrored
    | TimerCreated
    | TimerFired
    | ChildWorkflowScheduled
    | ChildWorkflowCompleted
    | ChildWorkflowErrored
    | EventRaised
    | EventSent
    | UpdateRequested
    | UpdateCompleted
    | PatchApplied
    | SearchAttributesUpserted
    | TaskCancelled
    | WorkflowCancelRequested
    | ExecutionTimedOut
    | WorkflowSuspended
    | WorkflowResumed
    | WorkflowRewound
    | WorkflowTerminated
    | WorkflowCompleted
    | WorkflowErrored
    | ContinuedAsNew
)
