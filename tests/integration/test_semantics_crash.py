"""SIGKILL tests of the workflow semantics: what an attempt recorded survives a crash."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from _procs import run_until

WORKER = Path(__file__).with_name("semantics_crash_worker.py")

pytestmark = pytest.mark.anyio


async def test_heartbeat_details_survive_a_sigkill(tmp_path: Path) -> None:
    """An attempt's recorded heartbeat details survive a SIGKILL of its process: the
    attempt run again after recovery finds them in heartbeat_details."""
    store = tmp_path / "store"
    with anyio.fail_after(60):
        proc, seen = await anyio.to_thread.run_sync(run_until, WORKER, store, "start", "recorded 3")
        proc.kill()  # SIGKILL: no clean shutdown
        _, err = await anyio.to_thread.run_sync(proc.communicate)
        assert seen == ["attempt 1 found None", "recorded 3"], err
        proc, seen = await anyio.to_thread.run_sync(run_until, WORKER, store, "resume", "result 3")
        _, err = await anyio.to_thread.run_sync(proc.communicate)
    assert seen == ["attempt 1 found 3", "result 3"], err
