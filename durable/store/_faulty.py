"""A store wrapper that injects transient errors and latency, on a seeded schedule.

Real object stores fail in two ways that matter to the commit protocol: a request that
never reached the store, and a request that did its work but whose answer was lost. The
second is the hard one (a put-if-absent that landed but reports an error), so
:class:`FaultyStore` injects both, and its caller must read back to know what happened.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from durable._clock import Clock, SystemClock
from durable._errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._base import ObjectStore

__all__ = ["Fault", "FaultyStore"]

_T = TypeVar("_T")


class Fault(NamedTuple):
    """One injected error: the call it hit (numbered from 0), the operation, the key, and
    whether it came ``"before"`` the inner store was called or ``"after"`` it succeeded."""

    call: int
    operation: str
    key: str
    when: str


class FaultyStore:
    """An :class:`~durable.store.ObjectStore` that wraps ``inner`` and fails on purpose.

    Each call draws from ``random.Random(seed)`` whether it fails (with probability
    ``error_rate``) and, if so, whether the error comes *before* the inner store is
    called (nothing happened) or *after* the inner call succeeded (the write landed but
    the caller sees an error). The draws do not depend on the inner store's answers,
    so the same seed gives the same schedule for the same sequence of calls. Injected
    errors are plain ``StoreError`` with ``transient=True``; a real error of the inner
    store passes through unchanged and is not counted.

    Every call first waits ``latency`` (a ``timedelta`` or seconds) on ``clock``
    (``SystemClock`` by default), so on a ``MockClock`` it completes only when the clock
    is moved. ``error_rate`` and ``latency`` are plain attributes: change them to
    switch faults off at the end of a test. ``close`` is passed through untouched.
    """

    def __init__(
        self,
        inner: ObjectStore,
        seed: int,
        error_rate: float = 0.0,
        latency: timedelta | float = 0,
        *,
        clock: Clock | None = None,
    ) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be between 0 and 1, not {error_rate!r}")
        self.inner = inner
        self.seed = seed
        self.error_rate = error_rate
        self.latency = latency if isinstance(latency, timedelta) else timedelta(seconds=latency)
        if self.latency < timedelta(0):
            raise ValueError(f"latency must not be negative, not {latency!r}")
        self.clock: Clock = clock or SystemClock()
        self.faults: list[Fault] = []
        """Every injected error, in order."""
        self.calls = 0
        """How many calls (other than ``close``) the store has received."""
        self._rng = random.Random(seed)

    @property
    def url(self) -> str:
        """The inner store's URL."""
        return self.inner.url

    @property
    def injected(self) -> int:
        """How many errors have been injected so far."""
        return len(self.faults)

    def __repr__(self) -> str:
        return (
            f"FaultyStore({self.inner!r}, seed={self.seed}, error_rate={self.error_rate}, "
            f"latency={self.latency}, injected={self.injected})"
        )

    async def get(self, key: str) -> bytes:
        """Return the object's bytes, or fail on schedule."""
        return await self._call("get", key, lambda: self.inner.get(key))

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Return the object's bytes and ETag, or fail on schedule."""
        return await self._call("get_with_etag", key, lambda: self.inner.get_with_etag(key))

    async def put(self, key: str, data: bytes) -> str:
        """Write unconditionally, or fail on schedule (maybe after the write landed)."""
        return await self._call("put", key, lambda: self.inner.put(key, data))

    async def put_if_absent(self, key: str, data: bytes) -> str:
        """Write if absent, or fail on schedule (maybe after the write landed)."""
        return await self._call("put_if_absent", key, lambda: self.inner.put_if_absent(key, data))

    async def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        """Write if the ETag matches, or fail on schedule (maybe after the write landed)."""
        return await self._call(
            "put_if_match", key, lambda: self.inner.put_if_match(key, data, etag)
        )

    async def list(self, prefix: str) -> list[str]:
        """List the children of ``prefix``, or fail on schedule."""
        return await self._call("list", prefix, lambda: self.inner.list(prefix))

    async def delete(self, key: str) -> None:
        """Delete one object, or fail on schedule (maybe after it was deleted)."""
        await self._call("delete", key, lambda: self.inner.delete(key))

    async def delete_if_match(self, key: str, etag: str) -> None:
        """Delete if the ETag matches, or fail on schedule (maybe after it was deleted)."""
        await self._call("delete_if_match", key, lambda: self.inner.delete_if_match(key, etag))

    async def delete_prefix(self, prefix: str) -> None:
        """Delete everything under ``prefix/``, or fail on schedule (maybe after)."""
        await self._call("delete_prefix", prefix, lambda: self.inner.delete_prefix(prefix))

    async def close(self) -> None:
        """Close the inner store (never faulty, never slow)."""
        await self.inner.close()

    async def _call(self, operation: str, key: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Wait the latency, then run ``call`` with a fault before or after it, on schedule."""
        number = self.calls
        self.calls += 1
        # Two draws per call whatever happens, so the schedule depends on the call count only.
        fails = self._rng.random() < self.error_rate
        after = self._rng.random() < 0.5
        if self.latency:
            await self.clock.sleep_until(self.clock.now() + self.latency)
        if fails and not after:
            raise self._inject(number, operation, key, "before")
        result = await call()
        if fails:
            raise self._inject(number, operation, key, "after")
        return result

    def _inject(self, number: int, operation: str, key: str, when: str) -> StoreError:
        """Record a fault and build its error."""
        self.faults.append(Fault(number, operation, key, when))
        done = "it ran" if when == "after" else "it was sent"
        return StoreError(
            f"injected fault #{self.injected} (seed {self.seed}, call {number}): "
            f"{operation} {key!r} in {self.inner.url} failed {when} {done}",
            key=key,
            transient=True,
        )
