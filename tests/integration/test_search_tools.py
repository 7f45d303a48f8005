"""Search attributes in the tools (issue 16): ``durable list --where key=value``,
``durable show``, and the console's list filter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
from _procs import HERE, child_env
from test_console_http import CountingStore, web
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
    assert bad.returncode == 2, bad.stderr
    assert "--where" in bad.stderr
    shown = durable_cli(url, "show", "b")
    assert shown.returncode == 0, shown.stderr
    assert "search customer" in shown.stdout
    assert "ada" in shown.stdout


@pytest.mark.anyio
async def test_the_console_filters_by_search_attributes() -> None:
    """Issue 16: the console's list filters by search attributes (and by status) through
    ``Client.list_page``, reading only the metas the search index names, with a Next
    cursor; a malformed filter is a 400 page, not a crash."""
    store = CountingStore()
    async with durable.Runtime(registry(), store=store, clock=MockClock(auto_advance=True)) as rt:
        for i in range(60):
            customer = "ada" if i % 3 == 0 else "bob"
            await rt.start("quick", i, instance_id=f"i-{i:03d}",
                           search_attributes={"customer": customer, "n": i})  # fmt: skip
        for i in range(60):
            await rt.client.get_handle(f"i-{i:03d}").result()
        async with web(rt.client) as http:
            store.meta_reads = 0
            page = await http.get("/", params={"where": "customer=ada", "size": 20})
            assert page.status_code == 200
            ids = re.findall(r'href="/instances/(i-\d+)"', page.text)
            assert ids == [f"i-{i:03d}" for i in range(0, 60, 3)]
            assert store.meta_reads == 20
            assert 'id="next"' not in page.text
            one = await http.get("/", params={"where": "customer=ada, n:=9"})
            assert re.findall(r'href="/instances/(i-\d+)"', one.text) == ["i-009"]
            first = await http.get("/", params={"where": "customer=bob", "size": 20})
            following = re.search(r'id="next" href="([^"]+)"', first.text)
            assert following is not None
            second = await http.get(following.group(1).replace("&amp;", "&"))
            ids = re.findall(r'href="/instances/(i-\d+)"', first.text + second.text)
            assert ids == [f"i-{i:03d}" for i in range(60) if i % 3]
            bad = await http.get("/", params={"where": "nonsense"})
            assert bad.status_code == 400
