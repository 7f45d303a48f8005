"""SIGKILL test of updates: one acknowledged before a crash is applied once after it."""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from _procs import run_until

WORKER = Path(__file__).with_name("messages_crash_worker.py")

pytestmark = pytest.mark.anyio


async def test_an_update_acknowledged_before_a_sigkill_is_applied_once_after_it(
    tmp_path: Path,
) -> None:
    """The update is acknowledged and its handler is mid-way (its activity running) when
    the process is SIGKILLed; the next process finishes it, the caller's retry with the
    same id gets its result, and the handler's effect is there once."""
    store = tmp_path / "store"
    with anyio.fail_after(60):
        proc, seen = await anyio.to_thread.run_sync(run_until, WORKER, store, "start", "running")
        if "acked" not in seen:  # the activity may print first: wait for the acknowledgement
            assert proc.stdout is not None
            seen.append((await anyio.to_thread.run_sync(proc.stdout.readline)).strip())
        proc.kill()  # SIGKILL: no clean shutdown
        _, err = await anyio.to_thread.run_sync(proc.communicate)
        assert sorted(seen) == ["acked", "running"], err
        proc, seen = await anyio.to_thread.run_sync(
            run_until, WORKER, store, "resume", "completed 1"
        )
        proc.kill()
        _, err = await anyio.to_thread.run_sync(proc.communicate)
    assert seen == ["result 5", "balance 5", "completed 1"], err
