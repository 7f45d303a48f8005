"""The remote worker's history cache: suspended runs kept between turns.

A sidecar that knows the worker keeps history (the Dapr stateful-history capability)
sends each turn only the events committed since the previous one. The worker keeps
the instance's :class:`~durable._core._replay.WorkflowRun` suspended at the await it
reached, so a turn costs its new events, not its history. Memory is bounded three
ways: a time to live since last use, a cap on instances and a byte budget (estimated
from the encoded events each run has been fed), evicting the least recently used
first. Any miss is safe: the worker replays the whole history instead.

The cache only stores and evicts; what an entry means is the worker's business
(:mod:`durable.grpc._turns`). Time comes from the injected Clock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from durable._core._replay import WorkflowRun

if TYPE_CHECKING:
    from durable._clock import Clock

__all__ = ["CacheEntry", "CacheStats", "HistoryCache"]


@dataclass(slots=True, eq=False)
class CacheEntry:
    """One instance's suspended run and what the worker knows about its history.

    ``seen`` is the number of wire events of committed history the run stood on when
    it took its last turn (what a sidecar then calls ``CachedHistory.eventCount``);
    ``expected`` describes, in order, the events the sidecar commits after those
    (the turn's own new events, then what its actions recorded), so the worker can
    check a delta before trusting it. ``digest`` is that of the ``seen`` events as
    encoded when they came whole in a request's ``pastEvents`` (``None`` otherwise):
    a later full history must begin with exactly those bytes for the run to be reused.
    """

    run: WorkflowRun
    seen: int
    expected: list[tuple[object, ...]]
    next_event_id: int
    run_id: str
    patches: list[str] = field(default_factory=list)
    size: int = 0
    expires_at: datetime | None = None
    digest: bytes | None = None


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters for tests and benchmarks."""

    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int


class HistoryCache:
    """Suspended runs by instance id, bounded by TTL, count and bytes (LRU).

    ``take`` removes the entry it returns, so a turn owns its run exclusively and a
    concurrent turn of the same instance simply misses. ``put`` stores it back after
    the turn's completion was accepted. ``clear`` (on reconnect) drops everything and
    starts a new generation: a turn that began before it cannot put its run back.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        ttl: timedelta = timedelta(hours=1),
        max_instances: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if max_instances < 0 or max_bytes < 0:
            raise ValueError("cache limits must not be negative")
        self.clock = clock
        self.ttl = ttl
        self.max_instances = max_instances
        self.max_bytes = max_bytes
        self.generation = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._entries

    def stats(self) -> CacheStats:
        """The counters and the current size."""
        return CacheStats(self.hits, self.misses, self.evictions, len(self._entries), self._bytes)

    def ids(self) -> list[str]:
        """Cached instance ids, least recently used first."""
        return list(self._entries)

    def take(self, instance_id: str) -> CacheEntry | None:
        """Remove and return the entry of ``instance_id`` (``None`` if absent or expired)."""
        entry = self._entries.pop(instance_id, None)
        if entry is None:
            return None
        self._bytes -= entry.size
        if entry.expires_at is not None and entry.expires_at <= self.clock.now():
            self.evictions += 1
            entry.run.close()
            return None
        return entry

    def put(self, instance_id: str, entry: CacheEntry, *, generation: int) -> bool:
        """Keep ``entry`` as the most recently used; evict what no longer fits.

        Refused (the run is closed) when the cache was cleared since ``generation`` or
        the entry alone is over a limit. Returns whether it was kept.
        """
        self.drop(instance_id)
        if generation != self.generation or self.max_instances == 0 or entry.size > self.max_bytes:
            entry.run.close()
            return False
        now = self.clock.now()
        entry.expires_at = now + self.ttl
        self._entries[instance_id] = entry
        self._bytes += entry.size
        self._expire(now)
        while len(self._entries) > self.max_instances or self._bytes > self.max_bytes:
            self._evict_oldest()
        return True

    def discard(self, instance_id: str, entry: CacheEntry) -> None:
        """Forget ``entry`` if it is still the one kept for ``instance_id`` (if a
        later turn took it meanwhile, that turn owns it now)."""
        if self._entries.get(instance_id) is entry:
            self.drop(instance_id)

    def drop(self, instance_id: str) -> None:
        """Forget ``instance_id`` (its run ended)."""
        entry = self._entries.pop(instance_id, None)
        if entry is not None:
            self._bytes -= entry.size
            entry.run.close()

    def clear(self) -> None:
        """Forget everything and start a new generation (the stream reconnected)."""
        for entry in self._entries.values():
            entry.run.close()
        self._entries.clear()
        self._bytes = 0
        self.generation += 1

    def expire(self) -> None:
        """Evict the entries whose time to live has passed."""
        self._expire(self.clock.now())

    def _expire(self, now: datetime) -> None:
        # Entries sit in order of last use, and each expires ttl after it: the expired
        # ones are at the front.
        while self._entries:
            first = next(iter(self._entries.values()))
            if first.expires_at is None or first.expires_at > now:
                return
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self._bytes -= entry.size
        self.evictions += 1
        entry.run.close()
