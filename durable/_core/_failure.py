"""``FailureDetails``: how an error is recorded in history and carried to callers."""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

import msgspec

from durable._errors import ActivityFailed, ActivityTimeoutError, WorkflowFailed

if TYPE_CHECKING:
    from datetime import timedelta

__all__ = ["FailureDetails", "failure_from_exception", "qualified_name", "timeout_failure"]


class FailureDetails(msgspec.Struct, frozen=True, omit_defaults=True):
    """An error as history keeps it: its type, message, stack, and where it came from.

    ``type`` is the exception's class name (``ValueError``, ``mymod.CardDeclined``);
    ``bases`` lists the qualified names of its base classes, so retry policies can
    match subclasses on replay without importing anything. ``non_retriable`` and
    ``properties`` (a JSON object's text, empty for none) are what a Durable Task SDK
    attached to a failure, kept so it reads them back as sent.
    """

    type: str
    message: str
    stack_trace: str = ""
    bases: tuple[str, ...] = ()
    cause: FailureDetails | None = None
    non_retriable: bool = False
    properties: str = ""

    def is_a(self, names: frozenset[str]) -> bool:
        """Whether this error's type or one of its bases is among ``names``."""
        return self.type in names or any(base in names for base in self.bases)


def qualified_name(cls: type) -> str:
    """``ValueError`` for builtins, ``module.Qual.Name`` for everything else."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def failure_from_exception(exc: BaseException) -> FailureDetails:
    """Record ``exc``; an activity's or sub-workflow's failure passes through unchanged
    in type and message, so the caller sees the error that actually happened."""
    if isinstance(exc, ActivityFailed | WorkflowFailed):
        inner = exc.failure
        return FailureDetails(
            type=inner.type,
            message=inner.message,
            stack_trace=inner.stack_trace,
            bases=inner.bases,
            cause=inner.cause,
            non_retriable=inner.non_retriable,
            properties=inner.properties,
        )
    cls = type(exc)
    return FailureDetails(
        type=qualified_name(cls),
        message=str(exc),
        stack_trace="".join(traceback.format_exception(exc)),
        bases=_bases(cls),
        cause=failure_from_exception(exc.__cause__) if exc.__cause__ is not None else None,
    )


def _bases(cls: type) -> tuple[str, ...]:
    return tuple(qualified_name(base) for base in cls.__mro__[1:] if base is not object)


def timeout_failure(kind: str, limit: timedelta) -> FailureDetails:
    """The failure of an activity that ran out of time: an ``ActivityTimeoutError`` whose
    message starts with the timeout's ``kind`` (what ``ActivityTimeoutError.timeout`` reads)."""
    cls = ActivityTimeoutError
    return FailureDetails(
        type=qualified_name(cls), message=f"{kind} timeout of {limit} passed", bases=_bases(cls)
    )


def is_timeout(failure: FailureDetails) -> bool:
    """Whether ``failure`` records an activity timeout."""
    return failure.type == qualified_name(ActivityTimeoutError)
