"""The instances list, paged cheaply.

A status or search-attribute filter pages with ``Client.list_page`` (the store's
indexes: active instances by partition, search attributes by value), from its cursor,
forward. Otherwise ids are listed in order (one store call), so a page is a range of
them found by bisection (forward and back, with the total); only the metas of that
range are read, a page at a time, concurrently. The name filter (a part of the
workflow name) reads on until the page is full or the scan budget is spent, and the
next page goes on from where the scan stopped.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from durable._core._search import parse_where
from durable._core._state import WorkflowState, WorkflowStatus
from durable._listing import read_metas
from durable._log._records import INSTANCES, InstanceMeta

if TYPE_CHECKING:
    from durable._client import Client
    from durable.store import ObjectStore

__all__ = ["ListPage", "ListQuery", "indexed_page", "list_page"]

PAGE_SIZES = (20, 50, 100, 200)
SCAN_LIMIT = 2000  # metas one filtered page may read before it stops and offers "next"


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What the list shows: filters, and where the page starts (ids after ``after``,
    or the page that ends before ``before``)."""

    status: WorkflowStatus | None = None
    name: str = ""  # a case-insensitive part of the workflow name
    prefix: str = ""  # the start of the instance id
    after: str = ""
    before: str = ""
    size: int = 50
    where: str = ""  # search attributes, ``key=value`` terms by commas (see parse_where)
    cursor: str = ""  # where an indexed listing goes on

    @property
    def filtered(self) -> bool:
        """Whether a meta must be read to know if an instance is on the page."""
        return self.status is not None or bool(self.name) or bool(self.where)

    @property
    def indexed(self) -> bool:
        """Whether the page comes from the store's indexes (``Client.list_page``)."""
        return self.status is not None or bool(self.where)

    def search(self) -> dict[str, object]:
        """The search attributes asked for (``SearchAttributeError`` if malformed)."""
        return dict(parse_where(t for t in self.where.split(",") if t.strip()))

    def matches(self, meta: InstanceMeta | WorkflowState) -> bool:
        """Whether the instance passes the filters that need its meta."""
        if self.status is not None and meta.status != self.status:
            return False
        if self.prefix and not meta.instance_id.startswith(self.prefix):
            return False
        return not self.name or self.name.casefold() in meta.name.casefold()


@dataclass(slots=True)
class ListPage:
    """One page of instances, and the cursors around it."""

    rows: list[InstanceMeta | WorkflowState] = field(default_factory=list)
    next_after: str = ""  # the cursor of the next page ("" on the last)
    next_cursor: str = ""  # an indexed listing's cursor of its next page
    prev_before: str = ""  # the cursor of the previous page ("" on the first)
    scanned: int = 0  # metas read for this page
    cut_short: bool = False  # the scan budget ran out before the page filled
    total: int = -1  # ids under the prefix (every status; -1: an indexed page, unknown)

    @property
    def live(self) -> bool:
        """Whether an instance shown can still change (so the page refreshes)."""
        return any(not WorkflowStatus(meta.status).is_terminal for meta in self.rows)


async def list_page(store: ObjectStore, query: ListQuery) -> ListPage:
    """The page ``query`` asks for, reading at most ``SCAN_LIMIT`` metas."""
    ids = await store.list(INSTANCES)
    low, high = 0, len(ids)
    if query.prefix:
        low = bisect.bisect_left(ids, query.prefix)
        high = bisect.bisect_left(ids, query.prefix + "\U0010ffff")
    page = ListPage(total=high - low)
    backward = bool(query.before) and not query.after
    if query.after:
        start, stop = max(low, bisect.bisect_right(ids, query.after)), high
    elif backward:
        start, stop = low, min(high, bisect.bisect_left(ids, query.before))
    else:
        start, stop = low, high
    chunk = query.size
    # walk from the cursor, a chunk of ids at a time, until the page is full
    cursor = stop if backward else start
    while len(page.rows) < query.size and (cursor > start if backward else cursor < stop):
        if page.scanned >= SCAN_LIMIT:
            page.cut_short = True
            break
        if backward:
            window = ids[max(start, cursor - chunk) : cursor]
        else:
            window = ids[cursor : min(stop, cursor + chunk)]
        metas = await read_metas(store, window)
        page.scanned += len(window)
        taken = 0
        order = range(len(window) - 1, -1, -1) if backward else range(len(window))
        for i in order:
            meta = metas[i]
            taken += 1
            if meta is not None and query.matches(meta):
                page.rows.append(meta)
                if len(page.rows) == query.size:
                    break
        cursor = cursor - taken if backward else cursor + taken
    if backward:
        page.rows.reverse()
        first, last = cursor, stop  # ids[first:last] were looked at
    else:
        first, last = start, cursor
    if first > low:
        page.prev_before = ids[first]
    if first < last < high:
        page.next_after = ids[last - 1]
    return page


async def indexed_page(client: Client, query: ListQuery) -> ListPage:
    """The page a status or search filter asks for, by ``Client.list_page`` from the
    query's cursor; the name and prefix filters keep what they match, reading on until
    the page is full or ``SCAN_LIMIT`` instances were looked at."""
    page = ListPage()
    search = query.search()
    cursor = query.cursor or None
    while len(page.rows) < query.size:
        if page.scanned >= SCAN_LIMIT:
            page.cut_short = True
            break
        found = await client.list_page(
            status=query.status, search=search, page_size=query.size - len(page.rows),
            cursor=cursor,
        )  # fmt: skip
        page.scanned += len(found.items)
        page.rows += [s for s in found.items if query.matches(s)]
        cursor = found.next_cursor
        if cursor is None:
            break
    page.next_cursor = cursor or ""
    return page
