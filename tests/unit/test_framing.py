"""Hand framing of turn work items: the sidecar's joined chunks are byte for byte what
encoding the whole message gives, and a worker's split reads them back lazily."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from msgspec import Raw
from msgspec.structs import replace

from durable._core._events import (
    ActivityCompleted,
    ActivityScheduled,
    HistoryEvent,
    TurnStarted,
    WorkflowStarted,
)
from durable.grpc import _convert as cv
from durable.grpc._convert import ProtocolError
from durable.grpc._dispatch import Dispatcher, Item, TurnWork
from durable.grpc._framing import LazyEvents, field_chunk, split_field, split_turn
from durable.grpc._pastcache import PastCache
from durable.grpc._proto import dapr, ms
from durable.grpc._remote import wire_order
from durable.grpc._workitems import encode_item

AT = datetime(2024, 5, 1, tzinfo=UTC)


def _history(steps: int) -> list[HistoryEvent]:
    events: list[HistoryEvent] = [
        WorkflowStarted(name="wf", input=Raw(b'{"n": 1}'), run_id="r1", first_task_id=0)
    ]
    for t in range(steps):
        events.append(TurnStarted())
        if t:
            events.append(ActivityCompleted(task_id=t - 1, result=Raw(b'"x' + b"y" * t + b'"')))
        events.append(ActivityScheduled(task_id=t, name="step", step=t, input=Raw(b"[1]")))
    return wire_order([replace(e, event_id=i, timestamp=AT) for i, e in enumerate(events)])


def _work(steps: int) -> TurnWork:
    new: list[HistoryEvent] = [
        TurnStarted(),
        ActivityCompleted(task_id=steps - 1, result=Raw(b"7")),
    ]
    return TurnWork("inst", "r1", _history(steps), new, 0)


@pytest.mark.parametrize("dialect", ["ms", "dapr"])
@pytest.mark.parametrize("stateful", [False, True])
def test_a_joined_turn_is_the_whole_message_encoded(dialect: str, stateful: bool) -> None:
    dispatcher = Dispatcher()
    stream = dispatcher.connect(dialect, stateful=stateful, pings=False)  # type: ignore[arg-type]
    cache = PastCache()
    try:
        for steps in (1, 3, 8):  # a growing history: the cache joins what it encoded before
            work = _work(steps)
            item = Item("item-1", work, wire_token="t-1.2", sends=2)
            data, sent = encode_item(stream, item, cache)
            assert sent is not None
            past, new = work.past, work.new
            if dialect == "ms":
                expected = ms.WorkItem(
                    orchestratorRequest=ms.OrchestratorRequest(
                        instanceId="inst", executionId=cv.text("r1"),
                        pastEvents=cv.events_to_ms(past, instance_id="inst", task_base=0),
                        newEvents=cv.events_to_ms(new, instance_id="inst", task_base=0)),
                    completionToken="t-1.2").SerializeToString()  # fmt: skip
            else:
                full = cv.events_to_dapr(past, instance_id="inst", task_base=0)
                cached = None
                if sent.cached is not None:
                    full, cached = full[sent.cached :], dapr.CachedHistory(eventCount=sent.cached)
                expected = dapr.WorkItem(
                    workflowRequest=dapr.WorkflowRequest(
                        instanceId="inst", executionId=cv.text("r1"), pastEvents=full,
                        newEvents=cv.events_to_dapr(new, instance_id="inst", task_base=0),
                        cachedHistory=cached),
                    completionToken="t-1.2").SerializeToString()  # fmt: skip
            assert data == expected
        if dialect == "dapr" and stateful:
            assert sent.cached is not None  # a delta was sent
            assert sent.past < len(work.past)
    finally:
        dispatcher.disconnect(stream)


def test_split_turn_reads_back_lazily_and_digests_tell_histories_apart() -> None:
    past = cv.events_to_dapr(_history(5), instance_id="inst", task_base=0)
    item = dapr.WorkItem(
        workflowRequest=dapr.WorkflowRequest(instanceId="inst", pastEvents=past),
        completionToken="tok",
    )
    split = split_turn(item.SerializeToString())
    assert split is not None
    rest, request, chunks = split
    assert dapr.WorkItem.FromString(rest).completionToken == "tok"
    assert dapr.WorkflowRequest.FromString(request).instanceId == "inst"
    lazy = LazyEvents(chunks, dapr.HistoryEvent)
    assert len(lazy) == len(past)
    assert lazy[-1] == past[-1]
    assert lazy[2:4] == past[2:4]
    assert list(lazy) == past
    with pytest.raises(IndexError):
        lazy[len(past)]
    # a payload changed in an early event changes the digest of every prefix holding it
    changed = list(past)
    changed[2] = dapr.HistoryEvent.FromString(past[2].SerializeToString().replace(b"step", b"stop"))
    assert changed[2] != past[2]
    other = LazyEvents(
        split_field(dapr.WorkflowRequest(pastEvents=changed).SerializeToString(), 3)[0],
        dapr.HistoryEvent,
    )
    assert other.digest(2) == lazy.digest(2)
    assert other.digest(len(past)) != lazy.digest(len(past))
    assert split_turn(dapr.WorkItem(completionToken="only").SerializeToString()) is None
    # the same bytes cut into events differently are not the same history
    a, b, c = chunks[0], chunks[1], chunks[2]
    one = LazyEvents([a + b, c], dapr.HistoryEvent)
    two = LazyEvents([a, b + c], dapr.HistoryEvent)
    assert one.digest(2) != two.digest(2)


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05ab",  # field 1 claims 5 bytes, has 2
        b"\x0a",  # a key, no length
        b"\x00\x01",  # field number 0
        b"\x0f\x01",  # wire type 7
        b"\x0a\x03\x1a\x09x",  # a past event running past its request
    ],
)
def test_malformed_work_items_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        split_turn(data)


def test_an_unparseable_past_event_is_a_protocol_error_when_read() -> None:
    lazy = LazyEvents([b"\x0a\xff"], dapr.HistoryEvent)  # a field longer than the event
    with pytest.raises(ProtocolError):
        lazy[0]


def test_field_chunk_frames_long_payloads() -> None:
    payload = b"z" * 300  # a two-byte length
    chunk = field_chunk(3, payload)
    assert split_field(chunk, 3) == ([payload], b"")
