"""Time for the whole runtime: the ``Clock`` protocol, the system clock and a mock clock.

This is the only module that reads the wall clock or sleeps on real time; everything
else asks the runtime's ``Clock``, so tests can run on virtual time.
"""

from __future__ import annotations

import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

import anyio
import anyio.lowlevel

from ._errors import TimeoutError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Clock", "MockClock", "SystemClock", "within"]

T = TypeVar("T")


@runtime_checkable
class Clock(Protocol):
    """Where the runtime reads the current time and waits for a moment to come."""

    def now(self) -> datetime:
        """Return the current time as a timezone-aware UTC datetime."""
        ...

    async def sleep_until(self, deadline: datetime) -> None:
        """Return once ``now() >= deadline`` (at once if it already is)."""
        ...


class SystemClock:
    """The real clock: UTC wall time, and real sleeps."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, deadline: datetime) -> None:
        delay = (deadline - datetime.now(UTC)).total_seconds()
        if delay > 0:
            await anyio.sleep(delay)
        else:
            await anyio.lowlevel.checkpoint()  # always a point where others may run

    def __repr__(self) -> str:
        return "SystemClock()"


_DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


class MockClock:
    """A virtual clock that moves only when told to.

    ``advance`` and ``set`` are plain methods: they move time and wake every sleeper
    that became due. With ``auto_advance=True`` a ``Runtime`` using this clock jumps it
    to its next durable timer whenever no turn and no activity is running.
    """

    def __init__(self, start: datetime = _DEFAULT_START, *, auto_advance: bool = False) -> None:
        if start.tzinfo is None:
            raise ValueError("MockClock start must be timezone-aware (UTC)")
        self._now = start.astimezone(UTC)
        self.auto_advance = auto_advance
        self._sleepers: list[tuple[datetime, int, anyio.Event]] = []
        self._ids = itertools.count()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, deadline: datetime) -> None:
        if deadline <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (deadline, next(self._ids), event))
        await event.wait()

    def advance(self, delta: timedelta) -> None:
        """Move time forward by ``delta`` and wake the sleepers now due."""
        if delta < timedelta(0):
            raise ValueError("MockClock cannot go backwards")
        self.set(self._now + delta)

    def set(self, when: datetime) -> None:
        """Move time to ``when`` (not backwards) and wake the sleepers now due."""
        if when.tzinfo is None:
            raise ValueError("MockClock.set needs a timezone-aware datetime")
        when = when.astimezone(UTC)
        if when < self._now:
            raise ValueError(f"MockClock cannot go backwards from {self._now} to {when}")
        self._now = when
        while self._sleepers and self._sleepers[0][0] <= when:
            heapq.heappop(self._sleepers)[2].set()

    def __repr__(self) -> str:
        return f"MockClock({self._now.isoformat()}, auto_advance={self.auto_advance})"


async def within(
    clock: Clock,
    timeout: timedelta | float | None,  # noqa: ASYNC109 (on the Clock: fail_after cannot)
    wait: Callable[[], Awaitable[T]],
    what: str,
) -> T:
    """``await wait()``, or ``durable.TimeoutError`` ("``what`` did not end within ...")
    once ``timeout`` (seconds or a timedelta, on ``clock``) has passed; None waits on."""
    if timeout is None:
        return await wait()
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    deadline = clock.now() + timedelta(seconds=seconds)
    outcome: list[T] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            outcome.append(await wait())
            tg.cancel_scope.cancel()

        async def expire() -> None:
            await clock.sleep_until(deadline)
            tg.cancel_scope.cancel()

        tg.start_soon(run)
        tg.start_soon(expire)
    if not outcome:
        raise TimeoutError(f"{what} did not end within {timeout}")
    return outcome[0]
