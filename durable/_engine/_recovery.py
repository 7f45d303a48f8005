"""Recovery and reload: loading instances from the log, reading their inboxes under a
handover (see :mod:`._handover`), partitions taken and dropped, retrying after store
errors, failing instances whose objects are broken for good.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from durable._core._events import (
    NULL,
    ChildWorkflowScheduled,
    WorkflowStarted,
)
from durable._core._failure import failure_from_exception
from durable._core._search import search_of
from durable._core._state import WorkflowStatus
from durable._errors import (
    NonDeterminismError,
    StoreError,
    UnknownWorkflowError,
)
from durable._log._active import Entry, build, repair
from durable._log._msgids import watermarks
from durable._log._reader import (
    RunLog,
    load_run,
    new_run_after,
    read_meta,
    write_meta,
)
from durable._log._records import (
    InstanceMeta,
    meta_key,
    wakeup_key,
)
from durable._log._search import Indexing, delete_entries

from ._base import _STORE_RETRY, _EngineBase, log
from ._handover import Handover
from ._instance import Pending, _child_of, _fold, _for_good, _Instance, _parent_event
from ._lifecycle import (
    InstanceState,
    LifecycleEvent,
    can_reload,
    fire,
    is_backing_off,
    is_reloading,
)

if TYPE_CHECKING:
    from durable._log._instances import Created


def _search_lags(inst: _Instance) -> bool:
    """Whether the meta's search attributes (and so the search index) lag the log's, or
    entries of replaced ones are still to delete."""
    return inst.search != inst.meta_indexed.search or bool(inst.meta_indexed.drop)


class _Recovery(_EngineBase):
    """Bring instances into memory from the store, and let them go."""

    async def announce_created(self, instance_id: str, created: Created) -> None:
        """A run was just created in the store: run it here, or ring the bell of the
        process that owns its partition."""
        if self.owns(instance_id) and self.running:
            self.adopt_created(instance_id, created)
        else:  # another process runs it, or this one has stopped: the next start will
            await self.store.put(wakeup_key(instance_id, self.partition(instance_id)), b"")

    def adopt_created(self, instance_id: str, created: Created) -> None:
        """Take a run just created in the store into memory and queue its first turn. A
        copy of the old run still here, not ended in memory though it has in the log (its
        last turn has landed, and not finished yet), hands over once it has ended."""
        started = created.record.next_run[0]
        assert isinstance(started, WorkflowStarted)
        inst = self._instances.get(instance_id)
        if inst is not None and not inst.status.is_terminal:
            if inst.seq < created.record.seq:
                self._spawn(self._load_after_end, instance_id)
            return
        if created.meta.unposted >= 0:  # the run before sent events that may not be posted:
            self._spawn_guarded(self.recover, instance_id)  # a load from the log posts them
            return
        inst = _Instance(instance_id, started, created.meta.created_at)
        inst.seq = inst.run_start = created.record.seq
        inst.next_event_id = len(created.record.next_run)
        inst.meta_etag = created.meta_etag
        inst.meta_seq = created.record.seq if created.meta_etag is not None else -1
        if created.indexed is not None:
            inst.meta_indexed = created.indexed
        inst.search = dict(created.meta.search)  # (its meta's: of the same history)
        inst.consumed = set(created.record.consumed)  # the run before's watermarks
        inst.received = watermarks(created.record.consumed)
        fire(inst, LifecycleEvent.LOADED)
        history = list(created.record.next_run)
        _fold(inst.outstanding, history)
        self._instances[instance_id] = inst
        self._evicted.discard(instance_id)
        try:
            inst.run = self._new_run(inst, history)
        except UnknownWorkflowError:
            inst.run = None  # its first turn parks it
        except NonDeterminismError:  # a rerun the code no longer replays: nothing to
            inst.run = None  # dispatch; its first turn fails it, naming the event
            self._enqueue(inst)
            return
        self._dispatch_open(inst)  # a rerun keeps history whose steps may still be open
        if started.parent is not None:
            # a sub-workflow reads its inbox first: its parent's orders may wait there,
            # posted while the id had ended or not begun (none is handed before them)
            self._reread(instance_id)
        self._enqueue(inst)

    async def _load_after_end(self, instance_id: str) -> None:
        """Load the instance's new run once the copy of its old run here has ended."""
        if await self.wait_done(instance_id):
            self._spawn_guarded(self.recover, instance_id)

    async def recover_all(self, partitions: list[int] | None = None) -> None:
        """Load every unfinished instance of the store's partitions (or of
        ``partitions``) and re-dispatch its open work. It reads the active index, so it
        costs what runs, not what ever ran; a partition not indexed yet (a store written
        before the index) is indexed first, by a scan that resumes if cut short."""
        wanted = self.owned_partitions() if partitions is None else partitions
        await build(self.index, wanted)
        listed: dict[str, list[Entry] | None] = {}
        for partition in wanted:
            listed |= await self.index.scan(partition)
        ids = sorted(listed)  # in id order, whatever their partitions
        limiter = anyio.CapacityLimiter(32)

        async def one(instance_id: str) -> None:
            async with limiter:
                try:
                    await self._recover_indexed(instance_id, listed[instance_id])
                except StoreError as err:
                    if _for_good(err):
                        await self._fail_for_good(f"recovery of {instance_id!r}", err)
                        return
                    log.warning("recovery of %r failed, retrying: %s", instance_id, err)
                    self._spawn_guarded(self._recover_indexed, instance_id)
                except Exception as err:  # one bad instance must not stop the runtime
                    log.exception("recovery of %r failed", instance_id)
                    broken = StoreError(f"cannot recover {instance_id!r}: {err!r}",
                                        key=meta_key(instance_id), transient=False)  # fmt: skip
                    await self._fail_for_good(f"recovery of {instance_id!r}", broken)

        async with anyio.create_task_group() as tg:
            for instance_id in ids:
                tg.start_soon(one, instance_id)
        try:
            await self.poll_wakeups(partitions)
        except StoreError as err:
            log.warning("polling for messages at start failed: %s", err)

    async def _recover_indexed(self, instance_id: str, entries: list[Entry] | None = None) -> None:
        """Recover an instance the active index names, then bring its entries in line
        with the log (a crash between a run's end and its entry's delete, say).
        ``entries``: as its partition's listing found them (else listed here); either
        way listed before repair reads the log."""
        await self.recover(instance_id)
        if not self.owns(instance_id):
            return
        if entries is None:
            entries = await self.index.entries(instance_id)
        inst = self._live(instance_id)
        if inst is not None and entries == [Entry(inst.run_start, inst.started.run_id)]:
            return  # as it should be
        await repair(self.index, instance_id, entries)

    async def _index_end(self, instance_id: str, run_start: int, run_id: str) -> None:
        """A run ended: drop its index entry. If that fails, the next recovery does."""
        try:
            await self.index.end(instance_id, run_start, run_id)
        except StoreError as err:
            log.warning("could not drop the index entry of %r: %s", instance_id, err)

    async def take_partitions(self, partitions: list[int]) -> None:
        """This process just took these partitions' leases: recover their instances, in
        the background (the lease loop must go on renewing meanwhile). An inbox read
        under way for one of them began before they were ours: it reads again."""
        taken = set(partitions)
        for instance_id, handover in self._handovers.items():
            if self.partition(instance_id) in taken:
                handover.reread = True
        self._spawn_guarded(self.recover_all, partitions)

    def drop_partitions(self, partitions: list[int]) -> None:
        """This process lost or gave up these partitions: drop their instances from
        memory at once (their new owner recovers them from the log)."""
        lost = set(partitions)
        for instance_id in [i for i in self._instances if self.partition(i) in lost]:
            self._forget_here(instance_id)
        for instance_id in [i for i in self._evicted if self.partition(i) in lost]:
            self._forget_here(instance_id)

    def _forget_here(self, instance_id: str) -> None:
        """Stop running an instance another process now runs; its waiters look at
        the store instead."""
        self.forget(instance_id)
        self._evicted.discard(instance_id)
        if (done := self._done_waiters.pop(instance_id, None)) is not None:
            done.set()

    async def recover(self, instance_id: str) -> _Instance | None:
        """Load one instance from the store unless it is finished or another process
        runs it, or read its inbox if it is in memory; None if nothing runs here. If a
        read of its inbox is under way, that read goes on once more instead."""
        if (handover := self._handovers.get(instance_id)) is not None:
            handover.reread = True
            return self._live(instance_id)
        handover = self._handovers[instance_id] = Handover()
        try:
            return await self._run_handover(instance_id)
        except StoreError as err:
            if err.transient:  # what waits in the handover keeps its place: a retry goes on
                self._spawn_guarded(self._continue_handover, instance_id)
            else:
                self._end_handover(instance_id, handover)
            raise
        except BaseException:
            self._end_handover(instance_id, handover)
            raise

    async def _continue_handover(self, instance_id: str) -> None:
        """Run an instance's open handover in the background (its load, when the
        instance is not in memory). A transient store error leaves it open for the
        retry: what waits in it keeps its place."""
        handover = self._handovers.get(instance_id)
        if handover is None:
            return
        keep = False
        try:
            await self._residency.admit()  # under a cap, a mass wake-up loads in turn
            try:
                await self._run_handover(instance_id)
            finally:
                self._residency.loaded()
        except StoreError as err:
            keep = err.transient
            raise
        finally:
            if not keep:
                self._end_handover(instance_id, handover)

    def _end_handover(self, instance_id: str, handover: Handover) -> None:
        """Close a handover whose run failed (unless another took its place)."""
        if self._handovers.get(instance_id) is handover:
            del self._handovers[instance_id]

    async def _run_handover(self, instance_id: str) -> _Instance | None:
        """Read the instance's inbox (loading the instance first if it is not in memory)
        and hand it what the read found, then what was delivered meanwhile; again while
        a message delivered meanwhile needs a read of its own. Ends the handover; None
        (dropping what waited) if the instance does not run here."""
        handover = self._handovers[instance_id]
        while True:
            handover.begin_read()
            inst = self._live(instance_id)
            if inst is None:
                inst = await self._load(instance_id)
                if inst is None:  # not run here: what waited is for whoever runs it
                    del self._handovers[instance_id]
                    if handover.events:  # dropped: nothing of it is armed here now
                        self._armed.pop(instance_id, None)
                    return None
            else:
                await self._scan_inbox(inst)
            if self._live(instance_id) is not inst:  # evicted, ended or let go meanwhile
                if handover.settled and not handover.events:
                    del self._handovers[instance_id]
                    return None
                continue  # what waits goes to the instance as it is now
            if handover.settled:
                del self._handovers[instance_id]
                self._hand(inst, handover.take_events())
                return inst

    def _hand_read(self, inst: _Instance, items: list[Pending]) -> None:
        """Hand what an inbox read found (less what the instance already has), then
        the events that waited behind the read. A copy evicted or let go during the
        read gets nothing: the events wait on for the instance as it is now, and what
        the read found is read again (the handover loads it)."""
        handover = self._handovers.get(inst.id)
        if handover is not None:
            handover.found(items)
        if self._live(inst.id) is not inst:
            if handover is not None and items:
                handover.reread = True
            return
        if inst.pending:
            pending = {msg_id for msg_id, _, _ in inst.pending}
            items = [item for item in items if item[0] not in pending]
        items = [item for item in items if item[0] not in inst.consumed]
        self._hand(inst, items if handover is None else items + handover.take_events())

    async def _load(self, instance_id: str) -> _Instance | None:
        """Load one instance from the store, read its inbox and hand what it holds;
        None if the instance is finished or another process runs it."""
        if not self.owns(instance_id):
            return None
        found = await read_meta(self.store, instance_id)
        meta, etag = found if found is not None else (None, None)
        if (
            meta is not None
            and WorkflowStatus(meta.status).is_terminal
            and not await new_run_after(self.store, meta)
        ):
            if meta.search_drop:  # its writer stopped before deleting them
                await delete_entries(self.store, meta.search_drop)
            self._spawn_guarded(self._start_waiting, instance_id)
            return None  # ended, and no new run began after the meta was written
        try:
            loaded = await load_run(self.store, instance_id, meta)
        except StoreError as err:
            if err.transient:
                raise
            await self._fail_corrupt(instance_id, meta, etag, err)
            return None
        items: list[Pending] = []
        set_aside = ""
        if loaded is not None and not loaded.status.is_terminal:
            # read before the instance is in memory (nothing else can take it meanwhile)
            items, set_aside = await self._read_inbox(
                instance_id, loaded.consumed, loaded.run_start, loaded.started.origin_run
            )
        if loaded is None or self._live(instance_id) is not None:
            # begun here meanwhile (a start): what this read found, a read of its own finds
            self._handovers[instance_id].reread = True
            if loaded is None:  # none (or purged): a start_with_event's message starts it
                self._spawn_guarded(self._start_waiting, instance_id)
            return self._live(instance_id)
        if not self.owns(instance_id):
            return None  # the partition moved while the log was read
        inst = _Instance(instance_id, loaded.started, loaded.created_at)
        inst.meta_etag = etag
        inst.meta_seq = meta.seq if meta is not None else -1
        if meta is not None:
            inst.meta_indexed = Indexing.of(meta)
        self._instances[instance_id] = inst
        self._evicted.discard(instance_id)
        fire(inst, LifecycleEvent.LOADED)
        self._load_into(inst, loaded)
        if loaded.status.is_terminal:
            self._let_go(inst)
            await self._notify_parent_from_log(loaded)  # before a meta that says it ended
            if meta is None or meta.status != loaded.status or _search_lags(inst):
                # ended, but the process stopped before marking it: finish that now
                inst.output, inst.failure = loaded.outcome()
                await self._mark_terminal(instance_id)
                await self._write_meta(inst)
            self._spawn_guarded(self._start_waiting, instance_id)
            return None
        if _search_lags(inst):  # a crash between a turn and its meta: the search index
            await self._write_meta(inst)  # follows the meta, so both catch up now
        await self._note_set_aside(inst, set_aside)
        self._hand_read(inst, items)
        if inst.state is not InstanceState.QUEUED:
            self._residency.note_waiting(inst)
            self._residency.evict_to_capacity()
        return inst

    def _load_into(self, inst: _Instance, loaded: RunLog) -> None:
        """Set the instance's state from the log and dispatch its open operations that
        are not under way here (an evicted instance's timers still are)."""
        inst.started = loaded.started
        inst.parent = loaded.started.parent
        inst.seq = loaded.last_seq
        inst.run_start = loaded.run_start
        inst.next_event_id = len(loaded.history)
        inst.status = loaded.status
        inst.custom_status = loaded.custom_status
        inst.search = search_of(loaded.history)
        inst.consumed = loaded.consumed
        inst.received = watermarks(loaded.consumed)
        inst.outstanding = {}
        _fold(inst.outstanding, loaded.history)
        self._resend(inst, loaded.unsent)
        if loaded.status.is_terminal:
            return
        self._dispatch_open(inst)
        if inst.status is WorkflowStatus.PENDING or inst.pending:
            self._enqueue(inst)

    def _dispatch_open(self, inst: _Instance) -> None:
        """Re-dispatch what history left open and is not under way here: activities,
        timers, sub-workflows."""
        self._arm_deadline(inst)
        for event in list(inst.outstanding.values()):
            if isinstance(event, ChildWorkflowScheduled):
                # it may have ended, never begun, or hold an older run's child
                if self._arm(inst.id, inst.run_start, event.task_id):
                    self._spawn_guarded(self._settle_child, _child_of(inst, event), event)
            else:
                self._dispatch(inst, event)

    async def _reload(self, inst: _Instance) -> None:
        """Another writer moved the log (or a write failed): take the log's word."""
        if self._instances.get(inst.id) is not inst or not can_reload(inst.state):
            return  # a stale object, another reload under way, or the run ended
        if not self.owns(inst.id):
            self._forget_here(inst.id)
            return
        self._drop_run(inst)
        fire(inst, LifecycleEvent.RELOAD)
        self.busy_enter()
        try:
            loaded = await load_run(self.store, inst.id, self._meta_hint(inst))
        except StoreError as err:
            if err.transient:
                self._retry_later(inst)
                return
            await self._fail_corrupt(inst.id, None, inst.meta_etag, err)
            return
        finally:
            if is_reloading(inst.state):  # not failed, nor let go
                fire(inst, LifecycleEvent.LOADED)
            self.busy_exit()
        if loaded is None:
            return
        self._load_into(inst, loaded)
        if loaded.status.is_terminal:  # e.g. a terminal commit that landed but said it failed
            inst.output, inst.failure = loaded.outcome()
            await self._notify_parent_from_log(loaded)
            await self._mark_terminal(inst.id)
            await self._write_meta(inst)
            if inst.state is InstanceState.IDLE:  # in a turn, the turn's end fires it
                fire(inst, LifecycleEvent.END)
            self._wake_waiters(inst)
        elif inst.pending:
            self._enqueue(inst)

    def _retry_later(self, inst: _Instance) -> None:
        """The store failed: try the instance again after a backoff on the Clock (one
        retry at a time; no turn runs until it)"""
        self._drop_run(inst)
        was_backing_off = is_backing_off(inst.state)
        fire(inst, LifecycleEvent.STORE_FAILED)
        if not was_backing_off:
            self._timers.add(self.clock.now() + _STORE_RETRY, (self._retry_now, inst))

    def _retry_now(self, inst: _Instance) -> None:
        if self._instances.get(inst.id) is inst:
            self._spawn_guarded(self._reload, inst)

    async def _fail_corrupt(
        self, instance_id: str, meta: InstanceMeta | None, etag: str | None, err: StoreError
    ) -> None:
        """An object of the instance cannot be read or written, for good: the instance
        fails, naming the key, and its parent hears it; others go on."""
        log.error("instance %r failed: %s", instance_id, err)
        now = self.clock.now()
        failure = failure_from_exception(err)
        inst = self._instances.pop(instance_id, None)
        if inst is not None:
            fire(inst, LifecycleEvent.FORGET)
        base = meta or InstanceMeta(
            instance_id=instance_id, name=inst.name if inst else "", status="FAILED",
            seq=inst.seq if inst else 0, run_start=inst.run_start if inst else 0,
            created_at=inst.created_at if inst else now, updated_at=now,
        )  # fmt: skip
        failed = msgspec.structs.replace(
            base, status=WorkflowStatus.FAILED, failure=failure, updated_at=now
        )
        await self._mark_terminal(instance_id)
        parent = inst.parent if inst is not None else base.parent
        if parent is not None:  # before the meta says it ended, as for any ending
            event = _parent_event(parent, instance_id, WorkflowStatus.FAILED, NULL, failure)
            try:
                await self._tell(parent.instance_id, event)
            except StoreError:
                log.exception("could not tell the parent of %r that it failed", instance_id)
        try:
            await write_meta(self.store, failed, etag, Indexing.of(base) if meta else None)
        except StoreError:
            log.exception("could not record the failure of %r", instance_id)
        if inst is not None:
            inst.status, inst.failure = WorkflowStatus.FAILED, failure
            self._drop_run(inst)
        self._armed.pop(instance_id, None)
        self._evicted.discard(instance_id)
        if (done := self._done_waiters.pop(instance_id, None)) is not None:
            done.set()
