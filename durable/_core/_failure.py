"""``FailureDetails``: how an error is recorded in history and carried to callers."""

from __future__ import annotations

import traceback

import msgspec

from durable._errors import ActivityFailed, WorkflowFailed

__all__ = ["FailureDetails", "failure_from_exception", "qualified_name"]


class FailureDetails(msgspec.Struct, frozen=True, omit_defaults=True):
    """An error as history keeps it: its type, message, stack, and where it came from.

    ``type`` is the exception's class name (``ValueError``, ``mymod.CardDeclined``);
    ``bases`` lists the qualified names of its base classes, so retry policies can
    match subclasses on replay without importing anything.
    """

    type: str
    message: str
    stack_trace: str = ""
    bases: tuple[str, ...] = ()
    cause: FailureDetails | None = None

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
        )
    cls = type(exc)
    return FailureDetails(
        type=qualified_name(cls),
        message=str(exc),
        stack_trace="".join(traceback.format_exception(exc)),
        bases=tuple(qualified_name(base) for base in cls.__mro__[1:] if base is not object),
        cause=failure_from_exception(exc.__cause__) if exc.__cause__ is not None else None,
    )
