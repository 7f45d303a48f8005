"""Search attributes in the whole-system simulation: the invariant checked once the
drain has brought every run to rest. A search by each attribute value finds exactly
the instances whose current attributes (as their log says) hold it, and the store's
search index holds exactly the entries their metas name: none missing, and none left
over by a race or a purge (a process killed between an entry's put and its meta's
write may leave one that no meta names: a search skips it)."""

from __future__ import annotations

from durable._core._search import search_of
from durable._log._reader import load_run, read_meta
from durable._log._search import entry_keys, find, stored_entries
from durable.testing._system_fleet import _RENEW, _DriverBase, _settle
from durable.testing._system_programs import SEARCHED

__all__: list[str] = []


class _Search(_DriverBase):
    """Check the search index against the log, at rest."""

    async def _check_search(self) -> None:
        store, ledger = self.inner, self.sim.ledger
        for _ in range(5):  # what follows the last turns (their metas) lands: at rest
            self.clock.advance(_RENEW)
            await _settle()
        truth: dict[tuple[str, str], set[str]] = {}
        named: set[str] = set()
        for instance_id in await store.list("instances"):
            run = await load_run(store, instance_id)
            found = await read_meta(store, instance_id)
            meta = found[0] if found is not None else None
            if run is None:  # half-purged: _check_purges has said so
                continue
            current = search_of(run.history)
            if meta is None or meta.search != current:
                ledger.violate(
                    f"search: the meta of {instance_id!r} says {meta and meta.search!r} "
                    f"at rest, its log {current!r}"
                )
                continue
            named |= entry_keys(instance_id, meta.search)
            for name, indexed in current.items():
                truth.setdefault((name, indexed.value), set()).add(instance_id)
        values = {(n, v) for n, v in truth} | {(n, "s:none") for n in SEARCHED}
        for name, value in sorted(values):
            hits = set()
            for instance_id in await find(store, {name: value}):
                found = await read_meta(store, instance_id)
                if found is not None and (i := found[0].search.get(name)) and i.value == value:
                    hits.add(instance_id)
            want = truth.get((name, value), set())
            if hits != want:
                ledger.violate(
                    f"search {name}={value!r} finds {sorted(hits)}, the logs say {sorted(want)}"
                )
        stored = await _entries(store)
        if named - stored:
            ledger.violate(f"search index at rest: missing {sorted(named - stored)[:5]}")
        if stored - named and not self.sim.crashes:  # (a process that dies between an
            # entry's put and its meta's write leaves an entry no meta names: skipped)
            ledger.violate(f"search index at rest: left over {sorted(stored - named)[:5]}")


async def _entries(store: object) -> set[str]:
    """Every search index entry in the store."""
    return await stored_entries(store)  # type: ignore[arg-type]
