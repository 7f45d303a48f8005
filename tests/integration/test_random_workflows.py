"""Random workflow programs, run durably, against a plain in-memory interpretation.

A *program* is a JSON list of steps; one registered workflow interprets any program:

* ``["act", v]``            one activity call, which returns ``act(v)``
* ``["fanout", [v, ...]]``  ``ctx.all`` over 1..5 activity calls
* ``["any", [v, ...]]``     ``ctx.any`` over 2..3 activity calls: the first to finish wins
* ``["timer", seconds]``    ``ctx.sleep``; the step checks it slept at least that long
* ``["event", name]``       ``ctx.wait_for_event(name)``, giving the data raised
* ``["child", program]``    ``ctx.call_workflow`` of the interpreter on a sub-program

The test, not the event loop, decides the order of everything whose order is free:
every activity blocks on a gate until the driver opens it, the driver raises events
(often before the workflow waits for them, so they are buffered) and it moves the
MockClock, each move picked by Hypothesis-drawn numbers. The driver records what it
did (which activity finished first, what each event carried), and a plain Python
interpreter of the same program, given that record, must return what the workflow
returned; the histories must be well formed too. The second property also stops the
runtime mid-way, once or more (blocked activities are cancelled and must be
re-dispatched), has a store-only client send events while no runtime runs, and
carries on with a new runtime on the same store.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from durable import ActivityContext, Client, MockClock, Registry, Runtime, WorkflowContext
from durable._core._events import (
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowErrored,
    ChildWorkflowScheduled,
    EventRaised,
    HistoryEvent,
    TimerCreated,
    TimerFired,
    WorkflowCompleted,
)
from durable.store import MemoryStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROOT = "root"
EVENT_NAMES = ("a", "b", "c")
MAX_TIMER = 10**6
MAX_MOVES = 400

Program = list[list[Any]]

# -- programs ---------------------------------------------------------------------

values = st.integers(-(10**6), 10**6)
leaf_steps = st.one_of(
    st.tuples(st.just("act"), values),
    st.tuples(st.just("fanout"), st.lists(values, min_size=1, max_size=5)),
    st.tuples(st.just("any"), st.lists(values, min_size=2, max_size=3, unique=True)),
    st.tuples(st.just("timer"), st.integers(1, MAX_TIMER)),
    st.tuples(st.just("event"), st.sampled_from(EVENT_NAMES)),
).map(list)
steps = st.one_of(
    leaf_steps,
    st.tuples(st.just("child"), st.lists(leaf_steps, min_size=1, max_size=4)).map(list),
)
programs = st.lists(steps, min_size=1, max_size=8)


def act(value: int) -> int:
    """What the activity returns for ``value``."""
    return value * 2 + 1


def activity_key(instance_id: str, step: int, index: int) -> str:
    """The token of one activity call: unique within the whole test."""
    return f"{instance_id}/{step}/{index}"


def child_id(instance_id: str, step: int) -> str:
    return f"{instance_id}-c{step}"


def instances_of(program: Program, instance_id: str = ROOT) -> dict[str, Program]:
    """Every instance the program runs (the root and its children), with its program."""
    found = {instance_id: program}
    for step, (kind, arg) in enumerate(program):
        if kind == "child":
            found.update(instances_of(arg, child_id(instance_id, step)))
    return found


# -- the reference ----------------------------------------------------------------


def interpret(
    program: Program,
    instance_id: str,
    finished: list[str],
    raised: dict[tuple[str, str], list[int]],
) -> list[Any]:
    """What the workflow must return, given the order activities finished in and the data
    of the events raised to each instance, by name, in the order they were raised."""
    rank = {key: i for i, key in enumerate(finished)}
    queues = {target: list(data) for target, data in raised.items()}

    def run(program: Program, instance_id: str) -> list[Any]:
        results: list[Any] = []
        for step, (kind, arg) in enumerate(program):
            if kind == "act":
                results.append(act(arg))
            elif kind == "fanout":
                results.append([act(value) for value in arg])
            elif kind == "any":
                ranks = [
                    rank.get(activity_key(instance_id, step, i), math.inf) for i in range(len(arg))
                ]
                first = min(range(len(arg)), key=ranks.__getitem__)
                assert ranks[first] != math.inf, f"no activity of {instance_id} step {step} ended"
                results.append(act(arg[first]))
            elif kind == "timer":
                results.append(True)
            elif kind == "event":
                results.append(queues[(instance_id, arg)].pop(0))
            else:
                results.append(run(arg, child_id(instance_id, step)))
        return results

    return run(program, instance_id)


# -- the workflow and its gated activity ------------------------------------------


@dataclass
class Harness:
    """Test-owned state the activity and the workflow report to."""

    blocked: dict[str, anyio.Event] = field(default_factory=dict)
    runs: Counter[str] = field(default_factory=Counter)
    finished: list[str] = field(default_factory=list)  # keys, in the order released
    started: set[str] = field(default_factory=set)  # instances whose code has run
    errors: list[str] = field(default_factory=list)


def build_registry(harness: Harness) -> Registry:
    registry = Registry()

    @registry.activity
    async def gated(ctx: ActivityContext, item: dict[str, Any]) -> int:
        key = item["key"]
        harness.runs[key] += 1
        if key in harness.blocked:
            harness.errors.append(f"activity {key} runs twice at once")
        if key in harness.finished:
            harness.errors.append(f"activity {key} runs again after its result was committed")
        gate = anyio.Event()
        harness.blocked[key] = gate
        try:
            await gate.wait()
        finally:
            if harness.blocked.get(key) is gate:
                del harness.blocked[key]
        return act(item["value"])

    @registry.workflow
    async def interpreter(ctx: WorkflowContext, program: list[Any]) -> list[Any]:
        harness.started.add(ctx.instance_id)
        me = ctx.instance_id

        def call(step: int, index: int, value: int) -> Any:
            return ctx.call_activity(gated, {"key": activity_key(me, step, index), "value": value})

        results: list[Any] = []
        for step, (kind, arg) in enumerate(program):
            if kind == "act":
                results.append(await call(step, 0, arg))
            elif kind == "fanout":
                results.append(await ctx.all([call(step, i, v) for i, v in enumerate(arg)]))
            elif kind == "any":
                winner = await ctx.any([call(step, i, v) for i, v in enumerate(arg)])
                results.append(winner.result())
            elif kind == "timer":
                before = ctx.now()
                await ctx.sleep(timedelta(seconds=arg))
                results.append(ctx.now() - before >= timedelta(seconds=arg))
            elif kind == "event":
                results.append(await ctx.wait_for_event(arg))
            else:
                results.append(
                    await ctx.call_workflow(interpreter, arg, instance_id=child_id(me, step))
                )
        return results

    return registry


# -- driving ----------------------------------------------------------------------


async def settle() -> None:
    """Return once every other task waits on something not yet done.

    ``anyio.wait_all_tasks_blocked`` does the same but sleeps 0.1 s of real time
    whenever some task is still runnable, which would make this test crawl.
    The memory store never leaves the event loop, so this is a true quiescence.
    """
    me = asyncio.current_task()
    for _ in range(100_000):
        await asyncio.sleep(0)
        if all(
            task is me or (task._fut_waiter is not None and not task._fut_waiter.done())  # type: ignore[attr-defined]
            for task in asyncio.all_tasks()
        ):
            return
    raise AssertionError("the runtime never settled")


class Picks:
    """The driver's choices, drawn by Hypothesis before the test body runs.

    (``st.randoms(use_true_random=False)`` would draw inside the body, and a draw that
    Hypothesis aborts there kills anyio's pytest runner task with a noisy "Task
    exception was never retrieved".) Past the end every pick is 0, and picks shrink
    towards 0: the first option.
    """

    def __init__(self, picks: list[int]) -> None:
        self._picks = iter(picks)

    def randrange(self, stop: int) -> int:
        return next(self._picks, 0) % stop


@dataclass
class Outcome:
    result: list[Any]
    histories: dict[str, list[HistoryEvent]]
    crashes: int


class Driver:
    """Runs one program, choosing every free ordering with ``picks``."""

    def __init__(self, program: Program, picks: Picks, crash_points: list[int]) -> None:
        self.program = program
        self.picks = picks
        self.crash_points = sorted(crash_points)
        self.harness = Harness()
        self.registry = build_registry(self.harness)
        self.clock = MockClock(T0)
        self.store = MemoryStore()
        self.needed: Counter[tuple[str, str]] = Counter()
        for instance_id, sub in instances_of(program).items():
            for kind, arg in sub:
                if kind == "event":
                    self.needed[(instance_id, arg)] += 1
        self.raised: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.moves = 0
        # Once all is quiet with nothing to release or raise, only a timer can move
        # the program on: more forced clock moves than timers means it is stuck.
        self.forced_advances = 0
        self.timers = sum(
            kind == "timer" for sub in instances_of(program).values() for kind, _ in sub
        )
        self.log: list[Any] = []

    async def run(self) -> Outcome:
        crashes = 0
        started = False
        while True:
            async with Runtime(self.registry, store=self.store, clock=self.clock) as runtime:
                if not started:
                    await runtime.start("interpreter", self.program, instance_id=ROOT)
                    started = True
                crash_at = self.crash_points[crashes] if crashes < len(self.crash_points) else None
                if await self._drive(runtime, crash_at):
                    result = await runtime.client.get_handle(ROOT)
                    histories = {
                        instance_id: await runtime.client.get_handle(instance_id).history()
                        for instance_id in instances_of(self.program)
                    }
                    return Outcome(result, histories, crashes)
            crashes += 1
            self.log.append("crash")
            report(f"crash after {self.moves} moves")
            await self._raise_while_down()

    async def _raise_while_down(self) -> None:
        """While no runtime runs, another process may send events through the store."""
        client = Client(store=self.store, clock=self.clock)
        for _ in range(self.picks.randrange(3)):
            targets = self._open_events()
            if not targets:
                break
            await self._raise(client, targets[self.picks.randrange(len(targets))], "down")

    async def _raise(self, client: Client, target: tuple[str, str], how: str) -> None:
        instance_id, name = target
        data = len(self.log)  # distinct, so a mix-up shows
        self.raised[target].append(data)
        self.log.append((how, instance_id, name, data))
        await client.get_handle(instance_id).raise_event(name, data)

    def _open_events(self) -> list[tuple[str, str]]:
        return [
            (instance_id, name)
            for (instance_id, name), count in sorted(self.needed.items())
            if len(self.raised[(instance_id, name)]) < count
            and (instance_id == ROOT or instance_id in self.harness.started)
        ]

    async def _drive(self, runtime: Runtime, crash_at: int | None) -> bool:
        """Make moves until the root ends (True) or it is time to crash (False)."""
        handle = runtime.client.get_handle(ROOT)
        needs_settle = True
        while True:
            if needs_settle:
                await settle()
            if (await handle.describe()).status.is_terminal:
                return True
            if crash_at is not None and self.moves >= crash_at:
                return False
            assert self.moves < MAX_MOVES, f"stuck after {self.moves} moves: {self.log}"
            assert not self.harness.errors, self.harness.errors
            # An activity to release (its key) or an event to raise (instance, name).
            choices: list[str | tuple[str, str]] = [*sorted(self.harness.blocked)]
            choices += self._open_events()
            if not choices and not needs_settle:
                needs_settle = True  # let the events just raised be taken in first
                continue
            self.moves += 1
            # One draw per move (so Hypothesis shrinks it well): 0 moves the clock on a
            # whim, unless it just moved; otherwise it picks a move and a variant.
            pick = self.picks.randrange(10 * len(choices) + 1) if choices else 0
            if not choices:
                self.forced_advances += 1
                assert self.forced_advances <= self.timers + 1, f"stuck: {self.log}"
            if not choices or (pick == 0 and self.log[-1:] != ["advance"]):
                # Every pending timer comes due.
                self.clock.advance(timedelta(seconds=MAX_TIMER))
                self.log.append("advance")
                needs_settle = True
                continue
            choice = choices[max(pick - 1, 0) // 10]
            if isinstance(choice, str):
                self.harness.finished.append(choice)
                self.harness.blocked.pop(choice).set()
                self.log.append(("release", choice))
                needs_settle = True
            else:
                await self._raise(runtime.client, choice, "raise")
                # Sometimes raise the next event (or crash) before this one is taken in.
                needs_settle = max(pick - 1, 0) % 10 >= 3


def report(message: str) -> None:
    """Tell Hypothesis (shown with a falsifying example), or no one outside a test."""
    if currently_in_test_context():
        note(message)


# -- checks -----------------------------------------------------------------------

_ANSWERS: dict[type, type] = {
    ActivityCompleted: ActivityScheduled,
    ActivityErrored: ActivityScheduled,
    TimerFired: TimerCreated,
    ChildWorkflowCompleted: ChildWorkflowScheduled,
    ChildWorkflowErrored: ChildWorkflowScheduled,
}


def check_history(instance_id: str, program: Program, history: list[HistoryEvent]) -> None:
    assert [event.event_id for event in history] == list(range(len(history)))
    assert isinstance(history[-1], WorkflowCompleted)
    scheduled: dict[int, HistoryEvent] = {}
    answers: Counter[int] = Counter()
    keys: Counter[str] = Counter()
    for event in history:
        if isinstance(event, ActivityScheduled | TimerCreated | ChildWorkflowScheduled):
            assert event.task_id not in scheduled, f"task id {event.task_id} scheduled twice"
            scheduled[event.task_id] = event
            if isinstance(event, ActivityScheduled):
                keys[msgspec.json.decode(event.input)["key"]] += 1
        elif type(event) in _ANSWERS:
            task_id = event.task_id  # type: ignore[union-attr]
            assert type(scheduled.get(task_id)) is _ANSWERS[type(event)], event
            answers[task_id] += 1
    assert all(count == 1 for count in answers.values()), answers
    # Every activity call of the program is scheduled exactly once (no retries here).
    expected_keys: Counter[str] = Counter()
    for step, (kind, arg) in enumerate(program):
        if kind == "act":
            expected_keys[activity_key(instance_id, step, 0)] += 1
        elif kind in ("fanout", "any"):
            expected_keys.update(activity_key(instance_id, step, i) for i in range(len(arg)))
    assert keys == expected_keys
    timers = sum(isinstance(event, TimerCreated) for event in history)
    assert timers == sum(kind == "timer" for kind, _ in program)
    events = sum(isinstance(event, EventRaised) for event in history)
    assert events == sum(kind == "event" for kind, _ in program)
    # Everything the workflow waited on has its one answer; only the losers of a
    # ctx.any may still be running when the workflow returns.
    for task_id, event in scheduled.items():
        if isinstance(event, ActivityScheduled):
            step = int(msgspec.json.decode(event.input)["key"].split("/")[1])
            if program[step][0] == "any":
                continue
        assert answers[task_id] == 1, f"{instance_id}: task {task_id} has no answer"


async def run_and_check(program: Program, picks: list[int], crash_points: list[int]) -> Outcome:
    driver = Driver(program, Picks(picks), crash_points)
    with anyio.fail_after(30):
        outcome = await driver.run()
    report(f"moves: {driver.log}")
    harness = driver.harness
    assert not harness.errors, harness.errors
    expected = interpret(program, ROOT, harness.finished, driver.raised)
    assert outcome.result == expected
    for instance_id, sub in instances_of(program).items():
        check_history(instance_id, sub, outcome.histories[instance_id])
    if not outcome.crashes:
        assert all(count == 1 for count in harness.runs.values()), harness.runs
    if currently_in_test_context():
        hypothesis_event(f"crashes: {outcome.crashes}")
    return outcome


_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


picks = st.lists(st.integers(0, 2**16), min_size=20, max_size=200)


@_SETTINGS
@given(program=programs, picks=picks)
async def test_random_workflow_matches_interpreter(program: Program, picks: list[int]) -> None:
    await run_and_check(program, picks, [])


@_SETTINGS
@given(
    program=programs,
    picks=picks,
    crash_points=st.lists(st.integers(0, 30), min_size=1, max_size=3),
)
async def test_random_workflow_survives_crashes(
    program: Program, picks: list[int], crash_points: list[int]
) -> None:
    await run_and_check(program, picks, crash_points)


async def test_events_sent_in_one_instant_keep_their_order() -> None:
    """Two events of one name sent back to back while no runtime runs (on a clock that
    stands still) must reach the workflow in the order they were sent."""
    harness = Harness()
    registry = build_registry(harness)
    program: Program = [["event", "a"], ["event", "a"]]
    for _ in range(20):  # the order is a coin toss per try
        store, clock = MemoryStore(), MockClock(T0)
        async with Runtime(registry, store=store, clock=clock) as runtime:
            await runtime.start("interpreter", program, instance_id=ROOT)
            await runtime.wait_idle()
        handle = Client(store=store, clock=clock).get_handle(ROOT)
        await handle.raise_event("a", 1)
        await handle.raise_event("a", 2)
        async with Runtime(registry, store=store, clock=clock) as runtime:
            assert await runtime.client.get_handle(ROOT) == [1, 2]
