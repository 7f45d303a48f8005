"""A store wrapper that counts (and times) every operation, for store-ops figures."""

from __future__ import annotations

from collections import Counter, defaultdict
from time import perf_counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from durable.store import ObjectStore

__all__ = ["METHODS", "CountingStore"]

# The ObjectStore operations, in the order tables show them.
METHODS = (
    "get",
    "get_with_etag",
    "put",
    "put_if_absent",
    "put_if_match",
    "list",
    "delete",
    "delete_prefix",
    "close",
)


class CountingStore:
    """An :class:`~durable.store.ObjectStore` that delegates to ``inner`` and counts calls.

    ``calls[method]`` counts every call (successful or not), ``errors[method]`` the calls
    that raised, ``seconds[method]`` the wall time spent awaiting them; ``bytes_read`` and
    ``bytes_written`` sum payload sizes. :meth:`snapshot` and :meth:`since` measure a
    window (e.g. only the calls between starting a workflow and reading its result).
    """

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.bytes_read = 0
        self.bytes_written = 0

    @property
    def url(self) -> str:
        """The wrapped store's URL."""
        return self.inner.url

    def __repr__(self) -> str:
        return f"CountingStore({self.inner!r}, calls={sum(self.calls.values())})"

    # -- measuring windows --------------------------------------------------------------

    def snapshot(self) -> dict[str, float]:
        """The counters now, flattened: ``calls.get``, ``seconds.put_if_absent``, ..."""
        flat: dict[str, float] = {f"calls.{m}": float(self.calls[m]) for m in METHODS}
        flat.update({f"errors.{m}": float(self.errors[m]) for m in METHODS})
        flat.update({f"seconds.{m}": self.seconds[m] for m in METHODS})
        flat["bytes_read"] = float(self.bytes_read)
        flat["bytes_written"] = float(self.bytes_written)
        return flat

    def since(self, before: dict[str, float]) -> dict[str, float]:
        """What the counters grew by since ``before`` (a :meth:`snapshot`)."""
        now = self.snapshot()
        return {key: now[key] - before.get(key, 0.0) for key in now}

    def _done(self, method: str, started: float, failed: bool) -> None:
        self.calls[method] += 1
        self.seconds[method] += perf_counter() - started
        if failed:
            self.errors[method] += 1

    # -- the ObjectStore protocol ---------------------------------------------------------

    async def get(self, key: str) -> bytes:
        started, failed = perf_counter(), True
        try:
            data = await self.inner.get(key)
            failed = False
        finally:
            self._done("get", started, failed)
        self.bytes_read += len(data)
        return data

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        started, failed = perf_counter(), True
        try:
            data, etag = await self.inner.get_with_etag(key)
            failed = False
        finally:
            self._done("get_with_etag", started, failed)
        self.bytes_read += len(data)
        return data, etag

    async def put(self, key: str, data: bytes) -> str:
        started, failed = perf_counter(), True
        try:
            etag = await self.inner.put(key, data)
            failed = False
        finally:
            self._done("put", started, failed)
        self.bytes_written += len(data)
        return etag

    async def put_if_absent(self, key: str, data: bytes) -> str:
        started, failed = perf_counter(), True
        try:
            etag = await self.inner.put_if_absent(key, data)
            failed = False
        finally:
            self._done("put_if_absent", started, failed)
        self.bytes_written += len(data)
        return etag

    async def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        started, failed = perf_counter(), True
        try:
            new_etag = await self.inner.put_if_match(key, data, etag)
            failed = False
        finally:
            self._done("put_if_match", started, failed)
        self.bytes_written += len(data)
        return new_etag

    async def list(self, prefix: str) -> list[str]:
        started, failed = perf_counter(), True
        try:
            names = await self.inner.list(prefix)
            failed = False
        finally:
            self._done("list", started, failed)
        return names

    async def delete(self, key: str) -> None:
        started, failed = perf_counter(), True
        try:
            await self.inner.delete(key)
            failed = False
        finally:
            self._done("delete", started, failed)

    async def delete_if_match(self, key: str, etag: str) -> None:
        started, failed = perf_counter(), True
        try:
            await self.inner.delete_if_match(key, etag)
            failed = False
        finally:
            self._done("delete_if_match", started, failed)

    async def delete_prefix(self, prefix: str) -> None:
        started, failed = perf_counter(), True
        try:
            await self.inner.delete_prefix(prefix)
            failed = False
        finally:
            self._done("delete_prefix", started, failed)

    async def close(self) -> None:
        started, failed = perf_counter(), True
        try:
            await self.inner.close()
            failed = False
        finally:
            self._done("close", started, failed)
