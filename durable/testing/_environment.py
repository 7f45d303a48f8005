"""``WorkflowEnvironment``: a runtime on an in-memory store and a time-skipping clock."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from durable._clock import MockClock
from durable._runtime import Runtime

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from durable._client import Client, WorkflowHandle
    from durable._registry import Registry
    from durable.store import ObjectStore

__all__ = ["WorkflowEnvironment"]

T = TypeVar("T")


class WorkflowEnvironment:
    """Run workflows in a test: in memory, on virtual time that skips ahead.

    With the default ``MockClock(auto_advance=True)``, time jumps to the next durable
    timer whenever nothing is runnable, so a 30-day sleep takes microseconds. Extra
    keyword arguments go to :class:`durable.Runtime`.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        clock: MockClock | None = None,
        store: str | ObjectStore = "memory://",
        **runtime_options: Any,
    ) -> None:
        self.clock = clock if clock is not None else MockClock(auto_advance=True)
        self.runtime = Runtime(registry, store=store, clock=self.clock, **runtime_options)

    @property
    def client(self) -> Client:
        """The runtime's client: handles, list, purge, rerun."""
        return self.runtime.client

    async def __aenter__(self) -> WorkflowEnvironment:
        await self.runtime.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self.runtime.__aexit__(*exc_info)

    async def start(
        self,
        workflow: Callable[..., Awaitable[T]] | str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        reuse: bool = False,
    ) -> WorkflowHandle[T]:
        """Start a workflow; return its handle."""
        return await self.runtime.start(workflow, input, instance_id=instance_id, reuse=reuse)

    async def run(
        self,
        workflow: Callable[..., Awaitable[T]] | str,
        input: Any = None,
        *,
        instance_id: str | None = None,
    ) -> T:
        """Start a workflow and return its result (or raise ``WorkflowFailed``)."""
        handle = await self.start(workflow, input, instance_id=instance_id)
        return await handle

    async def wait_idle(self) -> None:
        """Return once no turn, activity or client call is in progress."""
        await self.runtime.wait_idle()
