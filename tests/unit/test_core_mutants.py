"""Tests that kill deliberate breakages (mutants) of the pure replay core.

Sans-I/O: histories are built by hand, events fed to a ``WorkflowRun``, and the test
asserts on the actions it returns. Each test's docstring names the mutant it pins.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from msgspec import Raw

from durable import Registry, WorkflowContext
from durable._actions import (
    Action,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    RecordPatch,
    ScheduleActivity,
    StartChildWorkflow,
    StartTimer,
)
from durable._codec import JsonCodec
from durable._events import (
    ActivityScheduled,
    ChildWorkflowScheduled,
    ContinuedAsNew,
    Event,
    HistoryEvent,
    PatchApplied,
    TimerCreated,
    TimerFired,
    TurnStarted,
    WorkflowCompleted,
    WorkflowErrored,
    WorkflowStarted,
)
from durable._replay import WorkflowRun

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
