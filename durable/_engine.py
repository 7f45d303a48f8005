"""The engine: runs turns, commits each exactly once, and carries out what they ask.

A turn takes an instance's pending events, feeds them to its cached run (a
:class:`~durable._executor.TurnRunner` from the executor: a local
:class:`~durable._core._replay.WorkflowRun`, replayed from the log on a miss, or a remote
worker's), and commits the
result as ``log/{seq}`` with put-if-absent. Only after the commit does anything
happen: activities start, timers arm, sub-workflows begin, waiters wake. A writer
that loses the put drops its turn and reloads from the log. Recovery rebuilds every
unfinished instance from the log and re-dispatches what its history left open.
"""

from __future__ import annotations

import contextlib
import logging
import math
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec
from msgspec import Raw

from ._clock import Clock, MockClock
from ._core._actions import (
    Action,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    RecordPatch,
    ScheduleActivity,
    StartChildWorkflow,
    StartTimer,
)
from ._core._events import (
    CONTROL,
    NULL,
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowErrored,
    ChildWorkflowScheduled,
    ContinuedAsNew,
    Event,
    HistoryEvent,
    ParentRef,
    PatchApplied,
    TimerCreated,
    TimerFired,
    TurnStarted,
    WorkflowCompleted,
    WorkflowErrored,
    WorkflowStarted,
    WorkflowSuspended,
    WorkflowTerminated,
)
from ._core._failure import FailureDetails, failure_from_exception
from ._core._state import WorkflowStatus
from ._errors import (
    InstanceExistsError,
    NonDeterminismError,
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreError,
    UnknownWorkflowError,
)
from ._eviction import EvictionPolicy
from ._executor import LocalExecutor
from ._fleet._partitions import partition_of
from ._ids import IdSource
from ._log._instances import Created, create_instance, send_message
from ._log._reader import (
    RunLog,
    load_run,
    new_run_after,
    read_meta,
    read_record,
    record_outcome,
    write_meta,
)
from ._log._records import (
    WAKEUPS,
    InboxMessage,
    InstanceMeta,
    TurnRecord,
    decode_message,
    encode,
    inbox_key,
    inbox_prefix,
    instance_of_key,
    log_key,
    unreadable_key,
    wakeup_key,
    wakeup_prefix,
)
from ._residency import Residency
from ._timers import TimerQueue

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._core._codec import PayloadCodec
    from ._executor import Executor, TurnRunner
    from ._fleet._leases import Leases
    from ._log._memo import MemoStore
    from ._registry import Registry
    from .store import ObjectStore

__all__ = ["Engine", "EngineHooks"]

log = logging.getLogger("durable.engine")

_SCHEDULING = (ActivityScheduled, TimerCreated, ChildWorkflowScheduled)
# completion event type -> the scheduling event type it must answer
_ANSWERS: dict[type, type] = {
    ActivityCompleted: ActivityScheduled,
    ActivityErrored: ActivityScheduled,
    TimerFired: TimerCreated,
    ChildWorkflowCompleted: ChildWorkflowScheduled,
    ChildWorkflowErrored: ChildWorkflowScheduled,
}
_ANY_RUN = -1
# the store's answers to a conditional call: a race lost, not a broken object
_ANSWERS_OF_STORE = (ObjectNotFoundError, ObjectExistsError, PreconditionFailedError)
_META_EVERY = 32  # rewrite meta at least every this many turns (it is only an index)
_STORE_RETRY = timedelta(seconds=1)  # backoff after a transient store error

Pending = tuple[str | None, int, Event]  # (inbox message id, run it belongs to, event)
_ActivityWork = tuple[str, str, int, ActivityScheduled]  # (instance, workflow, run, attempt)
_FAIR_STREAK = 32  # queued items a worker takes before it yields to other tasks
# In an activity worker running a turn: where that turn's first new activity goes, so the
# same worker runs it next instead of handing it to another worker.
_CLAIM: ContextVar[list[_ActivityWork] | None] = ContextVar("durable_claim", default=None)


class _NotLeased(Exception):
    """A commit was refused before writing: this process's lease on the instance's
    partition is not valid now."""


class EngineHooks:
    """Points where a simulation injects faults and records what happened.

    The defaults change nothing; :func:`durable.testing.simulate` overrides them.
    """

    async def before_delivery(self, instance_id: str, outcome: Event) -> None:
        """Called after an activity attempt, before its outcome reaches the workflow."""

    def deliveries(self, instance_id: str, outcome: Event) -> int:
        """How many times to deliver an activity outcome (more than 1: duplicates)."""
        return 1

    def committed(self, instance_id: str, record: TurnRecord) -> None:
        """Called once a turn's record is committed."""


class _Instance:
    """What the engine keeps in memory for one instance."""

    __slots__ = (
        "backing_off",
        "consumed",
        "created_at",
        "custom_status",
        "failure",
        "id",
        "loading",
        "meta_etag",
        "meta_seq",
        "meta_status",
        "name",
        "next_event_id",
        "output",
        "outstanding",
        "parent",
        "parked",
        "pending",
        "queued",
        "reason",
        "residency",
        "run",
        "run_start",
        "running",
        "seq",
        "seq_at_turn_start",
        "started",
        "status",
    )  # fmt: skip

    def __init__(self, instance_id: str, started: WorkflowStarted, created_at: Any) -> None:
        self.id = instance_id
        self.name = started.name
        self.started = started
        self.parent: ParentRef | None = started.parent
        self.created_at = created_at
        self.seq = 0
        self.seq_at_turn_start = -1
        self.run_start = 0
        self.next_event_id = 0
        self.status = WorkflowStatus.PENDING
        self.custom_status: Raw = NULL
        self.run: TurnRunner | None = None
        self.pending: list[Pending] = []
        self.outstanding: dict[int, HistoryEvent] = {}
        self.consumed: set[str] = set()
        self.queued = False
        self.running = False
        self.loading = False
        self.parked = False  # its workflow is not registered here: it waits
        self.backing_off = False  # a store error: waiting for its retry timer
        self.reason = ""  # why it makes no progress, for describe()
        self.residency = -1  # set by Residency: which stay in memory this object is
        self.meta_etag: str | None = None
        self.meta_seq = -1
        self.meta_status = ""
        self.output: Raw = NULL
        self.failure: FailureDetails | None = None


def _parent_event(
    parent: ParentRef,
    child_id: str,
    status: WorkflowStatus,
    output: Raw,
    failure: FailureDetails | None,
) -> HistoryEvent:
    """What a parent's run receives when its sub-workflow ``child_id`` ends."""
    if status is WorkflowStatus.COMPLETED:
        return ChildWorkflowCompleted(
            task_id=parent.task_id, result=output, instance_id=child_id, parent_run=parent.run_id
        )
    return ChildWorkflowErrored(
        task_id=parent.task_id, instance_id=child_id, parent_run=parent.run_id,
        failure=failure or FailureDetails("Terminated", "terminated"),
    )  # fmt: skip


def _child_of(inst: _Instance, scheduled: ChildWorkflowScheduled) -> ParentRef:
    """The parent link of the sub-workflow that ``inst``'s current run schedules."""
    return ParentRef(inst.id, scheduled.task_id, inst.started.run_id)


def _addressed_elsewhere(inst: _Instance, event: Event) -> bool:
    """Whether ``event`` names a run that is not the instance's current one: a child's
    answer to another run of this parent, or a terminate for the children of another
    run of its parent. Such an event is consumed and never applied."""
    if isinstance(event, ChildWorkflowCompleted | ChildWorkflowErrored):
        return event.parent_run not in ("", inst.started.run_id)
    if isinstance(event, WorkflowTerminated) and event.parent is not None:
        return inst.parent is None or not inst.parent.same_run(event.parent)
    return False


def _numbered(events: list[HistoryEvent], first_id: int) -> list[HistoryEvent]:
    """``events`` with their ids in order from ``first_id``."""
    return [msgspec.structs.replace(e, event_id=first_id + i) for i, e in enumerate(events)]


def _turn_events(
    inst: _Instance, run: TurnRunner, new: list[HistoryEvent], first_turn: bool, now: Any
) -> list[HistoryEvent]:
    """A turn's events: ``TurnStarted``, then the ``new`` ones. A rerun's first turn
    opens no turn: its history ends inside the turn it cut, so what that turn still asks
    for is recorded in it, where a replay of the run meets it."""
    if first_turn and run.took_turn:
        return _numbered(new, inst.next_event_id)
    return [TurnStarted(event_id=inst.next_event_id, timestamp=now), *new]


def _take(
    untaken: Sequence[Event],
    events: list[HistoryEvent],
    sources: list[Pending],
    consumed: list[str],
) -> tuple[list[HistoryEvent], list[str], list[Pending]]:
    """Split a turn's events (its ``TurnStarted``, if any, then one per source) into
    those the run took (renumbered, with the messages they consume) and the pending
    items of those it left, for the next run."""
    if not untaken:
        return events, consumed, []
    left_ids = {event.event_id for event in untaken}
    head = len(events) - len(sources)
    taken, left = events[:head], []
    for event, source in zip(events[head:], sources, strict=True):
        if event.event_id in left_ids:
            left.append(source)
        else:
            taken.append(event)
    left_msgs = {msg_id for msg_id, _, _ in left}
    taken = _numbered(taken, events[0].event_id)
    return taken, [msg_id for msg_id in consumed if msg_id not in left_msgs], left


def _for_good(err: StoreError) -> bool:
    """Whether no retry can fix ``err``: an unreadable object, a key the store refuses."""
    return not err.transient and not isinstance(err, _ANSWERS_OF_STORE)


def _fold(outstanding: dict[int, HistoryEvent], events: list[HistoryEvent]) -> None:
    """Track which scheduled operations still wait for their outcome."""
    for event in events:
        if isinstance(event, _SCHEDULING):
            outstanding[event.task_id] = event
        elif type(event) in _ANSWERS:
            outstanding.pop(event.task_id, None)  # type: ignore[union-attr]


class Engine:
    """Turns, commits, dispatch and recovery for one runtime process."""

    def __init__(
        self,
        registry: Registry,
        store: ObjectStore,
        clock: Clock,
        codec: PayloadCodec,
        *,
        max_concurrent_workflows: int,
        max_concurrent_activities: int,
        poll_interval: float,
        max_resident_workflows: int | None = None,
        eviction: EvictionPolicy | None = None,
        memo_store: MemoStore | None = None,
        memo_retention: timedelta | None = None,
        ids: IdSource | None = None,
        hooks: EngineHooks | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.registry = registry
        self.executor: Executor = executor or LocalExecutor(registry, codec, memo_store)
        self.ids = ids or IdSource()
        self._hooks = hooks
        self.memo_store = memo_store
        self._memo_retention = memo_retention
        self.store = store
        # a store whose calls never suspend cannot be cancelled mid-commit: no shield needed
        self._store_never_suspends = bool(getattr(store, "never_suspends", False))
        self.clock = clock
        self.codec = codec
        self._max_turns = max_concurrent_workflows
        self._max_activities = max_concurrent_activities
        self._turns = 0  # turns in progress, in turn workers or inline after an activity
        self._done_waiters: dict[str, anyio.Event] = {}
        self._poll_interval = poll_interval
        self._instances: dict[str, _Instance] = {}
        self._inflight: set[tuple[str, int, int]] = set()
        # the timers and sub-workflows this process has under way, per instance: (run, task).
        # Kept while the instance is evicted; cleared when it leaves this process's charge
        # (ended, a new run, purged, its partition dropped), so a load arms exactly what
        # is not armed here.
        self._armed: dict[str, set[tuple[int, int]]] = {}
        self._send: MemoryObjectSendStream[_Instance] | None = None
        self._send_activity: MemoryObjectSendStream[_ActivityWork] | None = None
        self._timers = TimerQueue(clock, self._on_timer, self._notify)
        self._residency = Residency(
            self._instances, self._timers, clock, self.executor.eviction_policy,
            eviction or EvictionPolicy(), max_resident_workflows, self._drop_run,
            lambda: self._queued > 0 or self._turns > 0,
        )  # fmt: skip
        self._evicted = self._residency.evicted  # ids dropped from memory, not finished
        self._tg: anyio.abc.TaskGroup | None = None
        self._busy = 0
        self._queued = 0
        self._changed: anyio.Event | None = None
        self._partitions = 1
        self._leases: Leases | None = None
        self._stale_meta: dict[str, _Instance] = {}  # ended, but their meta write failed

    def configure(self, partitions: int, leases: Leases | None = None) -> None:
        """Before :meth:`run`: the store's partition count, and this process's leases
        when it shares the store with others (None: it runs every partition)."""
        self._partitions = partitions
        self._leases = leases

    def partition(self, instance_id: str) -> int:
        return partition_of(instance_id, self._partitions)

    def owns(self, instance_id: str) -> bool:
        """Whether this process runs the instance (it holds the partition's lease)."""
        leases = self._leases
        return leases is None or leases.owns(partition_of(instance_id, self._partitions))

    def owned_partitions(self) -> list[int]:
        leases = self._leases
        return list(range(self._partitions)) if leases is None else leases.held

    # -- lifecycle ------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Recover, then serve until cancelled."""
        send, receive = anyio.create_memory_object_stream[_Instance](math.inf)
        send_activity, receive_activity = anyio.create_memory_object_stream[_ActivityWork](math.inf)
        try:
            async with (
                send,
                receive,
                send_activity,
                receive_activity,
                anyio.create_task_group() as tg,
            ):
                self._send, self._send_activity, self._tg = send, send_activity, tg
                for _ in range(self._max_turns):
                    tg.start_soon(self._serve, receive, self._turn_from_queue)
                for _ in range(self._max_activities):
                    tg.start_soon(self._serve, receive_activity, self._run_activity)
                if self._leases is None:
                    try:
                        await self.recover_all()
                    except StoreError as err:
                        if not err.transient:
                            raise
                        log.warning("recovery at start failed, retrying: %s", err)
                        self._spawn_guarded(self.recover_all)
                else:  # each partition is recovered as its lease is taken
                    await tg.start(self._leases.run)
                tg.start_soon(self._timers.run)
                tg.start_soon(self._poll_loop)
                if isinstance(self.clock, MockClock) and self.clock.auto_advance:
                    tg.start_soon(self._auto_advance, self.clock)
                task_status.started()
        finally:
            self._send = self._send_activity = self._tg = None  # stopped: see `running`
            for inst in self._instances.values():  # unwind suspended coroutines now
                self._drop_run(inst)
            await self._flush_stale_meta()

    @property
    def running(self) -> bool:
        return self._tg is not None

    async def _flush_stale_meta(self) -> None:
        """On the way out: one more try at the meta of ended instances whose last write
        failed, so listings do not show them running until the next start."""
        with anyio.CancelScope(shield=True):  # one try each; the store's own timeouts bound it
            for inst in list(self._stale_meta.values()):
                with contextlib.suppress(StoreError):
                    await self._write_meta_or_raise(inst)

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._tg is not None, "the engine is not running"
        self._tg.start_soon(fn, *args)

    def _spawn_guarded(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run background work that counts as busy and, if the store fails transiently,
        runs again after a backoff on the Clock."""
        self.busy_enter()
        self._spawn(self._guarded, fn, args)

    async def _guarded(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        _CLAIM.set(None)  # started from an activity worker: its claim is not ours
        try:
            await fn(*args)
        except StoreError as err:
            if err.transient:
                log.warning("%s failed on the store, retrying: %s", fn.__name__, err)
                retry = (self._spawn_guarded, fn, *args)
                self._timers.add(self.clock.now() + _STORE_RETRY, retry)
            elif _for_good(err):
                await self._fail_for_good(fn.__name__, err)
            else:  # a race lost to another writer: whoever won goes on
                log.warning("%s gave up: %s", fn.__name__, err)
        finally:
            self.busy_exit()

    async def _fail_for_good(self, what: str, err: StoreError) -> None:
        """A store error no retry can fix (an unreadable object, a key the store
        refuses) fails the instance whose object it names, if this process runs it;
        never the runtime."""
        log.error("%s failed for good: %s", what, err)
        instance_id = instance_of_key(err.key)
        if instance_id is None or not self.owns(instance_id):
            return  # not an instance's object, or another process runs that instance
        try:
            found = await read_meta(self.store, instance_id)
            meta, etag = found if found is not None else (None, None)
            await self._fail_corrupt(instance_id, meta, etag, err)
        except StoreError:
            log.exception("could not record the failure of %r", instance_id)

    # -- idleness (for MockClock auto-advance) --------------------------------------

    def _notify(self) -> None:
        if self._changed is not None:  # only tests and auto-advance ever wait for it
            self._changed.set()
            self._changed = None

    async def _wait_changed(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def busy_enter(self) -> None:
        self._busy += 1

    def busy_exit(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._notify()

    @property
    def idle(self) -> bool:
        """No turn, activity or client call in progress, and no turn waiting to run."""
        return self._busy == 0 and self._queued == 0

    async def wait_idle(self) -> None:
        """Return once the engine is idle and stays so after other tasks had a go."""
        while True:
            if self.idle:
                for _ in range(8):
                    await anyio.lowlevel.checkpoint()
                if self.idle:
                    return
            else:
                await self._wait_changed()

    async def _auto_advance(self, clock: MockClock) -> None:
        while True:
            await self.wait_idle()
            deadline = self._timers.next_deadline()
            if deadline is not None and deadline > clock.now():
                clock.set(deadline)
            await self._wait_changed()

    # -- queueing turns -------------------------------------------------------------

    def _enqueue(self, inst: _Instance) -> None:
        # a parked instance takes a turn only to apply control messages
        parked = inst.parked and not any(isinstance(e, CONTROL) for _, _, e in inst.pending)
        if not (inst.queued or inst.running or inst.loading or parked or inst.backing_off):
            inst.queued = True
            self._queued += 1
            assert self._send is not None, "the engine is not running"
            self._send.send_nowait(inst)

    def deliver(
        self, instance_id: str, event: Event, run_start: int = _ANY_RUN, msg_id: str | None = None
    ) -> None:
        """Hand an event to an instance for its next turn (loading it if needed)."""
        inst = self._live(instance_id)
        if inst is None:
            self._spawn_guarded(self._load_and_deliver, instance_id, (msg_id, run_start, event))
            return
        self._hand(inst, [(msg_id, run_start, event)])

    async def _load_and_deliver(self, instance_id: str, item: Pending) -> None:
        inst = self._live(instance_id)
        if inst is None:
            await self._residency.admit()  # under a cap, a mass wake-up loads in turn
            try:
                if await self.recover(instance_id, then=item) is None:
                    # not run here now (ended, or its lease lapsed): the event is dropped,
                    # so nothing of the instance counts as armed here any more
                    self._armed.pop(instance_id, None)
            finally:
                self._residency.loaded()
            return
        await self._then_found(inst, item)

    def _live(self, instance_id: str) -> _Instance | None:
        """The instance in memory, unless that copy has ended: then it is not the
        instance any more (another process may have begun a new run under its id), and
        the store says what runs."""
        inst = self._instances.get(instance_id)
        return inst if inst is not None and not inst.status.is_terminal else None

    def _hand(self, inst: _Instance, items: list[Pending]) -> None:
        """Give events to a resident instance for its next turn. A fired timer is no
        longer armed here once its firing is in the instance's hands."""
        inst.pending.extend(items)
        self._disarm_fired(inst.id, items)
        if inst.pending:
            self._enqueue(inst)

    def _arm(self, instance_id: str, run_start: int, task_id: int) -> bool:
        """Note a timer or sub-workflow as under way here; False if it already is."""
        armed = self._armed.setdefault(instance_id, set())
        if (run_start, task_id) in armed:
            return False
        armed.add((run_start, task_id))
        return True

    def _disarm_fired(self, instance_id: str, items: list[Pending]) -> None:
        armed = self._armed.get(instance_id)
        if armed:
            for _, run_start, event in items:
                if type(event) is TimerFired:
                    armed.discard((run_start, event.task_id))

    async def _serve(
        self, receive: MemoryObjectReceiveStream[Any], handle: Callable[[Any], Awaitable[None]]
    ) -> None:
        """A worker: take queued items one by one. Work that never suspends (an in-memory
        store, an activity that does not await) would hold the loop, so it yields to
        other tasks every few items."""
        streak = 0
        while True:
            try:
                item = receive.receive_nowait()
            except anyio.WouldBlock:
                item = await receive.receive()
                streak = 0
            else:
                streak += 1
                if streak >= _FAIR_STREAK:
                    streak = 0
                    await anyio.lowlevel.checkpoint()
            await handle(item)

    async def _turn_from_queue(self, inst: _Instance) -> None:
        self._queued -= 1
        inst.queued = False
        await self._run_turn(inst)

    async def _run_turn(self, inst: _Instance) -> None:
        inst.running = True
        self._busy += 1
        self._turns += 1
        try:
            await self._turn(inst)
        except StoreError as err:
            if not _for_good(err) or instance_of_key(err.key) != inst.id:
                log.warning("turn of %r failed on the store: %s; reloading", inst.id, err)
                self._retry_later(inst)
            else:
                await self._fail_for_good(f"turn of {inst.id!r}", err)
        except _NotLeased:
            log.info("turn of %r not committed: the partition's lease is not held", inst.id)
            self._retry_later(inst)
        except Exception:  # a bug must not take the whole runtime down with it
            log.exception("turn of %r failed; retrying after a backoff", inst.id)
            self._retry_later(inst)
        finally:
            inst.running = False
            self._turns -= 1
            needs_turn = inst.pending or inst.status is WorkflowStatus.PENDING
            if needs_turn and self._instances.get(inst.id) is inst:
                self._enqueue(inst)
            self._residency.evict_to_capacity()
            self.busy_exit()

    # -- a turn ---------------------------------------------------------------------

    async def _turn(self, inst: _Instance) -> None:
        pending, inst.pending = inst.pending, []
        try:
            await self._turn_with(inst, pending)
        except BaseException:
            # Nothing was committed: keep the events for the next attempt.
            if inst.seq_at_turn_start == inst.seq:
                inst.pending = pending + inst.pending
            raise

    async def _turn_with(self, inst: _Instance, pending: list[Pending]) -> None:
        inst.seq_at_turn_start = inst.seq
        if inst.status.is_terminal:
            self._discard_messages(inst, pending)
            if self._instances.get(inst.id) is inst and not inst.pending:
                del self._instances[inst.id]
            return
        if inst.parked:
            await self._parked_turn(inst, pending)
            return
        now = self.clock.now()
        new, sources, consumed = self._new_events(inst, pending, inst.next_event_id + 1, now)
        first_turn = inst.status is WorkflowStatus.PENDING
        if not new and not first_turn and not consumed:
            self._residency.note_waiting(inst)  # nothing new (a duplicate): still evictable
            return
        run = inst.run
        if run is None:
            try:
                run = await self._rebuild(inst)
            except NonDeterminismError as err:
                await self._commit_failure(inst, err)
                return
            except UnknownWorkflowError as err:
                log.warning(
                    "instance %r waits for a worker that has its workflow: %s", inst.id, err
                )
                inst.parked = True
                inst.reason = f"waiting for a worker that runs it: {err}"
                await self._parked_turn(inst, pending, reason_changed=True)
                return
            if run is None:  # the log moved on under us; reloaded
                inst.pending = pending + inst.pending
                return
        events = _turn_events(inst, run, new, first_turn, now)
        try:
            actions = await run.turn(events, first_turn=first_turn)
        except NonDeterminismError as err:
            self._drop_run(inst)
            await self._commit_failure(inst, err)
            return
        events, consumed, left = _take(run.untaken, events, sources, consumed)
        new_events, next_run, status = self._record_actions(
            inst, run, actions, inst.next_event_id + len(events), now
        )
        if next_run:
            # the new run skips the old run's messages that may still be in the inbox
            consumed += await self._undeleted(inst, consumed)
        record = TurnRecord(
            seq=inst.seq + 1,
            status=status,
            events=events + new_events,
            next_run=next_run,
            consumed=consumed,
            custom_status=run.custom_status,
        )
        if not await self._commit(inst, record):
            inst.pending = pending + inst.pending
            self._drop_run(inst)
            await self._reload(inst)
            return
        inst.pending = left + inst.pending  # what the run did not take goes to the next
        run.committed(record.events)
        if self._hooks is not None:
            self._hooks.committed(inst.id, record)
        await self._after_commit(inst, record)

    def _new_events(
        self, inst: _Instance, pending: list[Pending], first_id: int, now: Any
    ) -> tuple[list[HistoryEvent], list[Pending], list[str]]:
        """The events of ``pending`` that a turn takes, numbered from ``first_id``, the
        pending item each came from, and the inbox messages they consume: each message
        once, and an outcome only if it is for the current run and answers an operation
        that still waits for it."""
        events: list[HistoryEvent] = []
        sources: list[Pending] = []
        consumed: list[str] = []
        answered: set[int] = set()
        for item in pending:
            msg_id, run_start, event = item
            if msg_id is not None:
                if msg_id in inst.consumed or msg_id in consumed:
                    continue
                consumed.append(msg_id)
            elif run_start != _ANY_RUN and run_start != inst.run_start:
                continue
            if _addressed_elsewhere(inst, event):
                self._take_freed_child_id(inst, event)
                continue
            answers = _ANSWERS.get(type(event))
            if answers is not None:
                task_id: int = event.task_id  # type: ignore[attr-defined]
                scheduled = inst.outstanding.get(task_id)
                if type(scheduled) is not answers or task_id in answered:
                    continue
                child_id = getattr(event, "instance_id", "")
                if child_id and getattr(scheduled, "instance_id", child_id) != child_id:
                    continue
                answered.add(task_id)
            event_id = first_id + len(events)
            events.append(msgspec.structs.replace(event, event_id=event_id, timestamp=now))  # type: ignore[arg-type]
            sources.append(item)
        return events, sources, consumed

    async def _parked_turn(
        self, inst: _Instance, pending: list[Pending], *, reason_changed: bool = False
    ) -> None:
        """A turn of an instance whose workflow is not registered here: apply the
        control messages (suspend, resume, terminate), which need no workflow code, and
        keep every other event for a worker that has the code.

        The record holds the control events alone, with no ``TurnStarted`` (the code
        took no turn), so a worker that has the code replays them where they happened.
        A run whose code has not taken its first turn (a rerun's kept turns are not its
        own) stays PENDING once resumed: its first turn is still to come."""
        control = [item for item in pending if isinstance(item[2], CONTROL)]
        rest = [item for item in pending if not isinstance(item[2], CONTROL)]
        now = self.clock.now()
        events, _, consumed = self._new_events(inst, control, inst.next_event_id, now)
        if not events:
            inst.pending = rest + inst.pending
            if reason_changed:
                await self._write_meta(inst)
            return
        loaded = await load_run(self.store, inst.id, self._meta_hint(inst))
        if loaded is None or loaded.last_seq != inst.seq:
            inst.pending = pending + inst.pending
            await self._reload(inst)
            return
        status = inst.status
        for i, event in enumerate(events):
            if isinstance(event, WorkflowTerminated):
                del events[i + 1 :]  # the run ends here: what follows is for nobody
                status = WorkflowStatus.TERMINATED
                consumed += [msg_id for msg_id, _, _ in pending if msg_id is not None]
                rest = []
            elif isinstance(event, WorkflowSuspended):
                status = WorkflowStatus.SUSPENDED
            elif status is WorkflowStatus.SUSPENDED:
                status = WorkflowStatus.RUNNING if loaded.turn_taken else WorkflowStatus.PENDING
        record = TurnRecord(
            seq=inst.seq + 1, status=status, events=events, consumed=sorted(set(consumed)),
            custom_status=inst.custom_status,
        )  # fmt: skip
        if not await self._commit(inst, record):
            inst.pending = pending + inst.pending
            await self._reload(inst)
            return
        inst.pending = rest + inst.pending
        if status.is_terminal:
            inst.parked, inst.reason = False, ""  # it waits for nothing any more
        if self._hooks is not None:
            self._hooks.committed(inst.id, record)
        await self._after_commit(inst, record)

    async def _undeleted(self, inst: _Instance, consumed: list[str]) -> list[str]:
        """The messages the run consumed before this turn that are still in the inbox (their
        delete failed or has not run yet). Only these can reach a new run again, so its
        first record names them, and not every message the instance ever consumed."""
        listed = await self.store.list(inbox_prefix(inst.id))
        return sorted(inst.consumed.intersection(listed).difference(consumed))

    def _take_freed_child_id(self, inst: _Instance, event: Event) -> None:
        """A child's answer to another run of this instance: that child has ended, so a
        child this run waits for under the same id (whatever its task id) can start."""
        if isinstance(event, ChildWorkflowCompleted | ChildWorkflowErrored):
            for scheduled in list(inst.outstanding.values()):
                if (
                    isinstance(scheduled, ChildWorkflowScheduled)
                    and scheduled.instance_id == event.instance_id
                ):
                    self._spawn_guarded(self._start_child, _child_of(inst, scheduled), scheduled)

    def _record_actions(
        self, inst: _Instance, run: TurnRunner, actions: list[Action], event_id: int, now: Any
    ) -> tuple[list[HistoryEvent], list[HistoryEvent], WorkflowStatus]:
        """Turn the actions into history events; work out the status after the turn."""
        events: list[HistoryEvent] = []
        next_run: list[HistoryEvent] = []
        status = WorkflowStatus.SUSPENDED if run.suspended else WorkflowStatus.RUNNING
        for action in actions:
            event: HistoryEvent
            match action:
                case ScheduleActivity():
                    event = ActivityScheduled(
                        event_id=event_id, timestamp=now, task_id=action.task_id,
                        name=action.name, input=action.input, attempt=action.attempt,
                        step=action.step, execution_id=action.execution_id,
                    )  # fmt: skip
                case StartTimer():
                    event = TimerCreated(
                        event_id=event_id, timestamp=now, task_id=action.task_id,
                        fire_at=action.fire_at, purpose=action.purpose,
                    )  # fmt: skip
                case StartChildWorkflow():
                    event = ChildWorkflowScheduled(
                        event_id=event_id, timestamp=now, task_id=action.task_id,
                        name=action.name, instance_id=action.instance_id, input=action.input,
                    )  # fmt: skip
                case RecordPatch():
                    event = PatchApplied(event_id=event_id, timestamp=now, patch_id=action.patch_id)
                case CompleteWorkflow():
                    event, status = (
                        WorkflowCompleted(event_id=event_id, timestamp=now, result=action.result),
                        WorkflowStatus.COMPLETED,
                    )
                case FailWorkflow():
                    event = WorkflowErrored(
                        event_id=event_id, timestamp=now, failure=action.failure
                    )
                    status = WorkflowStatus.FAILED
                case ContinueAsNew():
                    event = ContinuedAsNew(
                        event_id=event_id, timestamp=now, input=action.input,
                        carryover=action.carryover,
                    )  # fmt: skip
                    status = WorkflowStatus.PENDING
                    started = WorkflowStarted(
                        event_id=0, timestamp=now, name=inst.name, input=action.input,
                        run_id=self.ids.run_id(), parent=inst.parent, first_task_id=run.task_count,
                        version=inst.started.version, step_base=inst.started.step_base,
                    )  # fmt: skip
                    next_run = [started]
                    next_run.extend(
                        msgspec.structs.replace(e, event_id=i, timestamp=now)
                        for i, e in enumerate(action.carryover, start=1)
                    )
            events.append(event)
            event_id += 1
        if run.terminated and status not in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED):
            status = WorkflowStatus.TERMINATED
        return events, next_run, status

    async def _commit(self, inst: _Instance, record: TurnRecord) -> bool:
        """Write ``log/{seq}`` once; False if another writer holds that seq."""
        key = log_key(inst.id, record.seq)
        data = encode(record)
        leases = self._leases
        if leases is not None and not leases.can_commit(self.partition(inst.id)):
            raise _NotLeased(inst.id)
        with (
            contextlib.nullcontext()
            if self._store_never_suspends
            else anyio.CancelScope(shield=True)
        ):
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
        return False  # not reached: the shielded scope is never cancelled

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

    # -- after the commit -----------------------------------------------------------

    async def _after_commit(self, inst: _Instance, record: TurnRecord) -> None:
        inst.seq = record.seq
        inst.next_event_id += len(record.events)
        inst.consumed.update(record.consumed)
        custom_changed = inst.custom_status != record.custom_status
        inst.custom_status = record.custom_status
        previous = inst.status
        inst.status = WorkflowStatus(record.status)
        outstanding = inst.outstanding
        ended = inst.status.is_terminal
        for event in record.events:
            if isinstance(event, _SCHEDULING):
                outstanding[event.task_id] = event
                if not ended or isinstance(event, ChildWorkflowScheduled):
                    self._dispatch(inst, event)  # fire-and-forget sub-workflows still start
            elif type(event) in _ANSWERS:
                outstanding.pop(event.task_id, None)  # type: ignore[union-attr]
        told = True
        if record.next_run:
            self._start_new_run(inst, record)
        elif inst.status.is_terminal:
            self._finish(inst, record)
            if inst.parent is not None:
                told = await self._tell_parent(inst)
        if inst.status.is_terminal:
            await self._mark_terminal(inst.id)
        if told and (
            inst.status is not previous
            or inst.status.is_terminal
            or record.next_run
            or custom_changed
            or record.seq - inst.meta_seq >= _META_EVERY
        ):
            await self._write_meta(inst)
        if inst.status.is_terminal:
            self._wake_waiters(inst)
        elif not record.next_run:
            self._residency.note_waiting(inst)
        if record.consumed:
            self._spawn(self._delete_messages, inst.id, list(record.consumed))

    def _dispatch(self, inst: _Instance, event: HistoryEvent) -> None:
        if isinstance(event, ActivityScheduled):
            key = (inst.id, inst.run_start, event.task_id)
            if key not in self._inflight:
                self._inflight.add(key)
                self._busy += 1
                work = (inst.id, inst.name, inst.run_start, event)
                claim = _CLAIM.get()
                if claim is not None and not claim:
                    claim.append(work)  # the activity worker running this turn takes it next
                else:
                    assert self._send_activity is not None, "the engine is not running"
                    self._send_activity.send_nowait(work)
        elif isinstance(event, TimerCreated):
            if self._arm(inst.id, inst.run_start, event.task_id):
                payload = (inst.id, inst.run_start, event.task_id, event.fire_at)
                self._timers.add(event.fire_at, payload)
        elif isinstance(event, ChildWorkflowScheduled) and self._arm(
            inst.id, inst.run_start, event.task_id
        ):
            self._spawn_guarded(self._start_child, _child_of(inst, event), event)

    def _on_timer(self, payload: tuple[Any, ...]) -> None:
        if callable(payload[0]):  # work deferred after a store error
            payload[0](*payload[1:])
            return
        instance_id, run_start, task_id, fire_at = payload
        if (run_start, task_id) not in self._armed.get(instance_id, ()):
            return  # disarmed since (the run ended, or the instance left this process)
        self.deliver(instance_id, TimerFired(task_id=task_id, fire_at=fire_at), run_start)

    async def _run_activity(self, work: _ActivityWork) -> None:
        """Run activity attempts in this worker: each attempt, then (if the instance is
        idle and a turn slot is free) its next turn, then the first activity that turn
        scheduled. A sequential workflow then runs step after step with no hand-off."""
        claim: list[_ActivityWork] = []
        token = _CLAIM.set(claim)
        try:
            streak = 0
            while True:
                await self._run_attempt(work)
                if not claim:
                    return
                work = claim.pop()
                streak += 1
                if streak >= _FAIR_STREAK:
                    streak = 0
                    await anyio.lowlevel.checkpoint()
        finally:
            _CLAIM.reset(token)
            if claim and self._send_activity is not None:  # not run yet: back to the pool
                with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                    self._send_activity.send_nowait(claim.pop())

    async def _run_attempt(self, work: _ActivityWork) -> None:
        instance_id, workflow_name, run_start, scheduled = work
        try:
            outcome = await self.executor.run_activity(instance_id, workflow_name, scheduled)
            copies = 1
            if self._hooks is not None:
                await self._hooks.before_delivery(instance_id, outcome)
                copies = self._hooks.deliveries(instance_id, outcome)
            self._inflight.discard((instance_id, run_start, scheduled.task_id))
            inst = self._instances.get(instance_id)
            if inst is None or inst.queued or inst.running or inst.loading or inst.parked:
                for _ in range(copies):
                    self.deliver(instance_id, outcome, run_start)
            else:
                inst.pending.extend([(None, run_start, outcome)] * copies)
                if self._turns < self._max_turns:
                    await self._run_turn(inst)
                else:
                    self._enqueue(inst)
        finally:
            self._inflight.discard((instance_id, run_start, scheduled.task_id))
            self.busy_exit()

    async def _start_child(
        self, parent: ParentRef, scheduled: ChildWorkflowScheduled, *, reuse: bool = False
    ) -> None:
        """Start the sub-workflow of the parent's run ``parent``, or settle with the
        instance that holds its id (``reuse``: replace that ended instance)."""
        async with self._child_errors(parent, scheduled):
            try:
                created = await create_instance(
                    self.store, self.clock.now(), scheduled.instance_id, scheduled.name,
                    scheduled.input, parent=parent, run_id=self.ids.run_id(), reuse=reuse,
                    memo=self.memo_store if reuse else None,
                    version=self._newest_version(scheduled.name),
                )  # fmt: skip
            except InstanceExistsError as err:
                await self._settle_child(parent, scheduled, err)
                return
            await self.announce_created(scheduled.instance_id, created)

    async def _settle_child(
        self,
        parent: ParentRef,
        scheduled: ChildWorkflowScheduled,
        err: InstanceExistsError | None = None,
    ) -> None:
        """The sub-workflow's id is taken (``err``), or may be (a recovery). The child of
        this very run (a re-dispatch): tell the parent if it ended. The child of another
        run of this parent (the parent was started again with ``reuse=True``, or rerun):
        the new run never joins it, it gets a child of its own with its own input. An
        ended one is replaced at once; a running one is terminated first, and its end,
        reported to the old run, brings the parent back here to replace it. Any other
        instance: the parent's call fails, as the id is someone else's."""
        async with self._child_errors(parent, scheduled):
            child_id = scheduled.instance_id
            found = await read_meta(self.store, child_id)
            existing = await load_run(self.store, child_id, found[0] if found else None)
            if existing is None:  # never begun (or purged meanwhile)
                await self._start_child(parent, scheduled)
                return
            holder = existing.started.parent
            if holder is not None and holder.same_run(parent):
                if existing.status.is_terminal:
                    await self._notify_parent_from_log(existing)
                else:  # announced again: its creator may have failed or died before
                    await self.nudge(child_id)  # ringing the bell of the child's owner
            elif holder is None or holder.instance_id != parent.instance_id:
                self.deliver(parent.instance_id, ChildWorkflowErrored(
                    task_id=scheduled.task_id, instance_id=child_id, parent_run=parent.run_id,
                    failure=failure_from_exception(err or InstanceExistsError(child_id)),
                ))  # fmt: skip
            elif existing.status.is_terminal:
                await self._start_child(parent, scheduled, reuse=True)
            else:
                reason = f"replaced by the child of a new run of {parent.instance_id!r}"
                await self._tell(child_id, WorkflowTerminated(reason=reason, parent=holder))

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
        inst.run = self._new_run(inst, list(record.next_run))
        self._enqueue(inst)

    def _finish(self, inst: _Instance, record: TurnRecord) -> None:
        inst.output, inst.failure = record_outcome(record)
        if inst.status is WorkflowStatus.TERMINATED:
            self._terminate_children(inst)
        self._drop_run(inst)
        self._armed.pop(inst.id, None)
        inst.outstanding.clear()

    def _terminate_children(self, inst: _Instance) -> None:
        """A terminated run terminates the sub-workflows it still waits on (and they
        theirs), as Durable Task's recursive terminate and Temporal's default parent
        close policy do. The terminate names the run: an instance that took the child's
        id since then ignores it."""
        for event in inst.outstanding.values():
            if isinstance(event, ChildWorkflowScheduled):
                reason = f"its parent {inst.id!r} was terminated"
                terminate = WorkflowTerminated(reason=reason, parent=_child_of(inst, event))
                self._spawn_guarded(self._tell, event.instance_id, terminate)

    async def _tell_parent(self, inst: _Instance) -> bool:
        """The instance ended: tell its parent before its meta says so (a new owner of
        the child that finds the meta terminal takes the parent as told). False if the
        store failed: a retry tells the parent, then writes the meta."""
        assert inst.parent is not None
        event = _parent_event(inst.parent, inst.id, inst.status, inst.output, inst.failure)
        try:
            await self._tell(inst.parent.instance_id, event)
        except StoreError as err:
            if _for_good(err):
                await self._fail_for_good(f"telling the parent of {inst.id!r}", err)
                return True
            log.warning("could not tell the parent of %r yet: %s", inst.id, err)
            self._spawn_guarded(self._tell_then_write_meta, inst, event)
            return False
        return True

    async def _tell_then_write_meta(self, inst: _Instance, event: HistoryEvent) -> None:
        assert inst.parent is not None
        await self._tell(inst.parent.instance_id, event)
        await self._write_meta(inst)

    async def _tell(self, instance_id: str, event: HistoryEvent) -> None:
        """Hand an event to another instance: directly if this process runs it, else
        through its inbox and its partition's wakeups, for the process that does."""
        if self.owns(instance_id) and self.running:
            self.deliver(instance_id, event)
        else:
            await self._post(instance_id, event)

    async def _post(self, instance_id: str, event: HistoryEvent) -> None:
        msg_id = self.ids.message_id(int(self.clock.now().timestamp() * 1e9))
        await send_message(self.store, instance_id, msg_id, event)
        await self.store.put(wakeup_key(instance_id, self.partition(instance_id)), b"")

    async def _notify_parent_from_log(self, child: RunLog) -> None:
        """An ended child found in the store: tell its parent (again: a parent drops an
        answer it already has)."""
        parent = child.started.parent
        if parent is not None:
            output, failure = child.outcome()
            event = _parent_event(parent, child.instance_id, child.status, output, failure)
            await self._tell(parent.instance_id, event)

    def _wake_waiters(self, inst: _Instance) -> None:
        if (done := self._done_waiters.pop(inst.id, None)) is not None:
            done.set()
        self._evicted.discard(inst.id)
        # A finished instance needs no memory beyond what waiters read right now.
        if self._instances.get(inst.id) is inst and not inst.pending:
            del self._instances[inst.id]

    async def _mark_terminal(self, instance_id: str) -> None:
        """Start the memo retention window (only when retention is on)."""
        if self.memo_store is None or self._memo_retention is None:
            return
        try:
            await self.memo_store.mark_terminal(instance_id, self.clock.now())
        except StoreError as err:
            log.warning("could not write the terminal marker of %r: %s", instance_id, err)

    async def _write_meta(self, inst: _Instance) -> None:
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
            version=inst.started.version, reason=inst.reason,
        )  # fmt: skip
        inst.meta_etag = await write_meta(self.store, meta, inst.meta_etag)
        inst.meta_seq = inst.seq
        self._stale_meta.pop(inst.id, None)

    async def _delete_messages(self, instance_id: str, msg_ids: list[str]) -> None:
        for msg_id in msg_ids:
            try:
                await self.store.delete(inbox_key(instance_id, msg_id))
            except StoreError:
                pass  # consumed ids are remembered; a leftover is skipped on reload

    def _discard_messages(self, inst: _Instance, pending: list[Pending]) -> None:
        """Messages that reached an ended run: delete them, unless a new run began under
        the id meanwhile (they may be its messages; a reuse clears the old run's)."""
        ids = [msg_id for msg_id, _, _ in pending if msg_id is not None]
        if ids:
            self._spawn_guarded(self._delete_unless_new_run, inst.id, inst.seq, ids)

    async def _delete_unless_new_run(self, instance_id: str, seq: int, msg_ids: list[str]) -> None:
        try:
            after = await read_record(self.store, instance_id, seq + 1)
        except StoreError as err:
            if err.transient:
                raise  # retried after a backoff
            return  # unreadable: leave the messages be
        if after is None:
            await self._delete_messages(instance_id, msg_ids)

    # -- the replay cache -----------------------------------------------------------

    def _newest_version(self, name: str) -> str:
        return self.executor.newest_version(name)

    def _new_run(self, inst: _Instance, history: list[HistoryEvent]) -> TurnRunner:
        return self.executor.new_run(inst.id, history)

    async def _rebuild(self, inst: _Instance) -> TurnRunner | None:
        """Replay the current run from the log (a cache miss); None if the log moved."""
        loaded = await load_run(
            self.store, inst.id, None if inst.run_start == 0 else self._meta_hint(inst)
        )
        if loaded is None or loaded.last_seq != inst.seq or loaded.run_start != inst.run_start:
            await self._reload(inst)
            return None
        run = self._new_run(inst, loaded.history)
        inst.run = run
        return run

    def _meta_hint(self, inst: _Instance) -> InstanceMeta:
        return InstanceMeta(
            instance_id=inst.id, name=inst.name, status=inst.status, seq=inst.seq,
            run_start=inst.run_start, created_at=inst.created_at, updated_at=inst.created_at,
        )  # fmt: skip

    def _drop_run(self, inst: _Instance) -> None:
        if inst.run is not None:
            inst.run.close()
            inst.run = None

    # -- creation, recovery and reload ----------------------------------------------

    async def announce_created(self, instance_id: str, created: Created) -> None:
        """A run was just created in the store: run it here, or ring the bell of the
        process that owns its partition."""
        if self.owns(instance_id) and self.running:
            self.adopt_created(instance_id, created)
        else:  # another process runs it, or this one has stopped: the next start will
            await self.store.put(wakeup_key(instance_id, self.partition(instance_id)), b"")

    def adopt_created(self, instance_id: str, created: Created) -> None:
        """Take a run just created in the store into memory and queue its first turn."""
        started = created.record.next_run[0]
        assert isinstance(started, WorkflowStarted)
        inst = self._instances.get(instance_id)
        if inst is not None and not inst.status.is_terminal:
            return
        inst = _Instance(instance_id, started, created.meta.created_at)
        inst.seq = inst.run_start = created.record.seq
        inst.next_event_id = len(created.record.next_run)
        inst.meta_etag = created.meta_etag
        inst.meta_seq = created.record.seq if created.meta_etag is not None else -1
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
        self._enqueue(inst)

    async def recover_all(self, partitions: list[int] | None = None) -> None:
        """Load every unfinished instance in the store (or in ``partitions``) and
        re-dispatch its open work."""
        ids = await self.store.list("instances")
        if partitions is not None:
            wanted = set(partitions)
            ids = [i for i in ids if self.partition(i) in wanted]
        limiter = anyio.CapacityLimiter(32)

        async def one(instance_id: str) -> None:
            async with limiter:
                try:
                    await self.recover(instance_id)
                except StoreError as err:
                    if _for_good(err):
                        await self._fail_for_good(f"recovery of {instance_id!r}", err)
                        return
                    log.warning("recovery of %r failed, retrying: %s", instance_id, err)
                    self._spawn_guarded(self.recover, instance_id)

        async with anyio.create_task_group() as tg:
            for instance_id in ids:
                tg.start_soon(one, instance_id)
        try:
            await self.poll_wakeups(partitions)
        except StoreError as err:
            log.warning("polling for messages at start failed: %s", err)

    async def take_partitions(self, partitions: list[int]) -> None:
        """This process just took these partitions' leases: recover their instances, in
        the background (the lease loop must go on renewing meanwhile)."""
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

    async def recover(self, instance_id: str, *, then: Pending | None = None) -> _Instance | None:
        """Load one instance from the store unless it is finished or another process
        runs it; None if nothing to run here. ``then``: an event to deliver to it after
        the messages waiting in its inbox, before it could be evicted again."""
        if (inst := self._live(instance_id)) is not None:
            return await self._then_found(inst, then)
        if not self.owns(instance_id):
            return None
        found = await read_meta(self.store, instance_id)
        meta, etag = found if found is not None else (None, None)
        if (
            meta is not None
            and WorkflowStatus(meta.status).is_terminal
            and not await new_run_after(self.store, meta)
        ):
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
            # read before the instance is in memory (nothing else can take it meanwhile):
            # the messages that wait go ahead of the event this load delivers, and a
            # message delivered with it counts only if the inbox still holds it
            items, set_aside = await self._read_inbox(instance_id, loaded.consumed)
            if then is not None and then[0] is None:
                items.append(then)
        if loaded is None or self._live(instance_id) is not None:
            # loaded by another task meanwhile: what this read found reaches it on its
            # own (its load read the inbox, and each later message is announced)
            if (inst := self._live(instance_id)) is None:
                return None
            await self._note_set_aside(inst, set_aside)
            return await self._then_found(inst, then)
        if not self.owns(instance_id):
            return None  # the partition moved while the log was read
        inst = _Instance(instance_id, loaded.started, loaded.created_at)
        inst.meta_etag = etag
        inst.meta_seq = meta.seq if meta is not None else -1
        self._instances[instance_id] = inst
        self._evicted.discard(instance_id)
        self._load_into(inst, loaded)
        if loaded.status.is_terminal:
            del self._instances[instance_id]
            await self._notify_parent_from_log(loaded)  # before a meta that says it ended
            if meta is None or meta.status != loaded.status:
                # ended, but the process stopped before marking it: finish that now
                inst.output, inst.failure = loaded.outcome()
                await self._mark_terminal(instance_id)
                await self._write_meta(inst)
            return None
        self._hand(inst, items)
        await self._note_set_aside(inst, set_aside)
        if not inst.queued:
            self._residency.note_waiting(inst)
            self._residency.evict_to_capacity()
        return inst

    async def _then_found(self, inst: _Instance, item: Pending | None) -> _Instance:
        """Hand ``item`` to an instance that another task loaded meanwhile. An inbox message
        not seen here yet is read from the inbox instead: a run may have consumed it since
        it was announced, and a run begun after that no longer names it as consumed."""
        msg_id = item[0] if item is not None else None
        if msg_id is None:
            self._hand(inst, [item] if item is not None else [])
            return inst
        if msg_id not in inst.consumed and all(msg_id != p[0] for p in inst.pending):
            await self._scan_inbox(inst)
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
        inst.consumed = loaded.consumed
        inst.outstanding = {}
        _fold(inst.outstanding, loaded.history)
        if loaded.status.is_terminal:
            return
        self._dispatch_open(inst)
        if inst.status is WorkflowStatus.PENDING or inst.pending:
            self._enqueue(inst)

    def _dispatch_open(self, inst: _Instance) -> None:
        """Re-dispatch what history left open and is not under way here: activities,
        timers, sub-workflows."""
        for event in list(inst.outstanding.values()):
            if isinstance(event, ChildWorkflowScheduled):
                # it may have ended, never begun, or hold an older run's child
                if self._arm(inst.id, inst.run_start, event.task_id):
                    self._spawn_guarded(self._settle_child, _child_of(inst, event), event)
            else:
                self._dispatch(inst, event)

    @contextlib.asynccontextmanager
    async def _child_errors(
        self, parent: ParentRef, scheduled: ChildWorkflowScheduled
    ) -> AsyncIterator[None]:
        """Around starting or checking a sub-workflow: a store error no retry can fix
        (its log is unreadable, the store refuses its id) fails the sub-workflow in its
        parent, naming the reason; a transient one is retried."""
        try:
            yield
        except StoreError as err:
            if not _for_good(err):
                raise
            log.error(
                "sub-workflow %r of %r failed: %s", scheduled.instance_id, parent.instance_id, err
            )
            self.deliver(parent.instance_id, ChildWorkflowErrored(
                task_id=scheduled.task_id, instance_id=scheduled.instance_id,
                parent_run=parent.run_id, failure=failure_from_exception(err),
            ))  # fmt: skip

    async def _scan_inbox(self, inst: _Instance) -> None:
        """Queue the inbox messages the log has not consumed yet.

        A new run's consumed ids name only the old run's messages still in the inbox, so
        a scan that a new run began during reads again: what it read may be a message
        the old run consumed and deleted meanwhile."""
        items: list[Pending] = []
        reason = ""
        run_start = -1
        while run_start != inst.run_start:
            run_start = inst.run_start
            items, set_aside = await self._read_inbox(inst.id, inst.consumed)
            reason = set_aside or reason
        self._hand(inst, items)
        await self._note_set_aside(inst, reason)

    async def _note_set_aside(self, inst: _Instance, reason: str) -> None:
        """Say in the instance's ``reason`` (``describe()``) that a message was set aside."""
        if reason:
            inst.reason = reason
            await self._write_meta(inst)

    async def _read_inbox(self, instance_id: str, consumed: set[str]) -> tuple[list[Pending], str]:
        """The inbox messages not in ``consumed``, in the order they were sent, and why
        one was set aside (or ""). A store error propagates, for the caller to retry
        with nothing skipped; only a message that can never be decoded is set aside."""
        items: list[Pending] = []
        set_aside = ""
        for msg_id in await self.store.list(inbox_prefix(instance_id)):
            key = inbox_key(instance_id, msg_id)
            if msg_id in consumed:
                with contextlib.suppress(StoreError):  # a leftover is skipped again
                    await self.store.delete(key)
                continue
            try:
                data = await self.store.get(key)
            except ObjectNotFoundError:
                continue  # applied and deleted meanwhile
            try:
                message = decode_message(data, key)
            except StoreError as err:
                set_aside = await self._set_aside(instance_id, msg_id, data, err)
                continue
            items.append((message.id, _ANY_RUN, message.event))
        return items, set_aside

    async def _set_aside(self, instance_id: str, msg_id: str, data: bytes, err: StoreError) -> str:
        """Move an undecodable inbox message out of the inbox, keeping its bytes for a
        look; returns what ``describe().reason`` says about it."""
        key = unreadable_key(instance_id, msg_id)
        await self.store.put(key, data)
        await self.store.delete(inbox_key(instance_id, msg_id))
        reason = f"inbox message {msg_id} could not be read and was set aside at {key!r}: {err}"
        log.error("instance %r: %s", instance_id, reason)
        return reason

    async def _reload(self, inst: _Instance) -> None:
        """Another writer moved the log (or a write failed): take the log's word."""
        if self._instances.get(inst.id) is not inst or inst.loading:
            return  # a stale object, or another reload is under way
        if not self.owns(inst.id):
            self._forget_here(inst.id)
            return
        self._drop_run(inst)
        inst.loading = True
        self.busy_enter()
        try:
            loaded = await load_run(self.store, inst.id, self._meta_hint(inst))
        except StoreError as err:
            if err.transient:
                inst.loading = False
                self._retry_later(inst)
                return
            await self._fail_corrupt(inst.id, None, inst.meta_etag, err)
            return
        finally:
            inst.loading = False
            self.busy_exit()
        if loaded is None:
            return
        self._load_into(inst, loaded)
        if loaded.status.is_terminal:  # e.g. a terminal commit that landed but said it failed
            inst.output, inst.failure = loaded.outcome()
            await self._notify_parent_from_log(loaded)
            await self._mark_terminal(inst.id)
            await self._write_meta(inst)
            self._wake_waiters(inst)
        elif inst.pending:
            self._enqueue(inst)

    def _retry_later(self, inst: _Instance) -> None:
        """The store failed: try the instance again after a backoff on the Clock (one
        retry at a time; no turn runs until it)"""
        self._drop_run(inst)
        if not inst.backing_off:
            inst.backing_off = True
            self._timers.add(self.clock.now() + _STORE_RETRY, (self._retry_now, inst))

    def _retry_now(self, inst: _Instance) -> None:
        inst.backing_off = False
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
            await write_meta(self.store, failed, etag)
        except StoreError:
            log.exception("could not record the failure of %r", instance_id)
        if inst is not None:
            inst.status, inst.failure = WorkflowStatus.FAILED, failure
            self._drop_run(inst)
        self._armed.pop(instance_id, None)
        self._evicted.discard(instance_id)
        if (done := self._done_waiters.pop(instance_id, None)) is not None:
            done.set()

    # -- messages from outside ------------------------------------------------------

    async def nudge(self, instance_id: str) -> None:
        """Make sure an instance that exists in the store runs somewhere: load it here,
        or ring its owner's bell."""
        if not (self.owns(instance_id) and self.running):
            await self.store.put(wakeup_key(instance_id, self.partition(instance_id)), b"")
        elif instance_id not in self._instances:
            self._spawn_guarded(self.recover, instance_id)

    async def announce_message(self, instance_id: str, message: InboxMessage) -> None:
        """A message this process just wrote to an inbox: apply it here, or ring the
        bell of the process that owns the instance's partition."""
        if self.owns(instance_id) and self.running:
            self.deliver(instance_id, message.event, _ANY_RUN, message.id)
        else:
            await self.store.put(wakeup_key(instance_id, self.partition(instance_id)), b"")

    async def poll_wakeups(self, partitions: list[int] | None = None) -> None:
        """Pick up instances that other processes started or sent messages to: one
        listing per partition this process runs."""
        if partitions is None and self._leases is None:
            # every partition is ours: one listing finds those with a bell rung
            found = await self.store.list(WAKEUPS)
            partitions = [int(p) for p in found if p.isdigit() and int(p) < self._partitions]
        for partition in self.owned_partitions() if partitions is None else partitions:
            for instance_id in await self.store.list(wakeup_prefix(partition)):
                if not self.owns(instance_id):
                    break  # the partition was lost meanwhile
                try:
                    # cleared before the inbox is read: a message written from now on
                    # rings it again, and gets a read of its own
                    await self.store.delete(wakeup_key(instance_id, partition))
                    await self._answer_wakeup(instance_id)
                except StoreError as err:
                    log.warning("wakeup of %r not handled yet: %s", instance_id, err)
                    self._spawn_guarded(self._ring_again, instance_id, partition)

    async def _answer_wakeup(self, instance_id: str) -> None:
        """Someone rang for the instance: load it, or read its inbox if it is here."""
        inst = self._live(instance_id)
        if inst is None:
            await self.recover(instance_id)
        else:
            await self._scan_inbox(inst)

    async def _ring_again(self, instance_id: str, partition: int) -> None:
        """A wakeup could not be answered: ring it again for the next poll."""
        await self.store.put(wakeup_key(instance_id, partition), b"")

    async def _poll_loop(self) -> None:
        interval = timedelta(seconds=self._poll_interval)
        while True:
            await self.clock.sleep_until(self.clock.now() + interval)
            self.busy_enter()
            try:
                await self.poll_wakeups()
            except StoreError as err:
                log.warning("polling for messages failed: %s", err)
            finally:
                self.busy_exit()

    # -- waiting on results ---------------------------------------------------------

    def local(self, instance_id: str) -> _Instance | None:
        return self._instances.get(instance_id)

    async def wait_done(self, instance_id: str) -> bool:
        """Wait until an instance this engine runs (in memory or evicted) ends; False if
        this engine does not run it."""
        inst = self._instances.get(instance_id)
        if inst is None and instance_id not in self._evicted:
            return False
        if inst is not None and inst.status.is_terminal:
            return True
        done = self._done_waiters.get(instance_id)
        if done is None:
            done = self._done_waiters[instance_id] = anyio.Event()
        await done.wait()
        return True

    def is_resident(self, instance_id: str) -> bool:
        """Whether the instance is held in this process's memory."""
        return instance_id in self._instances

    def forget(self, instance_id: str) -> None:
        """Drop an instance from memory (it was purged, or another process runs it):
        nothing of it stays armed here."""
        self._armed.pop(instance_id, None)
        inst = self._instances.pop(instance_id, None)
        if inst is not None:
            self._drop_run(inst)
