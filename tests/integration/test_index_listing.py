"""Listing by cursor (issue 16): ``Client.list_page`` reads the active index for
statuses that have not ended, and pages through ended instances without re-reading
earlier pages; ``Client.list`` rides on it."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from dapr_stub import wrapped
from test_index_active import Recording, old_store, registry

import durable
from durable import InvalidArgumentError, MockClock, WorkflowStatus
from durable.store import LocalStore, MemoryStore, ObjectStore

pytestmark = pytest.mark.anyio


async def fresh(store: ObjectStore, running: int, ended: int) -> None:
    """A store written by this code: ``ended`` instances ended, ``running`` waiting."""
    async with durable.Runtime(registry(), store=store, clock=MockClock(auto_advance=True)) as rt:
        for i in range(ended):
            assert await (await rt.start("quick", i, instance_id=f"e{i:05d}")) == i
        for i in range(running):
            await rt.start("waiter", i, instance_id=f"r{i:05d}")
        with anyio.fail_after(60):  # each has taken its first turn (S3 answers in threads)
            for i in range(running):
                handle = rt.client.get_handle(f"r{i:05d}")
                while (await handle.describe()).status is not WorkflowStatus.RUNNING:
                    await anyio.wait_all_tasks_blocked()


async def test_listing_running_reads_the_active_index(store: ObjectStore) -> None:
    """Issue 16: ``list(status="RUNNING")`` read the meta of every instance; a page of
    running instances now costs its metas and a few listings, however many ended."""
    await fresh(store, running=100, ended=40)
    counted = Recording(store)
    client = durable.Client(counted)
    await client.list_page(status="RUNNING", page_size=1)  # config and markers, once
    before = sum(counted.calls.values())
    page = await client.list_page(status="RUNNING", page_size=50)
    assert len(page.items) == 50
    assert all(s.status is WorkflowStatus.RUNNING for s in page.items)
    assert not [k for k in counted.metas_read() if k.startswith("instances/e")]
    assert sum(counted.calls.values()) - before <= 60, counted.calls  # the bar
    assert page.next_cursor is not None
    rest = await client.list_page(status="RUNNING", page_size=50, cursor=page.next_cursor)
    assert rest.next_cursor is None
    ids = [s.instance_id for s in page.items + rest.items]
    assert sorted(ids) == [f"r{i:05d}" for i in range(100)]
    listed = [s.instance_id async for s in client.list(status="RUNNING", page_size=7)]
    assert sorted(listed) == sorted(ids)


async def test_paging_through_ended_instances_never_rereads_a_page() -> None:
    """Issue 16: each page of ended instances reads that page's metas and one listing:
    the same cost for the last page as for the first."""
    store = MemoryStore()
    await fresh(store, running=2, ended=95)
    counted = Recording(store)
    client = durable.Client(counted)
    await client.list_page(page_size=1)  # config and index markers, read once
    seen: list[str] = []
    costs = []
    cursor = None
    while True:
        before = sum(counted.calls.values())
        page = await client.list_page(status="COMPLETED", page_size=10, cursor=cursor)
        costs.append(sum(counted.calls.values()) - before)
        seen += [s.instance_id for s in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"e{i:05d}" for i in range(95)]
    assert max(costs) <= 2 * 10, costs
    assert len(set(costs[:-1])) == 1, costs  # constant across pages


async def test_list_keeps_its_filters_and_limit() -> None:
    """Issue 16: ``list()`` keeps its signature on the new machinery."""
    store = MemoryStore()
    await fresh(store, running=3, ended=5)
    client = durable.Client(store)
    assert len([s async for s in client.list(limit=4, page_size=2)]) == 4
    assert len([s async for s in client.list(name="waiter")]) == 3
    assert len([s async for s in client.list(status=WorkflowStatus.COMPLETED)]) == 5
    assert [s async for s in client.list(name="quick", status="RUNNING")] == []


async def test_a_cursor_from_another_listing_is_refused() -> None:
    """Issue 16: a cursor is for the listing that made it; garbage is a typed error."""
    store = MemoryStore()
    await fresh(store, running=3, ended=3)
    client = durable.Client(store)
    page = await client.list_page(status="RUNNING", page_size=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidArgumentError, match="other filters"):
        await client.list_page(status="COMPLETED", cursor=page.next_cursor)
    with pytest.raises(InvalidArgumentError, match="cursor"):
        await client.list_page(cursor="not a cursor")
    with pytest.raises(InvalidArgumentError, match="page_size"):
        await client.list_page(page_size=0)


async def test_a_store_from_before_the_index_lists_running_by_scanning() -> None:
    """Issue 16, migration: until every partition is indexed, a listing of running
    instances scans, and finds them all."""
    store = MemoryStore()
    await old_store(store, running=3, ended=3)
    client = durable.Client(store)
    listed = [s.instance_id async for s in client.list(status="RUNNING")]
    assert listed == ["r00000", "r00001", "r00002"]


def test_durable_list_pages_by_cursor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16: ``durable list --limit N`` prints a page and the cursor of the next;
    ``--cursor`` goes on from it; ``--since``/``--until`` bound the creation time."""
    from durable.cli import main

    url = f"file://{tmp_path / 'store'}"

    async def make() -> None:
        store = LocalStore(tmp_path / "store", url=url)
        await fresh(store, running=0, ended=5)
        await store.close()

    anyio.run(make)
    main(["list", "--store", url, "--limit", "3", "--status", "COMPLETED"])
    first = capsys.readouterr()
    assert [line.split()[0] for line in first.out.splitlines()[1:]] == [
        "e00000",
        "e00001",
        "e00002",
    ]
    cursor = first.err.split("--cursor ")[1].strip()
    main(["list", "--store", url, "--status", "COMPLETED", "--cursor", cursor, "--json"])
    rest = capsys.readouterr()
    assert [s["instance_id"] for s in json.loads(rest.out)] == ["e00003", "e00004"]
    assert "--cursor" not in rest.err
    # a MockClock begins on 2026-01-01, and stands still here
    main(["list", "--store", url, "--since", "2026-01-01T00:00:01", "--json"])
    assert json.loads(capsys.readouterr().out) == []
    main(["list", "--store", url, "--since", "2025-12-31", "--until", "1d", "--json"])
    assert len(json.loads(capsys.readouterr().out)) == 5


async def test_the_sidecar_pages_with_real_continuation_tokens() -> None:
    """Issue 16: the sidecar's QueryInstances began again from the first instance for
    every page, reading every meta before the page; now each page reads its own."""
    from grpclib.client import Channel
    from test_sidecar_protocol import call

    from durable.grpc import Sidecar
    from durable.grpc._proto import dapr, ms
    from durable.grpc._server import BytesCodec

    inner = MemoryStore()
    await fresh(inner, running=0, ended=25)
    counted = Recording(inner)
    async with Sidecar(counted, port=0) as sidecar:
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            seen: list[str] = []
            token = ""
            reads = []
            while True:
                before = len(counted.metas_read())
                query = ms.QueryInstancesRequest(
                    query=ms.InstanceQuery(
                        maxInstanceCount=10, continuationToken=wrapped(token or None)
                    )
                )
                reply = ms.QueryInstancesResponse.FromString(
                    await call(ch, "QueryInstances", query)
                )
                reads.append(len(counted.metas_read()) - before)
                seen += [s.instanceId for s in reply.orchestrationState]
                if not reply.continuationToken.value:
                    break
                token = reply.continuationToken.value
            assert seen == [f"e{i:05d}" for i in range(25)]
            assert max(reads) <= 10, reads
            ids: list[str] = []
            token = ""
            while True:
                request = dapr.ListInstanceIDsRequest(pageSize=10, continuationToken=token)
                got = dapr.ListInstanceIDsResponse.FromString(
                    await call(ch, "ListInstanceIDs", request)
                )
                ids += got.instanceIds
                if not got.continuationToken:
                    break
                token = got.continuationToken
            assert ids == seen
        finally:
            ch.close()
