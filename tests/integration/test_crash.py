"""Crash test: SIGKILL a worker process at random points, restart it, check the store.

A subprocess (``crash_worker.py``) runs 50 workflows of 20 chained activity steps on a
``file://`` store. The test kills it with SIGKILL after a random number of progress lines,
several times, then lets a last incarnation run to the end and checks that:

* every workflow completed with the result computed in plain Python;
* each log holds ``000000000000`` .. ``N`` with no gap, each record's ``seq`` is its name,
  event ids run 0, 1, 2, ... through the run, and no activity was scheduled or completed
  twice (which would mean a turn was applied twice);
* every (instance, step) ran at least once (activities are at-least-once).

The kill points come from ``random.Random(seed)``; the seed is printed and named in every
assertion message. Set ``DURABLE_CRASH_SEED`` to replay a failing seed's kill points
(where in the work a kill lands also depends on timing).
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from types import ModuleType

import anyio
import pytest

import durable
from durable import WorkflowStatus

N_WORKFLOWS = 50
N_STEPS = 20
LINE_TIMEOUT = 60.0  # seconds without a progress line before an incarnation counts as hung
WORKER = Path(__file__).with_name("crash_worker.py")


def _load_worker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("durable_crash_worker", WORKER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


class Incarnation:
    """One run of the worker process, its stdout read line by line by a thread."""

    def __init__(
        self, number: int, store: Path, activity_log: Path, stderr: Path, fault_rate: float
    ) -> None:
        self.number = number
        self.stderr_path = stderr
        self._stderr = stderr.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(store), str(activity_log),
             str(N_WORKFLOWS), str(N_STEPS)],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
            env=os.environ | {
                "DURABLE_CRASH_FAULT_RATE": str(fault_rate),
                "DURABLE_CRASH_FAULT_SEED": str(number),
            },
        )  # fmt: skip
        self.lines: list[str] = []
        self._eof = False
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next_line(self, context: str) -> str | None:
        """The next stdout line (None at EOF); fails if none comes for a long while."""
        try:
            line = self._queue.get(timeout=LINE_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"{context}: incarnation {self.number} printed nothing for "
                        f"{LINE_TIMEOUT}s (hung?)\n{self.stderr_tail()}")  # fmt: skip
        if line is None:
            self._eof = True
        else:
            self.lines.append(line)
        return line

    def drain(self) -> None:
        """After the process ended: collect the lines it printed that are still queued."""
        self._reader.join(timeout=LINE_TIMEOUT)
        assert not self._reader.is_alive(), f"incarnation {self.number}: stdout still open"
        while not self._eof:
            if (line := self._queue.get_nowait()) is None:
                self._eof = True
            else:
                self.lines.append(line)

    def kill(self, context: str) -> int:
        self.proc.send_signal(signal.SIGKILL)
        code = self.proc.wait(timeout=LINE_TIMEOUT)
        self.drain()
        self._stderr.close()
        return code

    def finish(self, context: str) -> int:
        while self.next_line(context) is not None:
            pass
        try:
            code = self.proc.wait(timeout=LINE_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{context}: stdout closed but the process did not exit")
        self.drain()
        self._stderr.close()
        return code

    def stderr_tail(self, chars: int = 4000) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        text = self.stderr_path.read_text(errors="replace")
        return f"--- stderr of incarnation {self.number} (tail) ---\n{text[-chars:]}"

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=LINE_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if not self._stderr.closed:
            self._stderr.close()


def _steps_printed(lines: list[str]) -> list[tuple[str, int]]:
    return [(p[1], int(p[2])) for line in lines if (p := line.split())[:1] == ["STEP"]]


def _check_log(log_dir: Path, index: int, context: str) -> int:
    """Check one instance's log; return how many records it holds."""
    wf_id = worker.instance_id(index)
    names = sorted(p.name for p in log_dir.iterdir() if not p.name.startswith("."))
    assert names == [f"{seq:012d}" for seq in range(len(names))], (
        f"{context}: {wf_id} log has a gap or a stray name: {names}"
    )
    scheduled: dict[int, list[int]] = {}  # task_id -> input
    completed: dict[int, int] = {}  # task_id -> result
    next_event_id = 0
    result = None
    for name in names:
        record = json.loads((log_dir / name).read_bytes())
        where = f"{context}: {wf_id} log/{name}"
        assert record["seq"] == int(name), f"{where} says seq {record['seq']}"
        assert bool(record.get("next_run")) == (name == names[0]), (
            f"{where}: only the first record may start a run: {record}"
        )
        for event in record.get("next_run", []) + record.get("events", []):
            assert event["event_id"] == next_event_id, (
                f"{where}: event ids not contiguous, expected {next_event_id}: {event}"
            )
            next_event_id += 1
            kind, task_id = event["kind"], event.get("task_id")
            if kind == "activity_scheduled":
                assert task_id not in scheduled, f"{where}: task {task_id} scheduled twice"
                scheduled[task_id] = event["input"]
            elif kind == "activity_completed":
                assert task_id in scheduled, f"{where}: task {task_id} completed unscheduled"
                assert task_id not in completed, f"{where}: task {task_id} completed twice"
                completed[task_id] = event["result"]
            elif kind == "workflow_completed":
                assert result is None, f"{where}: completed twice"
                result = event["result"]
            else:
                assert kind in ("workflow_started", "turn_started"), f"{where}: {event}"
        if name == names[-1]:
            assert record["status"] == "COMPLETED", f"{where}: last record {record}"
    # The chain, step by step, as the log recorded it.
    acc = index
    steps = f"{context}: {wf_id} scheduled {sorted(scheduled)}, completed {sorted(completed)}"
    assert sorted(scheduled) == sorted(completed), steps
    assert len(scheduled) == N_STEPS, steps
    for step, task_id in enumerate(sorted(scheduled)):
        assert scheduled[task_id] == [index, step, acc], f"{context}: {wf_id} step {step}"
        acc = worker.step_value(index, step, acc)
        assert completed[task_id] == acc, f"{context}: {wf_id} step {step} result"
    assert result == acc == worker.expected_result(index, N_STEPS), (
        f"{context}: {wf_id} log result {result}, expected {acc}"
    )
    return len(names)


async def _check_via_client(store: Path, context: str) -> None:
    registry = worker.build_registry()
    async with durable.Client(store=f"file://{store}", registry=registry) as client:
        for index in range(N_WORKFLOWS):
            wf_id = worker.instance_id(index)
            expected = worker.expected_result(index, N_STEPS)
            handle = client.get_handle(wf_id)
            assert await handle.result(timeout=5) == expected, f"{context}: {wf_id} result"
            state = await handle.describe()
            assert state.status is WorkflowStatus.COMPLETED, f"{context}: {wf_id} {state}"
        listed = {s.instance_id: s async for s in client.list()}
        assert sorted(listed) == [worker.instance_id(i) for i in range(N_WORKFLOWS)], context
        for index, (wf_id, state) in enumerate(sorted(listed.items())):
            # meta is only an index, but after a clean end it must have caught up
            assert state.status is WorkflowStatus.COMPLETED, f"{context}: meta of {wf_id}: {state}"
            assert state.output == worker.expected_result(index, N_STEPS), f"{context}: {wf_id}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault_rate", [0.0, 0.05], ids=["clean-store", "faulty-store-5pct"])
def test_sigkill_at_random_points_then_every_workflow_finishes(
    tmp_path: Path, fault_rate: float
) -> None:
    """Also with a FaultyStore failing 5% of the store calls: transient errors before
    and after writes land, on top of the kills."""
    seed = int(os.environ.get("DURABLE_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    print(f"crash test seed: {seed} (DURABLE_CRASH_SEED={seed} to replay)")
    store, activity_log = tmp_path / "store", tmp_path / "activities.log"
    total = N_WORKFLOWS * N_STEPS
    # Kill points in progress lines: the first lands among the starts, the next ones
    # anywhere in the first 150 lines of an incarnation; the last one is counted in
    # distinct steps and lands when 1..60 steps are left, as workflows finish.
    early = [rng.randint(1, 20)] + [rng.randint(5, 150) for _ in range(rng.randint(4, 6))]
    late_margin = rng.randint(1, 60)
    plan = f"seed={seed} faults={fault_rate} kill points={early} late margin={late_margin}"

    seen: set[tuple[str, int]] = set()  # (instance, step) printed by any incarnation
    printed: Counter[tuple[str, int]] = Counter()
    incarnations: list[Incarnation] = []
    kills = 0
    finished_early = None
    try:
        for number, kill_at in enumerate([*early, None]):
            inc = Incarnation(
                number, store, activity_log, tmp_path / f"stderr-{number}.txt", fault_rate
            )
            incarnations.append(inc)
            context = f"{plan}, incarnation {number}"
            count = 0
            while True:
                if kill_at is not None and count >= kill_at:
                    break
                if kill_at is None and len(seen) >= total - late_margin:
                    break
                line = inc.next_line(context)
                if line is None:
                    break
                count += 1
                if line.startswith("STEP "):
                    _, wf_id, step, _attempt = line.split()
                    seen.add((wf_id, int(step)))
            code = inc.kill(context)
            assert "ALL DONE" not in inc.lines or kill_at is None, (
                f"{context}: finished before its kill point\n{inc.stderr_tail()}"
            )
            if code == -signal.SIGKILL:
                kills += 1
            elif kill_at is None and code == 0 and "ALL DONE" in inc.lines:
                finished_early = number  # the late kill raced the end; fine
            else:
                pytest.fail(f"{context}: exit code {code} before the kill\n{inc.stderr_tail()}")
            steps = _steps_printed(inc.lines)
            seen.update(steps)
            printed.update(steps)
        assert kills >= 5, f"{plan}: only {kills} kills landed"

        number = len(incarnations)
        final = Incarnation(
            number, store, activity_log, tmp_path / f"stderr-{number}.txt", fault_rate
        )
        incarnations.append(final)
        context = f"{plan}, final incarnation {number}"
        code = final.finish(context)
        assert code == 0, f"{context}: exit code {code}\n{final.stderr_tail()}"
        assert final.lines[-1:] == ["ALL DONE"], f"{context}: {final.lines[-5:]}"
        assert "Traceback" not in final.stderr_path.read_text(), final.stderr_tail()
        if fault_rate:
            injected = [int(line.split()[1]) for line in final.lines if line.startswith("FAULTS")]
            assert injected, f"{context}: no fault count"
            assert injected[0] > 0, f"{context}: the faulty store injected nothing"
        printed.update(_steps_printed(final.lines))
        reported = {
            p[1]: int(p[2]) for line in final.lines if (p := line.split())[:1] == ["RESULT"]
        }
        expected = {
            worker.instance_id(i): worker.expected_result(i, N_STEPS) for i in range(N_WORKFLOWS)
        }
        assert reported == expected, f"{context}: results the worker reported"
    finally:
        for inc in incarnations:
            inc.cleanup()

    context = plan
    # The store, read directly: no gap, no duplicate seq, no turn applied twice.
    instance_dirs = sorted(p.name for p in (store / "instances").iterdir())
    assert instance_dirs == sorted(expected), f"{context}: {instance_dirs}"
    records = sum(
        _check_log(store / "instances" / worker.instance_id(i) / "log", i, context)
        for i in range(N_WORKFLOWS)
    )
    anyio.run(_check_via_client, store, context)

    # At least once: every step ran; duplicates are the price of the crashes.
    executions = [line.split() for line in activity_log.read_text().splitlines()]
    assert all(len(parts) == 3 for parts in executions), f"{context}: torn activity log line"
    ran = Counter((wf_id, int(step)) for wf_id, step, _ in executions)
    wanted = {(worker.instance_id(i), s) for i in range(N_WORKFLOWS) for s in range(N_STEPS)}
    assert set(ran) == wanted, f"{context}: missing {sorted(wanted - set(ran))[:10]}"
    assert {attempt for _, _, attempt in executions} == {"1"}, f"{context}: retries happened"
    assert not printed - ran, f"{context}: steps printed but not logged"
    duplicates = sum(ran.values()) - len(ran)
    strays = [p for p in store.rglob(".tmp-*") if p.is_file()]  # left by writes cut short
    print(
        f"crash test: {plan}; {kills} kills"
        f"{'' if finished_early is None else ' (the late one raced the end)'}, "
        f"{len(incarnations)} incarnations, {sum(ran.values())} activity executions for "
        f"{len(ran)} steps ({duplicates} duplicates), {records} log records, "
        f"{len(strays)} stray temp files"
    )
