"""Store-level operations on instances, shared by the engine and the client:
create (exactly once), send a message to the inbox, rerun, purge."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from msgspec import Raw

from durable._core._events import (
    ActivityScheduled,
    ChildWorkflowScheduled,
    EventRaised,
    HistoryEvent,
    ParentRef,
    TimerCreated,
    WorkflowStarted,
)
from durable._core._search import search_of
from durable._core._state import WorkflowStatus
from durable._errors import (
    InstanceExistsError,
    InstanceNotFoundError,
    InstancePurgingError,
    InstanceRunningError,
    ObjectExistsError,
    StoreError,
)

from ._msgids import watermarks
from ._purge import _PURGE_TAKEOVER, _purge_under_way, purge_instance
from ._reader import RunLog, load_run, read_meta, read_record
from ._records import (
    InboxMessage,
    InstanceMeta,
    StartRequest,
    TurnRecord,
    encode,
    inbox_key,
    inbox_prefix,
    log_key,
    put_once,
)
from ._search import Indexing, write_meta_indexed

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence
    from datetime import datetime

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
        await put_once(store, key, encode(record))
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


def _with_input(target: HistoryEvent, input: Raw, step_base: int) -> HistoryEvent:
    """The step ``target`` scheduled again with ``input`` (numbered as a new run's)."""
    if isinstance(target, ActivityScheduled):
        step = step_base + target.task_id
        return msgspec.structs.replace(target, input=input, attempt=1, step=step)
    if isinstance(target, ChildWorkflowScheduled):
        return msgspec.structs.replace(target, input=input)
    raise ValueError(f"event {target.event_id} is a timer: a timer takes no input")


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
