"""The durable timer queue: one heap, one task sleeping on the Clock until the next one."""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from durable._clock import Clock

__all__ = ["TimerQueue"]


class TimerQueue:
    """Calls ``fire(payload)`` for each entry once the Clock reaches its time.

    Durable entries (workflow timers, retry backoffs, event timeouts) make up
    ``next_deadline``, what a ``MockClock(auto_advance=True)`` jumps to when the runtime
    is idle; background entries (eviction checks) fire when time reaches them but never
    pull a mock clock forward.
    """

    def __init__(
        self,
        clock: Clock,
        fire: Callable[[tuple[object, ...]], None],
        on_change: Callable[[], None],
    ) -> None:
        self._clock = clock
        self._fire = fire
        self._on_change = on_change
        self._heap: list[tuple[datetime, int, tuple[object, ...]]] = []
        self._background: list[tuple[datetime, int, tuple[object, ...]]] = []
        self._ids = itertools.count()
        self._dead: set[int] = set()  # entries discarded before they came due
        self._sleep_scope: anyio.CancelScope | None = None
        self._sleep_until: datetime | None = None
        self._added = anyio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, when: datetime, payload: tuple[object, ...], *, durable: bool = True) -> int:
        """Fire ``payload`` at ``when``; returns the entry's handle for :meth:`discard`."""
        entry_id = next(self._ids)
        heapq.heappush(self._heap if durable else self._background, (when, entry_id, payload))
        if self._sleep_until is None or when < self._sleep_until:
            if self._sleep_scope is not None:
                self._sleep_scope.cancel()
            self._added.set()
        self._on_change()
        return entry_id

    def discard(self, entry_id: int) -> None:
        """Never fire the entry (a bound on an activity attempt that ended first): it
        no longer counts as a deadline a mock clock may jump to."""
        self._dead.add(entry_id)
        self._prune(self._heap)

    def _prune(self, heap: list[tuple[datetime, int, tuple[object, ...]]]) -> None:
        dead = self._dead
        while dead and heap and heap[0][1] in dead:
            dead.discard(heapq.heappop(heap)[1])

    def next_deadline(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    async def run(self) -> None:
        heaps = (self._heap, self._background)
        while True:
            now = self._clock.now()
            fired = False
            for heap in heaps:
                while heap and heap[0][0] <= now:
                    _, entry_id, payload = heapq.heappop(heap)
                    if entry_id in self._dead:
                        self._dead.discard(entry_id)
                        continue
                    self._fire(payload)
                    fired = True
                self._prune(heap)
            if fired:
                self._on_change()
            deadlines = [heap[0][0] for heap in heaps if heap]
            if not deadlines:
                self._added = anyio.Event()
                await self._added.wait()
                continue
            self._sleep_until = min(deadlines)
            with anyio.CancelScope() as scope:
                self._sleep_scope = scope
                await self._clock.sleep_until(self._sleep_until)
            self._sleep_scope = None
            self._sleep_until = None
