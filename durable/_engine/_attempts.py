"""Activity attempts under way in this process: their timeouts, and cancelling them.

Each attempt is steered by an :class:`~durable._activity.Attempt` (its cancel signal,
its heartbeats) and stopped by cancelling its asyncio task at its current await: not an
anyio cancel scope, whose creation and entry cost more than a whole sequential step.
Its timeouts are entries in the engine's durable timer queue on the Clock, so a
``MockClock`` skips to them: ``start_to_close`` and ``heartbeat`` count from the
attempt's start, ``schedule_to_close`` is the absolute ``close_by`` that history holds.
The first to pass stops the attempt, whose outcome becomes an ``ActivityTimeoutError``;
an attempt that ends first discards its entries.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from durable._core._events import ActivityErrored
from durable._core._failure import timeout_failure

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from datetime import timedelta

    from durable._activity import Attempt
    from durable._core._events import ActivityScheduled, ActivityTimeouts

    from ._timers import TimerQueue

__all__ = ["RunningAttempt"]

_T = TypeVar("_T")


class RunningAttempt:
    """One attempt running here: its scope, its control, its pending timeout entries,
    and why it was stopped (a timeout's kind and limit), if it was."""

    __slots__ = ("cancelled", "control", "scheduled", "stopped", "task", "timers")

    def __init__(self, scheduled: ActivityScheduled, control: Attempt) -> None:
        self.scheduled = scheduled
        self.control = control
        self.task: asyncio.Task[Any] | None = None  # set while the attempt's code runs
        self.timers: dict[str, int] = {}  # timeout kind -> timer queue entry
        self.stopped: tuple[str, timedelta] | None = None
        self.cancelled = False  # its operation was cancelled: its outcome goes nowhere

    def arm(self, queue: TimerQueue, timeouts: ActivityTimeouts | None) -> None:
        """Queue the attempt's timeouts (an already passed ``close_by`` stops it now)."""
        if timeouts is None:
            return
        now = self.control.clock.now()
        if timeouts.close_by is not None and timeouts.schedule_to_close is not None:
            if timeouts.close_by <= now:
                self.stop("schedule_to_close", timeouts.schedule_to_close)
                return
            self._add(queue, "schedule_to_close", timeouts.close_by, timeouts.schedule_to_close)
        if timeouts.start_to_close is not None:
            limit = timeouts.start_to_close
            self._add(queue, "start_to_close", now + limit, limit)
        if timeouts.heartbeat is not None:
            self.control.last_beat = now
            self._add(queue, "heartbeat", now + timeouts.heartbeat, timeouts.heartbeat)

    def _add(self, queue: TimerQueue, kind: str, when: object, limit: timedelta) -> None:
        self.timers[kind] = queue.add(when, (self._due, queue, kind, limit))  # type: ignore[arg-type]

    def _due(self, queue: TimerQueue, kind: str, limit: timedelta) -> None:
        """A timeout entry came due (called by the timer queue)."""
        self.timers.pop(kind, None)
        if self.stopped is not None:
            return
        if kind == "heartbeat":
            beat_due = self.control.last_beat + limit
            if beat_due > self.control.clock.now():  # it beat since: wait for the next
                self._add(queue, kind, beat_due, limit)
                return
        self.stop(kind, limit)

    def stop(self, kind: str, limit: timedelta) -> None:
        """Time the attempt out: set its cancel signal and cancel its scope."""
        if self.stopped is None and not self.cancelled:
            self.stopped = (kind, limit)
            self._halt()

    def cancel(self) -> None:
        """The workflow gave up on the operation (or ended): stop the attempt; it has
        no outcome to deliver."""
        if not self.cancelled:
            self.cancelled = True
            self._halt()

    def _halt(self) -> None:
        if self.task is not None:  # first: an await on the signal then raises, not returns
            self.task.cancel()
        self.control.cancel()

    async def run(self, attempt: Awaitable[_T]) -> _T | None:
        """Await the attempt's code; None if :meth:`stop` or :meth:`cancel` stopped it
        (a cancellation of the task from anywhere else propagates)."""
        if self.halted:
            attempt.close()  # type: ignore[attr-defined]
            return None
        task = self.task = asyncio.current_task()
        try:
            return await attempt
        except asyncio.CancelledError:
            if not self.halted or task is None or task.uncancel() > 0:
                raise
            return None
        finally:
            self.task = None

    @property
    def halted(self) -> bool:
        return self.stopped is not None or self.cancelled

    def disarm(self, queue: TimerQueue) -> None:
        """The attempt ended: its pending timeout entries never fire."""
        for entry in self.timers.values():
            queue.discard(entry)
        self.timers.clear()

    def timed_out(self) -> ActivityErrored | None:
        """The outcome of an attempt that a timeout stopped (None if none did)."""
        if self.stopped is None or self.cancelled:
            return None
        kind, limit = self.stopped
        return ActivityErrored(task_id=self.scheduled.task_id, failure=timeout_failure(kind, limit))
