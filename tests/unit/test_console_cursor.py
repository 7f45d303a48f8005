"""The console's list on cursor paging (issue 16): what a page view costs in store
requests (a bound, the same with thousands of ended instances as with none), the
trail that Previous walks back through, and cursors from the network (junk and forged
ones are a 400 that reaches no store key the cursor names)."""

from __future__ import annotations

import base64
import math
import re
from datetime import UTC, datetime

import httpx
import msgspec
import pytest

import durable
from durable._errors import InvalidArgumentError
from durable._log._records import InstanceMeta, encode, meta_key
from durable.console import create_app
from durable.console._listing import FIRST, TRAIL, TRAIL_CHARS, ListQuery, parse_trail
from durable.store import MemoryStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SHOWN = 70  # instances the pages show ("a-..."), before the ended ones in id order
ENDED = 3000


class S3Billed(MemoryStore):
    """A memory store that counts requests as S3 bills them: a LIST returns at most
    1,000 names, so listing a directory of N costs ceil(N / 1000) requests; and, as
    S3 can, it lists from a point (``list_after``: one request per 1,000 names
    returned). Every key and prefix asked for is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0
        self.touched: list[str] = []

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        self.requests += 1
        self.touched.append(key)
        return await super().get_with_etag(key)

    async def get(self, key: str) -> bytes:
        self.requests += 1
        self.touched.append(key)
        return await super().get(key)

    async def list(self, prefix: str) -> list[str]:
        names = await super().list(prefix)
        self.requests += max(1, math.ceil(len(names) / 1000))
        self.touched.append(prefix + "/")
        return names

    async def list_after(
        self, prefix: str, after: str, limit: int, *, starting: str = ""
    ) -> list[str]:
        listed = await super().list(prefix)
        names = [n for n in listed if n > after and n.startswith(starting)][:limit]
        self.requests += max(1, math.ceil(len(names) / 1000))
        self.touched.append(f"{prefix}/{starting}")
        return names


async def filled(ended: int) -> S3Billed:
    """``SHOWN`` pending instances ``a-0000``.., and ``ended`` completed ones after
    them in id order (their metas, as a runtime leaves them)."""
    store = S3Billed()
    async with durable.Client(store) as client:
        for i in range(SHOWN):
            await client.start("shown", i, instance_id=f"a-{i:04d}")
    for i in range(ended):
        instance_id = f"ended-{i:06d}"
        meta = InstanceMeta(instance_id=instance_id, name="old", status="COMPLETED", seq=1,
                            run_start=0, created_at=T0, updated_at=T0)  # fmt: skip
        await store.put(meta_key(instance_id), encode(meta))
    return store


def web(client: durable.Client) -> httpx.AsyncClient:
    app = create_app(client, secret=b"k" * 32)
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8233")


def link(html: str, name: str) -> str | None:
    found = re.search(rf'id="{name}" href="([^"]+)"', html)
    return found.group(1).replace("&amp;", "&") if found is not None else None


def ids(html: str) -> list[str]:
    return re.findall(r'href="/instances/([^"/?]+)"', html)


async def page_costs(ended: int) -> list[int]:
    """The requests of each console page view: three pages of 20 by Next, back by
    Previous, a page by id prefix, one of PENDING ones, and (if any ended) three pages
    of COMPLETED ones by Next."""
    store = await filled(ended)
    costs: list[int] = []
    async with durable.Client(store) as client, web(client) as http:
        await http.get("/", params={"size": 20})  # the config and index markers, once

        async def view(url: str) -> str:
            before = store.requests
            response = await http.get(url)
            assert response.status_code == 200, response.text
            costs.append(store.requests - before)
            return response.text

        first = await view("/?size=20")
        assert ids(first) == [f"a-{i:04d}" for i in range(20)]
        second = await view(link(first, "next") or "")
        third = await view(link(second, "next") or "")
        assert ids(third) == [f"a-{i:04d}" for i in range(40, 60)]
        back = await view(link(third, "prev") or "")
        assert ids(back) == [f"a-{i:04d}" for i in range(20, 40)]
        prefixed = await view("/?size=20&prefix=a-006")
        assert ids(prefixed) == [f"a-{i:04d}" for i in range(60, 70)]
        pending = await view("/?size=20&status=PENDING")
        assert ids(pending) == [f"a-{i:04d}" for i in range(20)]
        if ended:  # pages of ended ones, after the first (which reads past the pending)
            done = (await http.get("/?size=20&status=COMPLETED")).text
            for _ in range(3):
                done = await view(link(done, "next") or "")
                assert len(ids(done)) == 20
    return costs


async def test_a_page_view_costs_the_same_with_thousands_ended() -> None:
    """Issue 16, bug pinned: the console listed every instance id for each page (one
    listing that grows with every instance ever started: a LIST request per 1,000 ids
    on S3). Each view now costs what ``list_page`` costs: at most twice the page size
    in requests, the same with 3,000 ended instances in the store as with none."""
    none, many = await page_costs(0), await page_costs(ENDED)
    assert all(cost <= 2 * 20 for cost in many), many
    assert many[: len(none)] == none, (none, many)
    assert len(set(many[len(none) :])) == 1, many  # ended pages: constant


def test_next_trail_is_bounded_and_previous_walks_it() -> None:
    """Previous goes back through the cursors of the pages before, to the first page;
    the trail keeps the last ``TRAIL`` of them, then only First is offered."""

    def forward(query: ListQuery, cursor: str) -> ListQuery:
        back = parse_trail(query.next_trail())
        return ListQuery(cursor=cursor, trail=back, number=query.number + 1)

    def backward(query: ListQuery) -> ListQuery | None:
        previous = query.previous()
        if previous is None:
            return None
        cursor, back = previous
        return ListQuery(cursor=cursor, trail=parse_trail(back), number=query.number - 1)

    query = ListQuery()
    assert query.previous() is None
    for i in range(2):
        query = forward(query, real_cursor(f"id-{i:03d}"))
    back = backward(query)
    assert back is not None
    assert (back.cursor, back.number) == (real_cursor("id-000"), 2)
    first = backward(back)
    assert first is not None
    assert (first.cursor, first.number) == ("", 1)
    assert backward(first) is None

    query = ListQuery()
    for i in range(TRAIL + 5):
        query = forward(query, real_cursor(f"id-{i:03d}"))
    assert len(query.trail) == TRAIL
    steps = 0
    while (earlier := backward(query)) is not None:
        query, steps = earlier, steps + 1
    assert steps == TRAIL
    assert query.cursor == real_cursor(f"id-{4:03d}")  # older pages: by First
    assert query.number == 6


def test_trail_bound_by_length() -> None:
    """A trail never grows past ``TRAIL_CHARS`` of URL, however long the ids."""
    store_cursor = real_cursor("x" * 200)
    query = ListQuery(cursor=store_cursor, trail=tuple([store_cursor] * 3))
    assert len(query.next_trail()) <= TRAIL_CHARS
    assert len(parse_trail(query.next_trail())) <= TRAIL


def real_cursor(after: str) -> str:
    """A cursor as ``list_page`` writes one: the directory walk, after ``after``."""
    raw = msgspec.json.encode([False, 0, after, False, ""])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def forged(*fields: object) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(fields))).decode().rstrip("=")


JUNK = {
    "not base64": {"cursor": "%%%"},
    "not JSON": {"cursor": base64.urlsafe_b64encode(b"<x>").decode()},
    "not a cursor's shape": {"cursor": forged({"a": 1})},
    "a negative partition": {"cursor": forged(True, -3, "", False, "")},
    "an id with a path": {"cursor": forged(False, 0, "../../secret/x", False, "")},
    "an id with a slash": {"cursor": forged(False, 0, "a/meta", False, "")},
    "a prefix with a path": {"cursor": forged(False, 0, "", False, "../secret")},
    "another listing's cursor": {"cursor": forged(True, 0, "a-0001", False, "")},
    "another prefix's cursor": {"cursor": forged(False, 0, "a-0001", False, "a-00")},
    "a huge cursor": {"cursor": "W" * 5000},
    "a junk trail": {"back": "~.%%%"},
    "a forged trail": {"back": forged(False, 0, "../secret", False, "")},
    "a trail too long": {"back": ".".join([FIRST] * (TRAIL + 1))},
    "a bad page number": {"page": "0"},
    "a page number of junk": {"page": "x"},
    "a prefix with a path ": {"prefix": "../secret"},
    "a prefix with a slash": {"prefix": "a/b"},
}


@pytest.mark.parametrize("params", list(JUNK.values()), ids=list(JUNK))
async def test_a_junk_or_forged_cursor_is_a_400(params: dict[str, str]) -> None:
    """Issue 16: the console faces a network; a cursor, trail, page number or prefix
    in the URL that this console would not have written is a clear 400 (never a 500),
    and no store key or listing it names is touched."""
    store = await filled(0)
    async with durable.Client(store) as client, web(client) as http:
        await http.get("/")
        store.touched.clear()
        response = await http.get("/", params=params)
        assert response.status_code == 400, response.text
        assert 'id="error"' in response.text
        assert not [k for k in store.touched if "secret" in k or k.startswith("a/")]
        assert all(k.startswith(("instances/", "config", "index")) for k in store.touched), (
            store.touched
        )


def test_a_forged_cursor_is_refused_by_the_client() -> None:
    """The same checks guard ``Client.list_page`` (the console is one caller)."""
    from durable._listing import check_cursor

    for bad in ("", "%", forged(True, -1, "", False, ""), forged(False, 0, "a/../b")):
        with pytest.raises(InvalidArgumentError):
            check_cursor(bad)
    check_cursor(real_cursor("a-0001"))
