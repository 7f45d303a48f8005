"""``EvictionPolicy``: when a waiting workflow may leave worker memory."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

__all__ = ["MIN_EVICTABLE_WAIT", "EvictionPolicy"]

MIN_EVICTABLE_WAIT = timedelta(seconds=10)
"""Waits shorter than this never trigger TTL eviction: replay would cost more than memory."""


@dataclass(frozen=True, slots=True)
class EvictionPolicy:
    """How a workflow that waits on a timer or an event is dropped from memory.

    After waiting ``ttl`` it is evicted (``None``: never by time). With
    ``allow_capacity_eviction`` it may also go when ``max_resident_workflows`` is reached,
    lowest ``priority`` first, then the longest waiting. An evicted workflow is restored
    by replay when its timer fires or its event arrives. Workflows running a turn or
    waiting on an activity are never evicted.
    """

    ttl: timedelta | None = timedelta(minutes=15)
    allow_capacity_eviction: bool = True
    priority: int = 0

    def __post_init__(self) -> None:
        if self.ttl is not None and self.ttl < timedelta(0):
            raise ValueError("EvictionPolicy.ttl must not be negative")
