"""What a hang report reads from the store: the steps a run left open, and who holds
its partition's lease."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from durable._core._events import (
    ActivityCompleted,
    ActivityErrored,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowErrored,
    ChildWorkflowScheduled,
    TimerCreated,
    TimerFired,
)

if TYPE_CHECKING:
    from durable.testing._system_checks import Ledger

__all__ = ["decode_lease", "open_steps"]

_ANSWERS = (ActivityCompleted, ActivityErrored, TimerFired, ChildWorkflowCompleted,
            ChildWorkflowErrored)  # fmt: skip


def decode_lease(data: bytes) -> Any:
    """A lease object's owner and expiry, or None."""
    try:
        return msgspec.json.decode(data, type=_Lease)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class _Lease(msgspec.Struct):
    owner: str
    expires_at: datetime
    incarnation: str = ""


def open_steps(history: list[Any], ledger: Ledger) -> str:
    """The steps a run's history left open: activities, timers, children (with the
    state of the child), or "nothing open" (it waits for an event, or a turn)."""
    answered = {e.task_id for e in history if isinstance(e, _ANSWERS)}
    found = []
    for e in history:
        if isinstance(e, ActivityScheduled) and e.task_id not in answered:
            found.append("an activity")
        elif isinstance(e, TimerCreated) and e.task_id not in answered:
            found.append(f"a timer ({e.purpose})")
        elif isinstance(e, ChildWorkflowScheduled) and e.task_id not in answered:
            child = ledger.current(e.instance_id)
            state = "never started" if child is None else child.status
            found.append(f"a child ({state})")
    return ", ".join(sorted(set(found))) or "nothing open"
