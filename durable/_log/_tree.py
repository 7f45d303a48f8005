"""Purging an instance with its sub-workflows (a recursive purge)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from durable._core._events import ChildWorkflowScheduled, HistoryEvent
from durable._errors import InstanceNotFoundError, InstanceRunningError

from ._instances import load_existing, purge_instance

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

    from ._active import ActiveIndex
    from ._memo import MemoStore

__all__ = ["purge_tree"]


async def purge_tree(
    index: ActiveIndex,
    instance_id: str,
    memo: MemoStore | None,
    *,
    now: datetime,
    purged: Callable[[str], None],
) -> int:
    """Purge an ended instance, then each sub-workflow its current run started that
    still holds its id (its current run's parent is this instance) and has ended, and
    theirs; ``purged`` is told each id deleted. Returns how many were deleted. Refuses
    (``InstanceRunningError``) a root that runs; skips a child that runs, is gone, or
    was taken since by another instance."""
    run = await load_existing(index.store, instance_id)
    children = _children(run.history)
    await purge_instance(index, instance_id, memo, now=now)
    purged(instance_id)
    count = 1
    for child in children:
        count += await _purge_child(index, child, instance_id, memo, now, purged)
    return count


async def _purge_child(
    index: ActiveIndex,
    child_id: str,
    parent_id: str,
    memo: MemoStore | None,
    now: datetime,
    purged: Callable[[str], None],
) -> int:
    try:
        run = await load_existing(index.store, child_id)
    except InstanceNotFoundError:
        return 0
    parent = run.started.parent
    if parent is None or parent.instance_id != parent_id or not run.status.is_terminal:
        return 0
    children = _children(run.history)
    try:
        # only the run read above: a start that took the id since is not deleted
        deleted = await purge_instance(index, child_id, memo, now=now, last_seq=run.last_seq)
    except (InstanceNotFoundError, InstanceRunningError):
        return 0
    if not deleted:
        return 0
    purged(child_id)
    count = 1
    for grandchild in children:
        count += await _purge_child(index, grandchild, child_id, memo, now, purged)
    return count


def _children(history: Sequence[HistoryEvent]) -> list[str]:
    """The sub-workflow ids a run's history started, each once, in order."""
    ids = [e.instance_id for e in history if isinstance(e, ChildWorkflowScheduled)]
    return list(dict.fromkeys(ids))
