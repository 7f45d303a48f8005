"""``durable worker --metrics HOST:PORT`` serves the runtime's metrics for Prometheus to
scrape (issue 17: metrics)."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.exporter.prometheus", reason="needs the prometheus extra")

from _procs import HERE, LineProcess, child_env


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text: str = reply.read().decode()
        return text


def _value(text: str, name: str, **labels: str) -> float:
    """The sample of metric ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if labels.items() <= found.items():
            return float(value)
    raise AssertionError(f"no sample {name} {labels} in:\n{text}")


@pytest.mark.timeout(120)
def test_worker_serves_its_metrics_for_prometheus(tmp_path: Path) -> None:
    """After one workflow ran, a scrape shows it started and ended, its turns and
    attempts, the store's requests by operation, and the gauges; other paths are 404."""
    store = f"file://{tmp_path / 'store'}"
    argv = [sys.executable, "-m", "durable", "worker", "cli_app:registry", "--store", store,
            "--solo", "--poll-interval", "0.05", "--metrics", "127.0.0.1:0"]  # fmt: skip
    worker = LineProcess("worker", argv, tmp_path / "worker.log", child_env(), HERE)
    try:
        url = worker.wait_for(r"^metrics on http://", "the metrics address").split()[-1]
        worker.wait_for(r"^READY ", "READY")
        done = subprocess.run(
            [sys.executable, "-m", "durable", "start", "hello", "--input", '"ada"', "--wait",
             "--store", store],
            capture_output=True, text=True, timeout=60, check=False, env=child_env(), cwd=HERE,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        text = scrape(url)
        with pytest.raises(urllib.error.HTTPError) as missing:
            scrape(url.replace("/metrics", "/nothing"))
        assert missing.value.code == 404
        missing.value.close()
        assert worker.stop() == 0, worker.tail()
    finally:
        worker.cleanup()
    assert _value(text, "durable_workflow_started_total", workflow="hello") == 1
    ended = _value(text, "durable_workflow_ended_total", workflow="hello", status="COMPLETED")
    assert ended == 1
    attempts = _value(
        text, "durable_activity_attempts_total", activity="greet", outcome="completed"
    )
    assert attempts == 2
    assert _value(text, "durable_turn_duration_seconds_count", workflow="hello") >= 3
    puts = _value(text, "durable_store_request_duration_seconds_count", operation="put_if_absent")
    assert puts >= 3
    assert _value(text, "durable_fleet_partitions_held") >= 1
    assert _value(text, "durable_instances_resident") >= 0


@pytest.mark.timeout(120)
def test_sidecar_serves_its_metrics_for_prometheus(tmp_path: Path) -> None:
    """``durable sidecar --metrics`` serves the same metrics (here: its gauges)."""
    argv = [sys.executable, "-m", "durable", "sidecar", "--store", "memory://",
            "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]  # fmt: skip
    sidecar = LineProcess("sidecar", argv, tmp_path / "sidecar.log", child_env(), HERE)
    try:
        url = sidecar.wait_for(r"^metrics on http://", "the metrics address").split()[-1]
        sidecar.wait_for(r"^durable sidecar listening", "listening")
        text = scrape(url)
        assert sidecar.stop() == 0, sidecar.tail()
    finally:
        sidecar.cleanup()
    assert _value(text, "durable_fleet_partitions_held") >= 1
    assert _value(text, "durable_instances_resident") == 0
