"""What a workflow turn asks for: the output of replay, the input of the commit."""

from __future__ import annotations

from datetime import datetime

import msgspec
from msgspec import Raw

from ._events import NULL, ActivityTimeouts, EventRaised, UpdateCompleted
from ._failure import FailureDetails

__all__ = [
    "Action",
    "CancelTask",
    "CompleteUpdate",
    "CompleteWorkflow",
    "ContinueAsNew",
    "FailWorkflow",
    "RecordPatch",
    "ScheduleActivity",
    "SendEvent",
    "StartChildWorkflow",
    "StartTimer",
    "UpsertSearchAttributes",
]


class ScheduleActivity(msgspec.Struct, frozen=True):
    """Run activity ``name`` (attempt ``attempt`` of step ``step``). ``execution_id``
    is a remote worker's own id for the call, handed back to it with every attempt."""

    task_id: int
    name: str
    input: Raw
    attempt: int
    step: int
    execution_id: str = ""
    timeouts: ActivityTimeouts | None = None


class StartTimer(msgspec.Struct, frozen=True):
    """Fire a durable timer at ``fire_at``."""

    task_id: int
    fire_at: datetime
    purpose: str


class StartChildWorkflow(msgspec.Struct, frozen=True):
    """Start sub-workflow ``name`` as ``instance_id``; ``on_parent_close`` says what
    happens to it if it still runs when this run ends. ``replace_ended``: an ended
    instance of another parent (or none) that holds the id is replaced (Durable Task's
    rule), instead of failing the call. ``version``: the version it runs at (empty: the
    newest the registry knows)."""

    task_id: int
    name: str
    instance_id: str
    input: Raw
    on_parent_close: str = ""
    replace_ended: bool = False
    version: str = ""


class CancelTask(msgspec.Struct, frozen=True):
    """Cancel operation ``task_id``: its outcome is never applied; a running activity
    attempt is cancelled, a sub-workflow gets a cancel request."""

    task_id: int


class SendEvent(msgspec.Struct, frozen=True):
    """Send event ``name`` to instance ``instance_id``, once this turn commits."""

    task_id: int
    instance_id: str
    name: str
    input: Raw


class CompleteUpdate(msgspec.Struct, frozen=True):
    """Record the outcome of update ``update_id``: its handler's result, or failure."""

    update_id: str
    result: Raw = NULL
    failure: FailureDetails | None = None


class RecordPatch(msgspec.Struct, frozen=True):
    """Record that this run takes the patched path of ``patch_id``."""

    patch_id: str


class UpsertSearchAttributes(msgspec.Struct, frozen=True):
    """Set (or, with ``None``, remove) search attributes, encoded."""

    attributes: dict[str, str | None]


class CompleteWorkflow(msgspec.Struct, frozen=True):
    """End the run with a result."""

    result: Raw = NULL


class FailWorkflow(msgspec.Struct, frozen=True):
    """End the run with a failure."""

    failure: FailureDetails


class ContinueAsNew(msgspec.Struct, frozen=True):
    """End the run and start a fresh one with ``input``; ``updates``: the outcomes of the
    updates taken so far, which the new run answers a retry with."""

    input: Raw
    carryover: tuple[EventRaised, ...] = ()
    updates: tuple[UpdateCompleted, ...] = ()


Action = (
    ScheduleActivity
    | StartTimer
    | StartChildWorkflow
    | SendEvent
    | CompleteUpdate
    | RecordPatch
    | UpsertSearchAttributes
    | CancelTask
    | CompleteWorkflow
    | FailWorkflow
    | ContinueAsNew
)
