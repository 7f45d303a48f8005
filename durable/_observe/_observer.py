"""The engine's one view of telemetry: what it calls after a commit and around an
activity attempt. Spans and metrics are each optional; with neither, the runtime holds
no observer at all and the engine skips these calls."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from durable._core._events import ActivityErrored
from durable._core._state import WorkflowStatus
from durable._log._reader import record_outcome

from ._ids import run_trace

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from durable._clock import Clock
    from durable._core._events import ActivityScheduled, Event, WorkflowStarted
    from durable._log._records import TurnRecord

    from ._metrics import Metrics
    from ._trace import Tracing

__all__ = ["Observer"]

_NOT_YET = (WorkflowStatus.PENDING, WorkflowStatus.SUSPENDED)


class Observer:
    """Records a runtime's spans (``tracing``) and metrics (``metrics``) on its Clock."""

    def __init__(self, clock: Clock, tracing: Tracing | None, metrics: Metrics | None) -> None:
        self.clock = clock
        self.tracing = tracing
        self.metrics = metrics

    def committed(
        self, instance_id: str, started: WorkflowStarted, previous: str, record: TurnRecord
    ) -> None:
        """A turn of the run ``started`` was committed; the instance was ``previous``
        before it. Its first turn starts the run; a terminal status or a next run ends it."""
        now = self.clock.now()
        begun = record.events[0].timestamp if record.events else now
        status = record.status
        ended = status in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED,
                           WorkflowStatus.TERMINATED) or bool(record.next_run)  # fmt: skip
        if self.tracing is not None:
            self.tracing.turn(instance_id, started, record.seq, status, begun, now)
        if self.metrics is not None:
            labels = {"workflow": started.name}
            self.metrics.turn_duration.record((now - begun).total_seconds(), labels)
            if previous == WorkflowStatus.PENDING and (status not in _NOT_YET or record.next_run):
                self.metrics.started.add(1, labels)
        if not ended:
            return
        final = WorkflowStatus.CONTINUED_AS_NEW if record.next_run else WorkflowStatus(status)
        if self.tracing is not None:
            failure = None if record.next_run else record_outcome(record)[1]
            self.tracing.run_ended(instance_id, started, final, failure, now)
        if self.metrics is not None:
            self.metrics.ended.add(1, {"workflow": started.name, "status": final.value})

    @contextlib.contextmanager
    def attempt(
        self, instance_id: str, started: WorkflowStarted, scheduled: ActivityScheduled
    ) -> Iterator[Callable[[Event], None]]:
        """Around one activity attempt; the caller hands its outcome to the function
        this yields. An attempt that never comes back (cancelled) counts as abandoned."""
        began = self.clock.now()
        spans: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext(None)
            if self.tracing is None
            else self.tracing.attempt(
                instance_id, started, scheduled.name, scheduled.attempt, began
            )
        )
        outcome: list[Event] = []
        with spans as seen:
            try:
                yield outcome.append
            finally:
                end = self.clock.now()
                came = outcome[0] if outcome else None
                status = "abandoned" if came is None else "completed"
                if isinstance(came, ActivityErrored):
                    status = "failed"
                if seen is not None:
                    seen.status, seen.end = status, end
                    if isinstance(came, ActivityErrored):
                        seen.failure = f"{came.failure.type}: {came.failure.message}"
                if self.metrics is not None:
                    labels = {"activity": scheduled.name, "outcome": status}
                    self.metrics.attempts.add(1, labels)
                    self.metrics.activity_duration.record(
                        (end - began).total_seconds(), {"activity": scheduled.name}
                    )

    def child_trace_parent(self, instance_id: str, started: WorkflowStarted) -> str:
        """The ``traceparent`` a sub-workflow of this run starts under: the run's span."""
        return run_trace(instance_id, started).traceparent if self.tracing is not None else ""
