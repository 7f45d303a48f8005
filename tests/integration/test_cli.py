"""The ``durable`` command, run as a user runs it: in a fresh directory, as a process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


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
    assert listed.stdout.split("\t")[:3] == ["demo-order", "place_order", "COMPLETED"]
    shown = json.loads(durable(tmp_path, "show", "demo-order").stdout)
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
    assert durable(tmp_path, "list").stdout == ""
    missing = durable(tmp_path, "show", "demo-order")
    assert missing.returncode == 1
    assert "no instance 'demo-order'" in missing.stderr


def test_bad_store_url_is_a_clear_error(tmp_path: Path) -> None:
    result = durable(tmp_path, "list", "--store", "ftp://nowhere")
    assert result.returncode == 1
    assert "ftp://nowhere" in result.stderr
