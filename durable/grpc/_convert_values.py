"""Values both wire dialects share: times, statuses, failure details, trace contexts,
and Dapr timer origins (see :mod:`durable.grpc._convert`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import betterproto
from betterproto.lib.google.protobuf import Timestamp

from durable._core._failure import FailureDetails
from durable._core._state import WorkflowStatus
from durable.grpc._framing import ProtocolError
from durable.grpc._proto import dapr, ms

__all__ = [
    "NEVER",
    "dapr_timer_origin",
    "dapr_timer_purpose",
    "failure_from_proto",
    "failure_to_dapr",
    "failure_to_ms",
    "present",
    "status_from_proto",
    "status_to_dapr",
    "status_to_ms",
    "time_to_proto",
    "trace_context_from_proto",
    "trace_context_to_dapr",
    "trace_context_to_ms",
]


NEVER = datetime.max.replace(tzinfo=UTC)
"""``datetime.max``: durable's side of Dapr's "never" timer sentinel."""

_NEVER_SECONDS, _NEVER_NANOS = 253_402_300_799, 999_999_999


def time_to_proto(at: datetime) -> datetime:
    """A datetime for a Timestamp field: UTC, and the "never" sentinel to the nanosecond.

    betterproto encodes datetimes with microseconds only; a Timestamp message placed in
    the field is encoded as is, which is how ``NEVER`` keeps its 999,999,999 nanos.
    """
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if at == NEVER:
        return cast("datetime", Timestamp(seconds=_NEVER_SECONDS, nanos=_NEVER_NANOS))
    return at


_STATUS = {
    WorkflowStatus.RUNNING: 0,
    WorkflowStatus.COMPLETED: 1,
    WorkflowStatus.CONTINUED_AS_NEW: 2,
    WorkflowStatus.FAILED: 3,
    WorkflowStatus.TERMINATED: 5,
    WorkflowStatus.PENDING: 6,
    WorkflowStatus.SUSPENDED: 7,
    WorkflowStatus.CANCELED: 4,
}
_STATUS_BACK = {number: status for status, number in _STATUS.items()}
_STALLED = 8


def status_to_ms(status: WorkflowStatus) -> ms.OrchestrationStatus:
    """The MS OrchestrationStatus of ``status``."""
    return ms.OrchestrationStatus(_STATUS[status])


def status_to_dapr(status: WorkflowStatus) -> dapr.OrchestrationStatus:
    """The Dapr OrchestrationStatus of ``status``."""
    return dapr.OrchestrationStatus(_STATUS[status])


def status_from_proto(status: int) -> WorkflowStatus:
    """durable's status for an OrchestrationStatus of either dialect: Dapr's STALLED
    (stuck until an operator acts) counts as RUNNING."""
    number = int(status)
    if number == _STALLED:
        return WorkflowStatus.RUNNING
    try:
        return _STATUS_BACK[number]
    except KeyError:
        raise ProtocolError(f"unknown OrchestrationStatus {number}") from None


def failure_to_ms(failure: FailureDetails) -> ms.TaskFailureDetails:
    """``failure`` as MS TaskFailureDetails (``bases`` has no field: dropped)."""
    out = ms.TaskFailureDetails(
        error_type=failure.type,
        error_message=failure.message,
        stack_trace=failure.stack_trace or None,
    )
    if failure.cause is not None:
        out.inner_failure = failure_to_ms(failure.cause)
    return out


def failure_to_dapr(failure: FailureDetails) -> dapr.TaskFailureDetails:
    """``failure`` as Dapr TaskFailureDetails (``bases`` has no field: dropped)."""
    out = dapr.TaskFailureDetails(
        error_type=failure.type,
        error_message=failure.message,
        stack_trace=failure.stack_trace or None,
    )
    if failure.cause is not None:
        out.inner_failure = failure_to_dapr(failure.cause)
    return out


def failure_from_proto(details: ms.TaskFailureDetails | dapr.TaskFailureDetails) -> FailureDetails:
    """durable's FailureDetails for TaskFailureDetails of either dialect (the two share
    fields 1-5; ``isNonRetriable`` and MS ``properties`` are dropped)."""
    inner = details.inner_failure
    return FailureDetails(
        type=details.error_type,
        message=details.error_message,
        stack_trace=details.stack_trace or "",
        cause=failure_from_proto(inner) if present(inner) else None,
    )


def present(message: betterproto.Message) -> bool:
    """Whether a sub-message was set (betterproto returns a default one when not)."""
    return betterproto.serialized_on_wire(message)


def trace_context_from_proto(
    context: ms.TraceContext | dapr.TraceContext | None,
) -> tuple[str, str] | None:
    """A W3C ``(traceparent, tracestate)`` an SDK sent (``parentTraceContext``); None if
    it sent none."""
    if context is None or not present(context) or not context.trace_parent:
        return None
    return context.trace_parent, context.trace_state or ""


def trace_context_to_ms(parent: str, state: str = "") -> ms.TraceContext:
    return ms.TraceContext(trace_parent=parent, trace_state=state or None)


def trace_context_to_dapr(parent: str, state: str = "") -> dapr.TraceContext:
    return dapr.TraceContext(trace_parent=parent, trace_state=state or None)


# ---------------------------------------------------------------------------------------
# Dapr timer origins
# ---------------------------------------------------------------------------------------

_PURPOSE_TO_ORIGIN = {
    "sleep": "create_timer",
    "retry": "activity_retry",
    "event_timeout": "external_event",
}
_ORIGIN_TO_PURPOSE = {
    "create_timer": "sleep",
    "activity_retry": "retry",
    "child_workflow_retry": "retry",
    "external_event": "event_timeout",
}


def dapr_timer_origin(timer: dapr.TimerCreatedEvent | dapr.CreateTimerAction, purpose: str) -> None:
    """Record ``purpose`` in the timer's ``origin`` (names and ids are not known)."""
    match _PURPOSE_TO_ORIGIN.get(purpose):
        case "create_timer":
            timer.create_timer = dapr.TimerOriginCreateTimer()
        case "activity_retry":
            timer.activity_retry = dapr.TimerOriginActivityRetry()
        case "external_event":
            timer.external_event = dapr.TimerOriginExternalEvent()


def dapr_timer_purpose(timer: dapr.TimerCreatedEvent | dapr.CreateTimerAction) -> str:
    origin, _ = betterproto.which_one_of(timer, "origin")
    return _ORIGIN_TO_PURPOSE.get(origin, "sleep")
