"""The engine's shared state and the plumbing every concern uses.

:class:`_EngineBase` holds what one runtime process keeps (its instances, queues, timers,
leases, residency) and the small services every part of the engine calls: spawning
guarded background work, counting busy work for idleness, the replay cache, and
looking up instances. Each concern of the engine is a mixin over this base.
"""

from __future__ import annotations

import logging
import math
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from durable._errors import EngineFailedError, StoreError
from durable._fleet._partitions import partition_of
from durable._ids import IdSource
from durable._log._active import ActiveIndex
from durable._log._reader import read_meta
from durable._log._records import (
    InboxMessage,
    InstanceMeta,
    Post,
    TurnRecord,
    instance_of_key,
)

from ._eviction import EvictionPolicy
from ._executor import LocalExecutor
from ._instance import _ANY_RUN, Pending, _ActivityWork, _for_good, _Instance
from ._lifecycle import (
    LifecycleEvent,
    fire,
)
from ._residency import Residency
from ._timers import TimerQueue

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from durable._clock import Clock, MockClock
    from durable._core._codec import PayloadCodec
    from durable._core._events import (
        ChildWorkflowScheduled,
        Event,
        EventSent,
        HistoryEvent,
        ParentRef,
    )
    from durable._errors import InstanceExistsError
    from durable._fleet._leases import Leases
    from durable._log._instances import Created
    from durable._log._memo import MemoStore
    from durable._log._reader import RunLog
    from durable._observe import Observer
    from durable._registry import Registry
    from durable.store import ObjectStore

    from ._attempts import RunningAttempt
    from ._executor import Executor, TurnRunner
    from ._handover import Handover


__all__ = ["EngineHooks"]

log = logging.getLogger("durable.engine")

_STORE_RETRY = timedelta(seconds=1)  # backoff after a transient store error
_FAIR_STREAK = 32  # queued items a worker takes before it yields to other tasks
# In an activity worker running a turn: where that turn's first new activity goes, so the
# same worker runs it next instead of handing it to another worker.
_CLAIM: ContextVar[list[_ActivityWork] | None] = ContextVar("durable_claim", default=None)


async def supervised(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> None:
    """Run one long-lived task of a runtime's task groups (``kwargs``: ``task_status``
    when started with ``TaskGroup.start``). A task that ends by a cancellation no
    enclosing scope asked for (a stray ``task.cancel()``) would make the group cancel
    every other task without an error, leaving a runtime with no turns, timers, leases
    or sweeps: it fails the runtime loudly instead (the log is the truth; a restart
    recovers what was under way)."""
    try:
        await fn(*args, **kwargs)
    except anyio.get_cancelled_exc_class():
        if anyio.current_effective_deadline() == -math.inf:
            raise  # asked for: the engine is stopping
        name = getattr(fn, "__name__", repr(fn))
        raise EngineFailedError(
            f"engine task {name} ended by a cancellation nobody asked for"
        ) from None


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

    def dropped(self, sender: str, sent: EventSent) -> None:
        """Called when an event one instance sent another is dropped (the receiver does
        not exist, or has ended)."""


class _EngineBase:
    """Shared state and plumbing of one runtime process's engine."""

    # The state lives in slots: every turn reads it many times, and CPython keeps at most
    # 29 attributes of an instance inline (beyond that, each read is a dict lookup). The
    # ``__dict__`` still takes what is not listed here (tests replace methods in it).
    __slots__ = (
        "__dict__", "__weakref__", "_armed", "_attempts", "_busy", "_changed",
        "_commit_waiters", "_done_waiters", "_evicted", "_handovers", "_hooks", "_inflight",
        "_instances", "_leases", "_max_activities", "_max_turns", "_memo_retention",
        "_observe", "_outbox", "_partitions", "_poll_interval", "_queued", "_residency",
        "_send", "_send_activity",
        "_stale_meta", "_status_waiters", "_store_never_suspends", "_tg", "_timers",
        "_turns", "clock", "codec", "executor", "history_retention", "ids", "index",
        "memo_store", "registry", "store",
    )  # fmt: skip

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
        observer: Observer | None = None,
    ) -> None:
        self.registry = registry
        self.executor: Executor = executor or LocalExecutor(
            registry, codec, memo_store, max_concurrent_activities=max_concurrent_activities
        )
        self.ids = ids or IdSource()
        self._hooks = hooks
        self._observe = observer  # spans and metrics; None: telemetry is off
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
        self._status_waiters: dict[str, anyio.Event] = {}  # set at the next status change
        self._poll_interval = poll_interval
        self._instances: dict[str, _Instance] = {}
        self._inflight: set[tuple[str, int, int]] = set()
        # the activity attempts running here, by (instance, run, task): to cancel them
        self._attempts: dict[tuple[str, int, int], RunningAttempt] = {}
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
        self.index = ActiveIndex(store, 1)  # the runs not yet ended, per partition
        self.history_retention: timedelta | None = None  # set: each end is marked for it
        self._leases: Leases | None = None
        self._stale_meta: dict[str, _Instance] = {}  # ended, but their meta write failed
        self._handovers: dict[str, Handover] = {}  # instances whose inbox read is under way
        self._outbox: dict[str, list[Post]] = {}  # per sender: sent, not posted yet
        self._commit_waiters: dict[str, anyio.Event] = {}  # callers waiting for a commit

    def configure(self, partitions: int, leases: Leases | None = None) -> None:
        """Before :meth:`run`: the store's partition count, and this process's leases
        when it shares the store with others (None: it runs every partition)."""
        self._partitions = partitions
        self.index = ActiveIndex(self.store, partitions)
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

    @property
    def running(self) -> bool:
        return self._tg is not None

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._tg is not None, "the engine is not running"
        self._tg.start_soon(supervised, fn, *args)

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

    def _newest_version(self, name: str) -> str:
        return self.executor.newest_version(name)

    def _new_run(self, inst: _Instance, history: list[HistoryEvent]) -> TurnRunner:
        return self.executor.new_run(inst.id, history)

    def _meta_hint(self, inst: _Instance) -> InstanceMeta:
        return InstanceMeta(
            instance_id=inst.id, name=inst.name, status=inst.status, seq=inst.seq,
            run_start=inst.run_start, created_at=inst.created_at, updated_at=inst.created_at,
        )  # fmt: skip

    def _let_go(self, inst: _Instance) -> None:
        """Drop an instance that ended (or was found ended) from memory."""
        del self._instances[inst.id]
        fire(inst, LifecycleEvent.FORGET)

    def _drop_run(self, inst: _Instance) -> None:
        if inst.run is not None:
            inst.run.close()
            inst.run = None

    def local(self, instance_id: str) -> _Instance | None:
        return self._instances.get(instance_id)

    def running_here(self, instance_id: str) -> _Instance | None:
        """The instance's run in this process's memory, if this process runs it now and
        that run has not ended: what the store holds, short of a write under way."""
        inst = self._instances.get(instance_id)
        if inst is None or inst.status.is_terminal or not (self.owns(instance_id) and self.running):
            return None
        return inst

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

    def status_changed(self, instance_id: str) -> anyio.Event | None:
        """An event set when the status of an instance this engine runs next changes
        (take it before reading the status, then wait on it); None if this engine does
        not run the instance."""
        if instance_id not in self._instances and instance_id not in self._evicted:
            return None
        event = self._status_waiters.get(instance_id)
        if event is None:
            event = self._status_waiters[instance_id] = anyio.Event()
        return event

    def _status_now_changed(self, instance_id: str) -> None:
        if (event := self._status_waiters.pop(instance_id, None)) is not None:
            event.set()

    def is_resident(self, instance_id: str) -> bool:
        """Whether the instance is held in this process's memory."""
        return instance_id in self._instances

    def forget(self, instance_id: str) -> None:
        """Drop an instance from memory (it was purged, or another process runs it):
        nothing of it stays armed here."""
        self._armed.pop(instance_id, None)
        inst = self._instances.pop(instance_id, None)
        if inst is not None:
            fire(inst, LifecycleEvent.FORGET)
            self._drop_run(inst)

    if TYPE_CHECKING:  # what one concern calls on another; each is defined in one mixin

        def _enqueue(self, inst: _Instance) -> None: ...

        def deliver(
            self,
            instance_id: str,
            event: Event,
            run_start: int = _ANY_RUN,
            msg_id: str | None = None,
        ) -> None: ...

        def _live(self, instance_id: str) -> _Instance | None: ...

        def _hand(self, inst: _Instance, items: list[Pending]) -> None: ...

        def _reread(self, instance_id: str) -> None: ...

        def _arm(self, instance_id: str, run_start: int, task_id: int) -> bool: ...

        def _disarm(self, instance_id: str, run_start: int, task_id: int) -> None: ...

        def _disarm_fired(self, instance_id: str, items: list[Pending]) -> None: ...

        async def _run_turn(self, inst: _Instance) -> None: ...

        def _take_freed_child_id(self, inst: _Instance, event: Event) -> None: ...

        async def _commit(self, inst: _Instance, record: TurnRecord) -> bool: ...

        async def _commit_failure(self, inst: _Instance, err: Exception) -> None: ...

        async def _after_commit(self, inst: _Instance, record: TurnRecord) -> None: ...

        def _dispatch(self, inst: _Instance, event: HistoryEvent) -> None: ...

        def _cancel_op(self, inst: _Instance, scheduled: HistoryEvent) -> None: ...

        def _arm_deadline(self, inst: _Instance) -> None: ...

        def _on_timer(self, payload: tuple[Any, ...]) -> None: ...

        async def _start_child(
            self, parent: ParentRef, scheduled: ChildWorkflowScheduled, *, reuse: bool = False
        ) -> None: ...

        async def _settle_child(
            self,
            parent: ParentRef,
            scheduled: ChildWorkflowScheduled,
            err: InstanceExistsError | None = None,
        ) -> None: ...

        async def _tell_parent(self, inst: _Instance) -> bool: ...

        async def _tell(self, instance_id: str, event: HistoryEvent) -> None: ...

        async def _send_events(self, inst: _Instance, record: TurnRecord) -> bool: ...

        def _resend(self, inst: _Instance, sends: list[Post]) -> None: ...

        async def announce_message(
            self, instance_id: str, message: InboxMessage, run_start: int | None = None
        ) -> None: ...

        async def _notify_parent_from_log(self, child: RunLog) -> None: ...

        def _wake_waiters(self, inst: _Instance) -> None: ...

        async def _mark_terminal(self, instance_id: str) -> None: ...

        async def _index_end(self, instance_id: str, run_start: int, run_id: str) -> None: ...

        async def _write_meta(self, inst: _Instance) -> None: ...

        async def _delete_messages(self, instance_id: str, msg_ids: list[str]) -> None: ...

        def _discard_messages(self, inst: _Instance, pending: list[Pending]) -> None: ...

        async def _start_waiting(self, instance_id: str) -> set[str]: ...

        async def announce_created(self, instance_id: str, created: Created) -> None: ...

        async def recover(self, instance_id: str) -> _Instance | None: ...

        async def _run_handover(self, instance_id: str) -> _Instance | None: ...

        async def _continue_handover(self, instance_id: str) -> None: ...

        def _hand_read(self, inst: _Instance, items: list[Pending]) -> None: ...

        async def _scan_inbox(self, inst: _Instance) -> None: ...

        async def _note_set_aside(self, inst: _Instance, reason: str) -> None: ...

        async def _read_inbox(
            self, instance_id: str, consumed: set[str], run_start: int, origin: str
        ) -> tuple[list[Pending], str]: ...

        async def _reload(self, inst: _Instance) -> None: ...

        def _retry_later(self, inst: _Instance) -> None: ...

        async def _fail_corrupt(
            self, instance_id: str, meta: InstanceMeta | None, etag: str | None, err: StoreError
        ) -> None: ...

        async def nudge(self, instance_id: str) -> None: ...

        async def poll_wakeups(self, partitions: list[int] | None = None) -> None: ...
