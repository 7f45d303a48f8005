"""``WorkflowStatus`` and ``WorkflowState``: what ``describe()`` tells about an instance."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from durable._errors import CancelledError

from ._failure import FailureDetails, qualified_name

__all__ = ["TERMINAL", "WorkflowState", "WorkflowStatus", "ended_by"]


class WorkflowStatus(enum.StrEnum):
    """The lifecycle of an instance."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TERMINATED = "TERMINATED"
    CANCELED = "CANCELED"
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW"

    @functools.cached_property
    def is_terminal(self) -> bool:
        """Completed, failed, terminated or canceled: nothing more will happen. (Cached
        on the member: the engine asks it several times a turn.)"""
        return self in TERMINAL


TERMINAL = frozenset(
    {
        WorkflowStatus.COMPLETED,
        WorkflowStatus.FAILED,
        WorkflowStatus.TERMINATED,
        WorkflowStatus.CANCELED,
    }
)


def ended_by(failure: FailureDetails) -> WorkflowStatus:
    """The status of a run that failed with ``failure``: CANCELED when the workflow let
    ``durable.CancelledError`` escape, FAILED otherwise."""
    if failure.type == qualified_name(CancelledError):
        return WorkflowStatus.CANCELED
    return WorkflowStatus.FAILED


@dataclass(frozen=True, slots=True)
class WorkflowState:
    """A snapshot of one instance: status, payloads (decoded) and timestamps."""

    instance_id: str
    name: str
    status: WorkflowStatus
    input: Any = None
    output: Any = None
    failure: FailureDetails | None = None
    custom_status: Any = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: str = ""
    reason: str = ""
    """Why a running instance makes no progress (for example, no worker has its version)."""
    is_resident: bool | None = None
    """Whether this process holds the instance in memory (None: not known here)."""
    search_attributes: dict[str, Any] = field(default_factory=dict)
    """The instance's search attributes (str, int, bool or datetime values), by name."""
