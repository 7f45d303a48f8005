"""The crash test of the embedded runtime, with the work split over two processes: a
``durable sidecar`` on a ``file://`` store and our ``RemoteWorker`` connected to it over
a real socket. The worker is SIGKILLed and restarted, then the sidecar is (same port,
same store), then the worker again; every workflow must still end with the right
result, each log gapless with no activity scheduled or completed twice, and every step
run at least once.
"""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest

from durable.grpc import RemoteClient

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import crash_worker  # noqa: E402
from _procs import LineProcess, child_env, free_port, wait_listening  # noqa: E402
from test_crash import N_STEPS, _check_log  # noqa: E402

N_WORKFLOWS = 20


async def _start_all(target: str) -> None:
    async with RemoteClient(target) as client:
        for index in range(N_WORKFLOWS):
            await client.start(
                "chain", [index, N_STEPS], instance_id=crash_worker.instance_id(index)
            )


async def _results(target: str) -> dict[int, int]:
    async with RemoteClient(target) as client:
        return {
            index: await client.get_handle(crash_worker.instance_id(index)).result(timeout=120)
            for index in range(N_WORKFLOWS)
        }


@pytest.mark.timeout(300)
def test_remote_worker_and_sidecar_survive_sigkill(tmp_path: Path) -> None:
    seed = int(os.environ.get("DURABLE_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    store, activity_log = tmp_path / "store", tmp_path / "activities.log"
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = child_env()
    total = N_WORKFLOWS * N_STEPS
    # kill points, in steps run so far: worker, sidecar, worker
    points = sorted(rng.sample(range(total // 10, total * 7 // 10), 3))
    plan = f"seed={seed} kill points (steps)={points}"
    procs: list[LineProcess] = []

    def sidecar() -> LineProcess:
        argv = [sys.executable, "-m", "durable", "sidecar", "--store", f"file://{store}",
                "--listen", target]  # fmt: skip
        proc = LineProcess(f"sidecar-{len(procs)}", argv, tmp_path / "sidecar.log", env, HERE)
        procs.append(proc)
        wait_listening(proc, port)
        return proc

    def worker() -> LineProcess:
        argv = [sys.executable, str(HERE / "remote_crash_worker.py"), target, str(activity_log)]
        proc = LineProcess(f"worker-{len(procs)}", argv, tmp_path / "worker.log", env, HERE)
        procs.append(proc)
        proc.wait_for(r"^READY", "READY")
        return proc

    def run_until(proc: LineProcess, steps: int) -> None:
        while sum(p.steps for p in procs) < steps:
            proc.wait_for(r"^STEP ", f"step {steps} ({plan})")

    try:
        side, work = sidecar(), worker()
        anyio.run(_start_all, target)

        run_until(work, points[0])
        work.kill()  # the worker dies with activities in flight
        work = worker()

        run_until(work, points[1])
        side.kill()  # the engine dies between turns, mid-commit, with items dispatched
        side = sidecar()  # the worker reconnects by itself

        run_until(work, points[2])
        work.kill()
        work = worker()

        results = anyio.run(_results, target)
        assert results == {
            i: crash_worker.expected_result(i, N_STEPS) for i in range(N_WORKFLOWS)
        }, plan
        assert side.stop() == 0, side.tail()
    finally:
        for proc in procs:
            proc.cleanup()

    # the store, read directly: gapless logs, no turn applied twice, right results
    for index in range(N_WORKFLOWS):
        _check_log(store / "instances" / crash_worker.instance_id(index) / "log", index, plan)
    ran = Counter(tuple(line.split()[:2]) for line in activity_log.read_text().splitlines())
    wanted = {
        (crash_worker.instance_id(i), str(s)) for i in range(N_WORKFLOWS) for s in range(N_STEPS)
    }
    assert set(ran) == wanted, f"{plan}: missing {sorted(wanted - set(ran))[:10]}"
    print(f"remote crash test: {plan}; {sum(ran.values())} executions for {len(ran)} steps")
