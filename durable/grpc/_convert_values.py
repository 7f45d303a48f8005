"""Values both wire dialects share: times, statuses, failure details, trace contexts,
and Dapr timer origins (see :mod:`durable.grpc._convert`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from google.protobuf.struct_pb2 import ListValue, Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp
from google.protobuf.wrappers_pb2 import StringValue

from durable._core._events import NULL
from durable._core._failure import FailureDetails
from durable._core._state import WorkflowStatus
from durable.grpc._dialect import DAPR, MS, STATUS_NUMBERS, Dialect
from durable.grpc._framing import ProtocolError
from durable.grpc._payload import payload_from_proto, payload_to_proto
from durable.grpc._proto import dapr, ms

if TYPE_CHECKING:
    from google.protobuf.message import Message
    from msgspec import Raw

__all__ = [
    "NEVER",
    "dapr_timer_purpose",
    "failure_from_proto",
    "failure_to_dapr",
    "failure_to_ms",
    "failure_to_proto",
    "status_from_proto",
    "status_to_dapr",
    "status_to_ms",
    "payload_in",
    "payload_out",
    "text",
    "time_from_proto",
    "timer_origin",
    "time_to_proto",
    "trace_context_from_proto",
    "trace_context_to_dapr",
    "trace_context_to_ms",
]


NEVER = datetime.max.replace(tzinfo=UTC)
"""``datetime.max``: durable's side of Dapr's "never" timer sentinel."""

F = TypeVar("F")

_NEVER_SECONDS, _NEVER_NANOS = 253_402_300_799, 999_999_999
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def time_to_proto(at: datetime) -> Timestamp:
    """A Timestamp for ``at`` (naive means UTC), with the "never" sentinel to the
    nanosecond: ``datetime.max`` has microseconds only, Dapr compares 999,999,999 nanos."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if at == NEVER:
        return Timestamp(seconds=_NEVER_SECONDS, nanos=_NEVER_NANOS)
    since = at - _EPOCH  # exact integer parts, as FromDatetime gives, without its time tuple
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def time_from_proto(at: Timestamp) -> datetime:
    """The UTC datetime of a Timestamp (to the microsecond), the "never" sentinel back to
    :data:`NEVER`."""
    if at.seconds >= _NEVER_SECONDS and at.nanos >= _NEVER_NANOS - 999:
        return NEVER
    return at.ToDatetime(tzinfo=UTC)


def payload_in(message: Message, field: str) -> Raw:
    """The stored payload of a StringValue field of ``message``: absent is ``null``; any
    text, empty and ``null`` included, is kept as sent (see :mod:`durable.grpc._payload`)."""
    if not message.HasField(field):
        return NULL
    value: StringValue = getattr(message, field)
    return payload_from_proto(value.value)


def payload_out(payload: Raw) -> StringValue | None:
    """The StringValue for a stored payload: ``None`` (absent) for ``null``, else the
    text, empty included."""
    text = payload_to_proto(payload)
    return None if text is None else StringValue(value=text)


def text(value: str | None) -> StringValue | None:
    """A StringValue holding ``value``; ``None`` (the field left absent) for ``None`` or
    the empty string, which the SDKs read alike."""
    return StringValue(value=value) if value else None


_STATUS_BACK = {number: status for status, number in STATUS_NUMBERS.items()}
_STALLED = 8
_MS_STATUS: dict[WorkflowStatus, ms.OrchestrationStatus] = dict(MS.statuses)
_DAPR_STATUS: dict[WorkflowStatus, dapr.OrchestrationStatus] = dict(DAPR.statuses)


def status_to_ms(status: WorkflowStatus) -> ms.OrchestrationStatus:
    """The MS OrchestrationStatus of ``status``."""
    return _MS_STATUS[status]


def status_to_dapr(status: WorkflowStatus) -> dapr.OrchestrationStatus:
    """The Dapr OrchestrationStatus of ``status``."""
    return _DAPR_STATUS[status]


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


def failure_to_proto(dialect: Dialect[Any, Any, F, Any], failure: FailureDetails) -> F:
    """``failure`` as the dialect's TaskFailureDetails (``bases`` has no field, nor has
    ``properties`` in the Dapr dialect: dropped)."""
    cause = None if failure.cause is None else failure_to_proto(dialect, failure.cause)
    carried: dict[str, Any] = {}
    if failure.properties and dialect.failure_properties:
        properties = msgspec.json.decode(failure.properties, type=dict[str, object])
        carried["properties"] = {key: _value_to_proto(v) for key, v in properties.items()}
    return dialect.failure(
        errorType=failure.type,
        errorMessage=failure.message,
        stackTrace=text(failure.stack_trace),
        innerFailure=cause,
        isNonRetriable=failure.non_retriable,
        **carried,
    )


def failure_to_ms(failure: FailureDetails) -> ms.TaskFailureDetails:
    """``failure`` as MS TaskFailureDetails; see :func:`failure_to_proto`."""
    return failure_to_proto(MS, failure)


def failure_to_dapr(failure: FailureDetails) -> dapr.TaskFailureDetails:
    """``failure`` as Dapr TaskFailureDetails; see :func:`failure_to_proto`."""
    return failure_to_proto(DAPR, failure)


def failure_from_proto(details: ms.TaskFailureDetails | dapr.TaskFailureDetails) -> FailureDetails:
    """durable's FailureDetails for TaskFailureDetails of either dialect (the two share
    fields 1-5; MS ``properties`` are kept as a JSON object)."""
    properties = details.properties if isinstance(details, ms.TaskFailureDetails) else {}
    carried = {key: _value_from_proto(value) for key, value in properties.items()}
    return FailureDetails(
        type=details.errorType,
        message=details.errorMessage,
        stack_trace=details.stackTrace.value,
        cause=failure_from_proto(details.innerFailure)
        if details.HasField("innerFailure")
        else None,
        non_retriable=details.isNonRetriable,
        properties=msgspec.json.encode(carried).decode() if carried else "",
    )


def _value_from_proto(value: Value) -> object:
    """The JSON value of a ``google.protobuf.Value`` (one with no kind is ``null``)."""
    match value.WhichOneof("kind"):
        case "struct_value":
            return {key: _value_from_proto(v) for key, v in value.struct_value.fields.items()}
        case "list_value":
            return [_value_from_proto(v) for v in value.list_value.values]
        case "number_value":
            return value.number_value
        case "string_value":
            return value.string_value
        case "bool_value":
            return value.bool_value
    return None


def _value_to_proto(value: object) -> Value:
    """The ``google.protobuf.Value`` of a JSON value (integers become numbers)."""
    match value:
        case None:
            return Value(null_value=0)  # type: ignore[arg-type]
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


def trace_context_from_proto(
    context: ms.TraceContext | dapr.TraceContext,
) -> tuple[str, str] | None:
    """A W3C ``(traceparent, tracestate)`` an SDK sent (``parentTraceContext``); None if
    it sent none (an absent context reads as an empty one)."""
    if not context.traceParent:
        return None
    return context.traceParent, context.traceState.value


def trace_context_to_ms(parent: str, state: str = "") -> ms.TraceContext:
    return ms.TraceContext(traceParent=parent, traceState=text(state))


def trace_context_to_dapr(parent: str, state: str = "") -> dapr.TraceContext:
    return dapr.TraceContext(traceParent=parent, traceState=text(state))


# ---------------------------------------------------------------------------------------
# Dapr timer origins
# ---------------------------------------------------------------------------------------

_PURPOSE_TO_ORIGIN = {
    "sleep": "createTimer",
    "retry": "activityRetry",
    "event_timeout": "externalEvent",
}
_ORIGIN_TO_PURPOSE = {
    "createTimer": "sleep",
    "activityRetry": "retry",
    "childWorkflowRetry": "retry",
    "externalEvent": "event_timeout",
}


def timer_origin(dialect: Dialect[Any, Any, Any, Any], purpose: str) -> dict[str, Any]:
    """The fields that record ``purpose`` in a timer's ``origin`` where the dialect has
    one (names and ids are not known)."""
    origin = _PURPOSE_TO_ORIGIN.get(purpose) if dialect.timer_origins else None
    return {} if origin is None else {origin: {}}


def dapr_timer_purpose(timer: dapr.TimerCreatedEvent | dapr.CreateTimerAction) -> str:
    return _ORIGIN_TO_PURPOSE.get(timer.WhichOneof("origin") or "", "sleep")
