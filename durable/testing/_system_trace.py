"""Telemetry in the whole-system simulation: one recording tracer shared by every
simulated process, and what its spans must show at the end.

Spans are recorded only for what is committed or done, never while replaying; so
through crashes, reloads, evictions and partition moves between processes: no turn of
a run is recorded twice (its seq is unique under its run's span), no run's
``workflow`` span is emitted twice, and every span under a run's ``workflow`` span is in
that span's trace. Every run that ended has its ``workflow`` span, with the status it
ended with, unless the write that ended it landed while its writer was told it failed
(or died): then no process knows to emit it. The tracer needs only the
``opentelemetry-api``; without it the simulation runs untraced.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Container, Iterable, Iterator

__all__ = ["SpanLog"]


class Recorded(NamedTuple):
    """One ended span: name, ids, its parent's span id (0: none), attributes."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int
    attributes: dict[str, Any]


class _Ids:
    """Deterministic ids (a simulation never draws from the OS)."""

    def __init__(self) -> None:
        self._next: Iterator[int] = itertools.count(1)

    def generate_trace_id(self) -> int:
        return next(self._next) | 1 << 100

    def generate_span_id(self) -> int:
        return next(self._next) | 1 << 60

    def is_trace_id_random(self) -> bool:
        return False


class SpanLog:
    """Every span the simulated processes ended, in order."""

    def __init__(self) -> None:
        self.spans: list[Recorded] = []
        self.tracing = False  # a provider was handed out: the runtimes record here

    def provider(self) -> Any:
        """A tracer provider that records here; None without the ``opentelemetry-api``."""
        try:
            from opentelemetry import trace
        except ImportError:
            return None
        self.tracing = True
        return _provider(self, trace)

    def check_ends(
        self, ended: Iterable[tuple[str, str]], unsure: Container[str],
        violate: Callable[[str], None],
    ) -> None:  # fmt: skip
        """Each ``(instance id, status)`` of a run that ended has a ``workflow`` span of
        its own, but for instances in ``unsure`` (a write of their log landed while its
        writer was told otherwise)."""
        if not self.tracing:
            return
        emitted = Counter(
            (s.attributes.get("durable.instance_id"), str(s.attributes.get("durable.status")))
            for s in self.spans
            if s.name.startswith("workflow ")
        )
        for (instance_id, status), count in Counter(ended).items():
            spans = emitted[instance_id, status]
            if spans < count and instance_id not in unsure:
                violate(f"{instance_id!r} ended {status} {count} time(s), but its workflow "
                        f"span with that status was emitted {spans} time(s)")  # fmt: skip

    def check(self, violate: Callable[[str], None]) -> None:
        """The invariants of the recorded spans (see the module's docstring)."""
        turns = Counter(
            (s.parent_id, s.attributes.get("durable.seq")) for s in self.spans if s.name == "turn"
        )
        for (run_span, seq), count in turns.items():
            if count > 1:
                violate(f"turn seq {seq} of run span {run_span:x} recorded {count} times")
        workflows = Counter(s.span_id for s in self.spans if s.name.startswith("workflow "))
        for span_id, count in workflows.items():
            if count > 1:
                violate(f"the workflow span {span_id:x} of a run was emitted {count} times")
        traces = {s.span_id: s.trace_id for s in self.spans if s.name.startswith("workflow ")}
        for span in self.spans:
            run_trace = traces.get(span.parent_id)
            if run_trace is not None and span.trace_id != run_trace:
                violate(f"{span.name} span {span.span_id:x} is not in its run's trace")


def _provider(log: SpanLog, trace: Any) -> Any:
    """The recording provider, over the API's span types."""

    class Span(trace.NonRecordingSpan):  # type: ignore[misc]
        def __init__(self, name: str, context: Any, parent_id: int, attributes: Any) -> None:
            super().__init__(context)
            self._name, self._parent_id = name, parent_id
            self._attributes = dict(attributes or {})

        def is_recording(self) -> bool:
            return True

        def set_attribute(self, key: str, value: Any) -> None:
            self._attributes[key] = value

        def end(self, end_time: int | None = None) -> None:
            ids = self.get_span_context()
            log.spans.append(Recorded(self._name, ids.trace_id, ids.span_id, self._parent_id,
                                      self._attributes))  # fmt: skip

    class Tracer:
        def __init__(self) -> None:
            self.id_generator: Any = _Ids()

        def start_span(
            self, name: str, context: Any = None, kind: Any = None, attributes: Any = None,
            *args: Any, **kwargs: Any,
        ) -> Span:  # fmt: skip
            parent = trace.get_current_span(context).get_span_context()
            trace_id = parent.trace_id if parent.is_valid else self.id_generator.generate_trace_id()
            ids = trace.SpanContext(trace_id, self.id_generator.generate_span_id(), False)
            return Span(name, ids, parent.span_id if parent.is_valid else 0, attributes)

    class Provider:
        def __init__(self) -> None:
            self._tracer = Tracer()

        def get_tracer(self, *args: Any, **kwargs: Any) -> Tracer:
            return self._tracer

    return Provider()
