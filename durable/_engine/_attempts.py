"""Activity attempts under way in this process: their timeouts, and cancelling them.

Each attempt is stopped by cancelling its asyncio task at its current await: not an
anyio cancel scope, whose creation and entry cost more than a whole sequential step.
Its :class:`~durable._activity.Attempt` (the cancel signal and heartbeats the activity
sees) is made on first use only: by a heartbeat timeout, or when the activity reads
``ctx.cancelled`` or calls ``ctx.heartbeat``; a plain call pays for none of it.
Its timeouts are entries in the engine's durable timer queue on the Clock, so a
``MockClock`` skips to them: ``start_to_close`` and ``heartbeat`` count from the
attempt's start, ``schedule_to_close`` is the absolute ``close_by`` that history holds.
The first to pass stops the attempt, whose outcome becomes an ``ActivityTimeoutError``;
an attempt that ends first discards its entries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from durable._core._events import ActivityErrored
from durable._core._failure import timeout_failure

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from datetime import datetime, timedelta

    from durable._activity import Attempt
    from durable._core._events import ActivityCompleted, ActivityScheduled, ActivityTimeouts

    from ._timers import TimerQueue

__all__ = ["RunningAttempt"]


class RunningAttempt:
    """One attempt running here: its task, its control (once made), its pending timeout
    entries, and why it was stopped (a timeout's kind and limit), if it was."""

    __slots__ = (
        "_control", "_make", "cancelled", "halted", "instance_id", "scheduled", "stopped",
        "task", "timers",
    )  # fmt: skip

    def __init__(
        self,
        instance_id: str,
        scheduled: ActivityScheduled,
        make: Callable[[str, ActivityScheduled], Attempt],
    ) -> None:
        self.instance_id = instance_id
        self.scheduled = scheduled
        self._make = make  # makes the control on first use
        self._control: Attempt | None = None
        self.task: asyncio.Task[Any] | None = None  # set while the attempt's code runs
        self.timers: dict[str, int] | None = None  # timeout kind -> timer queue entry
        self.stopped: tuple[str, timedelta] | None = None
        self.cancelled = False  # its operation was cancelled: its outcome goes nowhere
        self.halted = False  # stopped by a timeout or cancelled

    def control(self) -> Attempt:
        """The attempt's control, made now if nothing asked for it before (already
        cancelled if the attempt was stopped meanwhile)."""
        control = self._control
        if control is None:
            control = self._control = self._make(self.instance_id, self.scheduled)
            if self.halted:
                control.cancel()
        return control

    @property
    def unwritten(self) -> bool:
        """Whether heartbeat details still wait to be written (see ``Attempt.finish``)."""
        return self._control is not None and self._control.unwritten

    async def finish(self, *, failed: bool) -> None:
        """The attempt ended: its control writes what it still holds."""
        if self._control is not None:
            await self._control.finish(failed=failed)

    def arm(self, queue: TimerQueue, timeouts: ActivityTimeouts, now: datetime) -> None:
        """Queue the attempt's timeouts (an already passed ``close_by`` stops it now)."""
        if timeouts.close_by is not None and timeouts.schedule_to_close is not None:
            if timeouts.close_by <= now:
                self.stop("schedule_to_close", timeouts.schedule_to_close)
                return
            self._add(queue, "schedule_to_close", timeouts.close_by, timeouts.schedule_to_close)
        if timeouts.start_to_close is not None:
            limit = timeouts.start_to_close
            self._add(queue, "start_to_close", now + limit, limit)
        if timeouts.heartbeat is not None:
            self.control().last_beat = now
            self._add(queue, "heartbeat", now + timeouts.heartbeat, timeouts.heartbeat)

    def _add(self, queue: TimerQueue, kind: str, when: datetime, limit: timedelta) -> None:
        if self.timers is None:
            self.timers = {}
        self.timers[kind] = queue.add(when, (self._due, queue, kind, limit))

    def _due(self, queue: TimerQueue, kind: str, limit: timedelta) -> None:
        """A timeout entry came due (called by the timer queue)."""
        if self.timers is not None:
            self.timers.pop(kind, None)
        if self.stopped is not None:
            return
        if kind == "heartbeat":
            control = self.control()
            beat_due = control.last_beat + limit
            if beat_due > control.clock.now():  # it beat since: wait for the next
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
        """Stop the attempt: cancel its task (which the engine sets while the attempt's
        code runs, and recognises the cancel by :attr:`halted`) and set its signal. Its
        task is cancelled once only, however many stops come (a timeout, then the run's
        end): the attempt takes back one cancel request, and a second would escape it
        and end the worker, and with it the engine's task group."""
        if self.task is not None and not self.halted:  # first: an await on the signal
            self.task.cancel()  # then raises, not returns
        self.halted = True
        if self._control is not None:  # one made later starts cancelled
            self._control.cancel()

    def disarm(self, queue: TimerQueue) -> None:
        """The attempt ended: its pending timeout entries never fire."""
        if self.timers:
            for entry in self.timers.values():
                queue.discard(entry)
            self.timers.clear()

    def outcome(
        self, returned: ActivityCompleted | ActivityErrored | None
    ) -> ActivityCompleted | ActivityErrored | None:
        """What the ended attempt delivers: None if its operation was cancelled, the
        timeout's failure if one stopped it, else what its code returned."""
        if self.cancelled:
            return None
        if self.stopped is not None:
            kind, limit = self.stopped
            failure = timeout_failure(kind, limit)
            return ActivityErrored(task_id=self.scheduled.task_id, failure=failure)
        assert returned is not None, "an attempt ends with an outcome or stopped"
        return returned
