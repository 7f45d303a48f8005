"""Purge: delete everything of an ended instance, exactly what it claimed, under the
races with starts, reruns and other purges (see :func:`purge_instance`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec

from durable._core._events import EPOCH
from durable._core._search import Indexed, search_of
from durable._core._state import WorkflowStatus
from durable._errors import (
    InstanceNotFoundError,
    InstanceRunningError,
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
)

from ._purging import markers_of, note_purging
from ._reader import load_run, read_meta
from ._records import (
    TurnRecord,
    decode_message,
    decode_record,
    encode,
    inbox_prefix,
    instance_prefix,
    log_key,
    meta_key,
    put_once,
)
from ._search import entry_keys, unindex

if TYPE_CHECKING:
    from collections.abc import Mapping

    from durable.store import ObjectStore

    from ._active import ActiveIndex
    from ._memo import MemoStore

__all__ = ["purge_instance"]


_PURGE_TAKEOVER = timedelta(minutes=1)  # a purge this long under way was cut short


async def purge_instance(
    index: ActiveIndex,
    instance_id: str,
    memo: MemoStore | None = None,
    *,
    now: datetime,
    last_seq: int | None = None,
) -> bool:
    """Delete everything of an ended instance, its memo too; refuse one that still runs,
    or whose sent events may not be posted yet (its meta lags its last turns that sent
    some: a restart posts them again from its log, so deleting it could lose them).

    A start racing the purge is refused, or the purge is; never is a run acknowledged and
    then deleted. The purge first claims the seq after the last record with a purge
    record (a reuse or rerun that got there first makes the purge find a running
    instance; one that comes later finds the seq taken), then turns ``log/0`` into a
    purge record (which a new start finds) and holds it by its ETag while it deletes
    the records up to its claim, ``log/0`` last (see :func:`_delete_claimed`). A purge
    that finds another under way leaves it to finish, unless the other's record is
    ``_PURGE_TAKEOVER`` old (by ``now``, the Clock): then it was cut short, and this one
    takes ``log/0`` over and finishes it; the one taken over, should it go on, finds
    ``log/0`` no longer its own and stops before its next delete.

    A purge cut short reads one way everywhere: before its claim it puts its marker in
    ``purging/`` (see :mod:`._purging`: the runtime's sweeper finishes it from there
    once ``_PURGE_TAKEOVER`` old), and right after it marks the meta ``purging`` (the
    listings skip it, no meta writer replaces it; a crash between the claim and the mark
    leaves the meta listed until the sweeper finishes the purge). A start of the id
    meanwhile gets ``InstancePurgingError`` (one with ``reuse`` finishes an old one).

    With ``last_seq``, only an instance whose log still ends there is deleted (the
    retention sweeper's check that it has not run since). Returns whether this call
    deleted it (False: ``last_seq`` did not match, or another purge is under way or
    took this one over).
    """
    store = index.store
    searched: dict[str, Indexed] = {}  # the attributes of the log's last run
    applied: set[str] | None = None  # what the log's last run consumed (None: not known)
    while True:
        found = await read_meta(store, instance_id)
        run = await load_run(store, instance_id, found[0] if found else None)
        if run is None:
            under_way = await _purge_under_way(store, instance_id)
            if under_way is None:
                raise InstanceNotFoundError(instance_id)
            since, claimed, first_etag = under_way
            if now - since < _PURGE_TAKEOVER:
                return False  # under way: the purge that began it finishes it
            await _mark_meta(store, instance_id, now, searched)  # (if cut short before)
            break
        if not run.status.is_terminal:
            raise InstanceRunningError(instance_id, run.status)
        if run.unsent:  # a restart posts them from this log: it stays until they are
            raise InstanceRunningError(
                instance_id, f"{run.status}, the events it sent not posted yet",
                "try again once they are (its runtime retries them)",
            )  # fmt: skip
        if last_seq is not None and run.last_seq != last_seq:
            return False
        try:  # what this purge holds log/0 against (see _delete_claimed)
            first_etag = (await store.get_with_etag(log_key(instance_id, 0)))[1]
        except ObjectNotFoundError:
            first_etag = None  # (a log left so by an earlier purge: taken if still absent)
        claim = TurnRecord(
            seq=run.last_seq + 1, status=run.last.status, purging=True, purged_at=now
        )
        await note_purging(store, instance_id, run.started.run_id, now)  # (see ._purging)
        try:
            await put_once(store, log_key(instance_id, claim.seq), encode(claim))
        except ObjectExistsError:
            continue  # a run began meanwhile, or another purge claimed it: look again
        searched = search_of(run.history)
        await _mark_meta(store, instance_id, now, searched)
        # the run's entry is gone unless its end was cut short; entries of starts that
        # lose to this purge are deleted by those starts
        await index.end(instance_id, run.run_start, run.started.run_id)
        claimed = claim.seq
        applied = run.consumed
        break
    return await _delete_claimed(
        store, instance_id, claimed, first_etag, memo, now, searched, applied
    )


async def _mark_meta(
    store: ObjectStore, instance_id: str, now: datetime, searched: Mapping[str, Indexed]
) -> None:
    """Mark the meta of an instance just claimed by a purge as purging (listings skip
    it, and no writer replaces it: see :func:`._search.write_meta_indexed`), naming
    the search entries of ``searched`` (the log's, which it may lag) among those to
    delete, for a purge that takes this one over. Without a meta, nothing to mark."""
    for _ in range(8):
        found = await read_meta(store, instance_id)
        if found is None or found[0].purging is not None:
            return
        meta, etag = found
        drop = set(meta.search_drop) | entry_keys(instance_id, searched)
        marked = msgspec.structs.replace(meta, purging=now, search_drop=sorted(drop))
        try:
            await store.put_if_match(meta_key(instance_id), encode(marked), etag)
            return
        except ObjectNotFoundError:
            return
        except PreconditionFailedError:
            continue  # a writer that read it before the claim: look again
    raise StoreError(
        f"meta of {instance_id!r} keeps changing under a purge", key=meta_key(instance_id)
    )


async def _purge_under_way(
    store: ObjectStore, instance_id: str
) -> tuple[datetime, int, str | None] | None:
    """When the purge under way began or was last taken over (the latest of its records,
    at ``log/0`` or last), the seq it claimed (0 once its claim is deleted), and the
    ETag of ``log/0`` as read (None: absent); None if no purge record is there."""
    names = await store.list(f"{instance_prefix(instance_id)}/log")
    found: datetime | None = None
    claimed = 0
    first_etag: str | None = None
    for seq in sorted({int(names[0]), int(names[-1])}) if names else ():
        key = log_key(instance_id, seq)
        try:
            data, etag = await store.get_with_etag(key)
        except ObjectNotFoundError:
            continue
        record = decode_record(data, key)
        if seq == 0:
            first_etag = etag
        if record.purging:
            at = record.purged_at or EPOCH  # written before purges recorded the time
            found = at if found is None else max(found, at)
            claimed = seq
    return None if found is None else (found, claimed, first_etag)


async def _delete_claimed(
    store: ObjectStore,
    instance_id: str,
    claimed: int,
    first_etag: str | None,
    memo: MemoStore | None,
    now: datetime,
    searched: Mapping[str, Indexed],
    applied: set[str] | None = None,
) -> bool:
    """Delete a claimed instance, its records up to ``claimed`` (a purge never deletes a
    run it did not claim), holding ``log/0`` by its ETag: it becomes this purge's
    record first, written only over the version read before the claim (``first_etag``;
    None: absent), so a start finds it and a purge that takes this one over replaces
    it; each delete first checks it is still this purge's (one taken over stops there:
    what it would delete may be a later start's), and it goes last of all. Returns
    False if another purge took this one over. Its search entries go before its meta
    (which names them), with those of ``searched`` (the log's, which the meta may lag).

    A check and the delete after it are two requests, and the purge may pause between
    them for longer than a takeover waits: so the meta and each record are deleted by
    ETag (:meth:`~durable.store.ObjectStore.delete_if_match`), the ETag read while
    ``log/0`` was still held, and ``log/0`` by the ETag it holds; a delete that lands
    late then removes nothing a later start wrote. Inbox messages are deleted one by
    one as listed while held (their ids are never reused). (The memo is deleted by
    prefix: a purge that pauses inside that delete for over a minute may still take a
    later start's memo.) A ``start_with_event`` message not in ``applied`` (what the
    purged run consumed) stays: it came after the run's end, and starts the instance
    anew once the purge is over (a purge that took another over, not knowing that,
    deletes every one)."""
    first_key = log_key(instance_id, 0)
    first = encode(TurnRecord(seq=0, status=WorkflowStatus.TERMINATED, purging=True, purged_at=now))
    try:
        if first_etag is None:
            held = await store.put_if_absent(first_key, first)
        else:
            held = await store.put_if_match(first_key, first, first_etag)
    except (ObjectExistsError, ObjectNotFoundError, PreconditionFailedError):
        return False  # another purge took this one over (and may have finished)

    markers = await markers_of(store, instance_id)  # (no new one while log/0 is held)

    async def still_held() -> bool:
        try:
            return (await store.get_with_etag(first_key))[1] == held
        except ObjectNotFoundError:
            return False

    async def delete_held(key: str) -> bool:
        """Delete ``key`` as it was while ``log/0`` was held; False if taken over."""
        while True:
            try:
                etag = (await store.get_with_etag(key))[1]
            except ObjectNotFoundError:
                return True
            if not await still_held():  # so the version read is this instance's
                return False
            try:
                await store.delete_if_match(key, etag)
            except ObjectNotFoundError:
                return True
            except PreconditionFailedError:
                continue  # written since (a meta's late write): look again
            return True

    async def unindex_search() -> bool:
        if not await still_held():
            return False
        found = await read_meta(store, instance_id)  # (a purge cut short: again)
        await unindex(store, instance_id, found[0] if found else None, searched)
        return True

    async def delete_meta() -> bool:
        return await delete_held(meta_key(instance_id))

    async def delete_inbox() -> bool:
        prefix = inbox_prefix(instance_id)
        names = await store.list(prefix)
        if not await still_held():
            return False
        for name in names:
            key = f"{prefix}/{name}"
            if applied is not None and name not in applied and await _starts(store, key):
                continue
            await store.delete(key)
        return True

    async def delete_memo() -> bool:
        if not await still_held():
            return False
        if memo is not None:
            await memo.purge(instance_id)
        return True

    for step in (unindex_search, delete_meta, delete_inbox, delete_memo):
        if not await step():
            return False
    names = await store.list(f"{instance_prefix(instance_id)}/log")
    seqs = sorted(seq for seq in map(int, names) if 0 < seq <= claimed)
    for seq in seqs:  # the claim after every other record
        if not await delete_held(log_key(instance_id, seq)):
            return False
    try:  # log/0 last of all
        await store.delete_if_match(first_key, held)
    except (ObjectNotFoundError, PreconditionFailedError):
        return False  # taken over meanwhile
    for key in markers:  # after log/0: a crash before leaves them to the sweeper
        await store.delete(key)
    return True


async def _starts(store: ObjectStore, key: str) -> bool:
    """Whether the inbox message at ``key`` is a ``start_with_event``'s."""
    try:
        return decode_message(await store.get(key), key).start is not None
    except ObjectNotFoundError:
        return False
    except StoreError as err:
        if err.transient:
            raise
        return False  # unreadable for good: it starts nothing
