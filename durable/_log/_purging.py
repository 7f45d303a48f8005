"""The purges in flight: one object per purge under way, so that a purge cut short (its
process died) is finished by a sweeper, not left for a user to notice.

Layout::

    purging/{id}/{run_id}    the Clock time the purge of that run began (ISO 8601)

A purge puts its marker before it claims the log (see
:func:`._instances.purge_instance`), and deletes the markers of the id once its last
record (``log/0``) is gone: a marker outlives its purge only by a crash, or when the
purge lost its claim to a start (then no purge of that run can ever come again, its
key is never put again). :func:`finish_purges` lists the markers of the partitions a
process holds (one LIST, and one per id listed: its cost is the purges in flight, never
the instances) and, for each one older than ``_PURGE_TAKEOVER`` whose instance still
holds a purge record, takes that purge over and finishes it; a marker whose instance
holds none (finished, or lost to a start) is dropped.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from durable._core._events import EPOCH
from durable._errors import InstanceNotFoundError, InstanceRunningError, ObjectNotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from durable.store import ObjectStore

    from ._active import ActiveIndex
    from ._memo import MemoStore

__all__ = ["PURGING", "finish_purges", "markers_of", "note_purging"]

PURGING = "purging"


def _prefix(instance_id: str) -> str:
    return f"{PURGING}/{instance_id}"


async def note_purging(store: ObjectStore, instance_id: str, run_id: str, now: datetime) -> None:
    """A purge of the run ``run_id`` is about to claim the log: mark it in flight."""
    await store.put(f"{_prefix(instance_id)}/{run_id}", now.isoformat().encode())


async def markers_of(store: ObjectStore, instance_id: str) -> list[str]:
    """The keys of the markers of ``instance_id``'s purges in flight."""
    prefix = _prefix(instance_id)
    return [f"{prefix}/{name}" for name in await store.list(prefix)]


async def _began(store: ObjectStore, key: str) -> datetime | None:
    """When the purge a marker names began; None if the marker is gone."""
    try:
        text = (await store.get(key)).decode()
    except ObjectNotFoundError:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return EPOCH  # unreadable: as old as can be


async def finish_purges(
    index: ActiveIndex, memo: MemoStore | None, partitions: Iterable[int], *, now: datetime
) -> int:
    """Finish the purges of ``partitions`` cut short: those whose marker and purge
    record are ``_PURGE_TAKEOVER`` old (by ``now``, the Clock); drop the markers of
    purges no longer under way. Returns how many instances it deleted."""
    from ._purge import _PURGE_TAKEOVER, _purge_under_way, purge_instance

    store = index.store
    held = set(partitions)
    finished = 0
    for instance_id in await store.list(PURGING):
        if index.partition(instance_id) not in held:
            continue
        for key in await markers_of(store, instance_id):
            began = await _began(store, key)
            if began is None or now - began < _PURGE_TAKEOVER:
                continue  # gone, or its purge may still be going
            if await _purge_under_way(store, instance_id) is None:
                await store.delete(key)  # finished, or its claim lost to a start
                continue
            try:  # takes it over (it deletes the id's markers once done)
                finished += await purge_instance(index, instance_id, memo, now=now)
            except (InstanceNotFoundError, InstanceRunningError):
                pass  # finished by another meanwhile (or started since): look next time
            break
    return finished
