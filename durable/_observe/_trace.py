"""OpenTelemetry spans of runs, turns and activity attempts (imported only when the
``opentelemetry-api`` is installed).

Spans are recorded when something is committed or done, never while replaying: a
``turn`` span per committed turn, an ``activity {name}`` span per attempt, and one
``workflow {name}`` span per run, emitted by the process that commits the run's end
(commits happen exactly once, so it is emitted once). Times come from the runtime's
Clock. The ids of a run's span come from :func:`~durable._observe._ids.run_trace`.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from durable._core._events import EPOCH

from ._ids import format_traceparent, run_trace

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from durable._core._events import WorkflowStarted
    from durable._core._failure import FailureDetails

__all__ = ["Tracing", "current_trace_context"]

_NAME = "durable"
_MICROSECOND = timedelta(microseconds=1)
_EMPTY = otel_context.Context()
_attach, _detach, _set_span = otel_context.attach, otel_context.detach, trace.set_span_in_context


def _ns(when: datetime) -> int:
    return (when - EPOCH) // _MICROSECOND * 1000


def _trace_state(text: str) -> TraceState:
    return TraceState.from_header([text]) if text else TraceState()


def current_trace_context() -> tuple[str, str]:
    """The W3C ``(traceparent, tracestate)`` of the current span; empty if none."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return "", ""
    parent = format_traceparent(
        span_context.trace_id, span_context.span_id, int(span_context.trace_flags)
    )
    return parent, span_context.trace_state.to_header()


class _FixedIds:
    """An id generator that hands out one run's ids (see :func:`_with_ids`)."""

    def __init__(self, trace_id: int, span_id: int) -> None:
        self._trace_id, self._span_id = trace_id, span_id

    def generate_trace_id(self) -> int:
        return self._trace_id

    def generate_span_id(self) -> int:
        return self._span_id

    def is_trace_id_random(self) -> bool:
        return False


@contextlib.contextmanager
def _with_ids(tracer: trace.Tracer, trace_id: int, span_id: int) -> Iterator[None]:
    """Spans started inside get these ids. The API lets no caller choose a span id, so
    the SDK tracer's id generator is swapped for the one synchronous ``start_span``
    call (a proxy tracer is looked through); a tracer without one (a no-op) records
    nothing anyway."""
    real: Any = getattr(tracer, "_tracer", tracer)
    generator = getattr(real, "id_generator", None)
    if generator is None:
        yield
        return
    real.id_generator = _FixedIds(trace_id, span_id)
    try:
        yield
    finally:
        real.id_generator = generator


class Tracing:
    """Records a runtime's spans on ``provider`` (None: the global tracer provider).

    A turn or an attempt span carries the instance id and what is its own (seq, status,
    attempt); the run's name and id are on the ``workflow`` span it nests under."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(_NAME) if provider is None else provider.get_tracer(_NAME)
        self._start = self._tracer.start_span  # looked up once: it runs twice per step
        # the context of the last run seen: a run's turns and attempts come in a row
        self._last: tuple[WorkflowStarted | None, otel_context.Context] = (None, _EMPTY)

    def _inside(self, instance_id: str, started: WorkflowStarted) -> otel_context.Context:
        """A context whose current span is the run's ``workflow`` span."""
        last, context = self._last
        if last is started:
            return context
        run = run_trace(instance_id, started)
        span = NonRecordingSpan(
            SpanContext(
                run.trace_id, run.span_id, is_remote=True, trace_flags=TraceFlags(run.flags),
                trace_state=_trace_state(run.trace_state),
            )
        )  # fmt: skip
        context = trace.set_span_in_context(span, _EMPTY)
        self._last = (started, context)
        return context

    def turn(
        self,
        instance_id: str,
        started: WorkflowStarted,
        seq: int,
        status: str,
        start: datetime,
        end: datetime,
    ) -> None:
        """A committed turn: ``start`` when it began, ``end`` once committed."""
        span = self._start(
            "turn", self._inside(instance_id, started),
            attributes={"durable.instance_id": instance_id, "durable.seq": seq,
                        "durable.status": status},
            start_time=_ns(start),
        )  # fmt: skip
        span.end(_ns(end))

    def run_ended(
        self,
        instance_id: str,
        started: WorkflowStarted,
        status: str,
        failure: FailureDetails | None,
        end: datetime,
    ) -> None:
        """The ``workflow {name}`` span of a run that ended (or continued as new)."""
        run = run_trace(instance_id, started)
        parent = _EMPTY
        if run.parent_span_id:
            caller = SpanContext(
                run.trace_id, run.parent_span_id, is_remote=True,
                trace_flags=TraceFlags(run.flags), trace_state=_trace_state(run.trace_state),
            )  # fmt: skip
            parent = trace.set_span_in_context(NonRecordingSpan(caller), parent)
        attributes = {
            "durable.instance_id": instance_id, "durable.workflow": started.name,
            "durable.run_id": started.run_id, "durable.status": status,
        }  # fmt: skip
        with _with_ids(self._tracer, run.trace_id, run.span_id):
            span = self._tracer.start_span(
                f"workflow {started.name}", parent, attributes=attributes,
                start_time=_ns(started.timestamp),
            )  # fmt: skip
        if failure is not None:
            span.set_status(Status(StatusCode.ERROR, f"{failure.type}: {failure.message}"))
        span.end(end_time=_ns(end))

    def attempt_started(
        self, instance_id: str, started: WorkflowStarted, name: str, attempt: int, start: datetime
    ) -> tuple[trace.Span, object]:
        """The ``activity {name}`` span of one attempt, made current while it runs (a
        remote worker is handed its context; the activity's own spans nest under it)."""
        span = self._start(
            f"activity {name}", self._inside(instance_id, started),
            attributes={"durable.instance_id": instance_id, "durable.attempt": attempt},
            start_time=_ns(start),
        )  # fmt: skip
        return span, _attach(_set_span(span))

    def attempt_ended(
        self, running: tuple[trace.Span, object], status: str, failure: str | None, end: datetime
    ) -> None:
        """The attempt's span ends (``running``, from :meth:`attempt_started`), with its
        ``status`` and, if it failed, why."""
        span, token = running
        _detach(token)  # type: ignore[arg-type]
        span.set_attribute("durable.status", status)
        if failure is not None:
            span.set_status(Status(StatusCode.ERROR, failure))
        span.end(_ns(end))
