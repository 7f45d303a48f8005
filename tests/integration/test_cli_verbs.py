"""The ``durable`` command's verbs that start, steer and read instances, run as a user
runs them, against a ``durable worker`` process (issue 17: a complete CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _procs import HERE, LineProcess, child_env


def durable(store: str, *args: str, cwd: Path = HERE) -> subprocess.CompletedProcess[str]:
    """One ``durable`` command on ``store``."""
    return subprocess.run(
        [sys.executable, "-m", "durable", *args, "--store", store], cwd=cwd,
        capture_output=True, text=True, timeout=60, check=False, env=child_env(),
    )  # fmt: skip


def durable_json(store: str, *args: str) -> Any:
    done = durable(store, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def status_becomes(store: str, instance_id: str, wanted: str) -> None:
    """Look until the instance shows ``wanted`` (each look is a process: no sleep)."""
    for _ in range(200):
        if durable_json(store, "describe", instance_id)["status"] == wanted:
            return
    pytest.fail(f"{instance_id} never became {wanted}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    """A file store with a ``durable worker`` running ``cli_app:registry`` on it."""
    yield from worker_on_store(tmp_path, "cli_app:registry")


def worker_on_store(tmp_path: Path, app: str) -> Iterator[str]:
    """A file store's URL, with a ``durable worker`` running ``app`` on it meanwhile."""
    url = f"file://{tmp_path / 'store'}"
    argv = [sys.executable, "-m", "durable", "worker", app, "--store", url,
            "--solo", "--poll-interval", "0.05"]  # fmt: skip
    worker = LineProcess("worker", argv, tmp_path / "worker.log", child_env(), HERE)
    try:
        worker.wait_for(r"^READY ", "READY")
        yield url
        assert worker.stop() == 0, worker.tail()
    finally:
        worker.cleanup()


@pytest.mark.timeout(120)
def test_start_wait_prints_the_output_or_exits_1(store: str) -> None:
    """``start --wait`` prints the output (exit 0); a failed workflow exits 1 with one
    line naming the failure; without ``--wait`` it prints the new instance's id."""
    done = durable(store, "start", "hello", "--input", '"ada"', "--id", "h-1", "--wait")
    assert (done.returncode, done.stdout) == (0, '"hello hello ada"\n'), done.stderr
    failed = durable(store, "start", "fails", "--wait")
    assert failed.returncode == 1
    assert failed.stderr.strip().endswith("failed: ValueError: this workflow always fails")
    assert "Traceback" not in failed.stderr
    started = durable(store, "start", "hello", "--input", '"bob"', "--json")
    assert started.returncode == 0, started.stderr
    instance_id = json.loads(started.stdout)["instance_id"]
    assert durable(store, "watch", instance_id).returncode == 0
    state = durable_json(store, "describe", instance_id)
    assert (state["status"], state["output"]) == ("COMPLETED", "hello hello bob")


@pytest.mark.timeout(120)
def test_start_wait_says_why_a_workflow_does_not_run(store: str) -> None:
    """A name no worker runs is no error the command can see at once (a worker with it
    may come): ``start --wait`` says on stderr why the instance waits, and gives up after
    ``--timeout`` with exit 1."""
    done = durable(store, "start", "no_such_workflow", "--wait", "--timeout", "10")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert "is waiting: waiting for a worker that runs it" in lines[0]
    assert "no_such_workflow" in lines[0]
    assert lines[-1].endswith("did not end within 10 s")
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(120)
def test_suspend_raise_event_resume_and_watch(store: str) -> None:
    """A waiting instance is suspended, given its event, resumed; ``watch`` follows it to
    the end and prints its events; ``history`` and ``show`` read it."""
    assert durable(store, "start", "waits", "--id", "w-1").returncode == 0
    status_becomes(store, "w-1", "RUNNING")
    assert durable(store, "suspend", "w-1").returncode == 0
    status_becomes(store, "w-1", "SUSPENDED")
    raised = durable(store, "raise-event", "w-1", "go", "--data", '{"n": 5}')
    assert raised.returncode == 0, raised.stderr
    assert durable_json(store, "show", "w-1")["status"] == "SUSPENDED"
    assert durable(store, "resume", "w-1").returncode == 0
    watched = durable(store, "watch", "w-1", "--json")
    assert watched.returncode == 0, watched.stderr
    kinds = [json.loads(line)["kind"] for line in watched.stdout.splitlines()]
    assert kinds[0] == "workflow_started"
    assert kinds[-1] == "workflow_completed"
    assert {"workflow_suspended", "event_raised", "workflow_resumed"} <= set(kinds)
    assert durable_json(store, "describe", "w-1")["output"] == {"got": {"n": 5}}
    human = durable(store, "history", "w-1").stdout
    assert "WorkflowSuspended" in human
    assert "EventRaised" in human
    table = durable(store, "describe", "w-1").stdout.splitlines()
    assert table[0].split() == ["instance", "w-1"]
    assert ["status", "COMPLETED"] in [line.split() for line in table]


@pytest.mark.timeout(120)
def test_terminate_rerun_list_and_purge_by_filter(store: str) -> None:
    """``terminate`` ends a waiting run; ``rerun`` runs a completed one again from a step;
    ``list`` shows a table (``--json``: the states); ``purge --status`` deletes every
    ended instance with that status."""
    assert (
        durable(store, "start", "hello", "--input", '"x"', "--id", "r-1", "--wait").returncode == 0
    )
    history = durable_json(store, "history", "r-1")
    second = [e["event_id"] for e in history if e["kind"] == "activity_scheduled"][1]
    rerun = durable(store, "rerun", "r-1", str(second))
    assert rerun.returncode == 0, rerun.stderr
    assert durable(store, "watch", "r-1").returncode == 0
    assert durable(store, "start", "waits", "--id", "t-1").returncode == 0
    status_becomes(store, "t-1", "RUNNING")
    assert durable(store, "terminate", "t-1", "--reason", "enough").returncode == 0
    ended = durable(store, "watch", "t-1")
    assert ended.returncode == 1
    assert "terminated" in ended.stderr

    listed = durable(store, "list").stdout.splitlines()
    assert listed[0].split() == ["INSTANCE", "WORKFLOW", "STATUS", "CREATED", "UPDATED"]
    rows = {line.split()[0]: line.split()[2] for line in listed[1:]}
    assert rows == {"r-1": "COMPLETED", "t-1": "TERMINATED"}
    only = durable_json(store, "list", "--status", "TERMINATED")
    assert [s["instance_id"] for s in only] == ["t-1"]

    purged = durable(store, "purge", "--status", "COMPLETED")
    assert (purged.returncode, purged.stdout) == (0, "purged 1 instance(s)\n"), purged.stderr
    assert [s["instance_id"] for s in durable_json(store, "list")] == ["t-1"]


def test_bad_ids_names_and_usage_get_one_line_and_an_exit_code(tmp_path: Path) -> None:
    """Not found: exit 3; a bad id, bad JSON or a malformed command: exit 2; each with
    one line on stderr and no traceback."""
    store = f"file://{tmp_path / 'store'}"
    cases = [
        (("describe", "nobody"), 3, "no instance 'nobody'"),
        (("history", "nobody"), 3, "no instance 'nobody'"),
        (("raise-event", "nobody", "go"), 3, "no instance 'nobody'"),
        (("watch", "nobody"), 3, "no instance 'nobody'"),
        (("describe", "../etc"), 2, "'../etc'"),
        (("start", "hello", "--id", "a/b"), 2, "'a/b'"),
        (("start", "hello", "--input", "{nope"), 2, "--input is not JSON"),
        (("purge",), 2, "purge takes an instance id"),
        (("list", "--status", "SLEEPY"), 2, "invalid choice"),
        (("rerun", "x", "not-a-number"), 2, "invalid int value"),
    ]
    for args, code, message in cases:
        done = durable(store, *args)
        assert done.returncode == code, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        if code == 3 or "purge" in args:
            assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
