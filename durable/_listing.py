"""Listing instances a page at a time, by cursor: a search by attributes reads the
search index (the instances that hold the values, not every one); statuses that have
not ended are read from the active index (what runs, not what ever ran); any other
listing walks the instance directory from where the last page stopped, never
re-reading earlier pages."""

from __future__ import annotations

import base64
import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import anyio
import msgspec

from ._core._state import WorkflowState, WorkflowStatus
from ._errors import InvalidArgumentError, InvalidInstanceIdError
from ._ids import validate_key
from ._log._reader import read_meta
from ._log._records import INSTANCES, InstanceMeta
from ._log._search import find, matches

if TYPE_CHECKING:
    from ._log._active import ActiveIndex
    from .store import ObjectStore

__all__ = [
    "MAX_PAGE",
    "Filters",
    "InstancePage",
    "check_cursor",
    "check_prefix",
    "names_after",
    "page_metas",
    "read_metas",
]

_ACTIVE = frozenset({WorkflowStatus.PENDING, WorkflowStatus.RUNNING, WorkflowStatus.SUSPENDED})
MAX_PAGE = 1000


@dataclass(frozen=True)
class InstancePage:
    """One page of a listing: its instances, and the cursor of the next page (``None``
    at the end)."""

    items: list[WorkflowState]
    next_cursor: str | None


@dataclass(frozen=True)
class Filters:
    """What a listing keeps: every filter given must match."""

    status: WorkflowStatus | None = None
    name: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    search: Mapping[str, str] = field(default_factory=dict)  # encoded values

    def keep(self, meta: InstanceMeta) -> bool:
        if self.status is not None and meta.status != self.status:
            return False
        if self.search and not matches(meta, self.search):
            return False
        if self.name is not None and meta.name != self.name:
            return False
        if self.created_after is not None and meta.created_at <= self.created_after:
            return False
        return self.created_before is None or meta.created_at < self.created_before


class _Cursor(msgspec.Struct, frozen=True, array_like=True):
    """Where a listing stopped: in the active index (``partition``, then id order), in
    the search index (``search``, id order) or in the instance directory (id order);
    ``after`` is the last id it looked at, ``prefix`` the id prefix it lists."""

    active: bool
    partition: int
    after: str
    search: bool = False
    prefix: str = ""


_cursor_decoder = msgspec.json.Decoder(_Cursor)


def _encode(cursor: _Cursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).decode().rstrip("=")


def _decode(text: str) -> _Cursor:
    """The cursor ``text`` encodes; a forged one (a negative partition, an id no
    instance could have) is refused like garbage, so it names no other object."""
    try:
        padded = text + "=" * (-len(text) % 4)
        cursor = _cursor_decoder.decode(base64.urlsafe_b64decode(padded.encode()))
        if cursor.partition < 0:
            raise ValueError(cursor.partition)
        for part in (cursor.after, cursor.prefix):
            if part:
                validate_key(part)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidArgumentError(f"not a listing cursor: {text[:100]!r}") from None
    return cursor


def check_cursor(text: str) -> None:
    """Raise ``InvalidArgumentError`` unless ``text`` is a listing cursor."""
    _decode(text)


def check_prefix(prefix: str) -> None:
    """Raise ``InvalidArgumentError`` unless ``prefix`` can start an instance id."""
    try:
        validate_key(prefix, "id prefix")
    except InvalidInstanceIdError as err:
        raise InvalidArgumentError(str(err)) from None


async def read_metas(store: ObjectStore, ids: list[str]) -> list[InstanceMeta | None]:
    """The metas of ``ids``, read concurrently, in the same order (None: absent or
    unreadable)."""
    found: list[InstanceMeta | None] = [None] * len(ids)

    async def read(i: int, instance_id: str) -> None:
        meta = await read_meta(store, instance_id)
        found[i] = meta[0] if meta is not None else None

    async with anyio.create_task_group() as tg:
        for i, instance_id in enumerate(ids):
            tg.start_soon(read, i, instance_id)
    return found


async def _metas(store: ObjectStore, ids: list[str]) -> list[InstanceMeta]:
    """The metas of ``ids``, less the absent ones (a start under way, or an instance
    being purged) and those a purge marked (it claimed the log: the instance reads as
    absent, as it will be)."""
    metas = await read_metas(store, ids)
    return [meta for meta in metas if meta is not None and meta.purging is None]


async def names_after(
    store: ObjectStore, prefix: str, after: str, limit: int, *, starting: str = ""
) -> list[str]:
    """The first ``limit`` names under ``prefix`` after ``after`` (and that start with
    ``starting``): one request where the store can start a listing there (S3), else its
    whole listing."""
    list_after = getattr(store, "list_after", None)
    if list_after is not None:
        names: list[str] = await list_after(prefix, after, limit, starting=starting)
        return names
    listed = await store.list(prefix)  # (sorted: the first one wanted is found by bisection)
    first = bisect.bisect_right(listed, after) if after >= starting else (
        bisect.bisect_left(listed, starting))  # fmt: skip
    names = listed[first : first + limit]
    return names if not starting else [n for n in names if n.startswith(starting)]


async def page_metas(
    index: ActiveIndex,
    filters: Filters,
    page_size: int,
    cursor: str | None,
    *,
    indexed: bool,
    id_prefix: str = "",
) -> tuple[list[InstanceMeta], str | None]:
    """One page of the metas that match ``filters`` (and whose id starts with
    ``id_prefix``), and the next page's cursor.

    A status that has not ended is read from the active index when every partition
    is ``indexed``; anything else walks the instance directory from the cursor, only
    the names that start with ``id_prefix`` (one listing of those, where the store can
    list from a point)."""
    if not 1 <= page_size <= MAX_PAGE:
        raise InvalidArgumentError(f"page_size must be from 1 to {MAX_PAGE}: {page_size!r}")
    if id_prefix:
        check_prefix(id_prefix)
    searching = bool(filters.search)
    active = indexed and filters.status in _ACTIVE and not searching
    fresh = _Cursor(active, 0, "", searching, id_prefix)
    at = _decode(cursor) if cursor is not None else fresh
    if (at.active, at.search, at.prefix) != (active, searching, id_prefix):
        raise InvalidArgumentError("this cursor is of a listing with other filters")
    store = index.store
    items: list[InstanceMeta] = []
    if searching:
        found = [i for i in await find(store, filters.search) if i > at.after]
        found = [i for i in found if i.startswith(id_prefix)]
        while found:
            take, found = found[: page_size - len(items)], found[page_size - len(items) :]
            items += [m for m in await _metas(store, take) if filters.keep(m)]
            if len(items) == page_size and found:
                return items, _encode(msgspec.structs.replace(fresh, after=take[-1]))
        return items, None
    if not active:
        after = at.after
        while True:
            ids = await names_after(
                store, INSTANCES, after, page_size - len(items), starting=id_prefix
            )
            if not ids:
                return items, None
            items += [m for m in await _metas(store, ids) if filters.keep(m)]
            after = ids[-1]
            if len(items) == page_size:
                return items, _encode(msgspec.structs.replace(fresh, after=after))
    partition, after = at.partition, at.after
    count = index.partitions or 0  # (known: every partition is indexed)
    while partition < count:
        ids = [i for i in await index.ids(partition) if i > after and i.startswith(id_prefix)]
        while ids:
            take, ids = ids[: page_size - len(items)], ids[page_size - len(items) :]
            items += [m for m in await _metas(store, take) if filters.keep(m)]
            if len(items) == page_size:
                last = partition == count - 1 and not ids
                at = msgspec.structs.replace(fresh, partition=partition, after=take[-1])
                return items, None if last else _encode(at)
        partition, after = partition + 1, ""
    return items, None
