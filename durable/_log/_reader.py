"""Reading an instance's log back: roll forward from meta, load the current run.

Shared by the engine (recovery, cache misses) and the client (describe, history),
so both see the log the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from durable._core._events import (
    CONTROL,
    NULL,
    ActivityScheduled,
    HistoryEvent,
    ParentRef,
    WorkflowCompleted,
    WorkflowErrored,
    WorkflowStarted,
    WorkflowTerminated,
)
from durable._core._failure import FailureDetails
from durable._core._search import search_of
from durable._core._state import WorkflowStatus
from durable._errors import (
    ObjectNotFoundError,
    StoreError,
)

from ._records import (
    InstanceMeta,
    Post,
    TurnRecord,
    decode_meta,
    decode_record,
    log_key,
    meta_key,
    posts_of,
)
from ._search import Indexing, write_meta_indexed

if TYPE_CHECKING:
    from msgspec import Raw

    from durable.store import ObjectStore

__all__ = [
    "RunLog",
    "load_run",
    "new_run_after",
    "read_meta",
    "read_record",
    "record_after",
    "record_outcome",
    "write_meta",
]


def record_outcome(record: TurnRecord) -> tuple[Raw, FailureDetails | None]:
    """The output or failure a record's terminal event holds; ``(null, None)`` without one."""
    for event in reversed(record.events):
        if isinstance(event, WorkflowCompleted):
            return event.result, None
        if isinstance(event, WorkflowErrored):
            return NULL, event.failure
        if isinstance(event, WorkflowTerminated):
            return event.output, FailureDetails("Terminated", event.reason or "terminated")
    return NULL, None


async def read_record(store: ObjectStore, instance_id: str, seq: int) -> TurnRecord | None:
    """The turn record ``log/{seq}``, or ``None`` if not written (yet)."""
    key = log_key(instance_id, seq)
    try:
        data = await store.get(key)
    except ObjectNotFoundError:
        return None
    record = decode_record(data, key)
    if record.seq != seq:
        raise StoreError(
            f"corrupt turn record at {key!r}: it says seq {record.seq}", key=key, transient=False
        )
    return record


async def new_run_after(store: ObjectStore, meta: InstanceMeta) -> bool:
    """Whether a run began after this (terminal) meta was written: the record after it
    starts one (a reuse or rerun whose meta write failed)."""
    record = await record_after(store, meta)
    return record is not None and bool(record.next_run)


async def record_after(store: ObjectStore, meta: InstanceMeta) -> TurnRecord | None:
    """The record after the one this (terminal) meta describes; ``None`` if there is
    none, or it cannot be decoded (the terminal meta stands)."""
    try:
        return await read_record(store, meta.instance_id, meta.seq + 1)
    except StoreError as err:
        if err.transient:
            raise
        return None


async def read_meta(store: ObjectStore, instance_id: str) -> tuple[InstanceMeta, str] | None:
    """The meta record and its ETag; ``None`` if absent or unreadable (it is rebuilt)."""
    key = meta_key(instance_id)
    try:
        data, etag = await store.get_with_etag(key)
    except ObjectNotFoundError:
        return None
    try:
        return decode_meta(data, key), etag
    except StoreError:
        return None


@dataclass
class RunLog:
    """The current run of an instance as the log holds it."""

    instance_id: str
    run_start: int
    last_seq: int
    history: list[HistoryEvent]
    last: TurnRecord
    started: WorkflowStarted
    created_at: datetime
    consumed: set[str] = field(default_factory=set)
    head: int = 1  # how many events of ``history`` the run's first record holds
    unposted: int = -1  # the seq of the first record that ``unsent`` comes from
    unsent: list[Post] = field(default_factory=list)
    """Events sent (and orders given to sub-workflows) by the turns after the meta read
    (its seq), of this run and any run before it since the meta's: they may not have
    been posted."""

    @property
    def status(self) -> WorkflowStatus:
        return WorkflowStatus(self.last.status)

    @property
    def custom_status(self) -> Raw:
        return self.last.custom_status

    @property
    def turn_taken(self) -> bool:
        """Whether the run's code has taken its first turn: a record after the run's
        first holds more than the control events a parked instance records (a rerun's
        first record holds turns of the run it reruns, and none of its own)."""
        return any(not isinstance(e, CONTROL) for e in self.history[self.head :])

    @property
    def updated_at(self) -> datetime:
        events = self.last.next_run or self.last.events
        return events[-1].timestamp if events else self.created_at

    @property
    def step_end(self) -> int:
        """One past the highest step (memo key) this run or an earlier one of the
        instance can have used: where the steps of a reuse or rerun begin."""
        base = self.started.step_base
        end = base + self.started.first_task_id
        for event in self.history:
            if isinstance(event, ActivityScheduled):
                end = max(end, event.step + 1)
            task_id = getattr(event, "task_id", None)
            if isinstance(task_id, int):
                end = max(end, base + task_id + 1)
        return end

    def outcome(self) -> tuple[Raw, FailureDetails | None]:
        """The output or failure recorded by the run's terminal event, if any."""
        if self.last.next_run:
            return NULL, None
        return record_outcome(self.last)

    def to_meta(self) -> InstanceMeta:
        output, failure = self.outcome()
        parent: ParentRef | None = self.started.parent
        return InstanceMeta(
            instance_id=self.instance_id,
            name=self.started.name,
            status=self.last.status,
            seq=self.last_seq,
            run_start=self.run_start,
            created_at=self.created_at,
            updated_at=self.updated_at,
            input=self.started.input,
            output=output,
            failure=failure,
            custom_status=self.custom_status,
            parent=parent,
            version=self.started.version,
            origin=self.started.origin_run,
            search=search_of(self.history),
        )


async def load_run(
    store: ObjectStore, instance_id: str, meta: InstanceMeta | None = None
) -> RunLog | None:
    """Read the current run from the log, starting where ``meta`` says it starts.

    Rolls forward past ``meta`` to the last committed record; ``None`` if the instance
    was never created, or a purge is deleting it. Raises ``StoreError`` naming the key
    of a corrupt record.
    """
    seq = meta.run_start if meta is not None else 0
    unposted = meta.seq + 1 if meta is not None else 0
    if meta is not None and meta.unposted >= 0:  # runs before this one sent events too
        unposted = min(unposted, meta.unposted)
        seq = min(seq, unposted)
    records: list[TurnRecord] = []
    run_start = seq
    unsent: list[Post] = []  # of every run read: a new run keeps them
    first_unsent = -1
    while (record := await read_record(store, instance_id, seq)) is not None:
        if record.purging:
            return None  # a purge is deleting the instance
        if seq >= unposted:
            sends = posts_of(record)
            if sends and first_unsent < 0:
                first_unsent = seq
            unsent += sends
        if record.next_run:
            records, run_start = [record], seq
        else:
            records.append(record)
        seq += 1
    if not records:
        return None
    first = records[0]
    if not first.next_run or not isinstance(first.next_run[0], WorkflowStarted):
        key = log_key(instance_id, run_start)
        raise StoreError(
            f"corrupt log: {key!r} should start a run with WorkflowStarted",
            key=key,
            transient=False,
        )
    history: list[HistoryEvent] = list(first.next_run)
    consumed: set[str] = set(first.consumed)
    for record in records[1:]:
        history.extend(record.events)
        consumed.update(record.consumed)
    started = first.next_run[0]
    created_at = meta.created_at if meta is not None else started.timestamp
    return RunLog(
        instance_id=instance_id,
        run_start=run_start,
        last_seq=seq - 1,
        history=history,
        last=records[-1],
        started=started,
        created_at=created_at,
        consumed=consumed,
        head=len(first.next_run),
        unsent=unsent,
        unposted=first_unsent,
    )


async def write_meta(
    store: ObjectStore, meta: InstanceMeta, etag: str | None, before: Indexing | None = None
) -> str:
    """Write ``meta`` by put-if-match (put-if-absent when new); never overwrite a newer one.

    Returns the ETag now current. A meta deleted since the writer read it (only a purge
    deletes one) is not written again: ``ObjectNotFoundError``. (Written again, the
    meta of the purged run stood beside a new start under the id, which took the run
    for ended and never ran it.) Its search entries follow it (see
    :func:`._search.write_meta_indexed`; ``before``: what the meta at ``etag`` says).
    """
    etag, _ = await write_meta_indexed(store, meta, etag, before)
    return etag
