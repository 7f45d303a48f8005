"""Rewind: a failed run goes on as a new run, its failed steps to run again.

The log is append-only, so a rewind rewrites nothing: like a rerun, it writes a new
run after the failed one's last record (put-if-absent, so it happens once), whose
history is the failed run's with these left out:

* the run's end (``WorkflowErrored``, and ``ExecutionTimedOut`` if that ended it);
* each failure of an activity or sub-workflow that the code did not handle: one after
  which the code decided nothing more (scheduled nothing, cancelled nothing, answered
  no update). A failure the code went on from (a retry's next attempt, a ``try``
  around the call) stays: the code's later decisions depend on it.

Every decision the history keeps was made before the failures it drops, so the code
replays it as it ran. The scheduling events of the dropped failures stay: those steps
are open again, and the engine dispatches them (under their task ids and steps, so an
activity's memo carries over as for a retry; an activity with a retry policy runs its
last attempt again, once). Everything that succeeded keeps its result and does not run
again. A ``WorkflowRewound`` event after the kept history records the rewind.

The new run has its own run id (answers addressed to the failed run never reach it)
and keeps the failed run's seed (replayed values stay the same). It lists the failed
run in ``WorkflowStarted.rewinds``: a sub-workflow the failed run started and that
failed is rewound with it (see ``durable._engine._children``), not started anew.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from durable._core._events import (
    ActivityErrored,
    ActivityScheduled,
    ChildWorkflowErrored,
    ChildWorkflowScheduled,
    EventSent,
    ExecutionTimedOut,
    HistoryEvent,
    ParentRef,
    PatchApplied,
    TaskCancelled,
    TimerCreated,
    UpdateCompleted,
    WorkflowErrored,
    WorkflowRewound,
)
from durable._core._state import WorkflowStatus
from durable._errors import InstanceStatusError

from ._instances import Created, load_existing, start_after

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from ._active import ActiveIndex
    from ._reader import RunLog

__all__ = ["rewind_instance", "rewound_history"]

# what the code decides: a failure before one of these may have led to it, so it stays
_DECISIONS = (
    ActivityScheduled, TimerCreated, ChildWorkflowScheduled, EventSent, TaskCancelled,
    PatchApplied, UpdateCompleted,
)  # fmt: skip
_FAILURES = (ActivityErrored, ChildWorkflowErrored)
_ENDS = (WorkflowErrored, ExecutionTimedOut)


def rewound_history(
    run: RunLog, run_id: str, now: datetime, reason: str = "", parent: ParentRef | None = None
) -> list[HistoryEvent]:
    """The history of the run that rewinds the failed ``run``: see the module's doc.
    ``parent``: the new run's parent link (a sub-workflow rewound with its parent
    answers the parent's new run); by default the failed run's."""
    history = run.history
    last_decision = max(
        (i for i, event in enumerate(history) if isinstance(event, _DECISIONS)), default=0
    )
    kept = [
        event
        for i, event in enumerate(history[1:], 1)
        if not isinstance(event, _ENDS) and not (isinstance(event, _FAILURES) and i > last_decision)
    ]
    failed = run.started
    started = msgspec.structs.replace(
        failed,
        run_id=run_id,
        seed=failed.replay_seed,
        origin="",  # a new start: what was sent to the failed run is not for it
        rewinds=(*failed.rewinds, failed.run_id),
        parent=parent if parent is not None else failed.parent,
    )
    mark = WorkflowRewound(timestamp=now, run_id=failed.run_id, reason=reason)
    events: list[HistoryEvent] = [started, *kept, mark]
    return [msgspec.structs.replace(e, event_id=i) for i, e in enumerate(events)]


async def rewind_instance(
    index: ActiveIndex,
    now: datetime,
    instance_id: str,
    *,
    run_id: str,
    reason: str = "",
    parent: ParentRef | None = None,
    holder: ParentRef | None = None,
    check: Callable[[list[HistoryEvent]], None] | None = None,
) -> Created:
    """Write the run that rewinds the instance's failed current run (``run_id``);
    ``InstanceStatusError`` if the run did not fail. ``holder``: rewind only if the
    failed run is the sub-workflow of that call (its parent's rewind; else
    ``InstanceStatusError``: another run took the id). ``check`` sees the new history
    before anything is written, and raises to refuse the rewind (e.g.
    ``NonDeterminismError``: the code no longer replays it). ``InstanceExistsError``
    if another run began meanwhile."""
    run = await load_existing(index.store, instance_id)
    if run.status is not WorkflowStatus.FAILED:
        raise InstanceStatusError(instance_id, run.status, "only a FAILED instance can be rewound")
    called = run.started.parent
    if holder is not None and (called is None or not called.same_run(holder)):
        raise InstanceStatusError(
            instance_id, run.status, "it is no longer the sub-workflow of that call"
        )
    history = rewound_history(run, run_id, now, reason, parent)
    if check is not None:
        check(history)
    return await start_after(index, run, history, now)
