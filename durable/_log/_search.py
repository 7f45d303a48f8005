"""The search index: one empty object per current search attribute of an instance, so
a lookup by equality lists the instances that hold a value instead of reading them all.

Layout (the meta stays the truth that a lookup checks every hit against)::

    search/{name}/{value, base64url}/{id}^{run_id}-{event_id}

The part after ``^`` names the event that set the value (see :mod:`durable._core._search`):
no two settings share an entry, so deleting an old one never deletes a newer one, in
whatever order racing writers land. An entry is one object beside the other instances'
(on ``file://``, no directory per instance and value); where that name would pass 255
bytes, and in stores written before, it is ``{id}/{run_id}-{event_id}``. A lookup
reads both; an entry of the older layout is deleted when a meta's ``search_drop``
names it, and otherwise outlives its value like any stale entry (lookups check each
hit against the meta).

Entries follow the meta, by its writer (:func:`write_meta_indexed`): the entries of
the attributes the new meta holds are put *before* it is written, so a meta never
names an attribute that has no entry; the entries of the attributes it replaced are
deleted *after*, and the meta lists them (``search_drop``) until they are gone: a crash
between leaves entries too many, which the next writer of the meta deletes (a
recovery writes the meta of an instance whose attributes or drops lag the log). A
purge deletes the instance's entries before its meta.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import msgspec

from durable._errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
)

from ._records import (
    SEP,
    InstanceMeta,
    decode_meta,
    decode_record,
    encode,
    entry_key,
    log_key,
    meta_key,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from durable._core._search import Indexed
    from durable.store import ObjectStore

__all__ = ["SEARCH", "Indexing", "find", "stored_entries", "unindex", "write_meta_indexed"]

SEARCH = "search"


class Indexing:
    """What a meta says of its search entries, as its writer knows it: the current
    attributes, and the entries still to delete (those of replaced attributes, and
    those put for a meta whose write failed)."""

    __slots__ = ("drop", "search")

    def __init__(self, search: Mapping[str, Indexed], drop: Iterable[str] = ()) -> None:
        self.search = search
        self.drop = set(drop)

    @classmethod
    def of(cls, meta: InstanceMeta) -> Indexing:
        return cls(meta.search, meta.search_drop)

    @classmethod
    def empty(cls) -> Indexing:
        return cls({})


def _segment(encoded: str) -> str:
    return base64.urlsafe_b64encode(encoded.encode()).decode().rstrip("=")


def value_prefix(name: str, encoded: str) -> str:
    """Where the entries of the instances holding ``name`` = (encoded) value are."""
    return f"{SEARCH}/{name}/{_segment(encoded)}"


def entry_keys(instance_id: str, search: Mapping[str, Indexed]) -> set[str]:
    """The keys of the entries of an instance's current attributes."""
    return {
        entry_key(value_prefix(name, indexed.value), instance_id, indexed.at)
        for name, indexed in search.items()
    }


async def _put_entries(store: ObjectStore, keys: Iterable[str]) -> None:
    """Put entries one by one (an instance has a few; a store error stays itself)."""
    for key in sorted(keys):
        await store.put(key, b"")


async def delete_entries(store: ObjectStore, keys: Iterable[str]) -> list[str]:
    """Delete entries; returns those whose delete failed (kept for a later writer)."""
    failed: list[str] = []
    for key in sorted(keys):
        try:
            await store.delete(key)
        except StoreError:
            failed.append(key)
    return failed


async def _holds_run(store: ObjectStore, meta: InstanceMeta) -> bool:
    """Whether the log still holds the run ``meta`` describes: the record at its
    ``run_start`` starts a run of the meta's start, and no purge is under way (a purge
    and a new start under the id replace it; run ids are never reused). A meta from
    before origins names no start: it is taken as held (so is an unreadable log)."""
    if not meta.origin:
        return True
    for seq in sorted({0, meta.run_start}):
        key = log_key(meta.instance_id, seq)
        try:
            record = decode_record(await store.get(key), key)
        except ObjectNotFoundError:
            return False
        except StoreError as err:
            if err.transient:
                raise
            return True  # unreadable: recovery fails the run; the meta says what it can
        if record.purging:
            return False
    started = record.next_run[0] if record.next_run else None
    return getattr(started, "origin_run", None) == meta.origin


async def write_meta_indexed(
    store: ObjectStore, meta: InstanceMeta, etag: str | None, before: Indexing | None
) -> tuple[str, Indexing]:
    """Write ``meta`` by put-if-match (put-if-absent when ``etag`` is None); never over
    a newer one. Its search entries are put first, and those of the meta it replaces
    (``before``: what the meta at ``etag`` says; None: not known) deleted after.

    Returns the ETag now current and what that meta says of its entries. If the write
    fails, ``before`` keeps the entries put for it among those to delete (the next
    write, for a meta that does not name them, deletes them). A meta deleted since the
    writer read it is not written again (``ObjectNotFoundError``), and the entries put
    for it are deleted (a purge came: the run they name is gone).

    A meta is never written for a run the log no longer holds: a write not fenced by
    an ETag (put-if-absent past the run's first record: the writer never read the
    meta, or its first write failed) and a write over another start's meta first
    check the log (:func:`_holds_run`). Seqs order metas of one log only: after a
    purge and a new start under the id, an old run's meta written back (absent, or
    of a higher seq than the new run's) said the new run had ended."""
    key = meta_key(meta.instance_id)
    if etag is None and meta.seq > meta.run_start and not await _holds_run(store, meta):
        raise ObjectNotFoundError(key)  # (as for a meta a purge deleted)
    want = entry_keys(meta.instance_id, meta.search) if meta.search else set()
    if before is None and etag is None:
        before = Indexing.empty()
    put: set[str] = set()
    for _ in range(8):
        # (no attributes before, none now: the usual case skips the key sets' building)
        have, drop = set(), set()
        if before is not None and before.search:
            have = entry_keys(meta.instance_id, before.search)
        if before is not None and (have or before.drop):
            drop = (have | before.drop) - want
        missing = want - have - put if want else set()
        try:
            if missing:
                if before is not None:
                    before.drop |= missing  # until a meta names them
                await _put_entries(store, missing)
                put |= missing
            listed = meta
            if drop or meta.search_drop:
                listed = msgspec.structs.replace(meta, search_drop=sorted(drop))
            data = encode(listed)
            try:
                if etag is None:
                    etag = await store.put_if_absent(key, data)
                else:
                    etag = await store.put_if_match(key, data, etag)
            except (ObjectExistsError, PreconditionFailedError):
                found, etag = await store.get_with_etag(key)  # deleted meanwhile: not found
                try:
                    other = decode_meta(found, key)
                except StoreError:
                    before = None  # unreadable: replace it outright (its entries unknown)
                    await _put_entries(store, want - put)
                    put = set(want)
                    etag = await store.put(key, encode(meta))
                    return etag, Indexing(meta.search)
                if other.purging is not None:
                    raise ObjectNotFoundError(key) from None  # a purge claimed the log
                if other.seq > meta.seq or (
                    other.origin != meta.origin and not await _holds_run(store, meta)
                ):  # a newer meta, or one of a start that replaced this run's log
                    stray = put - entry_keys(meta.instance_id, other.search)
                    return etag, Indexing(other.search, {*other.search_drop, *stray})
                meta = msgspec.structs.replace(meta, created_at=other.created_at)
                before = Indexing(other.search, {*other.search_drop, *put})
                continue
        except ObjectNotFoundError:
            await delete_entries(store, put)
            raise
        return etag, Indexing(meta.search, await delete_entries(store, drop) if drop else ())
    raise StoreError(f"meta at {key!r} keeps changing under the writer", key=key)


async def find(store: ObjectStore, search: Mapping[str, str]) -> list[str]:
    """The ids of the instances with an entry for every (encoded) attribute of
    ``search``, sorted: one LIST per attribute. Entries may outlive their values (a
    crash, a race): the caller checks each hit against its meta."""
    found: set[str] | None = None
    for name, encoded in sorted(search.items()):
        ids = {n.partition(SEP)[0] for n in await store.list(value_prefix(name, encoded))}
        found = ids if found is None else found & ids
        if not found:
            return []
    return sorted(found or ())


async def stored_entries(store: ObjectStore) -> set[str]:
    """Every search entry in the store, as keys, in either layout (a walk of the
    whole index, for checks and tools)."""
    found: set[str] = set()
    for name in await store.list(SEARCH):
        for value in await store.list(f"{SEARCH}/{name}"):
            prefix = f"{SEARCH}/{name}/{value}"
            for child in await store.list(prefix):
                if SEP in child:
                    found.add(f"{prefix}/{child}")
                else:  # an instance's own directory of entries
                    found |= {
                        f"{prefix}/{child}/{at}" for at in await store.list(f"{prefix}/{child}")
                    }
    return found


def matches(meta: InstanceMeta, search: Mapping[str, str]) -> bool:
    """Whether the meta holds every (encoded) attribute of ``search``."""
    for name, encoded in search.items():
        indexed = meta.search.get(name)
        if indexed is None or indexed.value != encoded:
            return False
    return True


async def unindex(
    store: ObjectStore, instance_id: str, meta: InstanceMeta | None, *also: Mapping[str, Indexed]
) -> None:
    """Delete the entries an instance may have: its meta's, those it still has to drop,
    and those of ``also`` (the attributes of its log, which the meta may lag)."""
    keys: set[str] = set()
    if meta is not None:
        keys = entry_keys(instance_id, meta.search) | set(meta.search_drop)
    for search in also:
        keys |= entry_keys(instance_id, search)
    if keys and (failed := await delete_entries(store, keys)):
        raise StoreError(f"could not delete search entries of {instance_id!r}", key=failed[0])
