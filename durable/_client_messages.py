"""What a ``Client`` sends an instance: messages (events, suspend, resume, cancel,
terminate) to the inbox of its current start, and updates; queries and update
validators replayed here when no process here holds the instance."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from msgspec import Raw

from ._client_base import _ClientBase
from ._core._events import HistoryEvent, UpdateCompleted, UpdateRequested
from ._core._failure import FailureDetails
from ._core._queries import answer_query
from ._core._replay import WorkflowRun
from ._core._updates import REJECTED, validate
from ._errors import UnknownWorkflowError, UpdateFailedError, UpdateRejectedError
from ._ids import validate_key
from ._log._instances import current_start, load_existing, send_message

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._log._reader import RunLog
    from ._log._records import InboxMessage, StartRequest

T = TypeVar("T")

_ENDED = FailureDetails("Ended", "the workflow ended before the update completed")


class _Messages(_ClientBase):
    """Messages, updates and queries for one instance, from a client."""

    async def _query(self, instance_id: str, name: str, args: tuple[Any, ...]) -> Any:
        raw = Raw(self.codec.encode(list(args)))
        engine = self._engine
        answer = engine.query_resident(instance_id, name, raw) if engine is not None else None
        if answer is None:
            answer = await self._query_replayed(instance_id, name, raw)
        return self._decode(answer)

    async def _start_update(
        self, instance_id: str, name: str, arg: Any, update_id: str | None
    ) -> str:
        update_id = self.ids.instance_id() if update_id is None else update_id
        validate_key(update_id, "update id")
        raw = Raw(self.codec.encode(arg))
        loaded = await load_existing(self.store, instance_id)
        if _outcome(loaded, update_id) is not None or any(
            _names_update(e, update_id) for e in loaded.history
        ):
            return update_id  # asked before (a retry): its one outcome is on its way
        engine = self._engine
        if engine is None or not engine.validate_resident(instance_id, name, raw):
            await self._replayed(instance_id, loaded, lambda run: validate(run, name, raw))
        event = UpdateRequested(update_id=update_id, name=name, input=raw)
        if not await self._send(instance_id, event, msg_id=f"u-{update_id}"):
            raise UpdateFailedError(instance_id, update_id, _ENDED)
        return update_id

    async def _update_result(self, instance_id: str, update_id: str) -> Any:
        while True:
            committed = None if self._engine is None else self._engine.commit_event(instance_id)
            loaded = await load_existing(self.store, instance_id)
            event = _outcome(loaded, update_id)
            if event is not None:
                if event.failure is None:
                    return self._decode(event.result)
                if event.failure.type == REJECTED:  # by the run, on the state it then had
                    raise UpdateRejectedError(instance_id, update_id, event.failure.message)
                raise UpdateFailedError(instance_id, update_id, event.failure)
            if loaded.status.is_terminal:
                raise UpdateFailedError(instance_id, update_id, _ENDED)
            if committed is not None:
                await committed.wait()  # the instance's next commit here
            else:
                later = self.clock.now() + timedelta(seconds=self.poll_interval)
                await self.clock.sleep_until(later)

    async def _query_replayed(self, instance_id: str, name: str, args: Raw) -> Raw:
        """Answer a query by replaying the instance's current run from the log here."""
        loaded = await load_existing(self.store, instance_id)
        return await self._replayed(instance_id, loaded, lambda run: answer_query(run, name, args))

    async def _replayed(
        self, instance_id: str, loaded: RunLog, read: Callable[[WorkflowRun], T]
    ) -> T:
        """``read`` the instance's current run, replayed from ``loaded`` here."""
        executor = self._executor()
        if executor is None:
            raise UnknownWorkflowError(
                f"no process holds {instance_id!r} here, and this client has no registry "
                f"to replay {loaded.started.name!r} with: give it one"
            )
        run = executor.new_run(instance_id, loaded.history)
        try:
            if not isinstance(run, WorkflowRun):
                raise UnknownWorkflowError(f"{loaded.started.name!r} runs on remote workers")
            return read(run)
        finally:
            run.close()

    async def _send(
        self,
        instance_id: str,
        event: HistoryEvent,
        *,
        msg_id: str | None = None,
        start: StartRequest | None = None,
    ) -> bool:
        """Send ``event`` to the start the instance's current run belongs to: only its
        runs apply it. If that run has ended, nothing is sent (False): a later start
        under the id never takes it (Durable Task drops an event for an ended instance
        too). ``start``: a ``start_with_event``'s message, which a run that ends before
        applying it starts again (see :class:`~durable._log._records.InboxMessage`)."""
        async with self._busy():
            engine = self._engine
            local = engine.running_here(instance_id) if engine is not None else None
            if local is not None:
                # the run in memory before the write: no run had consumed the message then
                seen: int | None = local.run_start
                to = local.started.origin_run
            else:
                seen = None
                to, ended = await current_start(self.store, instance_id)  # raises if absent
                if ended:
                    return False
            if msg_id is None:
                msg_id = self.ids.message_id(int(self.clock.now().timestamp() * 1e9))
            message = await self._write_message(instance_id, msg_id, event, to, start)
            if engine is not None:
                await self._retried(partial(engine.announce_message, instance_id, message, seen))
            else:
                await self._retried(partial(self._ring, instance_id))
        return True

    async def _write_message(
        self,
        instance_id: str,
        msg_id: str,
        event: HistoryEvent,
        to: str,
        start: StartRequest | None = None,
    ) -> InboxMessage:
        """Write a message to the inbox, retrying transient errors under the same id: a
        write that landed but whose answer was lost is then written again in place, and
        the engine applies one message id once, so the event is never delivered twice."""
        return await self._retried(
            partial(send_message, self.store, instance_id, msg_id, event, to, start)
        )


def _outcome(loaded: RunLog, update_id: str) -> UpdateCompleted | None:
    """The outcome of update ``update_id`` in the current run, or handed to it by the
    runs before it (through continue-as-new); None while it has none."""
    for event in loaded.history:
        if type(event) is UpdateCompleted and event.update_id == update_id:
            return event
    for event in loaded.started.updates:
        if event.update_id == update_id:
            return event
    return None


def _names_update(event: HistoryEvent, update_id: str) -> bool:
    """Whether ``event`` is the request or the outcome of update ``update_id``."""
    return type(event) in (UpdateRequested, UpdateCompleted) and event.update_id == update_id  # type: ignore[union-attr]
