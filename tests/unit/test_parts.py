"""Small pure parts: ids, retry policy, codec, clock, failure details, registry."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import anyio
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import durable
from durable._core._codec import JsonCodec, hints_of
from durable._core._events import (
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    ContinuedAsNew,
    EventRaised,
    HistoryEvent,
    TimerCreated,
    WorkflowStarted,
)
from durable._core._failure import FailureDetails, failure_from_exception
from durable._ids import validate_instance_id


@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300))
def test_valid_ids_never_escape_their_directory(value: str) -> None:
    try:
        validate_instance_id(value)
    except durable.InvalidInstanceIdError:
        return
    assert "/" not in value
    assert "\\" not in value
    assert ".." not in value
    assert not value.startswith(".")
    assert len(value.encode("utf-8", "surrogatepass")) <= 246
    assert value.isprintable()


@pytest.mark.parametrize(
    "good", ["order-42", "a", "x" * 246, "é" * 123, "tenant:7@eu", "çé", "a.b"]
)
def test_good_ids(good: str) -> None:
    assert validate_instance_id(good) == good


def test_bad_id_messages_say_why() -> None:
    with pytest.raises(durable.InvalidInstanceIdError, match="contains '/'"):
        validate_instance_id("a/b")
    with pytest.raises(durable.InvalidInstanceIdError, match="247 bytes"):
        validate_instance_id("x" * 247)
    with pytest.raises(durable.InvalidInstanceIdError, match="must be a str"):
        validate_instance_id(42)


def test_retry_policy_backoff_and_classification() -> None:
    class Fatal(Exception):
        pass

    class Subfatal(Fatal):
        pass

    policy = durable.RetryPolicy(
        max_attempts=5,
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=3,
        max_interval=timedelta(seconds=30),
        non_retryable=(Fatal,),
    )
    assert [policy.delay(n).total_seconds() for n in range(1, 5)] == [2, 6, 18, 30]
    transient = failure_from_exception(ConnectionError("x"))
    assert policy.should_retry(4, transient)
    assert not policy.should_retry(5, transient)
    assert not policy.should_retry(1, failure_from_exception(Subfatal("no")))
    unknown = failure_from_exception(durable.UnknownWorkflowError("gone"))
    assert not policy.should_retry(1, unknown)
    with pytest.raises(ValueError, match="max_attempts"):
        durable.RetryPolicy(max_attempts=0)


def test_failure_details_keep_type_message_and_cause() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as exc:
        failure = failure_from_exception(exc)
    assert failure.type == "RuntimeError"
    assert failure.message == "outer"
    assert "raise RuntimeError" in failure.stack_trace
    assert failure.cause is not None
    assert failure.cause.type == "KeyError"
    assert "Exception" in failure.bases


@dataclasses.dataclass
class Point:
    x: int
    at: datetime


class Shape(msgspec.Struct):
    points: list[Point]


class Tags(TypedDict):
    name: str
    n: int


def test_codec_round_trips_rich_types_with_hints() -> None:
    codec = JsonCodec()
    when = datetime(2026, 5, 1, 12, tzinfo=UTC)
    shape = Shape([Point(1, when), Point(2, when)])
    assert codec.decode(codec.encode(shape), Shape) == shape
    assert codec.decode(codec.encode({"name": "a", "n": 1}), Tags) == {"name": "a", "n": 1}
    assert codec.decode(codec.encode(when), datetime) == when
    with pytest.raises(durable.SerializationError, match="cannot encode"):
        codec.encode({1, 2j})
    with pytest.raises(durable.SerializationError, match="cannot decode"):
        codec.decode(b'{"points": 3}', Shape)


def test_hints_of_reads_input_and_output() -> None:
    async def wf(ctx: Any, shape: Shape) -> list[Point]:
        return shape.points

    async def bare(ctx):  # type: ignore[no-untyped-def]
        return None

    assert hints_of(wf) == (Shape, list[Point])
    assert hints_of(bare) == (Any, Any)


def test_registry_rejects_bad_registrations() -> None:
    registry = durable.Registry()

    def not_async(ctx: Any, x: int) -> int:
        return x

    with pytest.raises(TypeError, match="async def"):
        registry.workflow(not_async)

    async def too_many(ctx: Any, a: int, b: int) -> None:
        pass

    with pytest.raises(TypeError, match=r"\(ctx\) or \(ctx, input\)"):
        registry.activity(too_many)

    @registry.activity(name="custom")
    async def named(ctx: Any) -> None:
        pass

    assert registry.name_of(named, "activity") == "custom"
    with pytest.raises(ValueError, match="already registered"):
        registry.activity(name="custom")(named)


_raw = st.builds(lambda v: msgspec.Raw(msgspec.json.encode(v)), st.integers() | st.text())
_when = st.datetimes(timezones=st.just(UTC))
_failure = st.builds(FailureDetails, st.text(), st.text())
_ids = st.integers(0)
_carryover = st.lists(st.builds(EventRaised, name=st.text())).map(tuple)
_events: st.SearchStrategy[HistoryEvent] = st.one_of(
    st.builds(WorkflowStarted, name=st.text(), input=_raw, event_id=_ids, timestamp=_when),
    st.builds(ActivityScheduled, task_id=_ids, name=st.text(), input=_raw, attempt=_ids),
    st.builds(ActivityCompleted, task_id=_ids, result=_raw),
    st.builds(ActivityErrored, task_id=_ids, failure=_failure),
    st.builds(TimerCreated, task_id=_ids, fire_at=_when),
    st.builds(EventRaised, name=st.text(), input=_raw),
    st.builds(ContinuedAsNew, input=_raw, carryover=_carryover),
)


@given(st.lists(_events))
def test_history_events_round_trip(events: list[HistoryEvent]) -> None:
    data = msgspec.json.encode(events)
    assert msgspec.json.decode(data, type=list[HistoryEvent]) == events


def test_event_tags_are_stable() -> None:
    tags = {cls.__struct_config__.tag for cls in HistoryEvent.__args__}  # type: ignore[attr-defined]
    assert tags == {
        "workflow_started", "turn_started", "activity_scheduled", "activity_completed",
        "activity_failed", "timer_created", "timer_fired", "child_workflow_scheduled",
        "child_workflow_completed", "child_workflow_failed", "event_raised", "patch_applied",
        "search_attributes_upserted",
        "task_cancelled", "workflow_cancel_requested", "execution_timed_out",
        "workflow_suspended", "workflow_resumed", "workflow_terminated", "workflow_completed",
        "workflow_failed", "continued_as_new", "event_sent", "update_requested",
        "update_completed", "workflow_rewound",
    }  # fmt: skip


@pytest.mark.anyio
async def test_mock_clock_wakes_sleepers_in_order() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = durable.MockClock(start)
    woke: list[int] = []

    async def sleeper(n: int) -> None:
        await clock.sleep_until(start + timedelta(seconds=n))
        woke.append(n)

    async with anyio.create_task_group() as tg:
        for n in (3, 1, 2):
            tg.start_soon(sleeper, n)
        await anyio.wait_all_tasks_blocked()
        clock.advance(timedelta(seconds=1))
        await anyio.wait_all_tasks_blocked()
        assert woke == [1]
        clock.set(start + timedelta(seconds=5))
    assert woke == [1, 2, 3]
    with pytest.raises(ValueError, match="backwards"):
        clock.set(start)
    with pytest.raises(ValueError, match="timezone-aware"):
        durable.MockClock(datetime(2026, 1, 1))
