"""Random workflow programs for the whole-system simulation, and their reference.

A *program* is a JSON list of steps that one registered workflow, ``prog``,
interprets; the same list given to :func:`expected` says what the run must return.
Steps cover the workflow API:

* ``["act", v, fails]``     an activity with a retry policy; its first ``fails % 3``
  attempts raise, and with ``fails >= 3`` the next one fails for good (``"failed"``).
  Every attempt reads and writes the step's memo, so the memo is in use while the run is.
* ``["all", [v, ...]]``     ``ctx.all`` over plain activity calls
* ``["any", [v, ...]]``     ``ctx.any``: any one of the values may win
* ``["timer", s]``          ``ctx.sleep``
* ``["event", name, t]``    ``ctx.wait_for_event``, with a timeout of ``t`` seconds or none
* ``["child", prog, id]``   ``ctx.call_workflow`` of ``prog`` on a sub-program; ``id`` is
  the child's suffix (a long multi-byte one must be refused as an id, not crash a store)
* ``["patch"]``             ``ctx.patched``
* ``["can"]``               ``ctx.continue_as_new`` with the rest of the program
* ``["loop", n]``           ``n`` more runs, each waiting up to a second for a ``"tick"``
  event and then continuing as new (long continue-as-new chains, each run consuming
  a message: what a run carries over must not grow with their number)
* ``["send", k, name, n]``  ``ctx.send_event`` of ``n`` events ``name`` to root instance
  ``r{k}`` (which may not exist: the events are dropped), each with unique data
* ``["raise"]``             the workflow fails here
* ``["cancel", v, quick, s]`` an activity cancelled after ``s`` seconds; it waits for its
  cancel unless ``quick``. A cancel that took (``cancel()`` true) must never see the
  activity's result applied
* ``["anyc", [v, ...]]``    ``ctx.any(..., cancel_rest=True)``: the losers are cancelled,
  or had finished first
* ``["slow", v]``           an activity whose first attempt hangs until its
  ``start_to_close_timeout`` passes; the retry returns
* ``["mend", v]``           an activity that fails for good until its run is rewound
  (its memo remembers the try): the run fails, and so does a parent's call of a child
  that holds one; a rewind of the (root) run runs it again, and then it returns
* ``["search", v]``         ``ctx.upsert_search_attributes`` (see :mod:`._system_search`)

Every run takes the update ``"bump"``: its handler returns ``act(value)``, and its
validator refuses a negative value.

Code is deployed in *generations*: each change after the first adds a one-second
timer before every ``act`` step, either bare (a history recorded before it no longer
replays) or under ``ctx.patched`` (it does).

The workflow's input is ``{"tag", "prog", "acc"}``: ``tag`` names the start (so a
result, a child's result or a memo entry shows which start it belongs to) and ``acc``
carries the results of the runs before a continue-as-new.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from durable._activity import ActivityContext  # noqa: TC001 (read by the registry)
from durable._core._context import WorkflowContext  # noqa: TC001 (read by the registry)
from durable._core._retry import RetryPolicy
from durable._errors import (
    ActivityFailed,
    CancelledError,
    InvalidInstanceIdError,
    TimeoutError,
    WorkflowFailed,
)
from durable._registry import Registry

if TYPE_CHECKING:
    import random

__all__ = [
    "EVENT_NAMES",
    "LONG_ID",
    "SEARCHED",
    "TICK",
    "Harness",
    "Program",
    "act",
    "build_registry",
    "child_id",
    "event_names",
    "expected_mismatch",
    "mends",
    "random_program",
    "search_step_attributes",
    "sent_data",
    "start_attributes",
]

Program = list[list[Any]]
EVENT_NAMES = ("a", "b")
TICK = "tick"  # the event a loop's runs wait for
LONG_ID = "kunde-" + "é" * 130  # 136 characters, 266 bytes: too long for a file name


SEARCHED = ("group", "stage")  # the attributes the simulation sets


def start_attributes(number: int) -> dict[str, str]:
    """The attributes a start gives: its number picks one of three groups (no draw of
    the seeded random source: adding them changed no program)."""
    return {"group": f"g{number % 3}"}


def search_step_attributes(value: int) -> dict[str, str | None]:
    """What a ``["search", v]`` step upserts: a stage, or (v = 3) none, and the group
    moved on for v = 2."""
    if value == 3:
        return {"stage": None}
    if value == 2:
        return {"stage": "s2", "group": "moved"}
    return {"stage": f"s{value}"}


class PlannedFailure(Exception):
    """Raised by an activity that a program tells to fail for good (not retried)."""


class Unmended(Exception):
    """Raised by a ``mend`` step's activity until its run is rewound."""


# a mend step's activity: retried after a store error, never after its planned failure
_MEND_RETRY = RetryPolicy(
    max_attempts=8, initial_interval=timedelta(seconds=1), max_interval=timedelta(seconds=5),
    non_retryable=(Unmended,),
)  # fmt: skip


# enough attempts that the store's transient errors (read by the memo) never exhaust them
_RETRY = RetryPolicy(
    max_attempts=8, initial_interval=timedelta(seconds=1), backoff_coefficient=1.5,
    max_interval=timedelta(seconds=5), non_retryable=(PlannedFailure,),
)  # fmt: skip


def act(value: int) -> int:
    """What the activity returns for ``value``."""
    return value * 2 + 1


def sent_data(tag: str, step: int, k: int) -> str:
    """The data of the ``k``-th event a ``send`` step sends: unique to the start."""
    return f"{tag}/s{step}/{k}"


def child_id(parent_id: str, step: int, suffix: str) -> str:
    """The instance id of a child started at ``step``."""
    return f"{parent_id}-c{step}" if not suffix else f"{parent_id}-{suffix}"


def _leaf(rng: random.Random, *, in_child: bool) -> list[Any]:
    kinds = ["act", "act", "all", "any", "timer", "event", "event", "patch", "cancel", "anyc"]
    kind = rng.choice([*kinds, "slow", "send", "search"])
    if kind == "search":
        return ["search", rng.randrange(4)]
    if kind == "cancel":
        return ["cancel", rng.randrange(100), rng.random() < 0.5, rng.randint(1, 5)]
    if kind == "anyc":
        return ["anyc", rng.sample(range(100), rng.randint(2, 3))]
    if kind == "slow":
        return ["slow", rng.randrange(100)]
    if kind == "send":
        return ["send", rng.randrange(6), rng.choice(EVENT_NAMES), rng.randint(1, 3)]
    if kind == "act":
        return ["act", rng.randrange(100), rng.choice([0, 0, 0, 1, 2, 3, 4])]
    if kind == "all":
        return ["all", [rng.randrange(100) for _ in range(rng.randint(1, 3))]]
    if kind == "any":
        return ["any", rng.sample(range(100), rng.randint(2, 3))]
    if kind == "timer":
        return ["timer", rng.randint(1, 20)]
    if kind == "event":
        timeout = rng.choice([None, None, rng.randint(2, 30)])
        return ["event", rng.choice(EVENT_NAMES), timeout]
    return ["patch"]


def random_program(rng: random.Random, *, in_child: bool = False) -> Program:
    """A random program: a few leaf steps, children, continue-as-new, maybe a failure."""
    program: Program = []
    for step in range(rng.randint(1, 3 if in_child else 6)):
        roll = rng.random()
        if not in_child and roll < 0.18:
            suffix = LONG_ID if rng.random() < 0.03 else ""
            program.append(["child", random_program(rng, in_child=True), suffix])
        elif not in_child and roll < 0.3 and step > 0:
            program.append(["can"])
        elif not in_child and roll < 0.34:
            program.append(["loop", rng.choice([3, 10, 40, 160])])
        else:
            program.append(_leaf(rng, in_child=in_child))
    roll = rng.random()
    if roll < 0.08:
        program.append(["raise"])
    elif roll < 0.2:
        program.insert(rng.randrange(len(program) + 1), ["mend", rng.randrange(100)])
    return program


def mends(program: Program) -> bool:
    """Whether the program (or a child's) has a ``mend`` step: it fails until rewound."""
    return any(s[0] == "mend" or (s[0] == "child" and mends(s[1])) for s in program)


def event_names(program: Program) -> list[str]:
    """The names of the events the program waits for, in order (a loop waits for a
    tick in each of its runs)."""
    names: list[str] = []
    for step in program:
        if step[0] == "event":
            names.append(step[1])
        elif step[0] == "loop":
            names += [TICK] * step[1]
    return names


@dataclass
class Harness:
    """What activities report to the simulation, outside the store."""

    attempts: dict[str, int] = field(default_factory=dict)
    memo_writes: list[tuple[str, int, str]] = field(default_factory=list)
    """(instance id, step, tag) of every memo entry an activity wrote successfully."""
    began: Callable[[str, int], None] = lambda instance_id, task_id: None
    """Told as each activity attempt begins (the ledger judges it)."""


def build_registry(harness: Harness, changes: tuple[bool, ...] = ()) -> Registry:
    """The registry a simulated runtime runs: ``prog`` in two versions, one activity.
    ``changes``: the code changes deployed so far, each guarded by a patch (True) or
    not; each adds a one-second timer before every ``act`` step."""
    registry = Registry()

    @registry.activity
    async def work(ctx: ActivityContext, item: dict[str, Any]) -> int:
        harness.began(ctx.instance_id, ctx.task_id)
        key = f"{ctx.instance_id}/{ctx.task_id}/{item['tag']}"
        harness.attempts[key] = harness.attempts.get(key, 0) + 1
        paid = await ctx.memo.get("paid")
        if paid is None:
            await ctx.memo.put("paid", item["tag"])
            harness.memo_writes.append((ctx.instance_id, ctx.task_id, item["tag"]))
        fails = item["fails"]
        if ctx.attempt <= fails % 3 or (fails >= 3 and ctx.attempt > fails % 3):
            error = RuntimeError if ctx.attempt <= fails % 3 else PlannedFailure
            raise error(f"attempt {ctx.attempt} of {key} fails on purpose")
        return act(item["v"])

    @registry.activity
    async def mend(ctx: ActivityContext, item: dict[str, Any]) -> int:
        """Fails until its run is rewound: its memo remembers the first try."""
        harness.began(ctx.instance_id, ctx.task_id)
        if await ctx.memo.get("tried") is None:
            await ctx.memo.put("tried", item["tag"])
            raise Unmended(f"task {ctx.task_id} of {ctx.instance_id} fails until rewound")
        return act(item["v"])

    @registry.activity
    async def hang(ctx: ActivityContext, item: dict[str, Any]) -> int:
        """Waits for its cancel (or its timeout) unless quick or a retry."""
        harness.began(ctx.instance_id, ctx.task_id)
        if not item["quick"] and ctx.attempt == 1:
            await ctx.cancelled.wait()
            return -1  # never reached: a cancelled attempt is stopped at its await
        return act(item["v"])

    async def prog(ctx: WorkflowContext, data: dict[str, Any]) -> dict[str, Any]:
        tag: str = data["tag"]
        program: Program = data["prog"]
        results: list[Any] = list(data["acc"])
        base = len(results)

        async def bump(value: int) -> int:  # an update: what it returns, once per update id
            return act(value)

        def non_negative(value: int) -> None:
            if value < 0:
                raise ValueError(f"an update of {value} is refused")

        ctx.set_update_handler("bump", bump, validator=non_negative)

        def call(value: int, fails: int = 0) -> Any:
            item = {"tag": tag, "v": value, "fails": fails}
            return ctx.call_activity(work, item, retry=_RETRY)

        for index, step in enumerate(program):
            kind = step[0]
            if kind == "act":
                for number, guarded in enumerate(changes, 1):
                    if not guarded or ctx.patched(f"deploy-{number}"):
                        await ctx.sleep(timedelta(seconds=1))
                try:
                    results.append(await ctx.call_activity(
                        work, {"tag": tag, "v": step[1], "fails": step[2]}, retry=_RETRY
                    ))  # fmt: skip
                except ActivityFailed:
                    results.append("failed")
            elif kind == "all":
                results.append(await ctx.all([call(v) for v in step[1]]))
            elif kind == "any":
                winner = await ctx.any([call(v) for v in step[1]])
                results.append(winner.result())
            elif kind == "timer":
                await ctx.sleep(timedelta(seconds=step[1]))
                results.append(True)
            elif kind == "event":
                timeout = None if step[2] is None else timedelta(seconds=step[2])
                try:
                    results.append(["ev", await ctx.wait_for_event(step[1], timeout=timeout)])
                except TimeoutError:
                    results.append(["timeout"])
            elif kind == "child":
                sub = {"tag": f"{tag}/c{base + index}", "prog": step[1], "acc": []}
                try:
                    cid = child_id(ctx.instance_id, base + index, step[2])
                    results.append(await ctx.call_workflow("prog", sub, instance_id=cid))
                except InvalidInstanceIdError:
                    results.append(["bad-id"])
                except WorkflowFailed as failed:
                    if failed.failure.type.endswith("Unmended"):
                        raise  # a mend step's failure fails the tree, up to its root
                    results.append(["child-failed", failed.failure.type])
            elif kind == "patch":
                results.append(ctx.patched("sim-patch"))
            elif kind == "search":
                ctx.upsert_search_attributes(search_step_attributes(step[1]))
                results.append(True)
            elif kind == "send":
                for k in range(step[3]):
                    ctx.send_event(f"r{step[1]}", step[2], sent_data(tag, base + index, k))
                results.append(True)
            elif kind == "cancel":
                future = ctx.call_activity(hang, {"v": step[1], "quick": step[2]})
                await ctx.sleep(timedelta(seconds=step[3]))
                took = future.cancel()
                try:
                    results.append(["kept", took, await future])
                except CancelledError:
                    results.append(["cancelled", took])
            elif kind == "anyc":
                calls = [call(v) for v in step[1]]
                winner = await ctx.any(calls, cancel_rest=True)
                states: list[Any] = []
                for loser in calls:  # a cancelled retry loop ends at its next step
                    try:
                        states.append(await loser)
                    except CancelledError:
                        states.append("CancelledError")
                results.append(["anyc", winner.result(), states])
            elif kind == "slow":
                item = {"v": step[1], "quick": False}
                timeout = timedelta(seconds=5)
                results.append(
                    await ctx.call_activity(
                        hang, item, start_to_close_timeout=timeout, retry=_RETRY
                    )
                )
            elif kind == "can":
                ctx.continue_as_new({"tag": tag, "prog": program[index + 1 :], "acc": results})
            elif kind == "loop":
                if step[1] > 0:
                    try:
                        await ctx.wait_for_event(TICK, timeout=timedelta(seconds=1))
                    except TimeoutError:
                        pass
                    rest = [["loop", step[1] - 1], *program[index + 1 :]]
                    ctx.continue_as_new({"tag": tag, "prog": rest, "acc": results})
                results.append(True)
            elif kind == "mend":
                item = {"tag": tag, "v": step[1]}
                results.append(await ctx.call_activity(mend, item, retry=_MEND_RETRY))
            elif kind == "raise":
                raise ValueError(f"program of {ctx.instance_id} fails on purpose")
        return {"tag": tag, "r": results}

    registry.workflow(name="prog", version="1")(prog)
    registry.workflow(name="prog", version="2")(prog)
    return registry


def expected_mismatch(
    program: Program, tag: str, output: Any, raised: set[int | str], failed_children: set[str]
) -> str | None:
    """Why ``output`` is not what ``program`` (started with ``tag``) may return; None if
    it is. ``raised``: the event data sent to it; ``failed_children``: child tags whose
    failure is explained (terminated, say)."""
    if not isinstance(output, dict) or output.get("tag") != tag:
        return f"returned {output!r}, not a result tagged {tag!r}"
    results = output["r"]
    steps = [s for s in program if s[0] not in ("can", "raise")]
    if len(results) != len(steps):
        return f"returned {len(results)} results for {len(steps)} steps"
    for index, (step, got) in enumerate(zip(steps, results, strict=True)):
        problem = _step_mismatch(step, got, f"{tag}/c{index}", raised, failed_children)
        if problem is not None:
            return f"step {index} {step[0]}: {problem}"
    return None


def _step_mismatch(
    step: list[Any], got: Any, sub_tag: str, raised: set[int | str], failed_children: set[str]
) -> str | None:
    kind = step[0]
    if kind == "act":
        want: Any = "failed" if step[2] >= 3 else act(step[1])  # 3, 4: fail for good
        return None if got == want else f"got {got!r}, want {want!r}"
    if kind == "all":
        want = [act(v) for v in step[1]]
        return None if got == want else f"got {got!r}, want {want!r}"
    if kind == "any":
        return None if got in [act(v) for v in step[1]] else f"got {got!r}"
    if kind in ("timer", "patch", "loop", "send", "search"):
        return None if got is True else f"got {got!r}"
    if kind == "cancel":
        if got == ["cancelled", True] or got == ["kept", False, act(step[1])]:
            return None
        if isinstance(got, list) and got[:2] == ["kept", True]:
            return f"a cancelled activity's result was applied: {got!r}"
        return f"got {got!r}"
    if kind == "anyc":
        values = [act(v) for v in step[1]]
        ok = (
            isinstance(got, list) and len(got) == 3 and got[1] in values
            and all(g in (want, "CancelledError") for g, want in zip(got[2], values, strict=True))
        )  # fmt: skip
        return None if ok else f"got {got!r}: a loser neither finished nor was cancelled"
    if kind in ("slow", "mend"):
        return None if got == act(step[1]) else f"got {got!r}, want {act(step[1])!r}"
    if kind == "event":
        if got == ["timeout"] and step[2] is not None:
            return None
        ok = isinstance(got, list) and len(got) == 2 and got[0] == "ev" and got[1] in raised
        return None if ok else f"got {got!r}, which was never raised to it"
    if kind == "child":
        if step[2] and got == ["bad-id"]:
            return None
        if isinstance(got, list) and got[:1] == ["child-failed"]:
            if sub_tag in failed_children or any(s[0] == "raise" for s in step[1]):
                return None
            if str(got[1]).endswith("InstanceExistsError"):
                return None  # an earlier start's child still holds the id: refused, visibly
            return f"the child failed ({got[1]}) though nothing failed it"
        if step[2]:
            return f"got {got!r} for a child id that is too long"
        return expected_mismatch(step[1], sub_tag, got, raised, failed_children)
    return f"unknown step {kind!r}"
