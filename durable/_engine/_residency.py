"""Which waiting instances stay in worker memory, and which leave it.

After a turn an instance that only waits on timers or events may be evicted: by time
(its :class:`~durable.EvictionPolicy` TTL) or to make room when the engine holds more
than ``max_resident_workflows``, lowest priority first, then the longest waiting. An
evicted instance comes back by replay when its timer fires or a message arrives.
Instances running a turn or waiting on an activity never leave.

With a cap, coming back is admitted: when many evicted instances wake at once (a
timer shared by thousands), each waits its turn to be loaded while the engine is full
and other work is under way, and every turn that ends makes room by evicting those
that are waiting again. Memory stays near the cap instead of loading them all.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import TYPE_CHECKING

import anyio

from durable._core._events import ActivityScheduled, TimerCreated

from ._eviction import MIN_EVICTABLE_WAIT
from ._lifecycle import (
    LifecycleEvent,
    can_evict,
    fire,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from durable._clock import Clock

    from ._eviction import EvictionPolicy
    from ._instance import _Instance
    from ._timers import TimerQueue

__all__ = ["Residency"]

_MOST_PASSED_OVER = 64
"""Turn ends a waiting load sits out, when nothing can be evicted, before it gets in."""


class Residency:
    """The engine's eviction bookkeeping over its map of resident instances."""

    def __init__(
        self,
        instances: dict[str, _Instance],
        timers: TimerQueue,
        clock: Clock,
        policy_of: Callable[[str], EvictionPolicy | None],
        default: EvictionPolicy,
        max_resident: int | None,
        drop_run: Callable[[_Instance], None],
        under_way: Callable[[], bool] = lambda: False,
    ) -> None:
        self._instances = instances
        self._timers = timers
        self._clock = clock
        self._policy_of = policy_of
        self._default = default
        self._max_resident = max_resident
        self._drop_run = drop_run
        self._under_way = under_way  # turns queued or running: they will make room
        self._waking: deque[anyio.Event] = deque()  # loads waiting for room, in order
        self._admitted = 0  # loads let in and not yet in memory
        # capacity heap: (priority, waiting since, order, id, seq, stay)
        self._candidates: list[tuple[int, datetime, int, str, int, int]] = []
        self._order = itertools.count()
        self._stays = itertools.count()  # numbers each stay in memory (Instance.residency)
        self._passed_over = 0  # times waiting loads were kept out since one got in
        self.evicted: set[str] = set()
        """Ids dropped from memory that have not finished."""

    def note_waiting(self, inst: _Instance) -> None:
        """After a turn: if the instance now only waits on timers or events, it becomes
        a candidate for eviction by time and by capacity."""
        if inst.pending:
            return
        first_timer: datetime | None = None  # one pass: activities rule it out, else timers
        for event in inst.outstanding.values():
            if type(event) is ActivityScheduled:
                return
            if type(event) is TimerCreated and (first_timer is None or event.fire_at < first_timer):
                first_timer = event.fire_at
        policy = self._policy_of(inst.name) or self._default
        now = self._clock.now()
        if inst.residency < 0:  # entries of an earlier stay must not match this one
            inst.residency = next(self._stays)
        if policy.allow_capacity_eviction and self._max_resident is not None:
            entry = (policy.priority, now, next(self._order), inst.id, inst.seq, inst.residency)
            heapq.heappush(self._candidates, entry)
            if len(self._candidates) > 2 * len(self._instances) + 64:
                self._compact()
        if policy.ttl is not None and (
            first_timer is None or first_timer - now >= MIN_EVICTABLE_WAIT
        ):
            when = now + max(policy.ttl, MIN_EVICTABLE_WAIT)
            self._timers.add(
                when, (self._evict_if_idle, inst.id, inst.seq, inst.residency), durable=False
            )

    async def admit(self) -> None:
        """Before loading an evicted instance: wait for room under the cap. Waits only
        while something else is under way that will end and make room (a turn, or a
        load already let in), so a full engine of instances that cannot be evicted
        still loads, one at a time."""
        if self._max_resident is None:
            return
        if not self._waking and self._has_room():
            self._admitted += 1
            return
        let_in = anyio.Event()
        self._waking.append(let_in)
        try:
            await let_in.wait()
        except BaseException:
            if let_in.is_set():
                self.loaded()  # let in, but gone before loading: the room is free again
            else:
                self._waking.remove(let_in)
            raise

    def loaded(self) -> None:
        """A load let in by :meth:`admit` ended (in memory, or found nothing to load)."""
        if self._max_resident is not None:
            self._admitted -= 1
            self.evict_to_capacity()

    def _has_room(self) -> bool:
        assert self._max_resident is not None
        if len(self._instances) + self._admitted < self._max_resident:
            return True
        return not (self._admitted or self._under_way())

    def evict_to_capacity(self) -> None:
        """Over ``max_resident_workflows`` (counting room kept for loads that are let
        in or waiting): evict waiting instances, lowest priority first, then the
        longest waiting; then let in as many waiting loads as fit. Called between
        turns, never inside one."""
        if self._max_resident is None:
            return
        limit = self._max_resident - self._admitted - len(self._waking)
        while len(self._instances) > limit and self._candidates:
            _, _, _, instance_id, seq, stay = heapq.heappop(self._candidates)
            if (inst := self._can_evict(instance_id, seq, stay)) is not None:
                self._evict(inst)
        if not self._waking:
            return
        # a load waits while turns run; if none of them ever makes room (everything in
        # memory waits on activities), one gets in every so often all the same
        starved = self._passed_over >= _MOST_PASSED_OVER
        while self._waking and (self._has_room() or starved):
            starved = False
            self._passed_over = 0
            self._admitted += 1
            self._waking.popleft().set()
        if self._waking:
            self._passed_over += 1

    def _compact(self) -> None:
        """Drop candidates that went stale (evicted, finished, or turned since)."""
        live = self._instances
        self._candidates = [
            entry for entry in self._candidates
            if (inst := live.get(entry[3])) is not None
            and inst.seq == entry[4] and inst.residency == entry[5]
        ]  # fmt: skip
        heapq.heapify(self._candidates)

    def _can_evict(self, instance_id: str, seq: int, stay: int) -> _Instance | None:
        inst = self._instances.get(instance_id)
        if inst is None or inst.seq != seq or inst.residency != stay:
            return None  # gone, turned since, or back in memory for another stay
        return inst if can_evict(inst.state, bool(inst.pending), inst.status) else None

    def _evict_if_idle(self, instance_id: str, seq: int, stay: int) -> None:
        """A TTL came due: evict unless the instance ran a turn since."""
        if (inst := self._can_evict(instance_id, seq, stay)) is not None:
            self._evict(inst)

    def _evict(self, inst: _Instance) -> None:
        """Drop the instance from memory; its timers and the log bring it back."""
        fire(inst, LifecycleEvent.EVICT)
        self._drop_run(inst)
        del self._instances[inst.id]
        self.evicted.add(inst.id)
