"""``ActivityContext`` and running one activity attempt into its outcome event.

Activities are where side effects happen; they run at least once. An attempt's
outcome is an ``ActivityCompleted`` or ``ActivityErrored`` event for the workflow.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from msgspec import Raw

from ._core._events import ActivityCompleted, ActivityErrored, ActivityScheduled
from ._core._failure import failure_from_exception

if TYPE_CHECKING:
    from ._core._codec import PayloadCodec
    from ._log._memo import Memo, MemoStore
    from ._registry import Registry

__all__ = ["ActivityContext", "execute_activity"]


class ActivityContext:
    """What an activity knows about the call it is serving."""

    __slots__ = ("_memo", "_memo_store", "attempt", "instance_id", "task_id", "workflow_name")

    def __init__(
        self,
        instance_id: str,
        task_id: int,
        attempt: int,
        workflow_name: str,
        memo_store: MemoStore | None = None,
    ) -> None:
        self.instance_id = instance_id
        """The workflow instance that scheduled this activity."""
        self.task_id = task_id
        """The step number: the same for every retry of one call."""
        self.attempt = attempt
        """1 on the first try, 2 on the first retry, and so on."""
        self.workflow_name = workflow_name
        """The name of the calling workflow."""
        self._memo_store = memo_store
        self._memo: Memo | None = None

    @property
    def memo(self) -> Memo:
        """This step's memo: what an earlier attempt stored, for the retry to find."""
        if self._memo is None:
            if self._memo_store is None:
                raise RuntimeError("this activity context has no memo store")
            self._memo = self._memo_store.view(self.instance_id, self.task_id)
        return self._memo

    def __repr__(self) -> str:
        return (
            f"ActivityContext(instance_id={self.instance_id!r}, task_id={self.task_id}, "
            f"attempt={self.attempt}, workflow_name={self.workflow_name!r})"
        )


async def execute_activity(
    registry: Registry,
    codec: PayloadCodec,
    memo_store: MemoStore | None,
    instance_id: str,
    workflow_name: str,
    scheduled: ActivityScheduled,
    threads: anyio.CapacityLimiter | None = None,
) -> ActivityCompleted | ActivityErrored:
    """Run one attempt and turn its return value or exception into an event; a sync
    activity runs in a worker thread taken from ``threads`` (anyio's shared default
    when None), so blocking activities cannot hold the threads other work needs."""
    task_id = scheduled.task_id
    try:
        definition = registry.get_activity(scheduled.name)
        value = codec.decode(scheduled.input, definition.input_type)
        ctx = ActivityContext(
            instance_id, scheduled.step, scheduled.attempt, workflow_name, memo_store
        )
        args: tuple[Any, ...] = (ctx, value) if definition.takes_input else (ctx,)
        if definition.is_async:
            result = await definition.fn(*args)
        else:
            result = await anyio.to_thread.run_sync(
                partial(definition.fn, *args), abandon_on_cancel=True, limiter=threads
            )
        return ActivityCompleted(task_id=task_id, result=Raw(codec.encode(result)))
    except anyio.get_cancelled_exc_class() as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():  # the runtime is cancelling this worker
            raise
        # the activity's own code raised CancelledError: an ordinary failure
        return ActivityErrored(task_id=task_id, failure=failure_from_exception(exc))
    except Exception as exc:
        return ActivityErrored(task_id=task_id, failure=failure_from_exception(exc))
