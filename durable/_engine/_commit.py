"""The commit of a turn, and what follows it: state, a new run, the end, the meta."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from durable._core._events import (
    NULL,
    ActivityScheduled,
    ChildWorkflowScheduled,
    EventSent,
    HistoryEvent,
    SearchAttributesUpserted,
    TaskCancelled,
    TurnStarted,
    WorkflowErrored,
    WorkflowStarted,
)
from durable._core._failure import failure_from_exception
from durable._core._search import fold
from durable._core._state import WorkflowStatus
from durable._errors import (
    ObjectExistsError,
    StoreError,
)
from durable._log._msgids import watermarks
from durable._log._reader import (
    record_outcome,
)
from durable._log._records import (
    InstanceMeta,
    TurnRecord,
    encode,
    log_key,
)
from durable._log._retention import note_ended
from durable._log._search import delete_entries, write_meta_indexed

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from durable.store import ObjectStore

from ._base import _STORE_RETRY, _EngineBase, _NotLeased, log
from ._instance import _ANSWERS, _SCHEDULING, _Instance

_META_EVERY = 32  # rewrite meta at least every this many turns (it is only an index)
# a record's status (a string once read back) -> the status (the enum's own call is slow)
_SCHEDULING_KINDS = frozenset(_SCHEDULING)
_NOTED = frozenset({TaskCancelled, EventSent, SearchAttributesUpserted})  # the loop's others
_STATUS: dict[str, WorkflowStatus] = {status.value: status for status in WorkflowStatus}


async def _drop_entries(store: ObjectStore, instance_id: str, keys: set[str]) -> None:
    """Delete search entries of replaced attributes (a retry raises until all are gone)."""
    if failed := await delete_entries(store, keys):
        keys.intersection_update(failed)
        raise StoreError(f"could not delete old search entries of {instance_id!r}")


class _Commits(_EngineBase):
    """Write a turn's record exactly once, then carry out what it says."""

    def _commit(self, inst: _Instance, record: TurnRecord) -> Coroutine[Any, Any, bool]:
        """Write ``log/{seq}`` once; False if another writer holds that seq. (Not a
        coroutine itself: the put's is awaited directly, one layer fewer every turn.)"""
        key = log_key(inst.id, record.seq)
        data = encode(record)
        leases = self._leases
        if leases is not None and not leases.can_commit(self.partition(inst.id)):
            raise _NotLeased(inst.id)
        if self._store_never_suspends:  # nothing to shield (and no scope to pay for)
            return self._put_record(key, data)
        return self._put_shielded(key, data)

    async def _put_shielded(self, key: str, data: bytes) -> bool:
        """:meth:`_put_record`, shielded from cancellation: a turn's write, once begun,
        ends, so the engine knows whether it landed."""
        with anyio.CancelScope(shield=True):
            return await self._put_record(key, data)
        return False  # not reached: the shielded scope is never cancelled

    async def _put_record(self, key: str, data: bytes) -> bool:
        """Put a record under its key once: whether it is there now (False: another
        writer holds the key, or a transient error left it unwritten)."""
        try:
            await self.store.put_if_absent(key, data)
            return True
        except ObjectExistsError:
            return False
        except StoreError as err:
            # The write may or may not have landed: read back to know.
            try:
                landed = await self.store.get(key) == data
            except StoreError:
                landed = False
            if not (landed or err.transient):
                raise  # the store refuses this record for good
            return landed

    async def _commit_failure(self, inst: _Instance, err: Exception) -> None:
        """End the instance as FAILED with ``err`` (a replay that no longer matches)."""
        log.error("instance %r failed: %s", inst.id, err)
        now = self.clock.now()
        failure = failure_from_exception(err)
        events: list[HistoryEvent] = [
            TurnStarted(event_id=inst.next_event_id, timestamp=now),
            WorkflowErrored(event_id=inst.next_event_id + 1, timestamp=now, failure=failure),
        ]
        record = TurnRecord(seq=inst.seq + 1, status=WorkflowStatus.FAILED, events=events)
        if await self._commit(inst, record):
            await self._after_commit(inst, record)
        else:
            await self._reload(inst)

    async def _after_commit(self, inst: _Instance, record: TurnRecord) -> None:
        if self._observe is not None:
            self._observe.committed(inst.id, inst.started, inst.status, record)
        inst.seq = record.seq
        inst.next_event_id += len(record.events)
        if self._commit_waiters and (waiting := self._commit_waiters.pop(inst.id, None)):
            waiting.set()
        if record.consumed:
            inst.consumed.update(record.consumed)
            inst.received.update(watermarks([*inst.received.values(), *record.consumed]))
        custom_changed = inst.custom_status != record.custom_status
        inst.custom_status = record.custom_status
        previous = inst.status
        inst.status = _STATUS[record.status]
        outstanding = inst.outstanding
        ended = inst.status.is_terminal
        # (found in this loop: a pass of their own cost every commit a call)
        sends = upserts = False
        # (one look at each event's kind, by set: a turn's TurnStarted, its most common
        # event, went through five isinstance and identity tests to do nothing)
        for event in record.events:
            kind = type(event)
            if kind in _SCHEDULING_KINDS:
                outstanding[event.task_id] = event  # type: ignore[union-attr]
                if not ended or kind is ChildWorkflowScheduled:
                    self._dispatch(inst, event)  # fire-and-forget sub-workflows still start
            elif kind in _ANSWERS:
                answered = outstanding.pop(event.task_id, None)  # type: ignore[union-attr]
                if type(answered) is ChildWorkflowScheduled:
                    # the call's task id is free again: a Durable Task SDK's retry of a
                    # sub-orchestration schedules it again under the same one
                    self._disarm(inst.id, inst.run_start, answered.task_id)
            elif kind not in _NOTED:
                continue
            elif kind is TaskCancelled:
                cancelled = outstanding.pop(event.task_id, None)  # type: ignore[union-attr]
                if cancelled is not None:
                    self._cancel_op(inst, cancelled, f"cancelled by its parent {inst.id!r}")
            elif kind is EventSent:
                sends = True
            else:  # SearchAttributesUpserted
                upserts = True
        if upserts or record.next_run:
            fold(inst.search, (*record.events, *record.next_run), inst.started.run_id)
        told = True
        if self._outbox or sends:
            told = await self._send_events(inst, record.events)
        if record.next_run:
            run_start, run_id = inst.run_start, inst.started.run_id
            self._start_new_run(inst, record)
            # the instance goes on: its entry moves to the new run (the old one keeps it
            # found until then)
            await self._index_moved(inst, run_start, run_id)
        elif ended:
            self._finish(inst, record)
            if inst.parent is not None:
                told = await self._tell_parent(inst) and told
        if inst.status.is_terminal:
            await self._mark_terminal(inst.id)
        if told and (
            inst.status is not previous
            or inst.status.is_terminal
            or record.next_run
            or custom_changed
            or inst.search != inst.meta_indexed.search
            or record.seq - inst.meta_seq >= _META_EVERY
        ):
            await self._write_meta(inst)
        if inst.status is not previous or record.next_run:
            self._status_now_changed(inst.id)
        if inst.status.is_terminal:
            self._wake_waiters(inst)
        elif not record.next_run:
            self._residency.note_waiting(inst)
        if record.consumed:
            self._spawn(self._delete_messages, inst.id, list(record.consumed))

    def _start_new_run(self, inst: _Instance, record: TurnRecord) -> None:
        """Continue-as-new committed: the instance begins a fresh run in memory."""
        self._drop_run(inst)
        self._armed.pop(inst.id, None)  # the old run's timers fire for nothing
        started = record.next_run[0]
        assert isinstance(started, WorkflowStarted)
        inst.started = started
        inst.run_start = record.seq
        inst.next_event_id = len(record.next_run)
        inst.outstanding = {}
        inst.consumed = set(record.consumed)
        inst.received = watermarks(record.consumed)
        inst.run = self._new_run(inst, list(record.next_run))
        self._arm_deadline(inst)  # a continued run keeps its start's deadline
        self._enqueue(inst)

    async def _index_moved(self, inst: _Instance, run_start: int, run_id: str) -> None:
        """Continue-as-new committed: index the new run, then drop the old run's entry
        (a crash between leaves both: recovery drops the old one)."""
        try:
            await self.index.begin(inst.id, inst.run_start, inst.started.run_id)
        except StoreError as err:
            log.warning("could not index the new run of %r: %s", inst.id, err)
            return  # the old entry keeps it found; recovery moves it
        await self._index_end(inst.id, run_start, run_id)

    def _finish(self, inst: _Instance, record: TurnRecord) -> None:
        inst.output, inst.failure = record_outcome(record)
        self._close_children(inst, record)
        for scheduled in inst.outstanding.values():
            if isinstance(scheduled, ActivityScheduled):  # nobody waits for it any more
                self._cancel_op(inst, scheduled, "")
        self._drop_run(inst)
        self._armed.pop(inst.id, None)
        inst.outstanding.clear()

    def _wake_waiters(self, inst: _Instance) -> None:
        if (done := self._done_waiters.pop(inst.id, None)) is not None:
            done.set()
        self._status_now_changed(inst.id)
        self._evicted.discard(inst.id)
        # A finished instance needs no memory beyond what waiters read right now.
        if self._instances.get(inst.id) is inst and not inst.pending:
            self._let_go(inst)

    async def _mark_terminal(self, instance_id: str) -> None:
        """Start the memo retention window (only when retention is on)."""
        if self.memo_store is None or self._memo_retention is None:
            return
        try:
            await self.memo_store.mark_terminal(instance_id, self.clock.now())
        except StoreError as err:
            log.warning("could not write the terminal marker of %r: %s", instance_id, err)

    async def _write_meta(self, inst: _Instance) -> None:
        if inst.id in self._outbox:
            return  # not past turns whose sent events wait: they are written after them
        try:
            await self._write_meta_or_raise(inst)
        except StoreError as err:  # the index lags; the log is the truth
            log.warning("could not update meta of %r: %s", inst.id, err)
            if err.transient and inst.status.is_terminal:
                # no later turn will bring it up to date: try again until it lands
                self._stale_meta[inst.id] = inst
                retry = (self._spawn_guarded, self._write_meta_or_raise, inst)
                self._timers.add(self.clock.now() + _STORE_RETRY, retry)

    async def _write_meta_or_raise(self, inst: _Instance) -> None:
        output, failure = (inst.output, inst.failure) if inst.status.is_terminal else (NULL, None)
        meta = InstanceMeta(
            instance_id=inst.id, name=inst.name, status=inst.status, seq=inst.seq,
            run_start=inst.run_start, created_at=inst.created_at, updated_at=self.clock.now(),
            input=inst.started.input, output=output, failure=failure,
            custom_status=inst.custom_status, parent=inst.parent,
            version=inst.started.version, reason=inst.reason, origin=inst.started.origin_run,
            search=dict(inst.search),
        )  # fmt: skip
        inst.meta_etag, inst.meta_indexed = await write_meta_indexed(
            self.store, meta, inst.meta_etag, inst.meta_indexed
        )
        inst.meta_seq = inst.seq
        self._stale_meta.pop(inst.id, None)
        if inst.status.is_terminal and inst.meta_indexed.drop:  # no later meta deletes
            # them: delete them again until they are gone (the meta lists them meanwhile)
            self._spawn_guarded(_drop_entries, self.store, inst.id, set(inst.meta_indexed.drop))
        if inst.status.is_terminal:  # only now: until the meta says it ended, recovery
            # must find it (to write that meta, or tell its parent)
            await self._index_end(inst.id, inst.run_start, inst.started.run_id)
            if self.history_retention is not None:
                await self._note_ended(inst)

    async def _note_ended(self, inst: _Instance) -> None:
        """Mark the end for the history sweeper (one write; if it fails, the instance
        is kept until purged by hand)."""
        try:
            await note_ended(self.index, inst.id, inst.seq, self.clock.now())
        except StoreError as err:
            log.warning("could not mark the end of %r for retention: %s", inst.id, err)
