"""The engine's one view of telemetry: what it calls after a commit and around an
activity attempt. Spans and metrics are each optional; with neither, the runtime holds
no observer at all and the engine skips these calls.

These calls run once per turn and per attempt, on the engine's hot path: each reads the
Clock once and does no more than its spans and metrics need (see
``benchmarks/_telemetry.py`` for what they cost against the SDK's own calls)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from durable._core._events import ActivityErrored
from durable._core._state import TERMINAL, WorkflowStatus
from durable._log._reader import record_outcome

from ._ids import run_trace

if TYPE_CHECKING:
    from durable._clock import Clock
    from durable._core._events import ActivityScheduled, Event, WorkflowStarted
    from durable._log._records import TurnRecord

    from ._metrics import Metrics
    from ._trace import Tracing

__all__ = ["Observer"]

_NOT_YET = frozenset({WorkflowStatus.PENDING, WorkflowStatus.SUSPENDED})


class Observer:
    """Records a runtime's spans (``tracing``) and metrics (``metrics``) on its Clock."""

    __slots__ = ("clock", "metrics", "tracing")

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
        events = record.events
        begun = events[0].timestamp if events else now
        status = record.status
        next_run = record.next_run
        tracing, metrics = self.tracing, self.metrics
        if tracing is not None:
            tracing.turn(instance_id, started, record.seq, status, begun, now)
        if metrics is not None:
            first = previous == WorkflowStatus.PENDING and (status not in _NOT_YET or next_run)
            metrics.turn(started.name, (now - begun).total_seconds(), bool(first))
        if not next_run and status not in TERMINAL:
            return
        final = WorkflowStatus.CONTINUED_AS_NEW if next_run else WorkflowStatus(status)
        if tracing is not None:
            failure = None if next_run else record_outcome(record)[1]
            tracing.run_ended(instance_id, started, final, failure, now)
        if metrics is not None:
            metrics.ended.count(started.name, final.value)

    def attempt(
        self, instance_id: str, started: WorkflowStarted, scheduled: ActivityScheduled
    ) -> _Attempt:
        """Around one activity attempt (``with``): the caller hands its outcome to the
        object's ``seen``. An attempt that never comes back (cancelled) counts as
        abandoned."""
        return _Attempt(self, instance_id, started, scheduled)

    def child_trace_parent(self, instance_id: str, started: WorkflowStarted) -> str:
        """The ``traceparent`` a sub-workflow of this run starts under: the run's span."""
        return run_trace(instance_id, started).traceparent if self.tracing is not None else ""


class _Attempt:
    """One activity attempt under way: its span (current meanwhile) and its metrics."""

    __slots__ = ("_began", "_observer", "_span", "instance_id", "outcome", "scheduled",
                 "started")  # fmt: skip

    def __init__(
        self,
        observer: Observer,
        instance_id: str,
        started: WorkflowStarted,
        scheduled: ActivityScheduled,
    ) -> None:
        self._observer = observer
        self.instance_id, self.started, self.scheduled = instance_id, started, scheduled
        self.outcome: Event | None = None
        self._span: Any = None

    def seen(self, outcome: Event) -> None:
        """The attempt's outcome (its completion or failure event)."""
        self.outcome = outcome

    def __enter__(self) -> _Attempt:
        observer = self._observer
        self._began = began = observer.clock.now()
        tracing = observer.tracing
        if tracing is not None:
            scheduled = self.scheduled
            self._span = tracing.attempt_started(
                self.instance_id, self.started, scheduled.name, scheduled.attempt, began
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        observer = self._observer
        end = observer.clock.now()
        came = self.outcome
        if came is None:
            status, failure = "abandoned", None
        elif isinstance(came, ActivityErrored):
            status, failure = "failed", f"{came.failure.type}: {came.failure.message}"
        else:
            status, failure = "completed", None
        if observer.tracing is not None:
            observer.tracing.attempt_ended(self._span, status, failure, end)
        if observer.metrics is not None:
            observer.metrics.attempted(self.scheduled.name, status,
                                       (end - self._began).total_seconds())  # fmt: skip
