"""Queries answered by the process that holds the instance, from the run in its memory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from durable._core._queries import answer_query
from durable._core._replay import WorkflowRun

from ._base import _EngineBase
from ._lifecycle import InstanceState

if TYPE_CHECKING:
    from msgspec import Raw

# states whose run holds exactly what the log has committed (no turn half applied)
_SETTLED = frozenset({InstanceState.IDLE, InstanceState.QUEUED})


class _Queries(_EngineBase):
    """Answer a query from a run held here."""

    def query_resident(self, instance_id: str, name: str, args: Raw) -> Raw | None:
        """The answer of the run held here, if this process runs the instance and holds
        its run settled between turns; None otherwise (the caller replays the log)."""
        inst = self.running_here(instance_id)
        if inst is None or inst.state not in _SETTLED or not isinstance(inst.run, WorkflowRun):
            return None
        return answer_query(inst.run, name, args)
