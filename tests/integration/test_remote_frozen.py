"""A worker process that freezes (SIGSTOP) keeps its connection open and answers
nothing, so the sidecar never sees it disconnect: its keepalive must notice, and the
turns and activities the frozen worker held must go to another worker. When the frozen
worker wakes up, its late answers are dropped, not applied a second time."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pytest

from durable.grpc import RemoteClient

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import crash_worker  # noqa: E402
from _procs import LineProcess, child_env, free_port, wait_listening  # noqa: E402
from test_crash import N_STEPS, _check_log  # noqa: E402

N_WORKFLOWS = 10


async def _run_all(target: str) -> dict[int, int]:
    async with RemoteClient(target) as client:
        for index in range(N_WORKFLOWS):
            await client.start(
                "chain", [index, N_STEPS], instance_id=crash_worker.instance_id(index)
            )
        return {
            index: await client.get_handle(crash_worker.instance_id(index)).result(timeout=120)
            for index in range(N_WORKFLOWS)
        }


@pytest.mark.timeout(240)
def test_a_frozen_workers_items_go_to_another_worker(tmp_path: Path) -> None:
    store, activity_log = tmp_path / "store", tmp_path / "activities.log"
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = child_env()
    procs: list[LineProcess] = []

    def worker() -> LineProcess:
        argv = [sys.executable, str(HERE / "remote_crash_worker.py"), target, str(activity_log)]
        proc = LineProcess(f"worker-{len(procs)}", argv, tmp_path / "worker.log", env, HERE)
        procs.append(proc)
        proc.wait_for(r"^READY", "READY")
        return proc

    argv = [sys.executable, "-m", "durable", "sidecar", "--store", f"file://{store}",
            "--listen", target, "--keepalive", "0.5", "--keepalive-timeout", "1"]  # fmt: skip
    side = LineProcess("sidecar", argv, tmp_path / "sidecar.log", env, HERE)
    procs.append(side)
    try:
        wait_listening(side, port)
        first, second = worker(), worker()
        with anyio.from_thread.start_blocking_portal() as portal:
            running = portal.start_task_soon(_run_all, target)
            while first.steps < N_STEPS:  # both workers hold work by now
                first.wait_for(r"^STEP ", "steps on the first worker")
            os.kill(first.proc.pid, signal.SIGSTOP)  # cleanup() sends SIGCONT before a kill
            results = running.result(timeout=150)  # only the second worker runs from here
        assert results == {i: crash_worker.expected_result(i, N_STEPS) for i in range(N_WORKFLOWS)}
        assert second.steps > 0
        os.kill(first.proc.pid, signal.SIGCONT)  # its late answers must change nothing
        first.wait_for(r"^work-item stream .* failed", "the first worker finding its stream gone")
        assert side.stop() == 0, side.tail()
    finally:
        for proc in procs:
            proc.cleanup()

    for index in range(N_WORKFLOWS):
        _check_log(store / "instances" / crash_worker.instance_id(index) / "log", index, "frozen")
