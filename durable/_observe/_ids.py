"""W3C trace context, and the trace ids of a run: pure functions, no OpenTelemetry needed.

A run's ``workflow`` span outlives any one process (it may start in one and end in
another after a crash), so its ids cannot come from a live span: they are derived from
what the log holds. The trace is the one of the caller of ``start()`` (its
``traceparent``, stored on ``WorkflowStarted``), or, when there was none, one derived
from the instance and run ids; the span id is derived from the instance and run ids.
Every process computes the same ids, so turns and activity attempts that any process
records nest under the one ``workflow`` span emitted when the run ends.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from durable._core._events import WorkflowStarted

__all__ = ["RunTrace", "format_traceparent", "parse_traceparent", "run_trace"]

_SAMPLED = 0x01


def parse_traceparent(text: str) -> tuple[int, int, int] | None:
    """``(trace_id, span_id, flags)`` of a W3C ``traceparent``; None if it is not one."""
    parts = text.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    version, trace_hex, span_hex, flags_hex = parts[:4]
    if len(trace_hex) != 32 or len(span_hex) != 16 or len(flags_hex) != 2:
        return None
    if version == "00" and len(parts) != 4:
        return None
    try:
        trace_id, span_id, flags = int(trace_hex, 16), int(span_hex, 16), int(flags_hex, 16)
    except ValueError:
        return None
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, flags


def format_traceparent(trace_id: int, span_id: int, flags: int = _SAMPLED) -> str:
    """A version-00 W3C ``traceparent``."""
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


class RunTrace(NamedTuple):
    """Where a run's spans go: its trace, the span id of its ``workflow`` span, the
    caller's span it nests under (0: none, the run is a trace of its own)."""

    trace_id: int
    span_id: int
    flags: int
    parent_span_id: int
    trace_state: str

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` of the run's ``workflow`` span (for children, workers)."""
        return format_traceparent(self.trace_id, self.span_id, self.flags)


def run_trace(instance_id: str, started: WorkflowStarted) -> RunTrace:
    """The trace ids of the run that ``started`` began, the same in every process."""
    digest = hashlib.blake2b(
        f"{instance_id}\0{started.run_id}".encode(), digest_size=24, person=b"durable-run"
    ).digest()
    span_id = int.from_bytes(digest[16:], "big") or 1
    caller = parse_traceparent(started.trace_parent) if started.trace_parent else None
    if caller is not None:
        trace_id, parent_span_id, flags = caller
        return RunTrace(trace_id, span_id, flags, parent_span_id, started.trace_state)
    trace_id = int.from_bytes(digest[:16], "big") or 1
    return RunTrace(trace_id, span_id, _SAMPLED, 0, "")
