"""Listing by cursor in the whole-system simulation: the invariant checked at rest.
Paging ``Client.list_page`` a few instances at a time, by cursor, with and without an
id prefix, over the instance directory and over the active index, gives each instance
exactly once, in id order (by partition in the index): the ones whose meta the store
holds, under the prefix and with the status asked for."""

from __future__ import annotations

from typing import Any

from durable._client import Client
from durable._core._state import WorkflowStatus
from durable._listing import read_metas
from durable._log._reader import load_run
from durable._log._records import INSTANCES
from durable.testing._system_fleet import _DriverBase

__all__: list[str] = []

_PAGE = 3  # small, so that every listing crosses pages
_ACTIVE = (WorkflowStatus.PENDING, WorkflowStatus.RUNNING, WorkflowStatus.SUSPENDED)


class _Listing(_DriverBase):
    """Check cursor paging against the store, at rest."""

    async def _check_listing(self) -> None:
        store, ledger = self.inner, self.sim.ledger
        ids = await store.list(INSTANCES)
        metas = {m.instance_id: m for m in await read_metas(store, ids) if m is not None}
        # a purge cut short leaves the meta (a listing shows it until the purge that
        # finishes it), but the instance reads as absent: no status filter owes it
        gone = {i for i in metas if await load_run(store, i) is None}
        client = Client(store, clock=self.clock)
        prefixes = ["", *sorted({i[:1] for i in metas}), *sorted({i[:3] for i in metas})[:3]]
        for prefix in prefixes:
            under = [i for i in sorted(metas) if i.startswith(prefix)]
            listed = await _every(client, id_prefix=prefix or None)
            if listed != under:
                ledger.violate(
                    f"listing: by cursor under {prefix!r} gives {listed[:8]}, the store "
                    f"holds {under[:8]} ({len(listed)} against {len(under)})"
                )
            for status in _ACTIVE:
                want = sorted(i for i in under if metas[i].status == status and i not in gone)
                paged = await _every(client, status=status, id_prefix=prefix or None)
                found = sorted(i for i in paged if i not in gone)
                if found != want:
                    ledger.violate(
                        f"listing: {status.value} under {prefix!r} gives {found[:8]}, the "
                        f"metas say {want[:8]}"
                    )


async def _every(client: Client, **filters: Any) -> list[str]:
    """The ids of every page of ``_PAGE``, by cursor, in the order they came."""
    found: list[str] = []
    cursor = None
    while True:
        page = await client.list_page(page_size=_PAGE, cursor=cursor, **filters)
        found += [state.instance_id for state in page.items]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor
