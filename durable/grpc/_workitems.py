"""Work items out, completions in: the worker side of the wire, per dialect.

:func:`encode_item` writes a :class:`~durable.grpc._dispatch.Item` as the ``WorkItem``
its stream's dialect reads, cutting a turn's ``pastEvents`` to a delta for a stream
whose worker caches the history (stateful history, Dapr 1.19). :func:`decode_turn` and
:func:`decode_activity` read ``CompleteOrchestratorTask`` / ``CompleteActivityTask``
in the dialect of the stream the item went to. :func:`detect_dialect` reads a
``GetWorkItemsRequest``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from durable._core._actions import CompleteWorkflow, ContinueAsNew, FailWorkflow

from . import _convert as cv
from ._dispatch import ActivityWork, Dialect, TurnWork, Warm
from ._framing import TURN_REQUEST, UndecodableError, field_chunk, parse, string_fields
from ._proto import dapr, ms
from ._remote import TurnOutcome

if TYPE_CHECKING:
    from durable._core._actions import Action
    from durable._core._events import ActivityCompleted, ActivityErrored

    from ._dispatch import Item, WorkerStream
    from ._pastcache import PastCache

__all__ = [
    "Envelope",
    "SentTurn",
    "decode_activity",
    "decode_turn",
    "detect_dialect",
    "encode_item",
    "encode_ping",
    "parse",
    "stream_options",
    "worker_limits",
]

_ENDS = (CompleteWorkflow, FailWorkflow, ContinueAsNew)

_MS_FIELDS = frozenset({1, 2, 3, 10, 11, 12})
_STATEFUL_HISTORY, _HEALTH_PING = 2, 3  # Dapr WorkerCapability values


@dataclass(frozen=True, slots=True)
class Envelope:
    """What both dialects' OrchestratorResponse / WorkflowResponse share and what a
    completion is matched by (fields 1 and 4): read first, before the dialect is known."""

    instance_id: str
    completion_token: str

    @classmethod
    def read(cls, data: bytes) -> Envelope:
        """The envelope of an encoded turn completion, either dialect."""
        try:
            fields = string_fields(data, (1, 4))
        except UndecodableError as err:
            raise UndecodableError(f"cannot parse the turn completion: {err}") from None
        return cls(fields.get(1, ""), fields.get(4, ""))


def detect_dialect(data: bytes) -> tuple[Dialect, set[int]]:
    """The dialect of a ``GetWorkItemsRequest`` and the Dapr capabilities it lists:
    any of fields 1-3 or 10-12 is Microsoft's; field 4 is Dapr's; nothing at all is
    the minimal mode (Dapr 1.18.3, durabletask-js)."""
    numbers = {number for number, _ in cv.wire_fields(data)}
    if numbers & _MS_FIELDS:
        return "ms", set()
    if 4 in numbers:
        request = parse(dapr.GetWorkItemsRequest, data)
        return "dapr", {int(c) for c in request.capabilities}
    return "minimal", set()


def stream_options(dialect: Dialect, capabilities: set[int]) -> tuple[bool, bool]:
    """(stateful history, health pings) for a stream: pings to MS streams (they
    reconnect after 120 s of silence) and to Dapr streams that accept them."""
    stateful = dialect == "dapr" and _STATEFUL_HISTORY in capabilities
    pings = dialect == "ms" or (dialect == "dapr" and _HEALTH_PING in capabilities)
    return stateful, pings


def worker_limits(dialect: Dialect, data: bytes) -> dict[str, int]:
    """The items an MS worker takes at once, from its ``GetWorkItemsRequest`` (its
    ``maxConcurrent*WorkItems``; 0: any); Dapr and minimal streams say nothing."""
    if dialect != "ms":
        return {}
    request = parse(ms.GetWorkItemsRequest, data)
    return {
        "max_turns": max(0, request.maxConcurrentOrchestrationWorkItems),
        "max_activities": max(0, request.maxConcurrentActivityWorkItems),
    }


@dataclass(frozen=True)
class SentTurn:
    """What went out for a turn (for measurements): messages in ``pastEvents`` and
    ``newEvents``, the ``cachedHistory.eventCount`` if it was a delta, and the size of
    the encoded ``WorkItem`` in bytes."""

    instance_id: str
    past: int
    new: int
    cached: int | None
    size: int


def encode_ping(dialect: Dialect) -> bytes:
    """A health-ping ``WorkItem`` (MS field 4, Dapr field 6)."""
    if dialect == "ms":
        return ms.WorkItem(healthPing={}).SerializeToString()
    return dapr.WorkItem(healthPing={}).SerializeToString()


def encode_item(
    stream: WorkerStream, item: Item, cache: PastCache
) -> tuple[bytes, SentTurn | None]:
    """``item`` as its stream's ``WorkItem``, and for a turn what was sent; ``cache``
    holds the converted histories of recent runs."""
    work = item.work
    if isinstance(work, ActivityWork):
        return _encode_activity(stream.dialect, work, item.wire_token), None
    if stream.dialect == "ms":
        past_ms = cache.ms(work)
        new_ms = cv.events_to_ms(work.new, instance_id=work.instance_id, task_base=work.task_base)
        head = ms.OrchestratorRequest(instanceId=work.instance_id,
                                      executionId=cv.text(work.run_id))  # fmt: skip
        tail = ms.OrchestratorRequest(newEvents=new_ms)
        data = _turn_item(
            head.SerializeToString(),
            past_ms,
            tail.SerializeToString(),
            ms.WorkItem(completionToken=item.wire_token).SerializeToString(),
        )
        return data, SentTurn(work.instance_id, len(past_ms), len(new_ms), None, len(data))
    past = cache.dapr(work)
    new = cv.events_to_dapr(work.new, instance_id=work.instance_id, task_base=work.task_base)
    full = len(past)
    cached: dapr.CachedHistory | None = None
    if stream.stateful:
        count = stream.cached(work)
        if 0 < count <= full:
            past, cached = past[count:], dapr.CachedHistory(eventCount=count)
        if work.past:
            stream.remember(work.instance_id, Warm(work.run_id, full, len(work.past),
                                                   work.past[-1]))  # fmt: skip
        else:
            stream.warm.pop(work.instance_id, None)
    head_d = dapr.WorkflowRequest(instanceId=work.instance_id,
                                  executionId=cv.text(work.run_id))  # fmt: skip
    tail_d = dapr.WorkflowRequest(newEvents=new, cachedHistory=cached)
    data = _turn_item(
        head_d.SerializeToString(),
        past,
        tail_d.SerializeToString(),
        dapr.WorkItem(completionToken=item.wire_token).SerializeToString(),
    )
    delta = cached.eventCount if cached else None
    return data, SentTurn(work.instance_id, len(past), len(new), delta, len(data))


def _turn_item(head: bytes, past: list[bytes], tail: bytes, rest: bytes) -> bytes:
    """A ``WorkItem`` whose turn request is ``head`` (fields 1-2), the encoded past
    events (field 3), then ``tail`` (fields 4 on); ``rest`` is the item's other fields.
    Field order as a protobuf encoder writes it, so the bytes are those of encoding the
    whole message, without encoding the history again."""
    request = b"".join((head, *past, tail))
    return field_chunk(TURN_REQUEST, request) + rest


def _encode_activity(dialect: Dialect, work: ActivityWork, token: str) -> bytes:
    scheduled = work.scheduled
    base = scheduled.task_id - work.wire_task_id
    if dialect == "ms":
        request = cv.activity_request_to_ms(
            scheduled, instance_id=work.instance_id, run_id=work.run_id, task_base=base,
            trace_parent=work.trace_parent,
        )  # fmt: skip
        return ms.WorkItem(activityRequest=request, completionToken=token).SerializeToString()
    dapr_request = cv.activity_request_to_dapr(
        scheduled, instance_id=work.instance_id, run_id=work.run_id, task_base=base,
        trace_parent=work.trace_parent,
    )  # fmt: skip
    return dapr.WorkItem(activityRequest=dapr_request, completionToken=token).SerializeToString()


def decode_turn(dialect: Dialect, data: bytes, work: TurnWork) -> TurnOutcome:
    """A completed turn, read in ``dialect``; raises :class:`ProtocolError` for an
    answer durable cannot apply."""
    response: ms.OrchestratorResponse | dapr.WorkflowResponse
    if dialect == "ms":
        response = parse(ms.OrchestratorResponse, data)
    else:
        response = parse(dapr.WorkflowResponse, data)
    actions: list[Action] = []
    for proto_action in response.actions:
        action = cv.action_from_proto(proto_action, task_base=work.task_base)
        if action is not None:
            actions.append(action)
    # durable records a turn's patches at its end, before the run's end if it ends
    ends = [a for a in actions if isinstance(a, _ENDS)]
    steps = [a for a in actions if not isinstance(a, _ENDS)]
    patches = cv.patches_from_proto(response, recorded=work.recorded_patches)
    status = cv.payload_in(response, "customStatus")
    return TurnOutcome([*steps, *patches, *ends], status)


def decode_activity(
    dialect: Dialect, data: bytes, work: ActivityWork, as_dapr: dapr.ActivityResponse | None = None
) -> ActivityCompleted | ActivityErrored:
    """A completed activity attempt, read in ``dialect``, as the event it reports
    (``as_dapr``: ``data`` parsed in Dapr's dialect already)."""
    response: ms.ActivityResponse | dapr.ActivityResponse
    if dialect == "ms":
        response = parse(ms.ActivityResponse, data)
    else:
        response = as_dapr if as_dapr is not None else parse(dapr.ActivityResponse, data)
    outcome = cv.activity_result_from_proto(response)
    return msgspec.structs.replace(outcome, task_id=work.scheduled.task_id)
