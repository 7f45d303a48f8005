"""Sub-workflows, telling parents how their children ended, and messages between instances."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from durable._core._events import (
    ChildWorkflowCompleted,
    ChildWorkflowErrored,
    ChildWorkflowScheduled,
    Event,
    HistoryEvent,
    ParentRef,
    WorkflowCancelRequested,
    WorkflowTerminated,
)
from durable._core._failure import failure_from_exception
from durable._core._state import WorkflowStatus
from durable._errors import (
    InstanceExistsError,
    InstanceNotFoundError,
    InstanceRunningError,
    InstanceStatusError,
    StoreError,
)
from durable._log._instances import create_instance, purge_instance, send_message
from durable._log._reader import (
    RunLog,
    load_run,
    read_meta,
)
from durable._log._records import wakeup_key
from durable._log._rewind import rewind_instance

from ._base import _EngineBase, log
from ._instance import _child_of, _for_good, _Instance, _parent_event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from durable._log._records import TurnRecord


# the ends of a child that its parent's rewind keeps: rewound (FAILED), or its result
# taken (COMPLETED); any other is replaced by a new child, as for a rerun
_KEPT_BY_REWIND = (WorkflowStatus.FAILED, WorkflowStatus.COMPLETED)


class _Children(_EngineBase):
    """Start and settle sub-workflows; hand events to other instances."""

    def _take_freed_child_id(self, inst: _Instance, event: Event) -> None:
        """A child's answer to another run of this instance: that child has ended, so a
        child this run waits for under the same id (whatever its task id) can start."""
        if isinstance(event, ChildWorkflowCompleted | ChildWorkflowErrored):
            for scheduled in list(inst.outstanding.values()):
                if (
                    isinstance(scheduled, ChildWorkflowScheduled)
                    and scheduled.instance_id == event.instance_id
                ):
                    self._spawn_guarded(self._start_child, _child_of(inst, scheduled), scheduled)

    async def _start_child(
        self, parent: ParentRef, scheduled: ChildWorkflowScheduled, *, reuse: bool = False
    ) -> None:
        """Start the sub-workflow of the parent's run ``parent``, or settle with the
        instance that holds its id (``reuse``: replace that ended instance)."""
        async with self._child_errors(parent, scheduled):
            try:
                created = await create_instance(
                    self.index, self.clock.now(), scheduled.instance_id, scheduled.name,
                    scheduled.input, parent=parent, run_id=self.ids.run_id(), reuse=reuse,
                    memo=self.memo_store if reuse else None,
                    version=scheduled.version or self._newest_version(scheduled.name),
                    trace_parent=scheduled.trace_parent,
                )  # fmt: skip
            except InstanceExistsError as err:
                await self._settle_child(parent, scheduled, err)
                return
            except InstanceNotFoundError:  # the ended child it replaced was purged under
                await self._settle_child(parent, scheduled)  # it: look again (it starts anew)
                return
            await self.announce_created(scheduled.instance_id, created)

    async def _settle_child(
        self,
        parent: ParentRef,
        scheduled: ChildWorkflowScheduled,
        err: InstanceExistsError | None = None,
    ) -> None:
        """The sub-workflow's id is taken (``err``), or may be (a recovery). The child of
        this very run (a re-dispatch): tell the parent if it ended. The child of another
        run of this parent (the parent was started again with ``reuse=True``, or rerun):
        the new run never joins it, it gets a child of its own with its own input. An
        ended one is replaced at once; a running one is terminated first, and its end,
        reported to the old run, brings the parent back here to replace it. Unless the
        parent's run rewinds the run that made this call (see :meth:`_rewound_call`).
        Any other instance: the parent's call fails, as the id is someone else's (unless
        the call says ``replace_ended`` and that instance has ended: then it is replaced)."""
        async with self._child_errors(parent, scheduled):
            child_id = scheduled.instance_id
            found = await read_meta(self.store, child_id)
            existing = await load_run(self.store, child_id, found[0] if found else None)
            if existing is None:  # never begun (or purged meanwhile)
                if err is not None and not await self._purge_done(child_id):
                    raise StoreError(f"sub-workflow id {child_id!r} is being purged; "
                                     "starting it again later")  # fmt: skip
                await self._start_child(parent, scheduled)
                return
            holder = existing.started.parent
            if holder is not None and holder.same_call(parent):
                if existing.status.is_terminal:
                    await self._notify_parent_from_log(existing)
                else:  # announced again: its creator may have failed or died before
                    await self.nudge(child_id)  # ringing the bell of the child's owner
            elif holder is not None and holder.same_run(parent) and existing.status.is_terminal:
                # the call scheduled again under its id and task id once its child had
                # ended (a Durable Task SDK's retry): a new child replaces the old one
                await self._start_child(parent, scheduled, reuse=True)
            elif holder is None or holder.instance_id != parent.instance_id:
                if scheduled.replace_ended and existing.status.is_terminal:
                    await self._start_child(parent, scheduled, reuse=True)
                    return
                self.deliver(parent.instance_id, ChildWorkflowErrored(
                    task_id=scheduled.task_id, instance_id=child_id, parent_run=parent.run_id,
                    failure=failure_from_exception(err or InstanceExistsError(child_id)),
                ))  # fmt: skip
            elif self._rewound_call(parent, holder) and existing.status in _KEPT_BY_REWIND:
                await self._rewind_child(parent, holder, scheduled, existing)
            elif existing.status.is_terminal:
                await self._start_child(parent, scheduled, reuse=True)
            else:
                reason = f"replaced by the child of a new run of {parent.instance_id!r}"
                await self._tell(child_id, WorkflowTerminated(reason=reason, parent=holder))

    def _rewound_call(self, parent: ParentRef, holder: ParentRef) -> bool:
        """Whether the child's ``holder`` is this very call made by a failed run that
        the parent's run ``parent`` rewinds (the parent runs here: it dispatches)."""
        inst = self._instances.get(parent.instance_id)
        return (
            inst is not None
            and inst.started.run_id == parent.run_id
            and holder.task_id == parent.task_id
            and holder.run_id in inst.started.rewinds
        )

    async def _rewind_child(
        self,
        parent: ParentRef,
        holder: ParentRef,
        scheduled: ChildWorkflowScheduled,
        existing: RunLog,
    ) -> None:
        """The child of a call that the parent's rewind made open again: a FAILED one is
        rewound too, to answer the parent's new run; one that COMPLETED (after its
        parent had failed) gives the new run its result. A purged one was started anew
        from its call, like any child never begun."""
        child_id = scheduled.instance_id
        if existing.status is WorkflowStatus.COMPLETED:
            output, failure = existing.outcome()
            self.deliver(parent.instance_id, _parent_event(
                parent, child_id, existing.status, output, failure
            ))  # fmt: skip
            return
        reason = f"its parent {parent.instance_id!r} was rewound"
        try:
            created = await rewind_instance(
                self.index, self.clock.now(), child_id, run_id=self.ids.run_id(),
                reason=reason, parent=parent, holder=holder,
            )  # fmt: skip
        except (InstanceExistsError, InstanceStatusError, InstanceNotFoundError):
            await self._settle_child(parent, scheduled)  # it moved (or went) meanwhile: look again
            return
        await self.announce_created(child_id, created)

    async def _purge_done(self, child_id: str) -> bool:
        """A start found the id taken, yet no run under it: a purge of it is under way.
        Finish it if it was cut short (as any purge would); False while it is not."""
        try:
            return await purge_instance(self.index, child_id, self.memo_store, now=self.clock.now())
        except (InstanceNotFoundError, InstanceRunningError):
            return True  # finished, or begun again, meanwhile: the start looks again

    @contextlib.asynccontextmanager
    async def _child_errors(
        self, parent: ParentRef, scheduled: ChildWorkflowScheduled
    ) -> AsyncIterator[None]:
        """Around starting or checking a sub-workflow: a store error no retry can fix
        (its log is unreadable, the store refuses its id) fails the sub-workflow in its
        parent, naming the reason; a transient one is retried."""
        try:
            yield
        except StoreError as err:
            if not _for_good(err):
                raise
            log.error(
                "sub-workflow %r of %r failed: %s", scheduled.instance_id, parent.instance_id, err
            )
            self.deliver(parent.instance_id, ChildWorkflowErrored(
                task_id=scheduled.task_id, instance_id=scheduled.instance_id,
                parent_run=parent.run_id, failure=failure_from_exception(err),
            ))  # fmt: skip

    def _close_children(self, inst: _Instance, record: TurnRecord) -> None:
        """The run ended: each sub-workflow it still waits on follows its
        ``on_parent_close`` policy (terminate, cancel or abandon). A termination of the
        parent terminates them all (and they theirs), as Durable Task's recursive
        terminate does, unless it was not ``recursive``. The message names the run: an
        instance that took the child's id since then ignores it."""
        if not inst.outstanding:  # (most runs end waiting on nothing)
            return
        terminated = inst.status is WorkflowStatus.TERMINATED
        recursive = True
        for event in record.events:
            if isinstance(event, WorkflowTerminated):
                recursive = event.recursive
        why = f"its parent {inst.id!r} ended {inst.status.value}"
        for event in inst.outstanding.values():
            if not isinstance(event, ChildWorkflowScheduled):
                continue
            if terminated:
                policy = "terminate" if recursive else "abandon"
            else:  # a log from before policies: children outlived a parent that ended
                policy = event.on_parent_close or "abandon"
            message: HistoryEvent
            if policy == "terminate":
                message = WorkflowTerminated(reason=why, parent=_child_of(inst, event))
            elif policy == "cancel":
                message = WorkflowCancelRequested(reason=why, parent=_child_of(inst, event))
            else:
                continue
            self._spawn_guarded(self._tell, event.instance_id, message)

    async def _tell_parent(self, inst: _Instance) -> bool:
        """The instance ended: tell its parent before its meta says so (a new owner of
        the child that finds the meta terminal takes the parent as told). False if the
        store failed: a retry tells the parent, then writes the meta."""
        assert inst.parent is not None
        event = _parent_event(inst.parent, inst.id, inst.status, inst.output, inst.failure)
        try:
            await self._tell(inst.parent.instance_id, event)
        except StoreError as err:
            if _for_good(err):
                await self._fail_for_good(f"telling the parent of {inst.id!r}", err)
                return True
            log.warning("could not tell the parent of %r yet: %s", inst.id, err)
            self._spawn_guarded(self._tell_then_write_meta, inst, event)
            return False
        return True

    async def _tell_then_write_meta(self, inst: _Instance, event: HistoryEvent) -> None:
        assert inst.parent is not None
        await self._tell(inst.parent.instance_id, event)
        await self._write_meta(inst)

    async def _tell(self, instance_id: str, event: HistoryEvent) -> None:
        """Hand an event to another instance: directly if this process runs it, else
        through its inbox and its partition's wakeups, for the process that does."""
        if self.owns(instance_id) and self.running:
            self.deliver(instance_id, event)
        else:
            await self._post(instance_id, event)

    async def _post(self, instance_id: str, event: HistoryEvent) -> None:
        msg_id = self.ids.message_id(int(self.clock.now().timestamp() * 1e9))
        await send_message(self.store, instance_id, msg_id, event)
        await self.store.put(wakeup_key(instance_id, self.partition(instance_id)), b"")

    async def _notify_parent_from_log(self, child: RunLog) -> None:
        """An ended child found in the store: tell its parent (again: a parent drops an
        answer it already has)."""
        parent = child.started.parent
        if parent is not None:
            output, failure = child.outcome()
            event = _parent_event(parent, child.instance_id, child.status, output, failure)
            await self._tell(parent.instance_id, event)
