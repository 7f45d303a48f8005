"""``ActivityContext`` and running one activity attempt into its outcome event.

Activities are where side effects happen; they run at least once. An attempt's
outcome is an ``ActivityCompleted`` or ``ActivityErrored`` event for the workflow.
The runtime steers a running attempt through its :class:`Attempt`: cancellation, and
heartbeats (liveness kept in memory, details written to the step's memo, throttled).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.to_thread
from msgspec import Raw

from ._core._events import EPOCH, ActivityCompleted, ActivityErrored, ActivityScheduled
from ._core._failure import failure_from_exception
from ._errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._clock import Clock
    from ._core._codec import PayloadCodec
    from ._log._memo import Memo, MemoStore
    from ._registry import Registry

__all__ = ["ActivityContext", "Attempt", "CancelSignal", "execute_activity"]

log = logging.getLogger("durable.activity")

# heartbeat details are written at most once per this, for a call with no heartbeat_timeout
_THROTTLE_WITHOUT_TIMEOUT = timedelta(seconds=30)


class CancelSignal:
    """Set when the runtime cancels an activity attempt (a timeout, ``future.cancel()``,
    the end of its workflow). A sync activity polls ``is_set()``; an async one is
    cancelled through its cancel scope, and may ``await wait()``. While an attempt waits
    here, a ``MockClock(auto_advance=True)`` may skip time (to the attempt's timeouts)."""

    __slots__ = ("_event", "_is_set", "_on_wait")

    def __init__(self, on_wait: Callable[[bool], None] | None = None) -> None:
        self._is_set = False
        self._event: anyio.Event | None = None
        self._on_wait = on_wait

    def is_set(self) -> bool:
        """Whether the attempt has been cancelled (safe to call from any thread)."""
        return self._is_set

    async def wait(self) -> None:
        """Return once the attempt is cancelled."""
        if self._is_set:
            return
        if self._event is None:
            self._event = anyio.Event()
        if self._on_wait is not None:
            self._on_wait(True)
        try:
            await self._event.wait()
        finally:
            if self._on_wait is not None:
                self._on_wait(False)

    def set(self) -> None:
        """Cancel (on the event loop's thread)."""
        self._is_set = True
        if self._event is not None:
            self._event.set()

    def __repr__(self) -> str:
        return f"CancelSignal(set={self._is_set})"


class Attempt:
    """One attempt as the runtime steers it: its cancel signal and its heartbeats.

    A heartbeat records the time (read by the heartbeat timeout) and, with details,
    queues them for the step's memo: the first write goes at once, later ones at most
    once per ``interval`` (half the heartbeat timeout), and :meth:`finish` writes what
    is still queued when the attempt fails, so the next attempt reads the latest.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        heartbeat_timeout: timedelta | None = None,
        memo_store: MemoStore | None = None,
        instance_id: str = "",
        step: int = -1,
        spawn: Callable[[Callable[[], Any]], None] | None = None,
        on_wait: Callable[[bool], None] | None = None,
    ) -> None:
        self.clock = clock
        self.cancelled = CancelSignal(on_wait)
        self.last_beat = EPOCH  # set by the runtime when it bounds the heartbeats
        self.interval = heartbeat_timeout / 2 if heartbeat_timeout else _THROTTLE_WITHOUT_TIMEOUT
        self._memo_store = memo_store
        self._step = (instance_id, step)
        self._spawn = spawn
        self._hold = on_wait
        self._loop_thread = threading.get_ident()
        self._queued: bytes | None = None  # details not written yet
        self._flushing = False
        self._closed = False
        self._wake: anyio.Event | None = None
        self._sleep: anyio.CancelScope | None = None
        self._lock: anyio.Lock | None = None  # made on the first write: cheap attempts

    @property
    def unwritten(self) -> bool:
        """Whether heartbeat details are queued or being written (see :meth:`finish`)."""
        return self._queued is not None or self._flushing

    def beat(self, details: bytes | None) -> None:
        """A heartbeat (from the activity's thread, or the loop's)."""
        self.last_beat = self.clock.now()
        if details is None or self._memo_store is None or self._closed:
            return
        self._queued = details
        if threading.get_ident() == self._loop_thread:
            self._kick()
        else:
            try:
                anyio.from_thread.run_sync(self._kick)
            except RuntimeError:  # a thread anyio did not start: finish() writes it
                pass

    def _kick(self) -> None:
        if self._closed:
            return
        if self._wake is not None:
            self._wake.set()
        elif not self._flushing and self._spawn is not None:
            self._flushing = True
            self._spawn(self._flush_loop)

    async def _flush_loop(self) -> None:
        """Write queued details, then wait out the throttle interval before the next."""
        try:
            while not self._closed:
                if self._queued is None:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                    self._wake = None
                    continue
                written_at = self.clock.now()
                await self._write()
                with anyio.CancelScope() as self._sleep:
                    await self.clock.sleep_until(written_at + self.interval)
                self._sleep = None
        finally:
            self._flushing = False

    async def _write(self) -> None:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            data, self._queued = self._queued, None
            if data is None or self._memo_store is None:
                return
            if self._hold is not None:
                self._hold(False)  # a store write under way: the runtime is busy
            key = self._memo_store.heartbeat_key(*self._step)
            try:
                await self._memo_store.store.put(key, data)
            except StoreError as err:
                log.warning("heartbeat details not recorded at %r: %s", key, err)
                if self._queued is None:
                    self._queued = data
            finally:
                if self._hold is not None:
                    self._hold(True)

    def cancel(self) -> None:
        """Set the cancel signal (the runtime also cancels the attempt's scope)."""
        self.cancelled.set()

    async def finish(self, *, failed: bool) -> None:
        """The attempt ended: stop the writer; a failed attempt's queued details are
        written now, before its outcome can start the next attempt."""
        self._closed = True
        if self._sleep is not None:
            self._sleep.cancel()
        if self._wake is not None:
            self._wake.set()
        if failed and self._queued is not None:
            with anyio.CancelScope(shield=True):
                await self._write()
        self._queued = None


class ActivityContext:
    """What an activity knows about the call it is serving."""

    __slots__ = (
        "_codec",
        "_control",
        "_memo",
        "_memo_store",
        "_signal",
        "attempt",
        "heartbeat_details",
        "instance_id",
        "task_id",
        "workflow_name",
    )

    def __init__(
        self,
        instance_id: str,
        task_id: int,
        attempt: int,
        workflow_name: str,
        memo_store: MemoStore | None = None,
        *,
        control: Attempt | Callable[[], Attempt] | None = None,
        codec: PayloadCodec | None = None,
        heartbeat_details: Any = None,
    ) -> None:
        self.instance_id = instance_id
        """The workflow instance that scheduled this activity."""
        self.task_id = task_id
        """The step number: the same for every retry of one call."""
        self.attempt = attempt
        """1 on the first try, 2 on the first retry, and so on."""
        self.workflow_name = workflow_name
        """The name of the calling workflow."""
        self.heartbeat_details = heartbeat_details
        """The details of the last heartbeat an earlier attempt of this call recorded
        (None if none did). Read for every retry, and for a call with a
        ``heartbeat_timeout`` (so an attempt run again after a crash sees them too)."""
        self._memo_store = memo_store
        self._memo: Memo | None = None
        self._control = control  # or what makes it, when first asked for
        self._codec = codec
        self._signal: CancelSignal | None = None

    @property
    def cancelled(self) -> CancelSignal:
        """Set when the runtime cancels this attempt: poll ``is_set()`` in a sync
        activity; an async one is also cancelled at its current await."""
        control = self._steered()
        if control is not None:
            return control.cancelled
        if self._signal is None:  # nothing steers this attempt: never cancelled
            self._signal = CancelSignal()
        return self._signal

    def heartbeat(self, details: Any = None) -> None:
        """Say the attempt is alive, and record ``details`` (progress) for the next
        attempt to find in ``heartbeat_details``. Cheap: liveness stays in memory and
        details reach the store at most once per half the ``heartbeat_timeout``."""
        control = self._steered()
        if control is None:
            return
        data = None
        if details is not None:
            codec = self._codec or (self._memo_store.codec if self._memo_store else None)
            if codec is not None:
                data = codec.encode(details)
        control.beat(data)

    def _steered(self) -> Attempt | None:
        """The attempt's control (made on first use); None if nothing steers it."""
        control = self._control
        if control is None or isinstance(control, Attempt):
            return control
        made = self._control = control()
        return made

    @property
    def memo(self) -> Memo:
        """This step's memo: what an earlier attempt stored, for the retry to find."""
        if self._memo is None:
            if self._memo_store is None:
                raise RuntimeError("this activity context has no memo store")
            self._memo = self._memo_store.view(self.instance_id, self.task_id)
        return self._memo

    def __repr__(self) -> str:
        return (
            f"ActivityContext(instance_id={self.instance_id!r}, task_id={self.task_id}, "
            f"attempt={self.attempt}, workflow_name={self.workflow_name!r})"
        )


async def execute_activity(
    registry: Registry,
    codec: PayloadCodec,
    memo_store: MemoStore | None,
    instance_id: str,
    workflow_name: str,
    scheduled: ActivityScheduled,
    threads: anyio.CapacityLimiter | None = None,
    control: Callable[[], Attempt] | None = None,
) -> ActivityCompleted | ActivityErrored:
    """Run one attempt and turn its return value or exception into an event; a sync
    activity runs in a worker thread taken from ``threads`` (anyio's shared default
    when None), so blocking activities cannot hold the threads other work needs;
    ``control`` makes the attempt's control if the activity asks for it."""
    task_id = scheduled.task_id
    try:
        definition = registry.get_activity(scheduled.name)
        value = codec.decode(scheduled.input, definition.input_type)
        details = None
        timeouts = scheduled.timeouts
        if memo_store is not None and (
            scheduled.attempt > 1 or (timeouts is not None and timeouts.heartbeat is not None)
        ):
            raw = await memo_store.read_heartbeat(instance_id, scheduled.step)
            details = codec.decode(raw) if raw is not None else None
        ctx = ActivityContext(
            instance_id, scheduled.step, scheduled.attempt, workflow_name, memo_store,
            control=control, codec=codec, heartbeat_details=details,
        )  # fmt: skip
        args: tuple[Any, ...] = (ctx, value) if definition.takes_input else (ctx,)
        if definition.is_async:
            result = await definition.fn(*args)
        else:
            ctx._steered()  # made here, on the loop's thread: the activity's may not make it
            result = await anyio.to_thread.run_sync(
                partial(definition.fn, *args), abandon_on_cancel=True, limiter=threads
            )
        return ActivityCompleted(task_id=task_id, result=Raw(codec.encode(result)))
    except anyio.get_cancelled_exc_class() as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():  # the runtime is cancelling this worker
            raise
        # the activity's own code raised CancelledError: an ordinary failure
        return ActivityErrored(task_id=task_id, failure=failure_from_exception(exc))
    except Exception as exc:
        return ActivityErrored(task_id=task_id, failure=failure_from_exception(exc))
