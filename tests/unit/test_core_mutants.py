"""Tests that kill deliberate breakages (mutants) of the pure replay core.

Sans-I/O: histories are built by hand, events fed to a ``WorkflowRun``, and the test
asserts on the actions it returns. Each test's docstring names the mutant it pins.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from msgspec import Raw

from durable import (
    ActivityContext,
    ActivityFailed,
    Registry,
    RetryPolicy,
    WorkflowContext,
    WorkflowFailed,
)
from durable._core._actions import (
    Action,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    RecordPatch,
    ScheduleActivity,
    StartChildWorkflow,
    StartTimer,
)
from durable._core._codec import JsonCodec
from durable._core._events import (
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowErrored,
    ChildWorkflowScheduled,
    ContinuedAsNew,
    Event,
    EventRaised,
    HistoryEvent,
    PatchApplied,
    TimerCreated,
    TimerFired,
    TurnStarted,
    WorkflowCompleted,
    WorkflowErrored,
    WorkflowResumed,
    WorkflowStarted,
    WorkflowSuspended,
    WorkflowTerminated,
)
from durable._core._failure import FailureDetails
from durable._core._futures import DurableFuture, Scheduler
from durable._core._replay import ContinueAsNewSignal, WorkflowRun, describe
from durable._errors import NonDeterminismError, SerializationError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
codec = JsonCodec()


def raw(value: object) -> Raw:
    return Raw(codec.encode(value))


def value(data: Raw) -> Any:
    return codec.decode(data, Any)


def started(name: str, input: object = None, run_id: str = "run-a") -> WorkflowStarted:
    return WorkflowStarted(timestamp=T0, name=name, input=raw(input), run_id=run_id)


def recorded(action: Action) -> Event:
    """The history event that the engine commits for ``action``."""
    match action:
        case ScheduleActivity():
            return ActivityScheduled(
                task_id=action.task_id, name=action.name, input=action.input,
                attempt=action.attempt, step=action.step,
            )  # fmt: skip
        case StartTimer():
            return TimerCreated(
                task_id=action.task_id, fire_at=action.fire_at, purpose=action.purpose
            )
        case StartChildWorkflow():
            return ChildWorkflowScheduled(
                task_id=action.task_id, name=action.name, instance_id=action.instance_id,
                input=action.input,
            )  # fmt: skip
        case RecordPatch():
            return PatchApplied(patch_id=action.patch_id)
        case CompleteWorkflow():
            return WorkflowCompleted(result=action.result)
        case FailWorkflow():
            return WorkflowErrored(failure=action.failure)
        case ContinueAsNew():
            return ContinuedAsNew(input=action.input, carryover=action.carryover)
    raise AssertionError(action)


class Live:
    """A run fed turn by turn, keeping the history the engine would commit."""

    def __init__(
        self, registry: Registry, name: str, input: object = None, run_id: str = "run-a"
    ) -> None:
        self.registry = registry
        self.run = WorkflowRun("wf", registry.get_workflow(name), registry, codec)
        self.history: list[Event] = [started(name, input, run_id)]
        self.run.apply(self.history, replaying=True)

    def turn(self, *events: Event, at: datetime = T0) -> list[Action]:
        """One new turn: ``events`` in, actions out (and into history)."""
        fed = [TurnStarted(timestamp=at), *events]
        actions = self.run.apply(fed, replaying=False)
        self.history += [*fed, *(recorded(a) for a in actions)]
        return actions

    def replay(self) -> WorkflowRun:
        """A fresh run that replays the history so far (as after a crash or eviction)."""
        fresh = WorkflowRun("wf", self.run.definition, self.registry, codec)
        numbered: list[HistoryEvent] = [
            msgspec.structs.replace(e, event_id=i) for i, e in enumerate(self.history)
        ]
        fresh.apply(numbered, replaying=True)
        return fresh


# -- random and uuid4 ---------------------------------------------------------------

dice = Registry()


@dice.workflow
async def draws(ctx: WorkflowContext) -> list[Any]:
    first = [ctx.random().random(), str(ctx.uuid4())]
    await ctx.sleep(timedelta(seconds=1))
    return [first, ctx.random().randrange(10**9), str(ctx.uuid4())]


def test_random_and_uuid4_replay_identically() -> None:
    """Mutant: ``ctx.random()``/``ctx.uuid4()`` unseeded: a replay draws other values."""
    live = Live(dice, "draws")
    (timer,) = live.turn()
    assert isinstance(timer, StartTimer)
    replayed = live.replay()
    fired = TimerFired(task_id=timer.task_id, fire_at=timer.fire_at)
    (done,) = live.turn(fired)
    (again,) = replayed.apply([TurnStarted(timestamp=T0), fired], replaying=False)
    assert isinstance(done, CompleteWorkflow)
    assert again == done
    drawn = value(done.result)
    assert uuid.UUID(drawn[0][1]).version == 4
    assert uuid.UUID(drawn[2]).version == 4
    assert drawn[0][1] != drawn[2]  # one source, drawn on: not a fresh seed per call


def test_each_run_draws_its_own_values() -> None:
    """Mutant: the random source seeded from the instance id (or a constant): two runs of
    one instance id would draw the same values."""

    def final(run_id: str) -> Any:
        live = Live(dice, "draws", run_id=run_id)
        (timer,) = live.turn()
        (done,) = live.turn(TimerFired(task_id=timer.task_id, fire_at=timer.fire_at))
        return value(done.result)  # type: ignore[union-attr]

    assert final("run-a") == final("run-a")
    assert final("run-a") != final("run-b")


# -- RetryPolicy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0}, "RetryPolicy.max_attempts must be at least 1"),
        ({"initial_interval": timedelta(seconds=-1)}, "RetryPolicy intervals must not be negative"),
        ({"max_interval": timedelta(seconds=-1)}, "RetryPolicy intervals must not be negative"),
        ({"backoff_coefficient": 0.5}, "RetryPolicy.backoff_coefficient must be at least 1"),
    ],
    ids=["attempts", "initial", "max", "backoff"],
)
def test_retry_policy_refuses_each_bad_option_by_name(
    options: dict[str, Any], message: str
) -> None:
    """Mutants: a check dropped, widened (``or`` to ``and``) or its message changed."""
    with pytest.raises(ValueError) as caught:
        RetryPolicy(**options)
    assert str(caught.value) == message


def test_retry_policy_accepts_the_boundaries() -> None:
    """Mutants: ``<`` made ``<=`` or a bound moved (1 attempt, zero intervals and a
    coefficient of 1 or 1.5 are all valid)."""
    RetryPolicy(max_attempts=1)
    RetryPolicy(initial_interval=timedelta(0), max_interval=timedelta(0))
    RetryPolicy(backoff_coefficient=1)
    RetryPolicy(backoff_coefficient=1.5)


def failure(type_: str, *bases: str) -> FailureDetails:
    return FailureDetails(type_, "boom", bases=bases)


def test_should_retry_counts_attempts_and_skips_non_retryable_failures() -> None:
    """Mutants: the attempt bound off by one, or a non-retryable failure retried."""
    policy = RetryPolicy(max_attempts=3, non_retryable=(KeyError,))
    assert policy.should_retry(1, failure("ValueError"))
    assert policy.should_retry(2, failure("ValueError"))
    assert not policy.should_retry(3, failure("ValueError"))
    assert not policy.should_retry(1, failure("KeyError"))
    assert not policy.should_retry(1, failure("my.Missing", "KeyError", "LookupError"))
    assert policy.should_retry(1, failure("LookupError"))  # a base of KeyError is not KeyError
    for never in ("durable.UnknownWorkflowError", "durable.SerializationError"):
        assert not RetryPolicy().should_retry(1, failure(never))


def test_delay_grows_by_the_coefficient_and_is_capped() -> None:
    """Mutants: the exponent off by one, the multiplication or the cap changed."""
    policy = RetryPolicy(
        initial_interval=timedelta(seconds=3),
        backoff_coefficient=2.5,
        max_interval=timedelta(seconds=40),
    )
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [
        timedelta(seconds=3),
        timedelta(seconds=7.5),
        timedelta(seconds=18.75),
        timedelta(seconds=40),
    ]


# -- the replay-safe logger -------------------------------------------------------------


def test_the_workflow_logger_tags_the_instance_keeps_options_and_is_silent_on_replay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Mutants: the ``instance_id`` extra dropped, logging keywords (``exc_info``) dropped,
    or ``isEnabledFor`` true while replaying or for a level the logger filters out."""
    reg = Registry()
    enabled: list[tuple[bool, bool]] = []

    @reg.workflow
    async def chatty(ctx: WorkflowContext) -> None:
        enabled.append((ctx.logger.isEnabledFor(logging.DEBUG), ctx.logger.isEnabledFor(40)))
        try:
            raise KeyError("lost")
        except KeyError:
            ctx.logger.error("step %d", 1, exc_info=True)
        await ctx.sleep(timedelta(seconds=1))

    caplog.set_level(logging.WARNING, logger="durable.workflow")
    live = Live(reg, "chatty")
    live.turn()
    (record,) = caplog.records
    assert record.getMessage() == "step 1"
    assert record.instance_id == "wf"  # type: ignore[attr-defined]
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError
    live.replay()
    assert len(caplog.records) == 1  # the replay logged nothing
    assert enabled == [(False, True), (False, False)]


# -- what WorkflowContext hands the run ------------------------------------------------


def live_of(fn: Any, input: object = None, *, registry: Registry | None = None) -> Live:
    """A live run of ``fn``, registered as a workflow (in ``registry`` if given)."""
    reg = registry or Registry()
    reg.workflow(fn)
    return Live(reg, fn.__name__, input)


def outcome(actions: list[Action]) -> Any:
    """The value a turn's ``CompleteWorkflow`` returns, or its ``FailWorkflow`` failure."""
    (final,) = [a for a in actions if isinstance(a, CompleteWorkflow | FailWorkflow)]
    if isinstance(final, FailWorkflow):
        return final.failure
    return value(final.result)


async def stamp(ctx: ActivityContext) -> datetime:
    return T0


async def stamped(ctx: WorkflowContext) -> datetime:
    return T0


def typed() -> Registry:
    """A fresh registry with a typed activity and child (tests add their workflow)."""
    registry = Registry()
    registry.activity(stamp)
    registry.workflow(stamped)
    return registry


def test_results_decode_to_the_declared_types_and_unregistered_names_to_any() -> None:
    """Mutants: the activity's or child's declared output type lost (the value stays a
    string), or an activity/workflow called by a name not registered here crashing."""

    async def typed_calls(ctx: WorkflowContext) -> list[str]:
        got = [
            await ctx.call_activity(stamp),
            await ctx.call_workflow(stamped, instance_id="kid"),
            await ctx.call_activity("remote_only"),
            await ctx.call_workflow("remote_flow", instance_id="kid2"),
        ]
        return [type(g).__name__ for g in got]

    live = live_of(typed_calls, registry=typed())
    when = raw(T0.isoformat())
    (a,) = live.turn()
    assert isinstance(a, ScheduleActivity)
    (c,) = live.turn(ActivityCompleted(task_id=a.task_id, result=when))
    assert isinstance(c, StartChildWorkflow)
    (r,) = live.turn(ChildWorkflowCompleted(task_id=c.task_id, result=when))
    assert isinstance(r, ScheduleActivity)
    assert r.name == "remote_only"
    (c2,) = live.turn(ActivityCompleted(task_id=r.task_id, result=when))
    assert isinstance(c2, StartChildWorkflow)
    assert c2.name == "remote_flow"
    done = live.turn(ChildWorkflowCompleted(task_id=c2.task_id, result=when))
    assert outcome(done) == ["datetime", "datetime", "str", "str"]


def test_calling_an_unregistered_function_names_its_kind() -> None:
    """Mutants: the kind (``activity``/``workflow``) in the not-registered message."""

    async def stray(ctx: ActivityContext) -> None: ...

    async def calls_stray(ctx: WorkflowContext, kind: str) -> None:
        if kind == "activity":
            await ctx.call_activity(stray)
        else:
            await ctx.call_workflow(stray)

    for kind in ("activity", "workflow"):
        failure = outcome(live_of(calls_stray, kind).turn())
        assert failure.type == "durable.UnknownWorkflowError"
        assert failure.message == (
            f"test_calling_an_unregistered_function_names_its_kind.<locals>.stray is not "
            f"registered as a {kind}: decorate it with @registry.{kind}"
        )


def test_failures_name_the_activity_and_the_child() -> None:
    """Mutants: ``ActivityFailed``/``WorkflowFailed`` built without the activity's name,
    task id or the child's instance id."""
    seen: list[str] = []

    async def failing(ctx: WorkflowContext) -> list[Any]:
        try:
            await ctx.call_activity("charge")
        except ActivityFailed as err:
            seen.append(str(err))
            got: list[Any] = [err.name, err.task_id]
        try:
            await ctx.call_workflow("ship", instance_id="ship-1")
        except WorkflowFailed as err:
            seen.append(str(err))
            got.append(err.instance_id)
        return got

    live = live_of(failing)
    (a,) = live.turn()
    nope = FailureDetails("ValueError", "declined")
    (c,) = live.turn(ActivityErrored(task_id=a.task_id, failure=nope))
    done = live.turn(ChildWorkflowErrored(task_id=c.task_id, failure=nope))  # type: ignore[union-attr]
    assert outcome(done) == ["charge", 0, "ship-1"]
    assert seen == [
        "activity 'charge' (task 0) failed: ValueError: declined",
        "workflow 'ship-1' failed: ValueError: declined",
    ]


# -- NonDeterminismError: every message names the event and what the code did ----------


def test_describe_names_every_kind_of_step() -> None:
    """Mutants: a ``describe`` case dropped or its words changed (they are what a user
    reads in a non-determinism error)."""
    assert (
        describe(StartChildWorkflow(3, "kid", "kid-1", raw(None))) == "sub-workflow 'kid' (task 3)"
    )
    assert describe(ChildWorkflowScheduled(task_id=4, name="kid", instance_id="k")) == (
        "sub-workflow 'kid' (task 4)"
    )
    assert (
        describe(WorkflowCompleted())
        == describe(CompleteWorkflow())
        == ("completion of the workflow")
    )
    failed = FailureDetails("ValueError", "x")
    assert (
        describe(WorkflowErrored(failure=failed))
        == describe(FailWorkflow(failed))
        == ("failure of the workflow")
    )
    assert describe(ContinuedAsNew()) == describe(ContinueAsNew(raw(1))) == "continue-as-new"
    assert describe(TurnStarted()) == "TurnStarted"


def numbered(events: list[Event]) -> list[HistoryEvent]:
    return [msgspec.structs.replace(e, event_id=i) for i, e in enumerate(events)]


history_code = Registry()


@history_code.workflow
async def one_step(ctx: WorkflowContext) -> int:
    return int(await ctx.call_activity("step"))


def replaying(events: list[Event], name: str = "one_step") -> WorkflowRun:
    run = WorkflowRun("wf", history_code.get_workflow(name), history_code, codec)
    run.apply(numbered(events), replaying=True)
    return run


def nondeterminism(events: list[Event], name: str = "one_step") -> NonDeterminismError:
    with pytest.raises(NonDeterminismError) as caught:
        replaying(events, name).check_complete()
    return caught.value


STEP = ActivityScheduled(task_id=0, name="step")
# one_step's history up to the turn in which its code completes (and records nothing yet)
STEP_DONE: list[Event] = [
    started("one_step"),
    TurnStarted(),
    STEP,
    TurnStarted(),
    ActivityCompleted(task_id=0, result=raw(5)),
]


def test_an_unscheduled_history_step_is_named() -> None:
    """Mutants: the event id or the description dropped from the "did not schedule" error."""
    err = nondeterminism(
        [
            started("one_step"),
            TurnStarted(),
            ChildWorkflowScheduled(task_id=0, name="k", instance_id="k"),
        ],
        "never_steps",
    )
    assert str(err) == (
        "workflow 'wf': history event 2 is sub-workflow 'k' (task 0), but the workflow "
        "code did not schedule it"
    )
    assert err.event_id == 2


@history_code.workflow
async def never_steps(ctx: WorkflowContext) -> None:
    await ctx.wait_for_event("never")


def test_history_that_ends_the_run_where_the_code_still_waits_is_named() -> None:
    """Mutant: ``or`` made ``and`` in ``_on_final`` (a recorded end accepted while the code
    waits), and the message or event id changed."""
    err = nondeterminism([started("one_step"), TurnStarted(), STEP, WorkflowCompleted()])
    assert str(err) == (
        "workflow 'wf': history event 3 is the completion of the workflow, but the "
        "workflow code is still waiting"
    )
    assert err.event_id == 3


def test_history_that_ends_the_run_another_way_is_named() -> None:
    """Mutants: the mismatched end described wrongly (``describe(None)``, wrong branch)."""
    err = nondeterminism([*STEP_DONE, WorkflowErrored(failure=FailureDetails("E", "x"))])
    assert str(err) == (
        "workflow 'wf': history event 5 is the failure of the workflow, but the workflow "
        "code ended with the completion of the workflow"
    )
    assert err.event_id == 5


def test_code_that_ends_where_history_does_not_is_named() -> None:
    """Mutants: the place (end of history / the next turn) or the description dropped
    from the "the workflow code ended" error."""
    err = nondeterminism(STEP_DONE)
    assert str(err) == (
        "workflow 'wf': the workflow code ended (completion of the workflow), which "
        "history does not hold before the end of history"
    )
    assert err.event_id is None
    with pytest.raises(NonDeterminismError) as caught:
        replaying([*STEP_DONE, TurnStarted()])
    assert str(caught.value).endswith("does not hold before history event 5, a new turn")
    assert caught.value.event_id == 5


def test_a_terminate_in_a_replayed_turn_keeps_it_a_replay() -> None:
    """Mutants: ``_on_terminated`` not restoring ``replaying``: code that now completes in
    a turn the old code was terminated in would replay silently."""
    err = nondeterminism([*STEP_DONE, WorkflowTerminated()])
    assert "the workflow code ended (completion of the workflow)" in str(err)


@history_code.workflow
async def again(ctx: WorkflowContext, n: int) -> None:
    await ctx.wait_for_event("go")
    ctx.continue_as_new(n + 1)


def test_terminate_wins_over_continue_as_new_in_replay() -> None:
    """Mutant: a terminated continue-as-new leaving a non-``None`` final behind (a history
    with the terminate in the trigger's turn would no longer replay)."""
    run = replaying(
        [
            started("again", 1),
            TurnStarted(),
            TurnStarted(),
            EventRaised(name="go"),
            WorkflowTerminated(),
        ],
        "again",
    )
    run.check_complete()
    assert run.final is None
    assert run.finished


# -- patches ---------------------------------------------------------------------------


def test_a_patch_is_recorded_once_however_often_it_is_checked() -> None:
    """Mutants: ``patched`` answering False on its second check, or recording the patch
    again (the recorded set fed ``None``)."""

    async def checks_twice(ctx: WorkflowContext) -> list[bool]:
        first = ctx.patched("p")
        await ctx.sleep(timedelta(seconds=1))
        return [first, ctx.patched("p"), ctx.patched("p")]

    live = live_of(checks_twice)
    first = live.turn()
    assert [a for a in first if isinstance(a, RecordPatch)] == [RecordPatch("p")]
    (timer,) = [a for a in first if isinstance(a, StartTimer)]
    fired = TimerFired(task_id=timer.task_id, fire_at=timer.fire_at)
    replayed = live.replay()
    done = live.turn(fired)
    assert done == [CompleteWorkflow(raw([True, True, True]))]
    # replayed: the patch comes from history, and the live turn after it records nothing
    assert replayed.apply([TurnStarted(timestamp=T0), fired], replaying=False) == done


def test_a_deprecated_patch_in_history_is_not_recorded_again() -> None:
    """Mutant: a replayed ``PatchApplied`` not remembered as recorded: a later live
    check would record the same patch twice."""

    async def deprecated(ctx: WorkflowContext) -> bool:
        ctx.deprecate_patch("p")
        await ctx.sleep(timedelta(seconds=1))
        return ctx.patched("p")

    live = live_of(deprecated)
    wake = T0 + timedelta(seconds=1)
    live.history += [  # recorded by older code that checked ctx.patched("p") here
        TurnStarted(timestamp=T0),
        PatchApplied(patch_id="p"),
        TimerCreated(task_id=0, fire_at=wake),
    ]
    run = live.replay()
    fired = TimerFired(task_id=0, fire_at=wake)
    assert run.apply([TurnStarted(timestamp=wake), fired], replaying=False) == [
        CompleteWorkflow(raw(True))
    ]


def test_a_patch_the_code_no_longer_checks_is_named() -> None:
    """Mutants: the event id or the advice dropped from the removed-patch error."""
    err = nondeterminism([started("one_step"), TurnStarted(), PatchApplied(patch_id="p")])
    assert str(err) == (
        "workflow 'wf': history event 2 records patch 'p', but the workflow code no longer "
        "checks it; keep ctx.patched('p') or ctx.deprecate_patch('p') while runs that "
        "recorded it remain"
    )
    assert err.event_id == 2


# -- suspend, resume, continue-as-new ----------------------------------------------------


def test_events_after_a_resume_are_not_held() -> None:
    """Mutants: ``_on_resumed`` leaving the run suspended (``True``) or not a bool."""

    async def two(ctx: WorkflowContext) -> list[Any]:
        return [await ctx.wait_for_event("go"), await ctx.wait_for_event("go")]

    live = live_of(two)
    assert live.run.suspended is False
    assert live.turn(WorkflowSuspended(), EventRaised(name="go", input=raw(1))) == []
    assert live.run.suspended is True
    assert live.turn(WorkflowResumed()) == []
    assert live.run.suspended is False
    assert live.turn(EventRaised(name="go", input=raw(2))) == [CompleteWorkflow(raw([1, 2]))]


def test_continue_as_new_carries_buffered_events_in_arrival_order() -> None:
    """Mutants: the carried events unsorted (or sorted by nothing), stripped of name or
    input, or not carried at all."""

    async def hands_on(ctx: WorkflowContext) -> None:
        await ctx.wait_for_event("start")
        ctx.continue_as_new("next")

    live = live_of(hands_on)
    live.turn()
    actions = live.turn(
        EventRaised(event_id=10, name="b", input=raw(1)),
        EventRaised(event_id=11, name="a", input=raw(2)),
        EventRaised(event_id=12, name="b", input=raw(3)),
        EventRaised(event_id=13, name="start"),
    )
    assert actions == [
        ContinueAsNew(
            raw("next"),
            (
                EventRaised(name="b", input=raw(1)),
                EventRaised(name="a", input=raw(2)),
                EventRaised(name="b", input=raw(3)),
            ),
        )
    ]
    actions2 = live_of(hands_on).turn(
        EventRaised(event_id=11, name="a", input=raw(2)),
        EventRaised(event_id=10, name="b", input=raw(1)),
        EventRaised(event_id=13, name="start"),
    )
    carried = actions2[0].carryover  # type: ignore[union-attr]
    assert [e.name for e in carried] == ["b", "a"]  # by event id, not by arrival


# -- results that cannot be encoded or decoded ------------------------------------------


def test_a_result_that_cannot_be_encoded_fails_the_run_with_the_reason() -> None:
    """Mutants: the encoding failure of the return value dropped or recorded empty."""

    async def returns_junk(ctx: WorkflowContext) -> object:
        return object()

    failure = outcome(live_of(returns_junk).turn())
    assert failure.type == "durable.SerializationError"
    assert failure.message.startswith("cannot encode a object payload")


def test_payloads_that_do_not_fit_the_type_raise_serialization_error_in_the_workflow() -> None:
    """Mutants: a decode error of an activity result or an event delivered as ``None``
    (the workflow would see no error)."""

    async def strict(ctx: WorkflowContext) -> list[str]:
        seen = []
        for wait in (
            lambda: ctx.call_activity(stamp),
            lambda: ctx.wait_for_event("when", type=datetime),
        ):
            try:
                await wait()
            except SerializationError as err:
                seen.append(type(err).__name__)
        return seen

    live = live_of(strict, registry=typed())
    (a,) = live.turn()
    assert live.turn(ActivityCompleted(task_id=a.task_id, result=raw("not a time"))) == []
    done = live.turn(EventRaised(name="when", input=raw("not a time")))
    assert outcome(done) == ["SerializationError", "SerializationError"]


# -- ctx.all, ctx.any, events with a timeout ----------------------------------------------


def test_all_of_nothing_is_an_empty_list() -> None:
    """Mutant: ``ctx.all([])`` resolving to ``None``."""

    async def nothing(ctx: WorkflowContext) -> Any:
        return await ctx.all([])

    assert outcome(live_of(nothing).turn()) == []


def test_any_and_all_refuse_what_they_cannot_wait_on_by_name() -> None:
    """Mutants: the messages of ``ctx.any([])`` and of a non-durable task changed."""

    async def misuses(ctx: WorkflowContext, which: str) -> None:
        if which == "any":
            await ctx.any([])
        else:
            await ctx.all([42])  # type: ignore[list-item]

    assert outcome(live_of(misuses, "any").turn()).message == "ctx.any needs at least one task"
    assert outcome(live_of(misuses, "all").turn()).message == (
        "ctx.all/ctx.any take durable tasks or coroutines, not int"
    )


def test_an_event_timeout_is_a_timer_of_its_own_purpose_and_names_the_event() -> None:
    """Mutants: the timeout timer's purpose (``event_timeout``) or the message changed."""

    async def approval(ctx: WorkflowContext) -> str:
        try:
            return str(await ctx.wait_for_event("approve", timeout=timedelta(minutes=5)))
        except TimeoutError as err:
            return str(err)

    live = live_of(approval)
    (timer,) = live.turn()
    assert timer == StartTimer(0, T0 + timedelta(minutes=5), "event_timeout")
    done = live.turn(TimerFired(task_id=0, fire_at=timer.fire_at))  # type: ignore[union-attr]
    assert outcome(done) == "no event 'approve' arrived within 0:05:00"


# -- sub-workflow ids and retries -----------------------------------------------------------


def test_generated_child_ids_use_eight_characters_of_the_run_id() -> None:
    """Mutant: the slice of the run id in a generated child id changed."""

    async def parent(ctx: WorkflowContext) -> None:
        await ctx.call_workflow("kid")

    reg = Registry()
    reg.workflow(parent)
    live = Live(reg, "parent", run_id="0123456789abcdef")
    (child,) = live.turn()
    assert isinstance(child, StartChildWorkflow)
    assert child.instance_id == "wf-01234567-0"


child_retries = Registry()


@child_retries.workflow
async def retries_child(ctx: WorkflowContext, instance_id: str | None) -> list[Any]:
    retry = RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=2))
    try:
        return [await ctx.call_workflow(stamped, 7, instance_id=instance_id, retry=retry)]
    except WorkflowFailed as err:
        return ["failed", err.instance_id]


child_retries.workflow(stamped)


def fail_child(live: Live, child: Action, backoff_by: timedelta) -> list[Action]:
    assert isinstance(child, StartChildWorkflow)
    oops = FailureDetails("ValueError", "oops")
    (backoff,) = live.turn(ChildWorkflowErrored(task_id=child.task_id, failure=oops))
    assert isinstance(backoff, StartTimer)
    assert backoff.purpose == "retry"
    assert backoff.fire_at == T0 + backoff_by
    return live.turn(TimerFired(task_id=backoff.task_id, fire_at=backoff.fire_at))


def test_a_child_with_retry_runs_again_under_a_new_id_until_it_succeeds() -> None:
    """Mutants: a retried child's name, input, id, policy or output type lost, or the
    attempt suffix starting at the wrong attempt."""
    live = Live(child_retries, "retries_child", "kid")
    (first,) = live.turn()
    assert first == StartChildWorkflow(0, "stamped", "kid", raw(7), "terminate")
    (second,) = fail_child(live, first, timedelta(seconds=2))
    assert second == StartChildWorkflow(2, "stamped", "kid-2", raw(7), "terminate")
    (third,) = fail_child(live, second, timedelta(seconds=4))
    assert third == StartChildWorkflow(4, "stamped", "kid-3", raw(7), "terminate")
    done = live.turn(ChildWorkflowCompleted(task_id=4, result=raw(T0.isoformat())))
    assert done == [CompleteWorkflow(raw([T0]))]  # decoded as the child's datetime


def test_a_child_with_retry_gives_up_after_max_attempts() -> None:
    """Mutants: the retry policy ignored for children (one attempt, or endless ones)."""
    live = Live(child_retries, "retries_child", None)
    (child,) = live.turn()
    for backoff_by in (2, 4):
        (child,) = fail_child(live, child, timedelta(seconds=backoff_by))
    assert isinstance(child, StartChildWorkflow)
    assert child.instance_id == "wf-run-a-4"
    oops = FailureDetails("ValueError", "oops")
    done = live.turn(ChildWorkflowErrored(task_id=child.task_id, failure=oops))
    assert outcome(done) == ["failed", "wf-run-a-4"]


# -- futures and the scheduler ---------------------------------------------------------


def test_reading_an_unfinished_future_says_so() -> None:
    """Mutants: the messages of ``result()``/``exception()`` on a pending future."""
    future: DurableFuture[int] = DurableFuture()
    for read in (future.result, future.exception):
        with pytest.raises(RuntimeError) as caught:
            read()
        assert str(caught.value) == "durable future is not done yet"


def test_finished_tasks_leave_the_scheduler() -> None:
    """Mutant: a finished task not removed from the scheduler's set (it would grow with
    every coroutine a long-running workflow ever ran, and be closed again at the end)."""

    async def quick() -> int:
        return 1

    scheduler = Scheduler()
    tasks = [scheduler.spawn(quick()) for _ in range(3)]
    scheduler.run()
    assert [t.result() for t in tasks] == [1, 1, 1]
    assert scheduler.tasks == set()


def test_closing_a_run_runs_the_finally_blocks_of_its_tasks() -> None:
    """Mutant: ``Task.close`` throwing nothing into the coroutine (its ``finally`` blocks
    would never run)."""
    cleaned: list[str] = []

    async def tidy(ctx: WorkflowContext) -> None:
        try:
            await ctx.wait_for_event("never")
        finally:
            cleaned.append("main")

    live = live_of(tidy)
    live.turn()
    live.run.close()
    assert cleaned == ["main"]
    assert live.run.terminated


def test_a_coroutine_that_refuses_to_close_is_let_go_without_resuming_it() -> None:
    """Mutant: the stubborn coroutine replaced by ``None`` instead of a finished stand-in
    (stepping the task again would crash instead of ending it)."""
    resumed: list[int] = []
    gate: DurableFuture[None] = DurableFuture()

    async def stubborn() -> None:
        while True:
            try:
                await gate
            except GeneratorExit:  # let the garbage collector close it in the end
                raise
            except BaseException:
                resumed.append(1)

    scheduler = Scheduler()
    task = scheduler.spawn(stubborn())
    scheduler.run()
    task.close()
    count = len(resumed)
    assert count >= 1
    task.step()  # the stand-in finishes at once; the stubborn coroutine is not resumed
    assert task.done()
    assert task.result() is None
    assert len(resumed) == count


# -- the engine's side of a run: turn, take_pending, close -------------------------------


def take_turn(run: WorkflowRun, events: list[HistoryEvent], *, first_turn: bool) -> list[Action]:
    """Run ``WorkflowRun.turn`` (a coroutine that never suspends) to its result."""
    coro = run.turn(events, first_turn=first_turn)
    with pytest.raises(StopIteration) as stop:
        coro.send(None)
    actions: list[Action] = stop.value.value
    return actions


def test_the_first_turn_of_a_rerun_hands_over_what_replay_left_pending() -> None:
    """Mutants: ``turn`` not taking the pending actions on a first turn, taking them on a
    later one, or feeding the turn as a replay; ``take_pending`` not clearing them."""
    cut = [started("pipeline_of_two"), TurnStarted()]  # history cut before the first step
    run = WorkflowRun("wf", history_code.get_workflow("pipeline_of_two"), history_code, codec)
    run.apply(numbered(cut), replaying=True)
    first = take_turn(run, [TurnStarted(event_id=2, timestamp=T0)], first_turn=True)
    assert first == [ScheduleActivity(0, "step", raw(None), 1, 0)]
    assert run.take_pending() == []
    done = ActivityCompleted(event_id=4, task_id=0, result=raw(1))
    second = take_turn(run, [TurnStarted(event_id=3, timestamp=T0), done], first_turn=False)
    assert second == [ScheduleActivity(1, "step", raw(1), 1, 1)]
    assert not run.replaying


@history_code.workflow
async def pipeline_of_two(ctx: WorkflowContext) -> int:
    one = await ctx.call_activity("step")
    return int(await ctx.call_activity("step", one))


@history_code.workflow
async def returns_one(ctx: WorkflowContext) -> int:
    return 1


def test_closing_a_run_marks_it_terminated_only_if_it_had_not_ended() -> None:
    """Mutants: ``close`` marking an ended run terminated, or not marking a waiting one."""
    waiting = Live(history_code, "never_steps")
    waiting.turn()
    waiting.run.close()
    assert waiting.run.terminated
    ended = Live(history_code, "returns_one")
    assert ended.turn() == [CompleteWorkflow(raw(1))]
    ended.run.close()
    assert not ended.run.terminated
    assert ended.run.finished


# -- what a fresh run and a live turn report ----------------------------------------------


def test_a_fresh_run_has_no_custom_status_and_a_turn_is_not_a_replay() -> None:
    """Mutants: the initial custom status not the encoded ``null`` (it would not decode),
    or ``turn`` feeding ``replaying=None`` (``ctx.is_replaying`` would not be False)."""

    async def reports(ctx: WorkflowContext) -> list[Any]:
        first = ctx.is_replaying
        await ctx.sleep(timedelta(seconds=1))
        return [first, ctx.is_replaying]

    reg = Registry()
    reg.workflow(reports)
    run = WorkflowRun("wf", reg.get_workflow("reports"), reg, codec)
    assert value(run.custom_status) is None
    run.apply([started("reports")], replaying=True)
    (timer,) = take_turn(run, [TurnStarted(timestamp=T0)], first_turn=True)
    fired = TimerFired(task_id=0, fire_at=timer.fire_at)  # type: ignore[union-attr]
    assert take_turn(run, [TurnStarted(timestamp=T0), fired], first_turn=False) == [
        CompleteWorkflow(raw([False, False]))
    ]


def test_patches_and_activities_of_one_turn_never_share_a_key() -> None:
    """Mutants: the keys of recorded patches counting up (they would collide with task
    ids and replace a scheduled activity)."""

    async def mixed(ctx: WorkflowContext) -> None:
        first = ctx.call_activity("a")
        second = ctx.call_activity("b")
        ctx.patched("p1")
        ctx.patched("p2")
        ctx.patched("p3")
        await ctx.all([first, second])

    assert live_of(mixed).turn() == [
        ScheduleActivity(0, "a", raw(None), 1, 0),
        ScheduleActivity(1, "b", raw(None), 1, 1),
        RecordPatch("p1"),
        RecordPatch("p2"),
        RecordPatch("p3"),
    ]


def test_an_event_raised_before_the_wait_keeps_its_type() -> None:
    """Mutant: a buffered event delivered without the type asked for."""

    async def later(ctx: WorkflowContext) -> str:
        await ctx.sleep(timedelta(seconds=1))
        when = await ctx.wait_for_event("when", type=datetime)
        return type(when).__name__

    live = live_of(later)
    (timer,) = live.turn()
    fired = TimerFired(task_id=0, fire_at=timer.fire_at)  # type: ignore[union-attr]
    done = live.turn(EventRaised(name="when", input=raw(T0.isoformat())), fired)
    assert outcome(done) == "datetime"


def test_events_held_by_a_suspension_go_to_the_next_run_after_continue_as_new() -> None:
    """Mutants: on resume, held events after the run's end dropped (``break``) or
    recorded as ``None`` instead of being left for the next run."""

    async def hands_on(ctx: WorkflowContext) -> None:
        await ctx.wait_for_event("go")
        ctx.continue_as_new()

    live = live_of(hands_on)
    live.turn()
    held = [EventRaised(name="go"), EventRaised(name="d", input=raw(1)), EventRaised(name="e")]
    live.turn(WorkflowSuspended(), *held)
    (final,) = live.run.apply([TurnStarted(timestamp=T0), WorkflowResumed()], replaying=False)
    assert isinstance(final, ContinueAsNew)
    assert live.run.untaken == held[1:]


def test_sleep_until_is_a_sleep_timer_at_the_given_time_and_needs_a_timezone() -> None:
    """Mutants: ``sleep_until``'s timer purpose or its naive-datetime message changed."""
    when = T0 + timedelta(days=3)

    async def alarm(ctx: WorkflowContext, naive: bool) -> None:
        await ctx.sleep_until(when.replace(tzinfo=None) if naive else when)

    assert live_of(alarm, False).turn() == [StartTimer(0, when, "sleep")]
    failure = outcome(live_of(alarm, True).turn())
    assert failure.message == "sleep_until needs a timezone-aware datetime"


def test_closing_cannot_be_swallowed_by_except_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Mutants: ``Task.close`` throwing an ordinary exception (``except Exception`` in the
    workflow would swallow it), or unwinding live (its ``finally`` would log)."""
    seen: list[str] = []

    async def guarded(ctx: WorkflowContext) -> None:
        try:
            await ctx.wait_for_event("never")
        except Exception:
            seen.append("swallowed")
        finally:
            seen.append("finally")
            ctx.logger.warning("cleaning up")

    live = live_of(guarded)
    live.turn()
    live.run.close()
    assert seen == ["finally"]
    assert not caplog.records


def test_callbacks_get_the_future_whenever_they_are_added() -> None:
    """Mutants: a callback added to a finished future, or a second callback added to a
    pending one, called without the future (or not at all)."""
    got: list[DurableFuture[int]] = []
    pending: DurableFuture[int] = DurableFuture()
    pending.add_done_callback(got.append)
    pending.add_done_callback(got.append)
    pending.set_result(1)
    pending.add_done_callback(got.append)
    assert got == [pending, pending, pending]


def test_awaiting_a_foreign_awaitable_says_what_to_do_instead() -> None:
    """Mutants: the advice in the foreign-awaitable error changed."""

    async def sleeps_on_asyncio(ctx: WorkflowContext) -> None:
        import asyncio

        await asyncio.sleep(0)

    failure = outcome(live_of(sleeps_on_asyncio).turn())
    assert failure.message.endswith(
        ", which durable cannot replay: await only ctx operations (activities, timers, "
        "events, sub-workflows) and do I/O inside activities"
    )


def test_continue_as_new_unwinding_without_a_request_is_an_error() -> None:
    """Mutants: the message of a continue-as-new unwinding that nobody asked for."""

    async def fakes_it(ctx: WorkflowContext) -> None:
        raise ContinueAsNewSignal()

    with pytest.raises(RuntimeError) as caught:
        live_of(fakes_it).turn()
    assert str(caught.value) == "continue-as-new unwound without a request"


def test_an_input_that_does_not_decode_fails_the_run() -> None:
    """Mutants: a run whose input does not fit the declared type left waiting, or failed
    without the reason."""

    async def counts(ctx: WorkflowContext, n: int) -> int:
        return n

    failure = outcome(live_of(counts, "three").turn())
    assert failure.type == "durable.SerializationError"
    assert "Expected `int`, got `str`" in failure.message


def test_a_live_run_that_ended_leaves_later_events_for_the_next_run() -> None:
    """Mutants: events after the live end of a run dropped (``break``), kept as ``None``,
    or turn markers taken for events; ``untaken`` not reset by each turn."""

    async def hands_on(ctx: WorkflowContext) -> None:
        await ctx.wait_for_event("go")
        ctx.continue_as_new()

    live = live_of(hands_on)
    live.turn()
    later = [EventRaised(name="d", input=raw(1)), EventRaised(name="e")]
    (final,) = live.turn(EventRaised(name="go"), *later)
    assert isinstance(final, ContinueAsNew)
    assert live.run.untaken == later
    assert live.run.apply([TurnStarted(timestamp=T0), later[0]], replaying=False) == []
    assert live.run.untaken == [later[0]]


def test_a_live_end_is_handed_over_once() -> None:
    """Mutant: the end of a live run not marked as handed over (every later turn would
    end the run again)."""
    live = Live(history_code, "returns_one")
    assert live.turn() == [CompleteWorkflow(raw(1))]
    assert live.run.apply([TurnStarted(timestamp=T0)], replaying=False) == []
