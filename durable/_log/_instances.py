"""Store-level operations on instances, shared by the engine and the client:
create (exactly once), send a message to the inbox, rerun, purge."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec
from msgspec import Raw

from durable._core._events import (
    EPOCH,
    ActivityScheduled,
    ChildWorkflowScheduled,
    EventRaised,
    HistoryEvent,
    ParentRef,
    TimerCreated,
    WorkflowStarted,
)
from durable._core._search import Indexed, search_of
from durable._core._state import WorkflowStatus
from durable._errors import (
    InstanceExistsError,
    InstanceNotFoundError,
    InstancePurgingError,
    InstanceRunningError,
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
)

from ._msgids import watermarks
from ._purging import markers_of, note_purging
from ._reader import RunLog, load_run, read_meta, read_record
from ._records import (
    InboxMessage,
    InstanceMeta,
    StartRequest,
    TurnRecord,
    decode_message,
    decode_record,
    encode,
    inbox_key,
    inbox_prefix,
    instance_prefix,
    log_key,
    meta_key,
)
from ._search import Indexing, entry_keys, unindex, write_meta_indexed

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence

    from durable.store import ObjectStore

    from ._active import ActiveIndex
    from ._memo import MemoStore

__all__ = [
    "Created",
    "create_instance",
    "current_start",
    "purge_instance",
    "replaceable",
    "rerun_instance",
    "send_message",
    "start_after",
]


class Created(msgspec.Struct):
    """A run just written to the log: its start record and meta."""

    record: TurnRecord
    meta: InstanceMeta
    meta_etag: str | None  # None: the meta write failed; the engine rolls it forward
    indexed: Indexing | None = None  # what the meta says of its search entries (None:
    # the write failed, and the entries put for it are among those to delete)


async def _put_once(store: ObjectStore, key: str, data: bytes) -> None:
    """Put-if-absent that reads back after an error: a write that landed counts."""
    try:
        await store.put_if_absent(key, data)
    except ObjectExistsError:
        raise
    except StoreError:
        try:
            landed = await store.get(key) == data
        except StoreError:
            landed = False
        if not landed:
            raise


async def _purged_before(store: ObjectStore, instance_id: str, seq: int) -> bool:
    """Whether a purge deleted the log under a run just written at ``seq``: the record it
    follows is gone (a purge deletes it before giving up its claim on ``seq``)."""
    before = await read_record(store, instance_id, seq - 1)
    return before is None or before.purging


async def _start_run(
    index: ActiveIndex,
    instance_id: str,
    seq: int,
    history: list[HistoryEvent],
    now: datetime,
    created_at: datetime,
    meta_etag: str | None,
    unposted: int = -1,
    consumed: Sequence[str] = (),
    before: InstanceMeta | None = None,
) -> Created:
    """Write a run's first record at ``seq``, its index entry first (see :mod:`._active`);
    then its meta (``before``: the meta at ``meta_etag``), whose search entries follow it
    (see :mod:`._search`)."""
    store = index.store
    started = history[0]
    assert isinstance(started, WorkflowStarted)
    record = TurnRecord(
        seq=seq, status=WorkflowStatus.PENDING, next_run=history, consumed=list(consumed)
    )
    key = log_key(instance_id, seq)
    known = index.known  # (if not, no runtime has used the store: see below)
    await index.begin(instance_id, seq, started.run_id)
    try:
        await _put_once(store, key, encode(record))
        if seq > 0 and await _purged_before(store, instance_id, seq):
            await store.delete(key)  # announced to no one yet
            raise InstanceNotFoundError(instance_id)
    except (ObjectExistsError, InstanceNotFoundError):
        await index.end(instance_id, seq, started.run_id)  # this run never began
        raise
    if not known and await index.refresh():  # a runtime came meanwhile: its first scan
        await index.begin(instance_id, seq, started.run_id)  # may have missed the record
    elif known and seq == 0:  # a repair that read the log a purge since deleted may have
        try:  # taken the entry for a loser's and deleted it (see ._active): entered again
            await index.begin(instance_id, seq, started.run_id)
        except StoreError as err:  # the run exists (as after a failed meta write): the
            if not err.transient:  # entry put before it stands but in that rare race
                raise
    meta = InstanceMeta(
        instance_id=instance_id,
        name=started.name,
        status=WorkflowStatus.PENDING,
        seq=seq,
        run_start=seq,
        created_at=created_at,
        updated_at=now,
        input=started.input,
        parent=started.parent,
        version=started.version,
        unposted=unposted,
        origin=started.origin_run,
        search=search_of(history),
    )
    indexed = Indexing.of(before) if before is not None else Indexing.empty()
    etag: str | None = None
    try:
        etag, indexed = await write_meta_indexed(store, meta, meta_etag, indexed)
    except StoreError as err:
        if not err.transient:
            raise
        # the run exists: meta is only an index, rebuilt from the log
    return Created(record, meta, etag, indexed)


async def create_instance(
    index: ActiveIndex,
    now: datetime,
    instance_id: str,
    name: str,
    input: Raw,
    *,
    reuse: bool | Collection[WorkflowStatus] = False,
    parent: ParentRef | None = None,
    memo: MemoStore | None = None,
    run_id: str,
    version: str = "",
    deadline: datetime | None = None,
    trace_parent: str = "",
    trace_state: str = "",
    events: Sequence[EventRaised] = (),
    search: Mapping[str, str] | None = None,
    consumed: Sequence[str] = (),
    after: RunLog | None = None,
) -> Created:
    """Write the first record of a new run: ``log/0``, or the next seq when reusing an
    ended instance. Exactly one of any racing creators wins; the rest get
    ``InstanceExistsError``. ``reuse`` replaces an ended instance (``True``), or one
    that ended with one of the statuses given: the status read is the one replaced, as
    the new run's record is written right after it with put-if-absent. ``deadline``
    bounds the run and its continue-as-new successors. ``events`` arrive with the
    start, in the same record; ``consumed``: the inbox messages they came in. ``after``:
    replace exactly that ended run (``InstanceExistsError`` if it is not the last any
    more). ``search``: the run's search attributes, encoded.
    ``InstanceNotFoundError``: a purge deleted the ended instance under a replacing
    start, which withdrew (the id is free again)."""
    started = WorkflowStarted(
        event_id=0,
        timestamp=now,
        name=name,
        input=input,
        run_id=run_id,
        parent=parent,
        version=version,
        deadline=deadline,
        trace_parent=trace_parent,
        trace_state=trace_state,
        search_attributes=dict(search or {}),
    )
    arrived: list[HistoryEvent] = [
        msgspec.structs.replace(e, event_id=i, timestamp=now) for i, e in enumerate(events, 1)
    ]
    for finishing in (True, False):  # (after finishing a purge cut short: once more)
        if after is None:
            try:
                return await _start_run(
                    index, instance_id, 0, [started, *arrived], now, now, None, consumed=consumed
                )
            except ObjectExistsError:
                pass
        created = await _replace(
            index, instance_id, started, arrived, now, reuse, memo, finishing, consumed, after
        )
        if created is not None:
            return created
    raise AssertionError("a purge is finished by one start once")


async def _replace(
    index: ActiveIndex,
    instance_id: str,
    started: WorkflowStarted,
    arrived: list[HistoryEvent],
    now: datetime,
    reuse: bool | Collection[WorkflowStatus],
    memo: MemoStore | None,
    finishing: bool,
    consumed: Sequence[str] = (),
    after: RunLog | None = None,
) -> Created | None:
    """Start a new run right after the instance's ended one, if ``reuse`` allows;
    ``InstanceNotFoundError`` if a purge deleted the log under it. None: there was no
    run, a purge cut short (see :func:`_purge_refuses`), which this start finished."""
    store = index.store
    found = await read_meta(store, instance_id)
    meta, etag = found if found is not None else (None, None)
    existing = after or await load_run(store, instance_id, meta)
    if existing is None and not await _purge_refuses(
        index, instance_id, reuse, memo, now, finishing
    ):
        return None
    if existing is None or not replaceable(existing.status, reuse):
        raise InstanceExistsError(instance_id, existing.status if existing else None)
    # The new run's steps begin above the old runs': it never finds their memo, and
    # deleting theirs (here, by a racing reuse, or by the sweeper) never touches its own.
    started = msgspec.structs.replace(started, step_base=existing.step_end)
    if memo is not None:
        await memo.purge(instance_id, below=started.step_base)
    # the old runs' messages stay: each names the start it was sent to, and the new run
    # consumes them without applying them (deleting them here could delete the messages
    # of a rerun or reuse that wins the race for the seq)
    try:
        return await _start_run(
            index, instance_id, existing.last_seq + 1, [started, *arrived], now, now, etag,
            existing.unposted, await _carried(store, existing, consumed), meta,
        )  # fmt: skip
    except ObjectExistsError:
        raise InstanceExistsError(instance_id) from None


async def _carried(store: ObjectStore, run: RunLog, taken: Sequence[str] = ()) -> list[str]:
    """The consumed ids a new run after the ended ``run`` begins with: the run's
    watermarks, the messages it consumed that are still in the inbox (a
    ``start_with_event`` message is for whichever start reads it: one the run applied
    must not be applied again), and ``taken``, those the new run's own events came in."""
    left = run.consumed.intersection(await store.list(inbox_prefix(run.instance_id)))
    return sorted({*watermarks(run.consumed).values(), *left, *taken})


async def _purge_refuses(
    index: ActiveIndex,
    instance_id: str,
    reuse: bool | Collection[WorkflowStatus],
    memo: MemoStore | None,
    now: datetime,
    finishing: bool,
) -> bool:
    """A start found the id taken and no run under it: a purge of it is under way.
    ``InstancePurgingError`` unless it was cut short (``_PURGE_TAKEOVER`` old) and the
    start replaces ended instances (``reuse``; and ``finishing``, once): then this start
    finishes it (a purge that takes it over, as any would) and returns False. True: no
    purge under way (a start that has not written its meta yet holds the id)."""
    under_way = await _purge_under_way(index.store, instance_id)
    if under_way is None:
        return True
    since = under_way[0]
    if reuse is False or not finishing or now - since < _PURGE_TAKEOVER:
        raise InstancePurgingError(instance_id, since, _PURGE_TAKEOVER)
    try:
        await purge_instance(index, instance_id, memo, now=now)
    except InstanceNotFoundError:
        pass  # finished meanwhile by another
    return False


def replaceable(status: WorkflowStatus, reuse: bool | Collection[WorkflowStatus]) -> bool:
    """Whether a start with ``reuse`` may replace an instance in ``status``: only an
    ended one, and with a collection, only one that ended so."""
    if not status.is_terminal or reuse is False:
        return False
    return reuse is True or status in reuse


async def send_message(
    store: ObjectStore,
    instance_id: str,
    msg_id: str,
    event: HistoryEvent,
    to: str = "",
    start: StartRequest | None = None,
) -> InboxMessage:
    """Durably accept ``event`` for the instance in its inbox, for the start ``to`` (see
    :class:`InboxMessage`; ``start``: a ``start_with_event``'s); the owner applies it."""
    message = InboxMessage(msg_id, event, to, start)
    await store.put(inbox_key(instance_id, message.id), encode(message))
    return message


async def load_existing(store: ObjectStore, instance_id: str) -> RunLog:
    """The current run, or ``InstanceNotFoundError``."""
    found = await read_meta(store, instance_id)
    run = await load_run(store, instance_id, found[0] if found else None)
    if run is None:
        raise InstanceNotFoundError(instance_id)
    return run


async def current_start(store: ObjectStore, instance_id: str) -> tuple[str, bool]:
    """The start the instance's current run belongs to (its ``origin_run``: what a message
    from outside is addressed to), and whether that run has ended. Meta, rolled forward
    through the records written after it; ``InstanceNotFoundError`` if there is none."""
    found = await read_meta(store, instance_id)
    if found is None or not found[0].origin:  # no meta, or one from before origins
        run = await load_existing(store, instance_id)
        return run.started.origin_run, run.status.is_terminal
    meta = found[0]
    origin, status, seq = meta.origin, meta.status, meta.seq
    while (record := await read_record(store, instance_id, seq + 1)) is not None:
        if record.purging:
            raise InstanceNotFoundError(instance_id)
        if record.next_run and isinstance(started := record.next_run[0], WorkflowStarted):
            origin = started.origin_run
        status, seq = record.status, seq + 1
    return origin, WorkflowStatus(status).is_terminal


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
            await _put_once(store, log_key(instance_id, claim.seq), encode(claim))
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


def _with_input(target: HistoryEvent, input: Raw, step_base: int) -> HistoryEvent:
    """The step ``target`` scheduled again with ``input`` (numbered as a new run's)."""
    if isinstance(target, ActivityScheduled):
        step = step_base + target.task_id
        return msgspec.structs.replace(target, input=input, attempt=1, step=step)
    if isinstance(target, ChildWorkflowScheduled):
        return msgspec.structs.replace(target, input=input)
    raise ValueError(f"event {target.event_id} is a timer: a timer takes no input")


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


_RERUN_FROM = (ActivityScheduled, TimerCreated, ChildWorkflowScheduled)


async def rerun_instance(
    index: ActiveIndex,
    now: datetime,
    instance_id: str,
    from_event_id: int,
    memo: MemoStore | None = None,
    *,
    run_id: str,
    check: Callable[[list[HistoryEvent]], None] | None = None,
    into: str | None = None,
    step_input: Raw | None = None,
) -> Created:
    """Start a new run of an ended instance whose history is the old one cut just before
    ``from_event_id`` (a scheduled activity, timer or sub-workflow): that step and
    everything after it run again. The rerun is a new run (``run_id``): its children
    answer it alone, and a child it starts again replaces the old run's. It keeps the
    old run's seed, so the kept history replays the same values. ``check`` sees the
    kept history before anything is written, and raises to refuse the rerun (e.g.
    ``NonDeterminismError``: the code no longer replays it).

    ``into``: the run is a new instance of that id (``InstanceExistsError`` if taken)
    and the source stays as it is; a sub-workflow cannot be rerun so (it would have
    no parent). ``step_input``: the step at ``from_event_id`` (an activity or a
    sub-workflow) runs again with this input instead of the one the code gives it
    (the kept history then holds it as scheduled)."""
    store = index.store
    run = await load_existing(store, instance_id)
    if not run.status.is_terminal:
        raise InstanceRunningError(instance_id, run.status)
    target = next((e for e in run.history if e.event_id == from_event_id), None)
    if not isinstance(target, _RERUN_FROM):
        kind = type(target).__name__ if target is not None else "no event"
        raise ValueError(
            f"rerun of {instance_id!r} must start at a scheduled activity, timer or "
            f"sub-workflow; event {from_event_id} is {kind}"
        )
    started = run.started
    if into is not None and started.parent is not None:
        raise ValueError(f"{instance_id!r} is a sub-workflow: it can be rerun only in place")
    # the steps that run again are numbered anew, above the old run's: they really run
    # again, and the old run's memo can go (now, or by the sweeper) without touching theirs.
    # A rerun rewinds nothing, even of a run that did: a call it makes again runs anew
    first = msgspec.structs.replace(
        started, run_id=run_id, seed=started.replay_seed, step_base=run.step_end,
        origin="", rewinds=(),
    )  # fmt: skip
    prefix: list[HistoryEvent] = [first]
    prefix += [e for e in run.history if 0 < e.event_id < from_event_id]
    if step_input is not None:
        prefix.append(_with_input(target, step_input, run.step_end))
    if check is not None:
        check(prefix)
    if into is not None:
        try:
            return await _start_run(index, into, 0, prefix, now, now, None)
        except ObjectExistsError:
            raise InstanceExistsError(into) from None
    # messages for the old run stay, to be consumed and not applied (see create_instance)
    if memo is not None:
        await memo.purge(instance_id, below=run.step_end)
    return await start_after(index, run, prefix, now)


async def start_after(
    index: ActiveIndex, run: RunLog, history: list[HistoryEvent], now: datetime
) -> Created:
    """Write a new run with ``history`` right after the ended ``run`` (a rerun, a
    rewind), carrying its watermarks and what it may not have posted;
    ``InstanceExistsError`` if another run took that seq first."""
    found = await read_meta(index.store, run.instance_id)
    meta, etag = found if found else (None, None)
    try:
        return await _start_run(
            index, run.instance_id, run.last_seq + 1, history, now, run.created_at, etag,
            run.unposted, await _carried(index.store, run), meta,
        )  # fmt: skip
    except ObjectExistsError:
        raise InstanceExistsError(run.instance_id) from None
