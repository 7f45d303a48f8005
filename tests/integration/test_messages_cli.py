"""``durable query`` as a user runs it: a subprocess answering from a replay of the log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import anyio.to_thread
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


def test_durable_update_prints_the_result_and_runs_once_per_id(tmp_path: Path) -> None:
    """``durable update ID NAME JSON --id U --app MODULE`` runs while a runtime holds the
    instance, prints the handler's result; run again with the same id, it prints the
    same result and the handler ran once; a rejected update exits 1, writing nothing."""
    store = f"file://{tmp_path / 'store'}"
    outputs: list[subprocess.CompletedProcess[str]] = []

    async def scenario() -> None:
        async with durable.Runtime(registry, store=store, poll_interval=0.05) as rt:
            handle = await rt.start("cart", instance_id="c")
            for arg in ('"pear"', '"pear"', "7"):
                args = ("update", "c", "add", arg, "--id", "u1" if arg != "7" else "u2")
                done = await anyio.to_thread.run_sync(
                    lambda a=args: durable_cli(store, *a, "--app", "messages_app")
                )
                outputs.append(done)
            assert await handle.query("items") == ["pear"]

    anyio.run(scenario)
    assert [o.returncode for o in outputs] == [0, 0, 1], [o.stderr for o in outputs]
    assert outputs[0].stdout.strip() == outputs[1].stdout.strip() == "1"
    assert "rejected" in outputs[2].stderr
