"""The instances list, paged cheaply: list the ids once, read only the metas a page needs.

Ids are listed in order (one store call), so a page is a range of them found by
bisection; only the metas of that range are read, a page at a time, concurrently. A
filter that needs the meta (status, name) reads on until the page is full or the scan
budget is spent, and the next page goes on from where the scan stopped. (An index of
instances by status would make filtered pages as cheap as plain ones.)
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from durable._core._state import WorkflowStatus
from durable._listing import read_metas
from durable._log._records import INSTANCES, InstanceMeta

if TYPE_CHECKING:
    from durable.store import ObjectStore

__all__ = ["ListPage", "ListQuery", "list_page"]

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

    @property
    def filtered(self) -> bool:
        """Whether a meta must be read to know if an instance is on the page."""
        return self.status is not None or bool(self.name)

    def matches(self, meta: InstanceMeta) -> bool:
        """Whether the instance passes the filters that need its meta."""
        if self.status is not None and meta.status != self.status:
            return False
        return not self.name or self.name.casefold() in meta.name.casefold()


@dataclass(slots=True)
class ListPage:
    """One page of instances, and the cursors around it."""

    rows: list[InstanceMeta] = field(default_factory=list)
    next_after: str = ""  # the cursor of the next page ("" on the last)
    prev_before: str = ""  # the cursor of the previous page ("" on the first)
    scanned: int = 0  # metas read for this page
    cut_short: bool = False  # the scan budget ran out before the page filled
    total: int = 0  # ids under the prefix (every status)

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
