"""The state every part of a ``Client`` shares, and its plumbing to the store and to
an in-process engine: the active index, wakeups, writes tried again, busy scopes."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from ._clock import Clock, SystemClock
from ._core._codec import JsonCodec, PayloadCodec
from ._core._events import NULL
from ._engine._executor import LocalExecutor
from ._errors import StoreError
from ._fleet._partitions import read_config
from ._ids import IdSource
from ._log._active import ActiveIndex
from ._log._memo import MemoStore
from ._log._records import wakeup_key
from .store import ObjectStore, open_store

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from msgspec import Raw

    from ._engine import Engine
    from ._engine._executor import Executor
    from ._registry import Registry

T = TypeVar("T")

_SEND_ATTEMPTS = 5  # tries of one inbox write, under one message id
_SEND_BACKOFF = timedelta(seconds=0.2)


class _ClientBase:
    """What a client holds, and how it reaches the store and an engine in this process."""

    def __init__(
        self,
        store: str | ObjectStore = "file://./.durable",
        *,
        storage_options: Mapping[str, Any] | None = None,
        registry: Registry | None = None,
        clock: Clock | None = None,
        codec: PayloadCodec | None = None,
        poll_interval: float = 0.25,
        memo_store: MemoStore | None = None,
        memo_prefix: str = "memo",
        ids: IdSource | None = None,
        _engine: Engine | None = None,
    ) -> None:
        self.store = open_store(store, storage_options=storage_options)
        self.ids = ids or IdSource()
        self.memo_store = memo_store or MemoStore(self.store, memo_prefix)
        self.registry = registry
        self.clock: Clock = clock or SystemClock()
        self.codec: PayloadCodec = codec or JsonCodec()
        self.poll_interval = poll_interval
        self._engine = _engine
        self._index: ActiveIndex | None = None  # the store's active index, its count read once
        self._all_indexed = False  # every partition's index complete (then for good)
        self._never_suspends = bool(getattr(self.store, "never_suspends", False))

    async def _ring(self, instance_id: str) -> None:
        """Tell whichever process runs the instance's partition to look at it. On a store
        no runtime has used yet there is no one to tell, nor a partition count (a client
        never fixes it: the runtimes do): the first runtime to start finds the
        instance in the log."""
        index = await self._active()
        if index.known:
            await self.store.put(wakeup_key(instance_id, index.partition(instance_id)), b"")

    async def _active(self) -> ActiveIndex:
        """The store's active index: its runtime's, or one of its own (the store's
        partition count read once a runtime has fixed it)."""
        if self._engine is not None and self._engine.running:
            return self._engine.index
        if self._index is None or not self._index.known:
            config = await read_config(self.store)
            self._index = ActiveIndex(self.store, config.partitions if config else None)
        return self._index

    def _executor(self) -> Executor | None:
        """What runs workflow code here: the runtime's, or one over this client's
        registry (None: a client without the code)."""
        if self._engine is not None:
            return self._engine.executor
        return LocalExecutor(self.registry, self.codec) if self.registry is not None else None

    def _decode(self, raw: Raw, type_: Any = Any) -> Any:
        if raw == NULL:
            return None
        return self.codec.decode(raw, type_)

    async def _retried(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, tried again after a transient store error (a write that is the same
        when repeated: an inbox message under its id, a wakeup), so that one lost
        request does not leave what landed before it unannounced."""
        for attempt in range(_SEND_ATTEMPTS):
            try:
                return await call()
            except StoreError as err:
                if not err.transient or attempt == _SEND_ATTEMPTS - 1:
                    raise
                if attempt:  # the first retry goes at once: a lost answer is the usual case
                    await self.clock.sleep_until(self.clock.now() + _SEND_BACKOFF * attempt)
        raise AssertionError("unreachable")

    def _busy(self) -> _BusyScope:
        return _BusyScope(self._engine)


class _BusyScope:
    """Tells an in-process engine that a client call is under way (for auto-advance)."""

    __slots__ = ("_engine",)

    def __init__(self, engine: Engine | None) -> None:
        self._engine = engine

    async def __aenter__(self) -> None:
        if self._engine is not None:
            self._engine.busy_enter()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._engine is not None:
            self._engine.busy_exit()
