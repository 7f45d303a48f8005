"""The console's pager on each store (issue 16): ``Client.list_page(id_prefix=...)``
lists only the ids under the prefix (by a store listing of that prefix on S3), its
cursors stay with their prefix, ``durable list --prefix`` pages the same way, and a
console page view on S3 costs a page's requests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import durable
from durable import InvalidArgumentError, MockClock, WorkflowStatus
from durable.console import create_app
from durable.store import LocalStore, ObjectStore, S3Store

pytestmark = pytest.mark.anyio

registry = durable.Registry()


@registry.workflow
async def quick(ctx: durable.WorkflowContext, n: int) -> int:
    return n


@registry.workflow
async def waiter(ctx: durable.WorkflowContext, n: int) -> int:
    return int(await ctx.wait_for_event("go"))


async def fill(store: ObjectStore) -> None:
    """Ended ``e-00``..``e-11`` and ``f-0``..``f-2``, waiting ``w-00``..``w-04``; the
    runtime that ran them indexed the store (a RUNNING listing reads the index). The
    ``f-*`` are ``tier=gold``, and so are ``h-0`` and ``h-1``."""
    async with durable.Runtime(registry, store=store, clock=MockClock(auto_advance=True)) as rt:
        for i in range(12):
            assert await (await rt.start(quick, i, instance_id=f"e-{i:02d}")) == i
        for i in range(3):
            gold = {"tier": "gold"}
            assert (
                await (await rt.start(quick, i, instance_id=f"f-{i}", search_attributes=gold)) == i
            )
        for i in range(2):
            assert (
                await (await rt.start(quick, i, instance_id=f"h-{i}", search_attributes=gold)) == i
            )
        for i in range(5):
            await rt.start(waiter, i, instance_id=f"w-{i:02d}")
        with anyio.fail_after(60):
            for i in range(5):
                handle = rt.client.get_handle(f"w-{i:02d}")
                while (await handle.describe()).status is not WorkflowStatus.RUNNING:
                    await anyio.wait_all_tasks_blocked()


async def every_page(client: durable.Client, **filters: Any) -> list[list[str]]:
    """The ids of each page of 5, by cursor."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = await client.list_page(page_size=5, cursor=cursor, **filters)
        pages.append([s.instance_id for s in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def test_list_page_by_id_prefix(store: ObjectStore) -> None:
    """Issue 16: ``list_page(id_prefix=...)`` keeps the ids that start with it, by
    cursor, on every walk (the instance directory, the active index, a status); a
    cursor is for its prefix only, and a prefix no id could start with is refused."""
    await fill(store)
    client = durable.Client(store)
    assert await every_page(client, id_prefix="e-") == [
        [f"e-{i:02d}" for i in range(0, 5)],
        [f"e-{i:02d}" for i in range(5, 10)],
        ["e-10", "e-11"],
    ]
    assert await every_page(client, id_prefix="e-1") == [["e-10", "e-11"]]
    assert await every_page(client, id_prefix="f") == [["f-0", "f-1", "f-2"]]
    assert await every_page(client, id_prefix="nothing") == [[]]
    running = await every_page(client, id_prefix="w-0", status="RUNNING")
    assert sorted(i for page in running for i in page) == [f"w-{i:02d}" for i in range(5)]
    assert await every_page(client, id_prefix="w", status="COMPLETED") == [[]]
    gold = {"tier": "gold"}
    assert await every_page(client, search=gold, id_prefix="f-") == [["f-0", "f-1", "f-2"]]
    assert await every_page(client, search=gold, id_prefix="h") == [["h-0", "h-1"]]
    pages = await every_page(client, search=gold)
    assert [i for page in pages for i in page] == ["f-0", "f-1", "f-2", "h-0", "h-1"]
    listed = [s.instance_id async for s in client.list(id_prefix="f-")]
    assert listed == ["f-0", "f-1", "f-2"]

    first = await client.list_page(page_size=2, id_prefix="e-")
    assert first.next_cursor is not None
    with pytest.raises(InvalidArgumentError, match="other filters"):
        await client.list_page(page_size=2, cursor=first.next_cursor, id_prefix="f-")
    with pytest.raises(InvalidArgumentError, match="other filters"):
        await client.list_page(page_size=2, cursor=first.next_cursor)
    for bad in ("../", "a/b", ".x", "a b"):
        with pytest.raises(InvalidArgumentError, match="id prefix"):
            await client.list_page(id_prefix=bad)


class CountedS3(S3Store):
    """An S3 store that counts its S3 API calls (LIST, GET, ...)."""

    requests = 0

    async def _call(self, method: str, **kwargs: Any) -> Any:
        type(self).requests += 1
        return await super()._call(method, **kwargs)


async def test_console_page_on_s3_costs_a_page(moto_server: Any) -> None:
    """Issue 16: on S3 a console page, by Next or by id prefix, is one LIST from its
    cursor and the page's metas: at most twice the page size in S3 requests."""
    bucket = moto_server.new_bucket()
    seed = moto_server.store(bucket=bucket)
    await fill(seed)
    await seed.close()
    store = CountedS3(f"s3://{bucket}/root", storage_options=moto_server.storage_options)
    try:
        async with durable.Client(store) as client:
            app = create_app(client, secret=b"k" * 32)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
                await http.get("/?size=20")  # the config and index markers, once
                costs = []
                for url in ("/?size=20&prefix=e-", "/?size=20&prefix=e-1", "/?size=20"):
                    before = CountedS3.requests
                    page = await http.get(url)
                    assert page.status_code == 200, page.text
                    costs.append(CountedS3.requests - before)
                found = re.findall(r'href="/instances/([^"/?]+)"', page.text)
                assert len(found) == 20
        assert all(cost <= 2 * 20 for cost in costs), costs
        assert costs[1] < costs[0], costs  # 2 metas read, not 12: the LIST had the prefix
    finally:
        await store.close()


def test_durable_list_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16: ``durable list --prefix`` lists the ids that start with it, by pages
    of ``--limit`` and ``--cursor``."""
    from durable.cli import main

    url = f"file://{tmp_path / 'store'}"

    async def make() -> None:
        store = LocalStore(tmp_path / "store", url=url)
        await fill(store)
        await store.close()

    anyio.run(make)
    main(["list", "--store", url, "--prefix", "e-1"])
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["e-10", "e-11"]
    main(["list", "--store", url, "--prefix", "e-", "--limit", "10"])
    first = capsys.readouterr()
    assert len(first.out.splitlines()) == 11
    cursor = first.err.split("--cursor ")[1].strip()
    main(["list", "--store", url, "--prefix", "e-", "--cursor", cursor])
    rest = capsys.readouterr().out
    assert [line.split()[0] for line in rest.splitlines()[1:]] == ["e-10", "e-11"]
