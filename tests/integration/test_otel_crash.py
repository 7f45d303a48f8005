"""One trace across a SIGKILLed and restarted worker (issue 17: a run finished by
another process stays in the caller's trace; replay emits no duplicate spans)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the dev extra's opentelemetry-sdk")

from _procs import HERE, LineProcess, child_env

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
STEPS = 8


def _worker(tmp_path: Path, number: int, *hold_at: str) -> LineProcess:
    caller = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    argv = [sys.executable, str(HERE / "otel_worker.py"), str(tmp_path / "store"),
            str(tmp_path / "spans.jsonl"), caller, str(STEPS), *hold_at]  # fmt: skip
    return LineProcess(
        f"worker {number}", argv, tmp_path / f"worker-{number}.log", child_env(), tmp_path
    )


def test_one_trace_across_a_killed_and_restarted_worker(tmp_path: Path) -> None:
    """The first worker starts the run under the caller's span and is SIGKILLed mid-run;
    the second replays the log and finishes it. The first holds step 3 open, so the kill
    always lands mid-run, never after a run that raced to its end. Every span of both
    processes is in the caller's trace, under one workflow span (emitted once, by the
    second process, whose parent is the caller's span), and no turn is recorded twice."""
    first = _worker(tmp_path, 1, "3")  # step 3 never returns in this process
    try:
        first.wait_for(r"^STEP 3$", "the fourth step")
        first.kill()
    finally:
        first.cleanup()
    second = _worker(tmp_path, 2)
    try:
        done = second.wait_for(r"^DONE ", "the end of the run")
    finally:
        second.cleanup()
    assert done == f"DONE {sum(range(1, STEPS + 1))}"

    spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    pids = {span["pid"] for span in spans}
    assert len(pids) == 2, "both processes recorded spans"
    assert {span["trace_id"] for span in spans} == {CALLER_TRACE}
    (workflow,) = [span for span in spans if span["name"] == "workflow chain"]
    assert workflow["parent"] == CALLER_SPAN
    assert workflow["attributes"]["durable.status"] == "COMPLETED"
    others = [span for span in spans if span is not workflow]
    assert {span["parent"] for span in others} == {workflow["span_id"]}
    seqs = [span["attributes"]["durable.seq"] for span in others if span["name"] == "turn"]
    assert len(seqs) == len(set(seqs)), f"a turn recorded twice: {sorted(seqs)}"
    assert max(seqs) == STEPS + 1  # the first turn, then one per step's result
    steps = sorted(span["attributes"]["durable.attempt"] for span in others
                   if span["name"] == "activity step")  # fmt: skip
    assert len(steps) >= STEPS
