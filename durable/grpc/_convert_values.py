"""Values both wire dialects share: times, statuses, failure details, trace contexts,
and Dapr timer origins (see :mod:`durable.grpc._convert`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import betterproto
import msgspec
from betterproto.lib.google.protobuf import ListValue, NullValue, Struct, Timestamp, Value

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
        is_non_retriable=failure.non_retriable,
    )
    if failure.cause is not None:
        out.inner_failure = failure_to_ms(failure.cause)
    if failure.properties:
        properties = msgspec.json.decode(failure.properties, type=dict[str, object])
        out.properties = {key: _value_to_proto(value) for key, value in properties.items()}
    return out


def failure_to_dapr(failure: FailureDetails) -> dapr.TaskFailureDetails:
    """``failure`` as Dapr TaskFailureDetails (``bases`` and ``properties`` have no
    field: dropped)."""
    out = dapr.TaskFailureDetails(
        error_type=failure.type,
        error_message=failure.message,
        stack_trace=failure.stack_trace or None,
        is_non_retriable=failure.non_retriable,
    )
    if failure.cause is not None:
        out.inner_failure = failure_to_dapr(failure.cause)
    return out


def failure_from_proto(details: ms.TaskFailureDetails | dapr.TaskFailureDetails) -> FailureDetails:
    """durable's FailureDetails for TaskFailureDetails of either dialect (the two share
    fields 1-5; MS ``properties`` are kept as a JSON object)."""
    inner = details.inner_failure
    properties = getattr(details, "properties", None)
    carried = {key: _value_from_proto(value) for key, value in (properties or {}).items()}
    return FailureDetails(
        type=details.error_type,
        message=details.error_message,
        stack_trace=details.stack_trace or "",
        cause=failure_from_proto(inner) if present(inner) else None,
        non_retriable=details.is_non_retriable,
        properties=msgspec.json.encode(carried).decode() if carried else "",
    )


def _value_from_proto(value: Value) -> object:
    """The JSON value of a ``google.protobuf.Value`` (one with no kind is ``null``)."""
    kind, inner = betterproto.which_one_of(value, "kind")
    match kind:
        case "struct_value" if isinstance(inner, Struct):
            return {key: _value_from_proto(v) for key, v in inner.fields.items()}
        case "list_value" if isinstance(inner, ListValue):
            return [_value_from_proto(v) for v in inner.values]
        case "number_value" | "string_value" | "bool_value":
            return inner
    return None


def _value_to_proto(value: object) -> Value:
    """The ``google.protobuf.Value`` of a JSON value (integers become numbers)."""
    match value:
        case None:
            return Value(null_value=NullValue(0))
        case bool():
            return Value(bool_value=value)
        case int() | float():
            return Value(number_value=float(value))
        case str():
            return Value(string_value=value)
        case list():
            return Value(list_value=ListValue(values=[_value_to_proto(v) for v in value]))
        case dict():
            return Value(struct_value=Struct(
                fields={str(k): _value_to_proto(v) for k, v in value.items()}))  # fmt: skip
    raise ProtocolError(f"failure property of type {type(value).__name__}")


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
