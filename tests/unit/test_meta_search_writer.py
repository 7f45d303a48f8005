"""The meta's writer and its search entries: what it writes when there is nothing to
index or drop (the usual case, which skips building the key sets), and when there is."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio

from durable._core._search import Indexed
from durable._errors import ObjectNotFoundError
from durable._log._records import InstanceMeta, decode_meta, meta_key
from durable._log._search import Indexing, entry_keys, write_meta_indexed
from durable.store import MemoryStore

_T = datetime(2026, 1, 1, tzinfo=UTC)


def _meta(**fields: object) -> InstanceMeta:
    base = InstanceMeta(
        instance_id="i", name="w", status="RUNNING", seq=1, run_start=0,
        created_at=_T, updated_at=_T,
    )  # fmt: skip
    return InstanceMeta(**{**{f: getattr(base, f) for f in base.__struct_fields__}, **fields})


def _write(meta: InstanceMeta, before: Indexing) -> tuple[InstanceMeta, Indexing, list[str]]:
    async def main() -> tuple[InstanceMeta, Indexing, list[str]]:
        store = MemoryStore("memory://")
        try:
            for key in before.drop | entry_keys("i", before.search):
                await store.put(key, b"")
            etag = await store.put(meta_key("i"), b"{}")
            _, indexed = await write_meta_indexed(store, meta, etag, before)
            written = decode_meta(await store.get(meta_key("i")), meta_key("i"))
            maybe = entry_keys("i", before.search) | entry_keys("i", meta.search) | before.drop
            there = []
            for key in sorted(maybe):
                try:
                    await store.get(key)
                    there.append(key)
                except ObjectNotFoundError:
                    pass
            return written, indexed, there
        finally:
            await store.close()

    return anyio.run(main)


def test_a_meta_without_attributes_is_written_as_given_and_drops_nothing() -> None:
    """The fast path for a meta with no attributes, before or now: it lists no entries
    to drop, and the writer keeps none to delete."""
    written, indexed, entries = _write(_meta(), Indexing.empty())
    assert written.search_drop == []
    assert written.search == {}
    assert indexed.drop == set()
    assert entries == []


def test_a_meta_read_back_with_drops_listed_is_written_without_them_once_they_are_gone() -> None:
    """A meta carried over from one read back (its ``search_drop`` listing entries
    already deleted) must not write that stale list again when there is nothing left to
    drop (skipping the rewrite of ``search_drop`` in the fast path would keep it)."""
    written, indexed, _ = _write(_meta(search_drop=["search/gone"]), Indexing.empty())
    assert written.search_drop == []
    assert indexed.drop == set()


def test_a_replaced_attribute_s_entry_is_deleted_and_the_new_one_put() -> None:
    """The slow path still runs when the attributes change: the meta lists the old
    entry (deleted after it is written), the new one is put before it."""
    old = {"k": Indexed("s:a", "r-0")}
    new = {"k": Indexed("s:b", "r-5")}
    written, indexed, entries = _write(_meta(search=new), Indexing(old))
    assert written.search == new
    assert written.search_drop == sorted(entry_keys("i", old))  # until deleted, after it
    assert indexed.drop == set()
    assert entries == sorted(entry_keys("i", new))
