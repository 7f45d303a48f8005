"""``WorkflowHandle``: one instance, seen and steered through its ``Client``."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from msgspec import Raw

from ._clock import within
from ._core._events import (
    EventRaised,
    HistoryEvent,
    WorkflowCancelRequested,
    WorkflowResumed,
    WorkflowSuspended,
    WorkflowTerminated,
)
from ._core._failure import FailureDetails
from ._core._state import WorkflowState, WorkflowStatus
from ._errors import WorkflowFailed
from ._log._instances import load_existing

if TYPE_CHECKING:
    from collections.abc import Generator
    from datetime import timedelta

    from ._client import Client

__all__ = ["WorkflowHandle"]

T = TypeVar("T")


class WorkflowHandle(Generic[T]):
    """A workflow instance: await it for the result, or steer it.

    ``await handle`` returns the output, or raises ``WorkflowFailed`` with the failure.
    """

    __slots__ = ("_client", "_name", "instance_id")

    def __init__(self, client: Client, instance_id: str, name: str | None) -> None:
        self._client = client
        self.instance_id = instance_id
        self._name = name

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.instance_id!r})"

    def __await__(self) -> Generator[Any, None, T]:
        return self.result().__await__()

    async def result(self, timeout: timedelta | float | None = None) -> T:  # noqa: ASYNC109 (a Clock timeout)
        """The workflow's output once it ends; ``durable.TimeoutError`` if ``timeout``
        (on the client's Clock) passes first."""
        client = self._client
        snap = await within(
            client.clock, timeout, partial(client._wait, self.instance_id),
            f"workflow {self.instance_id!r}",
        )  # fmt: skip
        if snap.status is not WorkflowStatus.COMPLETED:
            failure = snap.failure or FailureDetails(
                snap.status.value, "the workflow did not complete"
            )
            raise WorkflowFailed(self.instance_id, failure)
        _, output_type = client._types(snap.name)
        result: T = client._decode(snap.output, output_type)
        return result

    async def describe(self) -> WorkflowState:
        """The instance's status, payloads and timestamps."""
        return self._client._state(self.instance_id, await self._client._snapshot(self.instance_id))

    async def raise_event(self, name: str, data: Any = None) -> None:
        """Send an external event; it waits in the workflow until asked for."""
        raw = Raw(self._client.codec.encode(data))
        await self._client._send(self.instance_id, EventRaised(name=name, input=raw))

    async def suspend(self, reason: str = "") -> None:
        """Pause the workflow: events queue up until ``resume``."""
        await self._client._send(self.instance_id, WorkflowSuspended(reason=reason))

    async def resume(self, reason: str = "") -> None:
        """Resume a suspended workflow."""
        await self._client._send(self.instance_id, WorkflowResumed(reason=reason))

    async def cancel(self, reason: str = "") -> None:
        """Ask the workflow to cancel, gracefully: it gets ``durable.CancelledError`` at
        its current await and may clean up (run activities, call sub-workflows) before it
        returns or re-raises; if the error escapes, it ends ``CANCELED``."""
        await self._client._send(self.instance_id, WorkflowCancelRequested(reason=reason))

    async def terminate(
        self, reason: str = "", output: Any = None, *, recursive: bool = True
    ) -> None:
        """End the workflow now as TERMINATED, with an optional output. With
        ``recursive`` (the default) its sub-workflows still running are terminated too,
        and theirs: the whole tree."""
        raw = Raw(self._client.codec.encode(output))
        event = WorkflowTerminated(reason=reason, output=raw, recursive=recursive)
        await self._client._send(self.instance_id, event)

    async def rewind(self, reason: str = "") -> None:
        """Rewind the FAILED workflow: what failed runs again, what succeeded is kept
        (see :meth:`Client.rewind <durable.Client.rewind>`)."""
        await self._client.rewind(self.instance_id, reason)

    async def query(self, name: str, *args: Any) -> Any:
        """Call the workflow's query handler ``name`` with ``args``; its answer.

        The process that holds the instance answers from its run; else a replay of the
        log here does (this client needs the workflow's code: its registry). Nothing is
        written. ``UnknownQueryError`` for a name with no handler, ``QueryFailedError``
        if the handler raised or tried to change the workflow."""
        return await self._client._query(self.instance_id, name, args)

    async def update(self, name: str, arg: Any = None, *, update_id: str | None = None) -> Any:
        """Deliver update ``name`` with ``arg`` durably; its handler's result.

        The validator runs first (``UpdateRejectedError``: nothing written). An accepted
        update is in history and runs once per ``update_id`` (one is made when none is
        given): after an unclear failure, call again with the same id to get the
        outcome of the one update. ``UpdateFailedError`` if its handler raised,
        ``UnknownUpdateError`` for a name without a handler."""
        update_id = await self.start_update(name, arg, update_id=update_id)
        return await self.update_result(update_id)

    async def start_update(
        self, name: str, arg: Any = None, *, update_id: str | None = None
    ) -> str:
        """Validate and deliver an update, without waiting for its outcome; its id."""
        return await self._client._start_update(self.instance_id, name, arg, update_id)

    async def update_result(self, update_id: str) -> Any:
        """Wait for the outcome of update ``update_id``: its result, or
        ``UpdateFailedError``."""
        return await self._client._update_result(self.instance_id, update_id)

    async def history(self) -> list[HistoryEvent]:
        """The events of the current run, each with ``event_id`` and ``timestamp``."""
        run = await load_existing(self._client.store, self.instance_id)
        return run.history
