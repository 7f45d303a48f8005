"""Work-item filters: which orchestrations and activities a worker stream takes.

An MS worker may send ``workItemFilters`` in its ``GetWorkItemsRequest`` (the SDKs'
``use_work_item_filters``; with STRICT versioning they list the worker's version).
Matching, as the Durable Task backends do it:

- a stream that sent no filters takes everything;
- names match exactly; an empty ``versions`` list takes any version, otherwise the
  work's version must be listed (an unset version is ``""``);
- a category with no entries takes nothing of that kind.

An activity has the version of the orchestration that scheduled it (the SDKs leave
the activity's own unset). Work no connected stream takes waits (its orchestration
stays pending) until one connects that takes it. Entity filters are not read
(entities are not supported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._dispatch import ActivityWork, Dialect, TurnWork
from ._framing import parse
from ._proto import ms

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["WorkFilters", "work_filters"]


@dataclass(frozen=True)
class WorkFilters:
    """What a stream takes: for each orchestration and activity name, the versions
    (empty: any)."""

    orchestrations: dict[str, frozenset[str]]
    activities: dict[str, frozenset[str]]

    def accepts(self, work: TurnWork | ActivityWork) -> bool:
        """Whether a stream with these filters takes ``work``."""
        if isinstance(work, TurnWork):
            versions = self.orchestrations.get(work.name)
        else:
            versions = self.activities.get(work.scheduled.name)
        return versions is not None and (not versions or work.version in versions)


def work_filters(dialect: Dialect, data: bytes) -> WorkFilters | None:
    """The filters of a ``GetWorkItemsRequest``; None (take everything) when it sent
    none, or speaks a dialect without them."""
    if dialect != "ms":
        return None
    request = parse(ms.GetWorkItemsRequest, data)
    if not request.HasField("workItemFilters"):
        return None
    sent = request.workItemFilters
    return WorkFilters(_by_name(sent.orchestrations), _by_name(sent.activities))


def _by_name(
    entries: Iterable[ms.OrchestrationFilter] | Iterable[ms.ActivityFilter],
) -> dict[str, frozenset[str]]:
    """Versions per name; a name listed twice takes what either entry takes."""
    out: dict[str, frozenset[str]] = {}
    for entry in entries:
        versions = frozenset(entry.versions)
        if entry.name in out:
            before = out[entry.name]
            versions = frozenset() if not (before and versions) else before | versions
        out[entry.name] = versions
    return out
