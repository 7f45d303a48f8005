"""Updates: a handler the workflow set, called with a durable request, its outcome in
history.

An accepted update is an ``UpdateRequested`` event: the run calls the handler as a task
of its own (it may await activities, timers, anything), and records the outcome as
``UpdateCompleted`` in the turn it comes in. One update id runs once per run: a second
request with it (a caller retrying after an unclear failure) is recorded and ignored.
The validator is a plain function called on the run's state, as a query handler is
(:mod:`._queries`): it rejects before anything is written.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msgspec import Raw

from durable._errors import (
    NonDeterminismError,
    QueryFailedError,
    SerializationError,
    UnknownUpdateError,
    UpdateRejectedError,
)

from ._actions import CompleteUpdate
from ._failure import FailureDetails, failure_from_exception
from ._queries import answer_query

if TYPE_CHECKING:
    from ._events import UpdateCompleted, UpdateRequested
    from ._replay import WorkflowRun

__all__ = ["UpdateHandler", "completed", "requested", "validate"]


@dataclass(frozen=True, slots=True)
class UpdateHandler:
    """What ``ctx.set_update_handler`` registered under one name."""

    handler: Callable[[Any], Awaitable[Any]]
    validator: Callable[[Any], Any] | None = None


def validate(run: WorkflowRun, name: str, arg: Raw) -> None:
    """Run update ``name``'s validator on the run's state, changing nothing. Raises
    ``UnknownUpdateError`` naming no handler, ``UpdateRejectedError`` if it rejects."""
    found = run.update_handlers.get(name)
    if found is None:
        raise UnknownUpdateError(run.instance_id, name, list(run.update_handlers))
    if found.validator is None:
        return
    run.query_handlers[_VALIDATOR] = found.validator
    try:
        answer_query(run, _VALIDATOR, Raw(b"[" + bytes(arg) + b"]"))
    except QueryFailedError as err:
        raise UpdateRejectedError(run.instance_id, name, str(err.__cause__ or err)) from err
    finally:
        del run.query_handlers[_VALIDATOR]


_VALIDATOR = "\x00validator"  # a name no workflow can give a query handler


def requested(run: WorkflowRun, event: UpdateRequested) -> None:
    """An update arrived: start its handler, once per id in this run."""
    if event.update_id in run.update_ids:
        return  # a retry of one already applied
    run.update_ids.add(event.update_id)
    found = run.update_handlers.get(event.name)
    if found is None:
        known = ", ".join(sorted(run.update_handlers)) or "none"
        message = f"no update handler {event.name!r} (it has {known})"
        _finish(run, event.update_id, failure=FailureDetails("UnknownUpdate", message))
        return
    try:
        value = run.codec.decode(event.input, Any)
    except SerializationError as err:
        _finish(run, event.update_id, failure=failure_from_exception(err))
        return
    run.spawn(_handle(run, event.update_id, found.handler, value))


async def _handle(
    run: WorkflowRun, update_id: str, handler: Callable[[Any], Awaitable[Any]], value: Any
) -> None:
    try:
        result = await handler(value)
    except Exception as err:
        _finish(run, update_id, failure=failure_from_exception(err))
        return
    try:
        raw = Raw(run.codec.encode(result))
    except SerializationError as err:
        _finish(run, update_id, failure=failure_from_exception(err))
        return
    _finish(run, update_id, result=raw)


def _finish(
    run: WorkflowRun, update_id: str, *, result: Raw | None = None,
    failure: FailureDetails | None = None,
) -> None:  # fmt: skip
    action = CompleteUpdate(update_id, failure=failure) if result is None else (
        CompleteUpdate(update_id, result)
    )  # fmt: skip
    run.record(action)


def completed(run: WorkflowRun, event: UpdateCompleted) -> None:
    """History says the update completed: the code must have completed it, in this turn."""
    if not run.take_recorded(
        lambda a: type(a) is CompleteUpdate and a.update_id == event.update_id
    ):
        raise NonDeterminismError(
            f"workflow {run.instance_id!r}: history event {event.event_id} completes update "
            f"{event.update_id!r}, but the workflow code did not",
            event_id=event.event_id,
        )
