"""``durable query`` as a user runs it: a subprocess answering from a replay of the log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
from _procs import HERE, child_env
from messages_app import registry

import durable


def durable_cli(store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durable", *args, "--store", store], cwd=HERE,
        capture_output=True, text=True, timeout=60, check=False, env=child_env(),
    )  # fmt: skip


def test_durable_query_prints_the_answer_and_refuses_an_unknown_name(tmp_path: Path) -> None:
    """``durable query ID NAME [JSON...] --app MODULE`` prints the handler's answer as
    JSON; a name with no handler is bad usage (exit 2)."""
    store = f"file://{tmp_path / 'store'}"

    async def setup() -> None:
        clock = durable.MockClock(auto_advance=True)
        async with durable.Runtime(registry, store=store, clock=clock) as rt:
            handle = await rt.start("cart", instance_id="c")
            await handle.raise_event("add", "apple")
            await rt.wait_idle()

    anyio.run(setup)
    done = durable_cli(store, "query", "c", "items", "--app", "messages_app")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '["apple"]'
    done = durable_cli(store, "query", "c", "has", '"pear"', "--app", "messages_app")
    assert done.stdout.strip() == "false"
    done = durable_cli(store, "query", "c", "nope", "--app", "messages_app")
    assert done.returncode == 2
    assert "no query handler 'nope'" in done.stderr
