"""CPU time of the sidecar's protobuf conversions, this tree against baseline trees,
each run in a child process of its own.

``python -m benchmarks.convert_cpu BASE_DIR [BASE_DIR...] [--rounds 7] [--turns 2000]``

Per dialect and way, one "turn" is what is converted for one activity step of a
workflow: going out, the new events of a work item (a turn start, an activity
scheduled and its result, a timer created and fired, a child scheduled and failed,
an event raised) and a turn's actions (an activity, a timer, a child and the run's
completion); coming in, the same messages back (a worker's replay, the sidecar
reading a turn's answer).
Per round and tree (the order of the trees turning every round, so drift in the
machine's load falls on all alike) a child process converts ``--turns`` turns and
reports µs of CPU (``process_time``) per turn. Prints every run, the median per tree,
dialect and way, and each tree's median over the first baseline's (< 1x: less CPU).
The child uses the public names of ``durable.grpc._convert`` only, so any tree that
has them runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import json, sys
from datetime import UTC, datetime, timedelta
from time import process_time
import msgspec
from durable._core._actions import (
    CompleteWorkflow, ScheduleActivity, StartChildWorkflow, StartTimer,
)
from durable._core._events import (
    ActivityCompleted, ActivityScheduled, ChildWorkflowErrored, ChildWorkflowScheduled,
    EventRaised, TimerCreated, TimerFired, TurnStarted,
)
from durable._core._failure import FailureDetails
from durable.grpc import _convert as cv

TURNS = int(sys.argv[1])
AT = datetime(2026, 12, 6, 5, 0, 0, 123456, tzinfo=UTC)
RAW = msgspec.Raw(b'{"order": 42, "items": ["a", "b", "c"]}')
FAIL = FailureDetails(type="ValueError", message="bad", stack_trace="at x", properties='{"k": 1}')
EVENTS = [
    TurnStarted(event_id=0, timestamp=AT),
    ActivityScheduled(event_id=1, timestamp=AT, task_id=1, name="charge", input=RAW, step=1),
    ActivityCompleted(event_id=2, timestamp=AT, task_id=1, result=RAW),
    TimerCreated(event_id=3, timestamp=AT, task_id=2, fire_at=AT + timedelta(seconds=5)),
    TimerFired(event_id=4, timestamp=AT, task_id=2, fire_at=AT + timedelta(seconds=5)),
    ChildWorkflowScheduled(event_id=5, timestamp=AT, task_id=3, name="ship", instance_id="c",
                           input=RAW),
    ChildWorkflowErrored(event_id=6, timestamp=AT, task_id=3, failure=FAIL),
    EventRaised(event_id=7, timestamp=AT, name="approved", input=RAW),
]
ACTIONS = [
    ScheduleActivity(4, "charge", RAW, 1, 4),
    StartTimer(5, AT, "sleep"),
    StartChildWorkflow(6, "ship", "c2", RAW),
    CompleteWorkflow(RAW),
]
out = {}
for dialect, events_to, action_to in (
    ("ms", cv.events_to_ms, cv.action_to_ms),
    ("dapr", cv.events_to_dapr, cv.action_to_dapr),
):
    wire = events_to(EVENTS, instance_id="order-42", task_base=0)
    actions = [action_to(action) for action in ACTIONS]
    def going_out():
        events_to(EVENTS, instance_id="order-42", task_base=0)
        for action in ACTIONS:
            action_to(action)
    def coming_in():
        cv.events_from_proto(wire, first_event_id=10)
        for action in actions:
            cv.action_from_proto(action)
    for way, turn in (("out", going_out), ("in", coming_in)):
        for _ in range(TURNS // 10):
            turn()  # warm-up
        start = process_time()
        for _ in range(TURNS):
            turn()
        out[f"{dialect} {way}"] = (process_time() - start) / TURNS * 1e6
print(json.dumps(out))
"""


def _run(tree: Path, turns: int) -> dict[str, float]:
    """One child process in ``tree``: µs of CPU per turn, per dialect."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(turns)],
        cwd=tree, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bases", nargs="+", type=Path, help="baseline trees")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--turns", type=int, default=2_000)
    args = parser.parse_args()
    trees = [*(b.resolve() for b in args.bases), ROOT]
    runs: dict[Path, list[dict[str, float]]] = {tree: [] for tree in trees}
    print(f"load average: {os.getloadavg()}")
    for round_ in range(args.rounds):
        order = trees[round_ % len(trees) :] + trees[: round_ % len(trees)]
        for tree in order:
            figures = _run(tree, args.turns)
            runs[tree].append(figures)
            shown = ", ".join(f"{d} {us:.1f} µs" for d, us in figures.items())
            print(f"round {round_ + 1} {tree}: {shown}")
    print(f"load average: {os.getloadavg()}")
    first = trees[0]
    for dialect in runs[first][0]:
        medians = {t: statistics.median(r[dialect] for r in runs[t]) for t in trees}
        for tree in trees:
            ratio = medians[tree] / medians[first]
            print(f"{dialect:8} {tree}: median {medians[tree]:.1f} µs/turn ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
