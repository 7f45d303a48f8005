"""The instances list, paged by cursor: what a page costs does not grow with the
instances the store holds.

Every view pages with ``Client.list_page``: a status or search-attribute filter from
the store's indexes, an id prefix by a listing of that prefix, anything else from the
instance directory; each page starts from the cursor in the URL. Previous needs the
cursors of the pages before, which a forward-only listing cannot find again cheaply:
the URL carries a bounded trail of them (``back``: the last ``TRAIL`` cursors, oldest
first, ``~`` for the first page; past that, First). The name filter (a part of the
workflow name) reads on in growing chunks until the page is full or the scan budget
is spent, and Next goes on from the last instance looked at. There is no total: a
count would read every id; the page says whether more follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from durable._core._search import parse_where
from durable._core._state import WorkflowState, WorkflowStatus
from durable._errors import InvalidArgumentError
from durable._listing import MAX_PAGE, check_cursor, check_prefix

if TYPE_CHECKING:
    from durable._client import Client

__all__ = ["ListPage", "ListQuery", "list_page", "parse_trail"]

PAGE_SIZES = (20, 50, 100, 200)
SCAN_LIMIT = 2000  # instances one name-filtered page may look at before it offers "next"
TRAIL = 10  # pages Previous can go back through (then First)
TRAIL_CHARS = 4000  # and at most this much URL for them (ids may be long)
MAX_CURSOR = 1500  # characters of one cursor: longer is not one this console made
FIRST = "~"  # the first page's place in a trail (it has no cursor)
MAX_PAGE_NUMBER = 10**9


def parse_trail(text: str) -> tuple[str, ...]:
    """The cursors of a ``back`` parameter, each checked (``InvalidArgumentError`` for
    anything this console would not have written)."""
    if not text:
        return ()
    trail = tuple(text.split("."))
    if len(trail) > TRAIL or len(text) > TRAIL_CHARS:
        raise InvalidArgumentError("the page trail is longer than this console writes")
    for cursor in trail:
        if cursor != FIRST:
            check_page_cursor(cursor)
    return trail


def check_page_cursor(cursor: str) -> None:
    """Raise ``InvalidArgumentError`` unless ``cursor`` is a listing cursor."""
    if len(cursor) > MAX_CURSOR:
        raise InvalidArgumentError("not a listing cursor: too long")
    check_cursor(cursor)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What the list shows: filters, where the page starts (``cursor``, "" for the
    first page), the cursors of the pages before it (``trail``) and its number."""

    status: WorkflowStatus | None = None
    name: str = ""  # a case-insensitive part of the workflow name
    prefix: str = ""  # the start of the instance id
    size: int = 50
    where: str = ""  # search attributes, ``key=value`` terms by commas (see parse_where)
    cursor: str = ""
    trail: tuple[str, ...] = ()
    number: int = 1  # the page's number, from 1 (a label: the cursor says where)

    def __post_init__(self) -> None:
        if self.prefix:
            check_prefix(self.prefix)
        if self.cursor:
            check_page_cursor(self.cursor)
        if not 1 <= self.number <= MAX_PAGE_NUMBER:
            raise InvalidArgumentError(f"not a page number: {self.number}")

    @property
    def filtered(self) -> bool:
        """Whether a filter other than the id prefix is on."""
        return self.status is not None or bool(self.name) or bool(self.where)

    def search(self) -> dict[str, object]:
        """The search attributes asked for (``SearchAttributeError`` if malformed)."""
        return dict(parse_where(t for t in self.where.split(",") if t.strip()))

    def matches(self, state: WorkflowState) -> bool:
        """Whether the instance passes the name filter (the store filters the rest)."""
        return not self.name or self.name.casefold() in state.name.casefold()

    def next_trail(self) -> str:
        """The ``back`` of the next page: this page's cursor joins the trail, whose
        oldest entries go past ``TRAIL`` of them or ``TRAIL_CHARS``."""
        trail = [*self.trail, self.cursor or FIRST]
        while len(trail) > TRAIL or len(".".join(trail)) > TRAIL_CHARS:
            trail.pop(0)
        return ".".join(trail)

    def previous(self) -> tuple[str, str] | None:
        """The cursor and ``back`` of the previous page (None: not in the trail)."""
        if not self.trail:
            return None
        cursor = self.trail[-1]
        return ("" if cursor == FIRST else cursor), ".".join(self.trail[:-1])


@dataclass(slots=True)
class ListPage:
    """One page of instances, and the cursor of the next ("" on the last)."""

    rows: list[WorkflowState] = field(default_factory=list)
    next_cursor: str = ""
    scanned: int = 0  # instances looked at for this page
    cut_short: bool = False  # the scan budget ran out before the page filled

    @property
    def live(self) -> bool:
        """Whether an instance shown can still change (so the page refreshes)."""
        return any(not WorkflowStatus(state.status).is_terminal for state in self.rows)


async def list_page(client: Client, query: ListQuery) -> ListPage:
    """The page ``query`` asks for, by ``Client.list_page`` from its cursor. Without a
    name filter that is one call of the page's size; with one, chunks that double
    (from the page's size) until the page is full or ``SCAN_LIMIT`` were looked at."""
    page = ListPage()
    search = query.search()
    prefix = query.prefix or None
    cursor = query.cursor or None
    chunk = query.size
    while len(page.rows) < query.size:
        if page.scanned >= SCAN_LIMIT:
            page.cut_short = True
            break
        asked = min(chunk, MAX_PAGE, SCAN_LIMIT - page.scanned)
        found = await client.list_page(
            status=query.status, search=search, page_size=asked, cursor=cursor,
            id_prefix=prefix,
        )  # fmt: skip
        needed, taken = query.size - len(page.rows), 0
        for state in found.items:
            taken += 1
            if query.matches(state):
                page.rows.append(state)
                needed -= 1
                if not needed:
                    break
        page.scanned += taken
        if not needed and taken < len(found.items):
            # full before the chunk's end: Next starts after the last one taken
            again = await client.list_page(
                status=query.status, search=search, page_size=taken, cursor=cursor,
                id_prefix=prefix,
            )  # fmt: skip
            cursor = again.next_cursor
            break
        cursor = found.next_cursor
        if cursor is None:
            break
        chunk *= 2
    page.next_cursor = cursor or ""
    return page
