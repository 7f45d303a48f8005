"""Updates: a handler the workflow set, called with a durable request, its outcome in
history.

An accepted update is an ``UpdateRequested`` event: the run calls the handler as a task
of its own (it may await activities, timers, anything), and records the outcome as
``UpdateCompleted`` in the turn it comes in. One update id runs once per run: a second
request with it (a caller retrying after an unclear failure) is recorded and ignored.
A continue-as-new hands the new run the outcomes of the updates taken so far (the last
:data:`CARRIED_UPDATES` of them), so that a retry there is answered with the one
outcome, never run again; an update whose handler still ran is carried as failed
(``ContinuedAsNew``): its caller gets an answer, and no second run.

The validator is a plain function called on the run's state, as a query handler is
(:mod:`._queries`): the caller runs it first, and a rejection writes nothing. The run
runs it again when it takes the update, on the state then (another update may have come
first): one it rejects there completes as failed with ``UpdateRejected``, its handler
never run, and its caller gets ``UpdateRejectedError`` as from its own check.
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
from ._events import UpdateCompleted
from ._failure import FailureDetails, failure_from_exception
from ._queries import answer_query

if TYPE_CHECKING:
    from ._events import UpdateRequested
    from ._replay import WorkflowRun

__all__ = ["CARRIED_UPDATES", "REJECTED", "UpdateHandler", "carried", "completed", "requested",
           "take_carried", "validate"]  # fmt: skip

CARRIED_UPDATES = 1000  # outcomes a continue-as-new hands on: retries of older ones run again
REJECTED = "UpdateRejected"  # the failure type of an update its validator rejected in the run
_CUT_SHORT = FailureDetails(
    "ContinuedAsNew", "the run continued as new before the update completed"
)


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
    try:  # again, on the state the run has now: the caller checked an earlier one
        validate(run, event.name, event.input)
    except UpdateRejectedError as err:
        _finish(run, event.update_id, failure=FailureDetails(REJECTED, err.reason))
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
    run.update_outcomes[update_id] = UpdateCompleted(
        update_id=update_id, result=action.result, failure=failure
    )
    run.record(action)


def carried(run: WorkflowRun) -> tuple[UpdateCompleted, ...]:
    """What a continue-as-new hands the new run: the outcomes of the updates taken so far
    (the most recent :data:`CARRIED_UPDATES`), those still running as failed."""
    outcomes = dict(run.update_outcomes)
    for update_id in sorted(run.update_ids.difference(outcomes)):
        outcomes.setdefault(update_id, UpdateCompleted(update_id=update_id, failure=_CUT_SHORT))
    return tuple(outcomes.values())[-CARRIED_UPDATES:]


def take_carried(run: WorkflowRun, updates: tuple[UpdateCompleted, ...]) -> None:
    """A run begins with the outcomes the run before handed on: a retry of one is ignored."""
    for outcome in updates:
        run.update_ids.add(outcome.update_id)
        run.update_outcomes[outcome.update_id] = outcome


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
