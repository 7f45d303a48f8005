"""History retention: ended instances deleted whole once they are older than a window.

When retention is on, each run's end writes a marker, bucketed by partition and hour::

    ended/{partition:04d}/{yyyymmddhh}/{id}    the seq of the record that ended it

so a sweep lists the hours of the partitions it holds (one LIST each) and reads only
the markers of hours wholly past the window: its cost is what expires, not what ever
ended. An instance is deleted by :func:`~._instances.purge_instance`, with its race
guarantees, and only if its log still ends at the marker's seq: one started again
since (a reuse, a rerun) is left alone, its own end writes its own marker.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from durable._errors import (
    InstanceNotFoundError,
    InstanceRunningError,
    ObjectNotFoundError,
    StoreError,
)

from ._instances import purge_instance
from ._reader import load_run, read_meta

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._active import ActiveIndex
    from ._memo import MemoStore

__all__ = ["ENDED", "note_ended", "sweep_history"]

ENDED = "ended"
_HOUR = "%Y%m%d%H"
log = logging.getLogger("durable.retention")


def _hour(when: datetime) -> str:
    return when.astimezone(UTC).strftime(_HOUR)


def _key(index: ActiveIndex, instance_id: str, hour: str) -> str:
    return f"{ENDED}/{index.partition(instance_id):04d}/{hour}/{instance_id}"


async def note_ended(index: ActiveIndex, instance_id: str, seq: int, when: datetime) -> None:
    """A run ended at ``log/{seq}`` at ``when``: mark it for the sweeper."""
    await index.store.put(_key(index, instance_id, _hour(when)), str(seq).encode())


async def sweep_history(
    index: ActiveIndex,
    memo: MemoStore | None,
    partitions: Iterable[int],
    *,
    before: datetime,
    now: datetime,
) -> int:
    """Delete every instance of ``partitions`` whose run ended before ``before`` (to
    the hour: an hour's markers go once all of it is past) and has not run since;
    ``now`` (the Clock) dates the purges. Returns how many were deleted."""
    cutoff = before
    deleted = 0
    for partition in partitions:
        prefix = f"{ENDED}/{partition:04d}"
        for hour in await index.store.list(prefix):
            try:
                start = datetime.strptime(hour, _HOUR).replace(tzinfo=UTC)
            except ValueError:
                continue
            if start + timedelta(hours=1) > cutoff:
                break  # sorted: every later hour is younger still
            for instance_id in await index.store.list(f"{prefix}/{hour}"):
                key = f"{prefix}/{hour}/{instance_id}"
                if await _sweep_one(index, memo, instance_id, key, now):
                    deleted += 1
    return deleted


async def _sweep_one(
    index: ActiveIndex, memo: MemoStore | None, instance_id: str, key: str, now: datetime
) -> bool:
    """Delete the instance if its log still ends where its marker says; drop the
    marker then, or if it never will be (a run begun since writes its own marker at
    its end). A purge under way elsewhere keeps the marker: the next sweep looks again."""
    store = index.store
    try:
        seq = int((await store.get(key)).decode())
    except ObjectNotFoundError:
        return False
    except (ValueError, UnicodeDecodeError):
        seq = -1  # unreadable: the instance is kept
    found = await read_meta(store, instance_id)
    try:
        run = await load_run(store, instance_id, found[0] if found else None)
    except StoreError as err:
        if err.transient:
            raise
        log.warning("not sweeping %r: %s", instance_id, err)
        run = None
    purged, done = False, True
    try:
        if run is None:  # gone, or a purge (this sweep's, say) was cut short: finish it
            purged = done = await purge_instance(index, instance_id, memo, now=now)
        elif run.status.is_terminal and run.last_seq == seq:
            purged = await purge_instance(index, instance_id, memo, now=now, last_seq=seq)
    except (InstanceRunningError, InstanceNotFoundError):
        pass  # started again, or purged by someone else, meanwhile
    if done:
        await store.delete(key)
    return purged
