"""The engine's one view of telemetry: what it calls after a commit and around an
activity attempt. Spans and metrics are each optional; with neither, the runtime holds
no observer at all and the engine skips these calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from durable._core._events import ActivityErrored
from durable._core._state import WorkflowStatus
from durable._log._reader import record_outcome

from ._ids import run_trace

if TYPE_CHECKING:
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
                self.metrics.started.count(started.name)
        if not ended:
            return
        final = WorkflowStatus.CONTINUED_AS_NEW if record.next_run else WorkflowStatus(status)
        if self.tracing is not None:
            failure = None if record.next_run else record_outcome(record)[1]
            self.tracing.run_ended(instance_id, started, final, failure, now)
        if self.metrics is not None:
            self.metrics.ended.count(started.name, final.value)

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

    __slots__ = ("_began", "_observer", "_span", "_token", "instance_id", "outcome",
                 "scheduled", "started")  # fmt: skip

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
        self._token: object = None

    def seen(self, outcome: Event) -> None:
        """The attempt's outcome (its completion or failure event)."""
        self.outcome = outcome

    def __enter__(self) -> _Attempt:
        observer = self._observer
        self._began = observer.clock.now()
        if observer.tracing is not None:
            self._span, self._token = observer.tracing.attempt_started(
                self.instance_id, self.started, self.scheduled.name, self.scheduled.attempt,
                self._began,
            )  # fmt: skip
        return self

    def __exit__(self, *exc_info: object) -> None:
        observer = self._observer
        end = observer.clock.now()
        came = self.outcome
        status = "abandoned" if came is None else "completed"
        failure = None
        if isinstance(came, ActivityErrored):
            status, failure = "failed", f"{came.failure.type}: {came.failure.message}"
        if observer.tracing is not None:
            observer.tracing.attempt_ended(self._span, self._token, status, failure, end)
        metrics = observer.metrics
        if metrics is not None:
            name = self.scheduled.name
            metrics.attempts.count(name, status)
            metrics.activity_duration.record((end - self._began).total_seconds(),
                                             {"activity": name})  # fmt: skip
