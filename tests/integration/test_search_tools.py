"""Search attributes in the tools (issue 16): ``durable list --where key=value`` and
``durable show``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio
from _procs import HERE, child_env
from test_search_attributes import registry

import durable
from durable import MockClock
from durable.store import LocalStore


def durable_cli(store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "durable", *args, "--store", store], cwd=HERE,
        capture_output=True, text=True, timeout=60, check=False, env=child_env(),
    )  # fmt: skip


def test_durable_list_where(tmp_path: Path) -> None:
    """Issue 16: ``durable list --where`` finds instances by search attributes (a str
    with ``=``, an int, bool or time with ``:=``; several must all match), and
    ``durable show`` prints them."""
    path = tmp_path / "store"

    async def make() -> None:
        store = LocalStore(path)
        clock = MockClock(auto_advance=True)
        async with durable.Runtime(registry(), store=store, clock=clock) as rt:
            when = datetime(2026, 3, 4, tzinfo=UTC)
            await rt.start(
                "quick",
                1,
                instance_id="a",
                search_attributes={"customer": "ada", "n": 7, "at": when},
            )
            await rt.start(
                "quick",
                2,
                instance_id="b",
                search_attributes={"customer": "ada", "n": 8, "vip": True},
            )
            await rt.start("quick", 3, instance_id="c", search_attributes={"customer": "bob"})
            for i in "abc":
                await rt.client.get_handle(i).result()

    anyio.run(make)
    url = f"file://{path}"

    def ids(*where: str) -> list[str]:
        args = [a for w in where for a in ("--where", w)]
        done = durable_cli(url, "list", *args, "--json")
        assert done.returncode == 0, done.stderr
        return [s["instance_id"] for s in json.loads(done.stdout)]

    assert ids("customer=ada") == ["a", "b"]
    assert ids("customer=ada", "n:=8") == ["b"]
    assert ids("vip:=true") == ["b"]
    assert ids("at:=2026-03-04T01:00:00+01:00") == ["a"]
    assert ids("n=7") == []  # a str "7" is not the int 7
    bad = durable_cli(url, "list", "--where", "nothing")
    assert bad.returncode == 2, bad.stderr
    bad = durable_cli(url, "list", "--where", "x:=[1]")
    assert bad.returncode == 1
    assert "search attribute 'x'" in bad.stderr
    shown = durable_cli(url, "show", "b")
    assert shown.returncode == 0, shown.stderr
    assert "search customer" in shown.stdout
    assert "ada" in shown.stdout
