"""The replay engine as a pure function: hand-built histories in, actions out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from msgspec import Raw

import durable
from durable import ActivityContext, Registry, WorkflowContext
from durable._core._actions import (
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    ScheduleActivity,
    StartChildWorkflow,
    StartTimer,
)
from durable._core._codec import JsonCodec
from durable._core._events import (
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    EventRaised,
    HistoryEvent,
    TimerCreated,
    TimerFired,
    TurnStarted,
    WorkflowCompleted,
    WorkflowResumed,
    WorkflowStarted,
    WorkflowSuspended,
)
from durable._core._failure import FailureDetails
from durable._core._replay import WorkflowRun

T0 = datetime(2026, 1, 1, tzinfo=UTC)

registry = Registry()


@registry.activity
async def double(ctx: ActivityContext, x: int) -> int:
    return 2 * x


@registry.workflow
async def pipeline(ctx: WorkflowContext, x: int) -> int:
    a = await ctx.call_activity(double, x)
    await ctx.sleep(timedelta(minutes=1))
    b, c = await ctx.all([ctx.call_activity(double, a), ctx.call_activity(double, a + 1)])
    return b + c


@registry.workflow
async def waits(ctx: WorkflowContext, _: None) -> list[Any]:
    first = await ctx.wait_for_event("go")
    second = await ctx.wait_for_event("go")
    return [first, second]


@registry.workflow
async def composed(ctx: WorkflowContext, xs: list[int]) -> list[int]:
    async def twice(x: int) -> int:
        once = await ctx.call_activity(double, x)
        return await ctx.call_activity(double, once)

    return await ctx.all([twice(x) for x in xs])


@registry.workflow
async def bad_await(ctx: WorkflowContext, _: None) -> None:
    import asyncio

    await asyncio.sleep(0)


@registry.workflow
async def looping(ctx: WorkflowContext, n: int) -> None:
    ctx.continue_as_new(n + 1)


def raw(value: object) -> Raw:
    return Raw(JsonCodec().encode(value))


def new_run(name: str) -> WorkflowRun:
    return WorkflowRun("wf-1", registry.get_workflow(name), registry, JsonCodec())


def started(name: str, value: object = None) -> WorkflowStarted:
    return WorkflowStarted(event_id=0, timestamp=T0, name=name, input=raw(value), run_id="r1")


def numbered(events: list[HistoryEvent]) -> list[HistoryEvent]:
    import msgspec

    return [msgspec.structs.replace(e, event_id=i, timestamp=T0) for i, e in enumerate(events)]


def test_new_turns_produce_actions_in_order() -> None:
    run = new_run("pipeline")
    run.apply([started("pipeline", 3)], replaying=True)
    assert run.apply([TurnStarted(timestamp=T0)], replaying=False) == [
        ScheduleActivity(0, "double", raw(3), 1, 0)
    ]
    actions = run.apply(
        [TurnStarted(timestamp=T0), ActivityCompleted(task_id=0, result=raw(6))], replaying=False
    )
    assert actions == [StartTimer(1, T0 + timedelta(minutes=1), "sleep")]
    actions = run.apply([TurnStarted(), TimerFired(task_id=1, fire_at=T0)], replaying=False)
    assert [a.input for a in actions] == [raw(6), raw(7)]  # type: ignore[union-attr]
    actions = run.apply(
        [
            TurnStarted(),
            ActivityCompleted(task_id=3, result=raw(14)),
            ActivityCompleted(task_id=2, result=raw(12)),
        ],
        replaying=False,
    )
    assert actions == [CompleteWorkflow(raw(26))]


def full_pipeline_history() -> list[HistoryEvent]:
    return numbered(
        [
            started("pipeline", 3),
            TurnStarted(),
            ActivityScheduled(task_id=0, name="double", input=raw(3), step=0),
            TurnStarted(),
            ActivityCompleted(task_id=0, result=raw(6)),
            TimerCreated(task_id=1, fire_at=T0),
            TurnStarted(),
            TimerFired(task_id=1, fire_at=T0),
            ActivityScheduled(task_id=2, name="double", input=raw(6), step=2),
            ActivityScheduled(task_id=3, name="double", input=raw(7), step=3),
            TurnStarted(),
            ActivityCompleted(task_id=2, result=raw(12)),
            ActivityCompleted(task_id=3, result=raw(14)),
            WorkflowCompleted(result=raw(26)),
        ]
    )


def test_replaying_a_matching_history_is_silent() -> None:
    run = new_run("pipeline")
    assert run.apply(full_pipeline_history(), replaying=True) == []
    run.check_complete()
    assert isinstance(run.final, CompleteWorkflow)


def test_a_different_activity_names_the_event() -> None:
    history = full_pipeline_history()
    history[8] = ActivityScheduled(event_id=8, timestamp=T0, task_id=2, name="triple", step=2)
    with pytest.raises(durable.NonDeterminismError) as caught:
        new_run("pipeline").apply(history, replaying=True)
    assert caught.value.event_id == 8
    assert "history event 8 is activity 'triple' (task 2)" in str(caught.value)
    assert "activity 'double' (task 2)" in str(caught.value)


def test_a_timer_replaced_by_an_activity_is_caught() -> None:
    history = full_pipeline_history()
    history[5] = ActivityScheduled(event_id=5, timestamp=T0, task_id=1, name="double", step=1)
    with pytest.raises(durable.NonDeterminismError, match="history event 5") as caught:
        new_run("pipeline").apply(history, replaying=True)
    assert "a timer (task 1)" in str(caught.value)


def test_code_that_does_more_than_history_is_caught_at_the_next_turn() -> None:
    history = numbered(full_pipeline_history()[:9] + full_pipeline_history()[10:])  # no task 3
    with pytest.raises(durable.NonDeterminismError) as caught:
        new_run("pipeline").apply(history, replaying=True)
    assert "activity 'double' (task 3)" in str(caught.value)
    assert caught.value.event_id == 9  # the TurnStarted that follows


def test_code_that_stops_short_of_history_is_caught() -> None:
    history = full_pipeline_history()
    with pytest.raises(durable.NonDeterminismError, match="did not schedule"):
        new_run("waits").apply(
            [started("waits"), *history[1:3]],  # waits never calls an activity
            replaying=True,
        )


def test_events_are_buffered_and_delivered_in_order() -> None:
    run = new_run("waits")
    run.apply([started("waits")], replaying=True)
    assert run.apply(
        [
            TurnStarted(),
            EventRaised(name="go", input=raw(1)),
            EventRaised(name="go", input=raw(2)),
        ],
        replaying=False,
    ) == [CompleteWorkflow(raw([1, 2]))]


def test_suspension_holds_events_until_resumed() -> None:
    run = new_run("waits")
    run.apply([started("waits")], replaying=True)
    held = run.apply(
        [TurnStarted(), WorkflowSuspended(), EventRaised(name="go", input=raw(1))], replaying=False
    )
    assert held == []
    assert run.suspended
    actions = run.apply(
        [TurnStarted(), EventRaised(name="go", input=raw(2)), WorkflowResumed()], replaying=False
    )
    assert actions == [CompleteWorkflow(raw([1, 2]))]


def test_duplicate_and_unknown_completions_are_ignored() -> None:
    run = new_run("pipeline")
    run.apply([started("pipeline", 1)], replaying=True)
    run.apply([TurnStarted()], replaying=False)
    done = ActivityCompleted(task_id=0, result=raw(2))
    actions = run.apply([TurnStarted(), done, done, ActivityCompleted(task_id=99)], replaying=False)
    assert len(actions) == 1  # one timer, not two


def test_coroutines_compose_under_all() -> None:
    run = new_run("composed")
    run.apply([started("composed", [1, 2])], replaying=True)
    first = run.apply([TurnStarted()], replaying=False)
    assert [a.task_id for a in first] == [0, 1]  # type: ignore[union-attr]
    second = run.apply(
        [
            TurnStarted(),
            ActivityCompleted(task_id=1, result=raw(4)),
            ActivityCompleted(task_id=0, result=raw(2)),
        ],
        replaying=False,
    )
    assert [a.input for a in second] == [raw(4), raw(2)]  # type: ignore[union-attr]
    final = run.apply(
        [
            TurnStarted(),
            ActivityCompleted(task_id=2, result=raw(8)),
            ActivityCompleted(task_id=3, result=raw(4)),
        ],
        replaying=False,
    )
    assert final == [CompleteWorkflow(raw([4, 8]))]


def test_activity_failure_surfaces_as_activity_failed() -> None:
    run = new_run("pipeline")
    run.apply([started("pipeline", 1)], replaying=True)
    run.apply([TurnStarted()], replaying=False)
    failure = FailureDetails("ValueError", "nope")
    actions = run.apply(
        [TurnStarted(), ActivityErrored(task_id=0, failure=failure)], replaying=False
    )
    assert len(actions) == 1
    assert isinstance(actions[0], FailWorkflow)
    assert actions[0].failure.type == "ValueError"
    assert actions[0].failure.message == "nope"


def test_awaiting_a_foreign_awaitable_fails_the_workflow_clearly() -> None:
    run = new_run("bad_await")
    run.apply([started("bad_await")], replaying=True)
    actions = run.apply([TurnStarted()], replaying=False)
    assert isinstance(actions[0], FailWorkflow)
    assert "durable cannot replay" in actions[0].failure.message


def test_continue_as_new_ends_the_run() -> None:
    run = new_run("looping")
    run.apply([started("looping", 1)], replaying=True)
    actions = run.apply([TurnStarted()], replaying=False)
    assert actions == [ContinueAsNew(raw(2))]


def test_child_workflow_ids_are_deterministic() -> None:
    reg = Registry()

    @reg.workflow
    async def parent(ctx: WorkflowContext, _: None) -> None:
        await ctx.call_workflow("kid", 1)

    run = WorkflowRun("p", reg.get_workflow("parent"), reg, JsonCodec())
    run.apply([started("parent")], replaying=True)
    (action,) = run.apply([TurnStarted()], replaying=False)
    assert isinstance(action, StartChildWorkflow)
    assert action.instance_id == "p-r1-0"
