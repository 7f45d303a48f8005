"""``Runtime``: one process that runs workflows and activities against a store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc

from ._client import Client, WorkflowHandle
from ._clock import Clock, SystemClock
from ._codec import JsonCodec, PayloadCodec
from ._engine import Engine
from .store import ObjectStore, open_store

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from ._registry import Registry

__all__ = ["Runtime"]

T = TypeVar("T")


class Runtime:
    """Runs a registry's workflows and activities, durably, in this process.

    Use it as an async context manager: on entry it recovers every unfinished
    instance in the store and starts serving; on exit it stops cleanly (anything in
    flight resumes from the log next time).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        store: str | ObjectStore = "file://./.durable",
        clock: Clock | None = None,
        codec: PayloadCodec | None = None,
        max_concurrent_activities: int = 100,
        max_concurrent_workflows: int = 32,
        max_cached_workflows: int = 10_000,
        poll_interval: float = 1.0,
    ) -> None:
        if max_concurrent_activities < 1 or max_concurrent_workflows < 1:
            raise ValueError("concurrency limits must be at least 1")
        self.registry = registry
        self.clock: Clock = clock or SystemClock()
        self.codec: PayloadCodec = codec or JsonCodec()
        self._owns_store = not isinstance(store, ObjectStore)
        self.store = open_store(store)
        self._engine = Engine(
            registry,
            self.store,
            self.clock,
            self.codec,
            max_concurrent_workflows=max_concurrent_workflows,
            max_concurrent_activities=max_concurrent_activities,
            max_cached_workflows=max_cached_workflows,
            poll_interval=poll_interval,
        )
        self.client = Client(
            self.store, registry=registry, clock=self.clock, codec=self.codec, _engine=self._engine
        )
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Runtime:
        if self._tg is not None:
            raise RuntimeError("this Runtime is already running")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await tg.start(self._engine.run)
        except BaseException as exc:
            tg.cancel_scope.cancel()
            await tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._tg = tg
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        tg, self._tg = self._tg, None
        assert tg is not None
        tg.cancel_scope.cancel()
        try:
            return await tg.__aexit__(*exc_info)
        finally:
            if self._owns_store:
                with anyio.CancelScope(shield=True):
                    await self.store.close()

    async def start(
        self,
        workflow: Callable[..., Awaitable[T]] | str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        reuse: bool = False,
    ) -> WorkflowHandle[T]:
        """Start a workflow and return its handle (see :meth:`Client.start`)."""
        if self._tg is None:
            raise RuntimeError("start the Runtime first: async with Runtime(...) as runtime")
        return await self.client.start(workflow, input, instance_id=instance_id, reuse=reuse)

    async def wait_idle(self) -> None:
        """Return once no turn, activity or client call is in progress (for tests)."""
        await self._engine.wait_idle()
