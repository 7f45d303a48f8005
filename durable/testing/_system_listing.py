"""Listing by cursor in the whole-system simulation: the invariants checked at rest.
Once the runtimes' sweepers had the time to finish the purges cut short, no instance is
left half-purged (a log that reads as absent, a marker in ``purging/``). Paging
``Client.list_page`` a few instances at a time, by cursor, with and without an id
prefix, over the instance directory and over the active index, gives each instance
exactly once, in id order (by partition in the index): the ones whose meta the store
holds, under the prefix and with the status asked for."""

from __future__ import annotations

from typing import Any

from durable._client import Client
from durable._core._state import WorkflowStatus
from durable._listing import read_metas
from durable._log._purge import _PURGE_TAKEOVER
from durable._log._purging import PURGING
from durable._log._reader import load_run
from durable._log._records import INSTANCES
from durable.testing._system_fleet import _RENEW, _DriverBase, _settle

__all__: list[str] = []

_PAGE = 3  # small, so that every listing crosses pages
_ACTIVE = (WorkflowStatus.PENDING, WorkflowStatus.RUNNING, WorkflowStatus.SUSPENDED)


class _Listing(_DriverBase):
    """Check cursor paging against the store, at rest."""

    async def _check_purges(self) -> None:
        """Let the runtimes' sweepers finish the purges cut short (they look every
        ``_PURGE_TAKEOVER``), then check none is left: every instance directory holds a
        run, and no purge is in flight."""
        store, ledger = self.inner, self.sim.ledger
        for _ in range(2 * _PURGE_TAKEOVER // _RENEW + 5):  # (a sweeper's next look may
            # find a purge just too young: two looks; by renewals, so leases stay held)
            self.clock.advance(_RENEW)
            await _settle()
        for instance_id in await store.list(INSTANCES):
            if await load_run(store, instance_id) is None:
                left = await store.list(f"{INSTANCES}/{instance_id}")
                ledger.violate(f"purge: {instance_id!r} left half-purged at rest ({left})")
        if in_flight := await store.list(PURGING):
            ledger.violate(f"purge: purges in flight at rest: {in_flight[:8]}")

    async def _check_listing(self) -> None:
        store, ledger = self.inner, self.sim.ledger
        ids = await store.list(INSTANCES)
        metas = {m.instance_id: m for m in await read_metas(store, ids) if m is not None}
        metas = {i: m for i, m in metas.items() if m.purging is None}  # (_check_purges)
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
                want = sorted(i for i in under if metas[i].status == status)
                found = sorted(await _every(client, status=status, id_prefix=prefix or None))
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
