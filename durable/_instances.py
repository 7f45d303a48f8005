"""Store-level operations on instances, shared by the engine and the client:
create (exactly once), send a message to the inbox, rerun, purge."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from msgspec import Raw

from ._errors import (
    InstanceExistsError,
    InstanceNotFoundError,
    InstanceRunningError,
    ObjectExistsError,
    StoreError,
)
from ._events import (
    ActivityScheduled,
    ChildWorkflowScheduled,
    HistoryEvent,
    ParentRef,
    TimerCreated,
    WorkflowStarted,
)
from ._log import RunLog, load_run, read_meta, write_meta
from ._records import (
    InboxMessage,
    InstanceMeta,
    TurnRecord,
    encode,
    inbox_key,
    inbox_prefix,
    instance_prefix,
    log_key,
)
from ._state import WorkflowStatus

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from ._memo import MemoStore
    from .store import ObjectStore

__all__ = [
    "Created",
    "create_instance",
    "purge_instance",
    "rerun_instance",
    "send_message",
]


class Created(msgspec.Struct):
    """A run just written to the log: its start record and meta."""

    record: TurnRecord
    meta: InstanceMeta
    meta_etag: str | None  # None: the meta write failed; the engine rolls it forward


async def _start_run(
    store: ObjectStore,
    instance_id: str,
    seq: int,
    history: list[HistoryEvent],
    now: datetime,
    created_at: datetime,
    meta_etag: str | None,
) -> Created:
    record = TurnRecord(seq=seq, status=WorkflowStatus.PENDING, next_run=history)
    key, data = log_key(instance_id, seq), encode(record)
    try:
        await store.put_if_absent(key, data)
    except ObjectExistsError:
        raise
    except StoreError:
        # the write may have landed all the same: read back to know
        try:
            landed = await store.get(key) == data
        except StoreError:
            landed = False
        if not landed:
            raise
    started = history[0]
    assert isinstance(started, WorkflowStarted)
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
    )
    try:
        etag: str | None = await write_meta(store, meta, meta_etag)
    except StoreError as err:
        if not err.transient:
            raise
        etag = None  # the run exists: meta is only an index, rebuilt from the log
    return Created(record, meta, etag)


async def create_instance(
    store: ObjectStore,
    now: datetime,
    instance_id: str,
    name: str,
    input: Raw,
    *,
    reuse: bool = False,
    parent: ParentRef | None = None,
    memo: MemoStore | None = None,
    run_id: str,
    version: str = "",
) -> Created:
    """Write the first record of a new run: ``log/0``, or the next seq when reusing an
    ended instance. Exactly one of any racing creators wins; the rest get
    ``InstanceExistsError``."""
    started = WorkflowStarted(
        event_id=0,
        timestamp=now,
        name=name,
        input=input,
        run_id=run_id,
        parent=parent,
        version=version,
    )
    try:
        return await _start_run(store, instance_id, 0, [started], now, now, None)
    except ObjectExistsError:
        pass
    found = await read_meta(store, instance_id)
    meta, etag = found if found is not None else (None, None)
    existing = await load_run(store, instance_id, meta)
    status = existing.status if existing is not None else None
    if existing is None or not reuse or not existing.status.is_terminal:
        raise InstanceExistsError(instance_id, status)
    if memo is not None:  # the new run must not find the old run's memo
        await memo.purge(instance_id)
    await store.delete_prefix(inbox_prefix(instance_id))  # nor the old run's messages
    try:
        return await _start_run(
            store, instance_id, existing.last_seq + 1, [started], now, now, etag
        )
    except ObjectExistsError:
        raise InstanceExistsError(instance_id) from None


async def send_message(
    store: ObjectStore, instance_id: str, msg_id: str, event: HistoryEvent
) -> InboxMessage:
    """Durably accept ``event`` for the instance in its inbox; the owner applies it."""
    message = InboxMessage(msg_id, event)
    await store.put(inbox_key(instance_id, message.id), encode(message))
    return message


async def load_existing(store: ObjectStore, instance_id: str) -> RunLog:
    """The current run, or ``InstanceNotFoundError``."""
    found = await read_meta(store, instance_id)
    run = await load_run(store, instance_id, found[0] if found else None)
    if run is None:
        raise InstanceNotFoundError(instance_id)
    return run


async def purge_instance(
    store: ObjectStore, instance_id: str, memo: MemoStore | None = None
) -> None:
    """Delete everything of an ended instance, its memo too; refuse one that still runs."""
    run = await load_existing(store, instance_id)
    if not run.status.is_terminal:
        raise InstanceRunningError(instance_id, run.status)
    if memo is not None:
        await memo.purge(instance_id)
    await store.delete_prefix(instance_prefix(instance_id))


_RERUN_FROM = (ActivityScheduled, TimerCreated, ChildWorkflowScheduled)


async def rerun_instance(
    store: ObjectStore,
    now: datetime,
    instance_id: str,
    from_event_id: int,
    memo: MemoStore | None = None,
    *,
    run_id: str,
    check: Callable[[list[HistoryEvent]], None] | None = None,
) -> Created:
    """Start a new run of an ended instance whose history is the old one cut just before
    ``from_event_id`` (a scheduled activity, timer or sub-workflow): that step and
    everything after it run again. The rerun is a new run (``run_id``): its children
    answer it alone, and a child it starts again replaces the old run's. It keeps the
    old run's seed, so the kept history replays the same values. ``check`` sees the
    kept history before anything is written, and raises to refuse the rerun (e.g.
    ``NonDeterminismError``: the code no longer replays it)."""
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
    prefix: list[HistoryEvent] = [
        msgspec.structs.replace(started, run_id=run_id, seed=started.replay_seed)
    ]
    prefix += [e for e in run.history if 0 < e.event_id < from_event_id]
    if check is not None:
        check(prefix)
    await store.delete_prefix(inbox_prefix(instance_id))  # messages were for the old run
    if memo is not None:  # the steps that run again must really run again
        await memo.purge(instance_id, from_task_id=target.task_id)
        await memo.store.delete(memo._marker_key(instance_id))
    found = await read_meta(store, instance_id)
    etag = found[1] if found else None
    try:
        return await _start_run(
            store, instance_id, run.last_seq + 1, prefix, now, run.created_at, etag
        )
    except ObjectExistsError:
        raise InstanceExistsError(instance_id) from None
