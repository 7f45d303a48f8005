"""The ``durable`` command, run as a user runs it: in a fresh directory, as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import durable as durable_pkg


def durable(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durable", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.timeout(90)
def test_demo_runs_then_tools_inspect_it(tmp_path: Path) -> None:
    demo = durable(tmp_path, "demo")
    assert demo.returncode == 0, demo.stderr
    lines = demo.stdout.splitlines()
    assert lines[0] == "started demo-order on file://./.durable"
    assert [line.split()[0] for line in lines[1:-1]] == [
        "reserve", "reserve", "reserve", "charge", "charge", "wait", "ship", "ship", "ship",
    ]  # fmt: skip
    assert "attempt 2" in lines[5]
    assert lines[-1].startswith("done: Receipt(order_id='demo-order'")
    assert (tmp_path / ".durable" / "instances" / "demo-order" / "meta").is_file()

    listed = durable(tmp_path, "list")
    assert listed.stdout.splitlines()[1].split()[:3] == ["demo-order", "place_order", "COMPLETED"]
    shown = json.loads(durable(tmp_path, "show", "demo-order", "--json").stdout)
    assert shown["status"] == "COMPLETED"
    assert shown["output"]["tracking"] == ["TRACK-LAMP", "TRACK-DESK", "TRACK-CHAIR"]
    history = json.loads(durable(tmp_path, "history", "demo-order", "--json").stdout)
    assert history[0]["kind"] == "workflow_started"
    assert history[-1]["kind"] == "workflow_completed"
    assert [e["event_id"] for e in history] == list(range(len(history)))

    again = durable(tmp_path, "demo")  # an ended demo order starts again
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("started demo-order again")

    assert durable(tmp_path, "purge", "demo-order").returncode == 0
    assert durable(tmp_path, "list").stdout == "(none)\n"
    missing = durable(tmp_path, "show", "demo-order")
    assert missing.returncode == 3
    assert "no instance 'demo-order'" in missing.stderr


def test_bad_store_url_is_a_clear_error(tmp_path: Path) -> None:
    result = durable(tmp_path, "list", "--store", "ftp://nowhere")
    assert result.returncode == 1
    assert "ftp://nowhere" in result.stderr


@pytest.mark.timeout(90)
def test_worker_runs_a_registry_until_sigterm(tmp_path: Path) -> None:
    """``durable worker module:registry`` serves workflows that a client starts, and a
    SIGTERM stops it cleanly (in a fleet, that frees its leases)."""
    repo = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])
    env = os.environ | {"PYTHONPATH": path}
    store = f"file://{tmp_path / 'store'}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "durable", "worker", "examples.orders:registry", "--store",
         store, "--partitions", "4", "--poll-interval", "0.1"],
        cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        seen = []
        while not (ready := worker.stdout.readline()).startswith("READY ") and ready:
            seen.append(ready)  # log lines before it
        assert ready, "".join(seen)
        assert "partitions=[0, 1, 2, 3]" in ready  # the only member takes every partition

        async def order() -> object:
            import examples.orders as orders

            async with durable_pkg.Client(store, registry=orders.registry) as client:
                handle = await client.start("place_order", orders.Order("o-1", ["kb"], 500))
                return await handle.result(timeout=30)

        receipt = anyio.run(order)
        assert getattr(receipt, "order_id", None) == "o-1", receipt
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
        assert worker.returncode == 0, out
        assert "STOPPED" in out, out
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()


def test_worker_refuses_a_target_that_is_not_a_registry(tmp_path: Path) -> None:
    run = durable(tmp_path, "worker", "json:dumps", "--store", f"file://{tmp_path}")
    assert run.returncode != 0
    assert "is not a durable.Registry" in run.stderr
    run = durable(tmp_path, "worker", "no_such_module_here", "--store", f"file://{tmp_path}")
    assert "cannot import 'no_such_module_here'" in run.stderr


@pytest.mark.timeout(90)
def test_sidecar_in_a_fleet_takes_partitions_and_stops_cleanly(tmp_path: Path) -> None:
    """``durable sidecar --fleet``: leases on the store (a lone member holds every
    partition), and SIGTERM releases them; the fleet options need ``--fleet``."""
    repo = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])
    env = os.environ | {"PYTHONPATH": path}
    store = tmp_path / "store"
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "durable", "sidecar", "--store", f"file://{store}",
         "--listen", "127.0.0.1:0", "--fleet", "--partitions", "4", "--lease-ttl", "30s",
         "--owner", "car-a"],
        cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        assert sidecar.stdout is not None
        seen = []
        while not (line := sidecar.stdout.readline()).startswith("fleet member ") and line:
            seen.append(line)
        assert line == "fleet member car-a partitions=[0, 1, 2, 3]\n", "".join(seen)
        assert any(s.startswith("durable sidecar listening on 127.0.0.1:") for s in seen), seen
        leases = sorted(p.name for p in (store / "leases").iterdir())
        assert leases == ["0000", "0001", "0002", "0003"]
        assert '"owner":"car-a"' in (store / "leases" / "0000").read_text()
        sidecar.send_signal(signal.SIGTERM)
        out, _ = sidecar.communicate(timeout=30)
        assert sidecar.returncode == 0, out
        assert "durable sidecar stopped" in out, out
        assert '"owner":""' in (store / "leases" / "0000").read_text()  # released
    finally:
        if sidecar.poll() is None:
            sidecar.kill()
            sidecar.communicate()
    solo = durable(tmp_path, "sidecar", "--store", f"file://{store}", "--partitions", "4")
    assert solo.returncode != 0
    assert "need --fleet" in solo.stderr
