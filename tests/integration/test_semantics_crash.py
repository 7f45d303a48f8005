"""SIGKILL tests of the workflow semantics: what an attempt recorded survives a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

WORKER = Path(__file__).with_name("semantics_crash_worker.py")

pytestmark = pytest.mark.anyio


def _run_until(store: Path, mode: str, line: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start the worker and read its output until ``line`` (or its end)."""
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(store), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    for out in proc.stdout:
        seen.append(out.strip())
        if out.strip() == line:
            break
    return proc, seen


async def test_heartbeat_details_survive_a_sigkill(tmp_path: Path) -> None:
    """An attempt's recorded heartbeat details survive a SIGKILL of its process: the
    attempt run again after recovery finds them in heartbeat_details."""
    store = tmp_path / "store"
    with anyio.fail_after(60):
        proc, seen = await anyio.to_thread.run_sync(_run_until, store, "start", "recorded 3")
        proc.kill()  # SIGKILL: no clean shutdown
        _, err = await anyio.to_thread.run_sync(proc.communicate)
        assert seen == ["attempt 1 found None", "recorded 3"], err
        proc, seen = await anyio.to_thread.run_sync(_run_until, store, "resume", "result 3")
        _, err = await anyio.to_thread.run_sync(proc.communicate)
    assert seen == ["attempt 1 found 3", "result 3"], err
