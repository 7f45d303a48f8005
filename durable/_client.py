"""``Client`` and ``WorkflowHandle``: start, watch and steer instances.

A client reads and writes the store directly, so it works from any process. The
client of a running ``Runtime`` (``runtime.client``) also hands messages straight to
the engine in memory, and waits for results without polling.

``Client`` puts its parts together: ``_client_base`` (what it holds, and its plumbing to
the store and an in-process engine), ``_client_messages`` (messages, updates and queries
for an instance) and, here, starting, listing, housekeeping and reading state;
``WorkflowHandle`` lives in ``_handle``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.lowlevel
from msgspec import Raw

from ._client_messages import _Messages
from ._core._context import positive
from ._core._events import EventRaised, HistoryEvent, WorkflowStarted
from ._core._search import check_search, decode_values, fold
from ._core._state import WorkflowState, WorkflowStatus
from ._errors import (
    InstanceExistsError,
    InstanceNotFoundError,
    InstancePurgingError,
    UnknownWorkflowError,
)
from ._handle import WorkflowHandle
from ._ids import validate_instance_id
from ._listing import Filters, InstancePage, page_metas
from ._log._instances import (
    Created,
    create_instance,
    load_existing,
    purge_instance,
    rerun_instance,
)
from ._log._reader import read_meta, read_record, record_after, record_outcome
from ._log._records import StartRequest
from ._log._rewind import rewind_instance
from ._log._tree import purge_tree
from ._observe import current_trace_context
from ._registry import workflow_name

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping

    from ._core._failure import FailureDetails
    from ._engine._executor import Executor
    from ._log._records import InstanceMeta

__all__ = ["Client", "WorkflowHandle"]

T = TypeVar("T")
_START_WITH_EVENT_ATTEMPTS = 8  # rounds of start-or-send while others start and end it
_KEEP: Any = object()  # rerun: the step keeps its own input


class _Snapshot:
    """An instance's state in encoded form, as the store holds it."""

    __slots__ = ("created_at", "custom_status", "failure", "input", "name", "output",
                 "reason", "search", "status", "updated_at", "version")  # fmt: skip

    def __init__(self, meta: InstanceMeta) -> None:
        self.name = meta.name
        self.status = WorkflowStatus(meta.status)
        self.input: Raw = meta.input
        self.output: Raw = meta.output
        self.failure: FailureDetails | None = meta.failure
        self.custom_status: Raw = meta.custom_status
        self.created_at = meta.created_at
        self.updated_at = meta.updated_at
        self.version = meta.version
        self.reason = meta.reason
        self.search = dict(meta.search)


def _check_replays(
    executor: Executor | None, instance_id: str, history: list[HistoryEvent]
) -> None:
    """Raise ``NonDeterminismError`` if the code here no longer replays ``history``
    (without the workflow's code there is nothing to check)."""
    if executor is None:
        return
    try:
        executor.new_run(instance_id, history).close()
    except UnknownWorkflowError:
        pass  # not registered here: the process that runs it finds out


class Client(_Messages):
    """Manages instances in a store: start, handles, list, purge, rerun, rewind.

    ``Client(store=...)`` needs no runtime in the same process: the runtime that owns
    the store picks up what the client writes. Give it the runtime's ``memo_prefix`` (or
    ``memo_store``), so that a purge, reuse or rerun clears the right memo.
    """

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the store, unless a runtime shares it."""
        if self._engine is None:
            await self.store.close()

    # -- starting -------------------------------------------------------------------

    async def start(
        self,
        workflow: Callable[..., Awaitable[T]] | str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        reuse: bool | Collection[WorkflowStatus] = False,
        version: str | None = None,
        execution_timeout: timedelta | None = None,
        search_attributes: Mapping[str, Any] | None = None,
        _trace_context: tuple[str, str] | None = None,
        _event: EventRaised | None = None,
    ) -> WorkflowHandle[T]:
        """Start a workflow (its newest version, or ``version``); return its handle.

        ``execution_timeout`` bounds the run and its continue-as-new successors: when it
        passes, the instance ends FAILED with ``durable.TimeoutError``, and its
        sub-workflows follow their ``on_parent_close``.

        ``search_attributes`` (str, int, bool or timezone-aware datetime values) let
        :meth:`list_page` find the instance by equality (``search={...}``); the workflow
        changes them with ``ctx.upsert_search_attributes``.

        The caller's current OpenTelemetry span (if any) is stored with the run, whose
        spans then join its trace; ``_trace_context`` gives a W3C ``(traceparent,
        tracestate)`` instead (the sidecar's, from a Durable Task SDK).

        Raises ``InstanceExistsError`` if ``instance_id`` exists (``reuse=True`` starts an
        ended one again; a collection of statuses, one that ended with one of them),
        ``InstancePurgingError`` (one) if a purge of it is under way (with ``reuse``, a
        purge cut short long enough ago is finished and the start goes on),
        ``UnknownWorkflowError`` for a name this client's registry lacks,
        ``InvalidArgumentError`` for a timeout that is not positive,
        ``SearchAttributeError`` for a search attribute not allowed, and
        ``SerializationError`` before writing anything if the input cannot be encoded.
        """
        positive(execution_timeout, "execution_timeout")
        search = check_search(search_attributes or {})
        name = workflow_name(self.registry, workflow)
        if self.registry is not None:
            version = self.registry.get_workflow(name, version).version
        instance_id = (
            self.ids.instance_id() if instance_id is None else validate_instance_id(instance_id)
        )
        raw = Raw(self.codec.encode(input))
        trace_parent, trace_state = _trace_context or current_trace_context()
        async with self._busy():
            now = self.clock.now()
            deadline = now + execution_timeout if execution_timeout is not None else None
            try:
                created = await create_instance(
                    await self._active(), now, instance_id, name, raw, reuse=reuse,
                    memo=self.memo_store, run_id=self.ids.run_id(), version=version or "",
                    deadline=deadline,
                    trace_parent=trace_parent, trace_state=trace_state,
                    events=() if _event is None else (_event,), search=search,
                )  # fmt: skip
            except InstanceExistsError as err:
                if err.status == WorkflowStatus.PENDING:
                    # perhaps an earlier start of ours wrote the run, then failed before
                    # announcing it: make sure whoever runs it knows
                    await self._nudge(instance_id)
                raise
            await self._retried(partial(self._announce, instance_id, created))
        if self._never_suspends:
            # A scheduling point even so: a loop of starts would otherwise hold the event
            # loop until the last one, every instance queued and none able to run (or be
            # evicted) in between.
            await anyio.lowlevel.checkpoint()
        return WorkflowHandle(self, instance_id, name)

    async def start_with_event(
        self,
        workflow: Callable[..., Awaitable[T]] | str,
        input: Any = None,
        *,
        instance_id: str,
        event: str,
        data: Any = None,
    ) -> WorkflowHandle[T]:
        """Deliver event ``event`` (with ``data``) to ``instance_id``, starting it first
        with ``input`` if it is not running (an ended one is started again).

        A start and its event are one write: no one ever sees the instance started
        without the event. A running instance gets the event as ``raise_event`` gives
        it; if its run ends before applying it, the runtime starts the instance again
        with the event (in one write, as here).
        """
        instance_id = validate_instance_id(instance_id)
        raised = EventRaised(name=event, input=Raw(self.codec.encode(data)))
        name = workflow_name(self.registry, workflow)
        version = self.registry.get_workflow(name).version if self.registry is not None else ""
        start = StartRequest(name, Raw(self.codec.encode(input)), version)
        for _ in range(_START_WITH_EVENT_ATTEMPTS):
            try:
                return await self.start(
                    workflow, input, instance_id=instance_id, reuse=True, _event=raised
                )
            except InstancePurgingError:
                raise  # (not finished by this start: too young)
            except InstanceExistsError as err:
                if err.status is None:
                    continue  # another start took the seq: look again
            # it runs: the event is for it (and if it ends first, the engine starts it again)
            if await self._send(instance_id, raised, start=start):
                return WorkflowHandle(self, instance_id, workflow_name(self.registry, workflow))
        raise InstanceExistsError(instance_id)

    async def _nudge(self, instance_id: str) -> None:
        if self._engine is not None:
            await self._engine.nudge(instance_id)
        else:
            await self._ring(instance_id)

    async def _announce(self, instance_id: str, created: Created) -> None:
        if self._engine is not None:
            await self._engine.announce_created(instance_id, created)
        else:
            await self._ring(instance_id)

    def get_handle(self, instance_id: str) -> WorkflowHandle[Any]:
        """A handle on an existing instance (no I/O: errors surface on use)."""
        return WorkflowHandle(self, validate_instance_id(instance_id), None)

    # -- listing and housekeeping ---------------------------------------------------

    async def list(
        self,
        *,
        status: WorkflowStatus | str | None = None,
        name: str | None = None,
        created_after: datetime | None = None,
        search: Mapping[str, Any] | None = None,
        limit: int | None = None,
        page_size: int = 100,
        id_prefix: str | None = None,
    ) -> AsyncIterator[WorkflowState]:
        """Yield instances matching every filter given, reading ``page_size`` index
        records at a time (see :meth:`list_page`). The index may lag the log by a turn."""
        cursor: str | None = None
        count = 0
        while True:
            page = await self.list_page(
                status=status, name=name, created_after=created_after, search=search,
                page_size=page_size, cursor=cursor, id_prefix=id_prefix,
            )  # fmt: skip
            for state in page.items:
                yield state
                count += 1
                if limit is not None and count >= limit:
                    return
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def list_page(
        self,
        *,
        status: WorkflowStatus | str | None = None,
        name: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        search: Mapping[str, Any] | None = None,
        page_size: int = 100,
        cursor: str | None = None,
        id_prefix: str | None = None,
    ) -> InstancePage:
        """One page of the instances matching every filter given, and the cursor of
        the next (pass it back with the same filters; ``None`` at the end).

        ``PENDING``, ``RUNNING`` and ``SUSPENDED`` are read from the store's index of
        active instances, in partition order: their cost does not grow with the
        instances that ended. Other listings go in id order, each page starting where
        the last one stopped. ``search`` keeps the instances whose search attributes
        equal every value it gives, read from the store's search index, in id order:
        its cost is that of the instances found. ``id_prefix`` keeps the instances
        whose id starts with it, listed from the store by that prefix (a prefix that
        could start no id: ``InvalidArgumentError``). The index may lag the log by a
        turn."""
        encoded = check_search(search or {})
        index = await self._active()
        if not self._all_indexed and index.partitions is not None:
            self._all_indexed = len(await index.ready()) >= index.partitions
        filters = Filters(
            WorkflowStatus(status) if status is not None else None, name, created_after,
            created_before, encoded,
        )  # fmt: skip
        metas, next_cursor = await page_metas(
            index, filters, page_size, cursor, indexed=self._all_indexed,
            id_prefix=id_prefix or "",
        )  # fmt: skip
        items = [self._state(meta.instance_id, _Snapshot(meta)) for meta in metas]
        return InstancePage(items, next_cursor)

    async def purge(self, instance_id: str, *, recursive: bool = False) -> int:
        """Delete an ended instance and everything it stored; refuses a running one
        (``InstanceRunningError``), and one whose last turns sent events to other
        instances that are not posted yet (its runtime retries them; purge once they
        are: the log is what a restart posts them again from). With ``recursive``, the
        sub-workflows its current run started go too (those that have ended and still
        hold their ids), and theirs. Returns how many instances were deleted."""
        validate_instance_id(instance_id)
        async with self._busy():
            index = await self._active()
            if recursive:
                return await purge_tree(
                    index, instance_id, self.memo_store, now=self.clock.now(), purged=self._forget
                )
            await purge_instance(index, instance_id, self.memo_store, now=self.clock.now())
        self._forget(instance_id)
        return 1

    def _forget(self, instance_id: str) -> None:
        if self._engine is not None:
            self._engine.forget(instance_id)

    async def rerun(
        self,
        instance_id: str,
        from_event_id: int,
        *,
        new_instance_id: str | None = None,
        step_input: Any = _KEEP,
    ) -> WorkflowHandle[Any]:
        """Run an ended instance again from a scheduled step ``from_event_id`` on: the
        history before it is kept, that step and the rest run anew.

        ``new_instance_id``: the rerun is a new instance of that id, and this one stays
        as it is (``InstanceExistsError`` if the id is taken; a sub-workflow reruns only
        in place). ``step_input``: the step ``from_event_id`` (an activity or a
        sub-workflow, not a timer) runs with this input instead of its own.

        Raises ``NonDeterminismError`` (naming the event), before writing anything, if
        this client's code (its runtime's, or its registry's) no longer replays the kept
        history. A client without the code cannot tell: the runtime that runs the rerun
        fails it, with the same error.
        """
        validate_instance_id(instance_id)
        into = validate_instance_id(new_instance_id) if new_instance_id is not None else None
        raw = Raw(self.codec.encode(step_input)) if step_input is not _KEEP else None
        return await self._new_run(into or instance_id, partial(
            rerun_instance, instance_id=instance_id, from_event_id=from_event_id,
            memo=self.memo_store, into=into, step_input=raw,
        ))  # fmt: skip

    async def rewind(self, instance_id: str, reason: str = "") -> WorkflowHandle[Any]:
        """Rewind a FAILED instance: it runs on from where it failed, as a new run that
        keeps its history without the failures its code did not handle. The activities
        and sub-workflows that failed run again (a failed sub-workflow is rewound too,
        and its own); those that succeeded keep their results and do not run again. The
        rewind is in the history (``WorkflowRewound``, with ``reason``).

        ``InstanceStatusError`` if the instance did not fail. Raises
        ``NonDeterminismError`` (naming the event), before writing anything, if this
        client's code no longer replays the kept history; a client without the code
        cannot tell: the runtime that runs the rewound run fails it, with that error.
        """
        validate_instance_id(instance_id)
        return await self._new_run(instance_id, partial(
            rewind_instance, instance_id=instance_id, reason=reason
        ))  # fmt: skip

    async def _new_run(
        self, instance_id: str, write: Callable[..., Awaitable[Created]]
    ) -> WorkflowHandle[Any]:
        """Write, with ``write``, a run of ``instance_id`` that keeps history of a run
        before (a rerun, a rewind), checked against this client's code first, and have
        it run."""
        check = partial(_check_replays, self._executor(), instance_id)
        async with self._busy():
            created = await write(
                await self._active(), self.clock.now(), run_id=self.ids.run_id(), check=check
            )
            await self._retried(partial(self._announce, instance_id, created))
        started = created.record.next_run[0]
        name = started.name if isinstance(started, WorkflowStarted) else None
        return WorkflowHandle(self, instance_id, name)

    # -- reading state --------------------------------------------------------------

    async def _snapshot(self, instance_id: str) -> _Snapshot:
        """Meta rolled forward through the log records written after it."""
        found = await read_meta(self.store, instance_id)
        if found is None:
            run = await load_existing(self.store, instance_id)
            return _Snapshot(run.to_meta())
        meta = found[0]
        snap = _Snapshot(meta)
        if snap.status.is_terminal:
            after = await record_after(self.store, meta)
            if after is not None and after.purging:
                raise InstanceNotFoundError(instance_id)
            if after is None or not after.next_run:
                return snap  # ended, and no new run began after the meta was written
        seq = meta.seq + 1
        while (record := await read_record(self.store, instance_id, seq)) is not None:
            if record.purging:
                raise InstanceNotFoundError(instance_id)
            fold(snap.search, (*record.events, *record.next_run), "")
            snap.status = WorkflowStatus(record.status)
            snap.custom_status = record.custom_status
            events = record.next_run or record.events
            if events:
                snap.updated_at = events[-1].timestamp
            if record.next_run and isinstance(record.next_run[0], WorkflowStarted):
                snap.input = record.next_run[0].input
                snap.version = record.next_run[0].version
            if WorkflowStatus(record.status).is_terminal:
                snap.output, snap.failure = record_outcome(record)
            seq += 1
        return snap

    def _types(self, name: str) -> tuple[Any, Any]:
        if self.registry is not None and (wf := self.registry.workflows.get(name)) is not None:
            return wf.input_type, wf.output_type
        return Any, Any

    def _state(self, instance_id: str, snap: _Snapshot) -> WorkflowState:
        input_type, output_type = self._types(snap.name)
        return WorkflowState(
            instance_id=instance_id,
            name=snap.name,
            status=snap.status,
            input=self._decode(snap.input, input_type),
            output=self._decode(
                snap.output, output_type if snap.status is WorkflowStatus.COMPLETED else Any
            ),
            failure=snap.failure,
            custom_status=self._decode(snap.custom_status),
            created_at=snap.created_at,
            updated_at=snap.updated_at,
            version=snap.version,
            reason=snap.reason,
            is_resident=None if self._engine is None else self._engine.is_resident(instance_id),
            search_attributes=decode_values(snap.search),
        )

    async def _wait(self, instance_id: str) -> _Snapshot:
        engine = self._engine
        if engine is not None:
            await engine.wait_done(instance_id)
        while True:
            snap = await self._snapshot(instance_id)
            if snap.status.is_terminal:
                return snap
            if engine is not None and await engine.wait_done(instance_id):
                continue
            now = self.clock.now()
            await self.clock.sleep_until(now + timedelta(seconds=self.poll_interval))
