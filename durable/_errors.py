"""The exception tree of ``durable``.

Every error the library raises on purpose derives from :class:`DurableError`::

    DurableError
    ├── WorkflowFailed            awaiting a workflow that ended in failure
    ├── ActivityFailed            awaiting an activity that failed (after its retries)
    │   └── ActivityTimeoutError  an activity attempt, or all of them, ran out of time
    ├── NonDeterminismError       replayed code no longer matches its history
    ├── TimeoutError              a wait ran out of time (also a builtin TimeoutError)
    ├── CancelledError            awaiting an operation (or in a workflow) that was cancelled
    ├── InstanceExistsError       starting an id that is taken
    │   └── InstancePurgingError  starting an id whose purge is under way (or was cut short)
    ├── InstanceNotFoundError     naming an id that does not exist (also a LookupError)
    ├── InstanceStatusError       an operation the instance's status does not allow (a rewind
    │                             of one that did not fail)
    ├── InvalidInstanceIdError    an id or key that cannot become an object key (also ValueError)
    ├── InvalidArgumentError      an argument out of range: a timeout <= 0 (also ValueError)
    │   └── SearchAttributeError  a search attribute whose name or value is not allowed
    ├── UnknownWorkflowError      a workflow or activity name nobody registered (also LookupError)
    ├── UnknownQueryError         a query name the workflow has no handler for (also LookupError)
    ├── QueryFailedError          a query handler raised, or tried to schedule something
    ├── UnknownUpdateError        an update name the workflow has no handler for (also LookupError)
    ├── UpdateRejectedError       an update's validator rejected it (nothing was written)
    ├── UpdateFailedError         an update's handler raised (the workflow goes on)
    ├── SerializationError        a payload that cannot be encoded or decoded (also TypeError)
    ├── LifecycleError            internal: an instance moved in a way its lifecycle forbids
    └── StoreError                the object store failed or holds something unreadable
        ├── ObjectNotFoundError   a key that is not there (also LookupError)
        ├── ObjectExistsError     put-if-absent found the key taken
        └── PreconditionFailedError  put-if-match found another version
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from ._core._failure import FailureDetails

__all__ = [
    "ActivityFailed",
    "ActivityTimeoutError",
    "CancelledError",
    "DurableError",
    "EngineFailedError",
    "InstanceExistsError",
    "InstanceNotFoundError",
    "InstancePurgingError",
    "InstanceRunningError",
    "InstanceStatusError",
    "InvalidArgumentError",
    "InvalidInstanceIdError",
    "NonDeterminismError",
    "ObjectExistsError",
    "ObjectNotFoundError",
    "PreconditionFailedError",
    "QueryFailedError",
    "SearchAttributeError",
    "SerializationError",
    "StoreError",
    "TimeoutError",
    "UnknownQueryError",
    "UnknownUpdateError",
    "UnknownWorkflowError",
    "UpdateFailedError",
    "UpdateRejectedError",
    "WorkflowFailed",
]


class DurableError(Exception):
    """The root of every error ``durable`` raises on purpose."""


class LifecycleError(DurableError):
    """Raised when the engine fires a lifecycle event that an instance's state does not
    allow: a bug in the engine, never the caller's fault. Names instance, state, event."""

    def __init__(self, instance_id: str, state: str, event: str) -> None:
        super().__init__(f"instance {instance_id!r}: event {event} is not allowed in state {state}")
        self.instance_id = instance_id
        self.state = state
        self.event = event


class WorkflowFailed(DurableError):
    """Raised when awaiting a workflow (or sub-workflow) that ended in failure.

    ``failure`` carries the error type, message and stack recorded in history.
    """

    def __init__(self, instance_id: str, failure: FailureDetails) -> None:
        super().__init__(f"workflow {instance_id!r} failed: {failure.type}: {failure.message}")
        self.instance_id = instance_id
        self.failure = failure


class ActivityFailed(DurableError):
    """Raised inside a workflow when an activity failed and no retry is left."""

    def __init__(self, name: str, task_id: int, failure: FailureDetails) -> None:
        super().__init__(
            f"activity {name!r} (task {task_id}) failed: {failure.type}: {failure.message}"
        )
        self.name = name
        self.task_id = task_id
        self.failure = failure


class ActivityTimeoutError(ActivityFailed):
    """Raised inside a workflow when an activity ran out of time: ``timeout`` names which
    limit passed (``"start_to_close"``, ``"heartbeat"`` or ``"schedule_to_close"``)."""

    def __init__(self, name: str, task_id: int, failure: FailureDetails) -> None:
        super().__init__(name, task_id, failure)
        self.timeout = failure.message.partition(" ")[0]
        """Which timeout fired: the first word of the recorded message."""


class NonDeterminismError(DurableError):
    """Raised when replayed workflow code does something its history does not hold.

    ``event_id`` names the history event that does not match.
    """

    def __init__(self, message: str, *, event_id: int | None = None) -> None:
        super().__init__(message)
        self.event_id = event_id


class TimeoutError(DurableError, builtins.TimeoutError):
    """Raised when a durable wait (an event, a result) runs out of time."""


class CancelledError(DurableError):
    """Raised inside a workflow at an await whose operation was cancelled: by
    ``future.cancel()``, ``ctx.any(..., cancel_rest=True)``, or a cancel of the workflow
    (``WorkflowHandle.cancel``). A workflow that lets it escape ends ``CANCELED``."""


class EngineFailedError(DurableError):
    """Raised out of a runtime whose engine stopped on a fault of its own: one of its
    tasks ended by a cancellation nobody asked for (a stray ``task.cancel()``), which
    would otherwise end every other task of the engine without a word."""


class InstanceExistsError(DurableError):
    """Raised when starting an instance id that already exists."""

    def __init__(self, instance_id: str, status: str | None = None) -> None:
        detail = f" (status {status})" if status else ""
        super().__init__(
            f"instance {instance_id!r} already exists{detail}; "
            "pass reuse=True to start it again once it has ended"
        )
        self.instance_id = instance_id
        self.status = status
        """The existing instance's status, when known."""


class InstancePurgingError(InstanceExistsError):
    """Raised when starting an instance id whose purge is under way: the id is taken
    until it is done. A purge cut short (its process died) is finished by the runtime's
    sweeper, by a purge of the id, or by a start with ``reuse``, once ``takeover`` old."""

    def __init__(self, instance_id: str, since: datetime, takeover: timedelta) -> None:
        DurableError.__init__(
            self,
            f"instance {instance_id!r} is being purged (since {since.isoformat()}); "
            f"a purge cut short is finished {takeover.total_seconds():g}s after it began "
            "by the runtime's sweeper, or by a purge of it (or a start with reuse=True)",
        )
        self.instance_id = instance_id
        self.status = None
        self.since = since
        """When the purge under way began (or was last taken over), by the Clock."""


class InstanceRunningError(DurableError):
    """Raised when an operation needs an ended instance (purge, rerun) but it still runs."""

    def __init__(
        self, instance_id: str, status: str, hint: str = "terminate it or wait for it to end first"
    ) -> None:
        super().__init__(f"instance {instance_id!r} is {status}: {hint}")
        self.instance_id = instance_id


class InstanceStatusError(DurableError):
    """Raised when an operation needs the instance in another status: a rewind needs a
    FAILED one."""

    def __init__(self, instance_id: str, status: str, why: str) -> None:
        super().__init__(f"instance {instance_id!r} is {status}: {why}")
        self.instance_id = instance_id
        self.status = status
        """The instance's status when it was refused."""


class InstanceNotFoundError(DurableError, LookupError):
    """Raised when an instance id names no instance in the store."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"no instance {instance_id!r} in the store")
        self.instance_id = instance_id


class InvalidInstanceIdError(DurableError, ValueError):
    """Raised when an instance id or memo key cannot safely become an object key."""


class InvalidArgumentError(DurableError, ValueError):
    """Raised when an argument is out of its range (a timeout that is not positive)."""


class SearchAttributeError(InvalidArgumentError):
    """Raised when a search attribute's name is not allowed, or its value is not a str,
    int, bool or timezone-aware datetime within bounds (nothing is written)."""


class UnknownWorkflowError(DurableError, LookupError):
    """Raised when a workflow or activity name is not in the registry."""


class UnknownQueryError(DurableError, LookupError):
    """Raised when a query names no handler the workflow has set (at its last turn)."""

    def __init__(self, instance_id: str, name: str, known: list[str]) -> None:
        have = ", ".join(repr(k) for k in sorted(known)) or "none"
        super().__init__(f"workflow {instance_id!r} has no query handler {name!r} (it has {have})")
        self.instance_id = instance_id
        self.name = name


class QueryFailedError(DurableError):
    """Raised when a query handler raised, or tried to schedule something (a query
    changes nothing): the query fails, the workflow goes on untouched."""

    def __init__(self, instance_id: str, name: str, reason: str) -> None:
        super().__init__(f"query {name!r} of workflow {instance_id!r} failed: {reason}")
        self.instance_id = instance_id
        self.name = name


class UnknownUpdateError(DurableError, LookupError):
    """Raised when an update names no handler the workflow has set (at its last turn)."""

    def __init__(self, instance_id: str, name: str, known: list[str]) -> None:
        have = ", ".join(repr(k) for k in sorted(known)) or "none"
        super().__init__(f"workflow {instance_id!r} has no update handler {name!r} (it has {have})")
        self.instance_id = instance_id
        self.name = name


class UpdateRejectedError(DurableError):
    """Raised when an update's validator rejected it: nothing was written."""

    def __init__(self, instance_id: str, name: str, reason: str) -> None:
        super().__init__(f"update {name!r} of workflow {instance_id!r} was rejected: {reason}")
        self.instance_id = instance_id
        self.name = name
        self.reason = reason


class UpdateFailedError(DurableError):
    """Raised when an update's handler raised, with its ``failure``; the workflow goes on."""

    def __init__(self, instance_id: str, update_id: str, failure: FailureDetails) -> None:
        super().__init__(
            f"update {update_id!r} of workflow {instance_id!r} failed: "
            f"{failure.type}: {failure.message}"
        )
        self.instance_id = instance_id
        self.update_id = update_id
        self.failure = failure


class SerializationError(DurableError, TypeError):
    """Raised when a payload cannot be encoded, or stored bytes cannot be decoded."""


class StoreError(DurableError):
    """Raised when the object store fails or holds an object that cannot be read.

    ``transient`` says whether retrying the same operation may succeed.
    """

    def __init__(self, message: str, *, key: str | None = None, transient: bool = True) -> None:
        super().__init__(message)
        self.key = key
        self.transient = transient


class ObjectNotFoundError(StoreError, LookupError):
    """Raised when a key is not in the store."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object at {key!r}", key=key, transient=False)


class ObjectExistsError(StoreError):
    """Raised when put-if-absent finds the key already written."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} already exists", key=key, transient=False)


class PreconditionFailedError(StoreError):
    """Raised when put-if-match finds a version other than the expected one."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} changed since it was read", key=key, transient=False)
