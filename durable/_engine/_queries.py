"""Queries and update validators answered by the process that holds the instance, from
the run in its memory; commits waited for (an update's caller waits for its outcome)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from durable._core._queries import answer_query
from durable._core._replay import WorkflowRun
from durable._core._updates import validate

from ._base import _EngineBase
from ._lifecycle import InstanceState

if TYPE_CHECKING:
    from msgspec import Raw

# states whose run holds exactly what the log has committed (no turn half applied)
_SETTLED = frozenset({InstanceState.IDLE, InstanceState.QUEUED})


class _Queries(_EngineBase):
    """Answer a query from a run held here."""

    def _settled_run(self, instance_id: str) -> WorkflowRun | None:
        inst = self.running_here(instance_id)
        if inst is None or inst.state not in _SETTLED or not isinstance(inst.run, WorkflowRun):
            return None
        return inst.run

    def query_resident(self, instance_id: str, name: str, args: Raw) -> Raw | None:
        """The answer of the run held here, if this process runs the instance and holds
        its run settled between turns; None otherwise (the caller replays the log)."""
        run = self._settled_run(instance_id)
        return None if run is None else answer_query(run, name, args)

    def validate_resident(self, instance_id: str, name: str, arg: Raw) -> bool:
        """Run an update's validator on the run held here (raising if it rejects); False
        if no settled run is held here (the caller replays the log)."""
        run = self._settled_run(instance_id)
        if run is None:
            return False
        validate(run, name, arg)
        return True

    def commit_event(self, instance_id: str) -> anyio.Event | None:
        """An event set at the next commit of an instance this process runs (None if it
        does not run it here: the caller polls the store). Ask before reading the
        store, so that no commit can come between the read and the wait."""
        if self.running_here(instance_id) is None:
            return None
        event = self._commit_waiters.get(instance_id)
        if event is None:
            event = self._commit_waiters[instance_id] = anyio.Event()
        return event
