"""``Client`` and ``WorkflowHandle``: start, watch and steer instances.

A client reads and writes the store directly, so it works from any process. The
client of a running ``Runtime`` (``runtime.client``) also hands messages straight to
the engine in memory, and waits for results without polling.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
import anyio.lowlevel
from msgspec import Raw

from ._clock import Clock, SystemClock, within
from ._core._codec import JsonCodec, PayloadCodec
from ._core._context import positive
from ._core._events import (
    NULL,
    EventRaised,
    HistoryEvent,
    UpdateCompleted,
    UpdateRequested,
    WorkflowCancelRequested,
    WorkflowResumed,
    WorkflowStarted,
    WorkflowSuspended,
    WorkflowTerminated,
)
from ._core._failure import FailureDetails
from ._core._queries import answer_query
from ._core._replay import WorkflowRun
from ._core._state import WorkflowState, WorkflowStatus
from ._core._updates import validate
from ._engine._executor import LocalExecutor
from ._errors import (
    InstanceExistsError,
    InstanceNotFoundError,
    StoreError,
    UnknownWorkflowError,
    UpdateFailedError,
    WorkflowFailed,
)
from ._fleet._partitions import read_config
from ._ids import IdSource, validate_instance_id, validate_key
from ._listing import Filters, InstancePage, page_metas
from ._log._active import ActiveIndex
from ._log._instances import (
    Created,
    create_instance,
    current_start,
    load_existing,
    purge_instance,
    rerun_instance,
    send_message,
)
from ._log._memo import MemoStore
from ._log._reader import read_meta, read_record, record_after, record_outcome
from ._log._records import InboxMessage, InstanceMeta, wakeup_key
from ._observe import current_trace_context
from .store import ObjectStore, open_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping

    from ._engine import Engine
    from ._engine._executor import Executor
    from ._log._reader import RunLog
    from ._registry import Registry

__all__ = ["Client", "WorkflowHandle"]

T = TypeVar("T")

_SEND_ATTEMPTS = 5  # tries of one inbox write, under one message id
_SEND_BACKOFF = timedelta(seconds=0.2)
_ENDED = FailureDetails("Ended", "the workflow ended before the update completed")
_START_WITH_EVENT_ATTEMPTS = 8  # rounds of start-or-send while others start and end it


class _Snapshot:
    """An instance's state in encoded form, as the store holds it."""

    __slots__ = ("created_at", "custom_status", "failure", "input", "name", "output",
                 "reason", "status", "updated_at", "version")  # fmt: skip

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


class Client:
    """Manages instances in a store: start, handles, list, purge, rerun.

    ``Client(store=...)`` needs no runtime in the same process: the runtime that owns
    the store picks up what the client writes. Give it the runtime's ``memo_prefix`` (or
    ``memo_store``), so that a purge, reuse or rerun clears the right memo.
    """

    def __init__(
        self,
        store: str | ObjectStore = "file://./.durable",
        *,
        storage_options: Mapping[str, Any] | None = None,
        registry: Registry | None = None,
        clock: Clock | None = None,
        codec: PayloadCodec | None = None,
        poll_interval: float = 0.25,
        memo_store: MemoStore | None = None,
        memo_prefix: str = "memo",
        ids: IdSource | None = None,
        _engine: Engine | None = None,
    ) -> None:
        self.store = open_store(store, storage_options=storage_options)
        self.ids = ids or IdSource()
        self.memo_store = memo_store or MemoStore(self.store, memo_prefix)
        self.registry = registry
        self.clock: Clock = clock or SystemClock()
        self.codec: PayloadCodec = codec or JsonCodec()
        self.poll_interval = poll_interval
        self._engine = _engine
        self._index: ActiveIndex | None = None  # the store's active index, its count read once
        self._all_indexed = False  # every partition's index complete (then for good)
        self._never_suspends = bool(getattr(self.store, "never_suspends", False))

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
        reuse: bool = False,
        version: str | None = None,
        execution_timeout: timedelta | None = None,
        _trace_context: tuple[str, str] | None = None,
        _event: EventRaised | None = None,
    ) -> WorkflowHandle[T]:
        """Start a workflow (its newest version, or ``version``); return its handle.

        ``execution_timeout`` bounds the run and its continue-as-new successors: when it
        passes, the instance ends FAILED with ``durable.TimeoutError``, and its
        sub-workflows follow their ``on_parent_close``.

        The caller's current OpenTelemetry span (if any) is stored with the run, whose
        spans then join its trace; ``_trace_context`` gives a W3C ``(traceparent,
        tracestate)`` instead (the sidecar's, from a Durable Task SDK).

        Raises ``InstanceExistsError`` if ``instance_id`` exists (``reuse=True`` starts an
        ended one again), ``UnknownWorkflowError`` for a name this client's registry
        lacks, ``InvalidArgumentError`` for a timeout that is not positive, and
        ``SerializationError`` before writing anything if the input cannot be encoded.
        """
        positive(execution_timeout, "execution_timeout")
        name = self._workflow_name(workflow)
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
                    events=() if _event is None else (_event,),
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
        it; one that ends meanwhile is started again, with the event.
        """
        instance_id = validate_instance_id(instance_id)
        raised = EventRaised(name=event, input=Raw(self.codec.encode(data)))
        for _ in range(_START_WITH_EVENT_ATTEMPTS):
            try:
                return await self.start(
                    workflow, input, instance_id=instance_id, reuse=True, _event=raised
                )
            except InstanceExistsError as err:
                if err.status is None:
                    continue  # another start took the seq: look again
            if await self._send(instance_id, raised):  # it runs: the event is for it
                return WorkflowHandle(self, instance_id, self._workflow_name(workflow))
        raise InstanceExistsError(instance_id)

    async def _nudge(self, instance_id: str) -> None:
        if self._engine is not None:
            await self._engine.nudge(instance_id)
        else:
            await self._ring(instance_id)

    def _workflow_name(self, workflow: Callable[..., Any] | str) -> str:
        if self.registry is None:
            if not isinstance(workflow, str):
                qualname = getattr(workflow, "__qualname__", repr(workflow))
                raise TypeError(f"this client has no registry: start {qualname} by its name")
            return workflow
        name = self.registry.name_of(workflow, "workflow")
        self.registry.get_workflow(name)
        return name

    async def _announce(self, instance_id: str, created: Created) -> None:
        if self._engine is not None:
            await self._engine.announce_created(instance_id, created)
        else:
            await self._ring(instance_id)

    async def _ring(self, instance_id: str) -> None:
        """Tell whichever process runs the instance's partition to look at it. On a store
        no runtime has used yet there is no one to tell, nor a partition count (a client
        never fixes it: the runtimes do): the first runtime to start finds the
        instance in the log."""
        index = await self._active()
        if index.known:
            await self.store.put(wakeup_key(instance_id, index.partition(instance_id)), b"")

    async def _active(self) -> ActiveIndex:
        """The store's active index: its runtime's, or one of its own (the store's
        partition count read once a runtime has fixed it)."""
        if self._engine is not None and self._engine.running:
            return self._engine.index
        if self._index is None or not self._index.known:
            config = await read_config(self.store)
            self._index = ActiveIndex(self.store, config.partitions if config else None)
        return self._index

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
        limit: int | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[WorkflowState]:
        """Yield instances matching every filter given, reading ``page_size`` index
        records at a time (see :meth:`list_page`). The index may lag the log by a turn."""
        cursor: str | None = None
        count = 0
        while True:
            page = await self.list_page(
                status=status, name=name, created_after=created_after,
                page_size=page_size, cursor=cursor,
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
        page_size: int = 100,
        cursor: str | None = None,
    ) -> InstancePage:
        """One page of the instances matching every filter given, and the cursor of
        the next (pass it back with the same filters; ``None`` at the end).

        ``PENDING``, ``RUNNING`` and ``SUSPENDED`` are read from the store's index of
        active instances, in partition order: their cost does not grow with the
        instances that ended. Other listings go in id order, each page starting where
        the last one stopped. The index may lag the log by a turn."""
        index = await self._active()
        if not self._all_indexed and index.partitions is not None:
            self._all_indexed = len(await index.ready()) >= index.partitions
        filters = Filters(
            WorkflowStatus(status) if status is not None else None, name, created_after,
            created_before,
        )  # fmt: skip
        metas, next_cursor = await page_metas(
            index, filters, page_size, cursor, indexed=self._all_indexed
        )
        items = [self._state(meta.instance_id, _Snapshot(meta)) for meta in metas]
        return InstancePage(items, next_cursor)

    async def purge(self, instance_id: str) -> None:
        """Delete an ended instance and everything it stored; refuses a running one."""
        validate_instance_id(instance_id)
        async with self._busy():
            index = await self._active()
            await purge_instance(index, instance_id, self.memo_store, now=self.clock.now())
        if self._engine is not None:
            self._engine.forget(instance_id)

    async def rerun(self, instance_id: str, from_event_id: int) -> WorkflowHandle[Any]:
        """Run an ended instance again from a scheduled step ``from_event_id`` on: the
        history before it is kept, that step and the rest run anew.

        Raises ``NonDeterminismError`` (naming the event), before writing anything, if
        this client's code (its runtime's, or its registry's) no longer replays the kept
        history. A client without the code cannot tell: the runtime that runs the rerun
        fails it, with the same error.
        """
        validate_instance_id(instance_id)
        check = partial(_check_replays, self._executor(), instance_id)
        async with self._busy():
            created = await rerun_instance(
                await self._active(), self.clock.now(), instance_id, from_event_id, self.memo_store,
                run_id=self.ids.run_id(), check=check,
            )  # fmt: skip
            await self._retried(partial(self._announce, instance_id, created))
        started = created.record.next_run[0]
        name = started.name if isinstance(started, WorkflowStarted) else None
        return WorkflowHandle(self, instance_id, name)

    def _executor(self) -> Executor | None:
        """What runs workflow code here: the runtime's, or one over this client's
        registry (None: a client without the code)."""
        if self._engine is not None:
            return self._engine.executor
        return LocalExecutor(self.registry, self.codec) if self.registry is not None else None

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

    def _decode(self, raw: Raw, type_: Any = Any) -> Any:
        if raw == NULL:
            return None
        return self.codec.decode(raw, type_)

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
        )

    async def _query(self, instance_id: str, name: str, args: tuple[Any, ...]) -> Any:
        raw = Raw(self.codec.encode(list(args)))
        engine = self._engine
        answer = engine.query_resident(instance_id, name, raw) if engine is not None else None
        if answer is None:
            answer = await self._query_replayed(instance_id, name, raw)
        return self._decode(answer)

    async def _start_update(
        self, instance_id: str, name: str, arg: Any, update_id: str | None
    ) -> str:
        update_id = self.ids.instance_id() if update_id is None else update_id
        validate_key(update_id, "update id")
        raw = Raw(self.codec.encode(arg))
        loaded = await load_existing(self.store, instance_id)
        if any(_names_update(e, update_id) for e in loaded.history):
            return update_id  # asked before (a retry): its one outcome is on its way
        engine = self._engine
        if engine is None or not engine.validate_resident(instance_id, name, raw):
            await self._replayed(instance_id, loaded, lambda run: validate(run, name, raw))
        event = UpdateRequested(update_id=update_id, name=name, input=raw)
        if not await self._send(instance_id, event, msg_id=f"u-{update_id}"):
            raise UpdateFailedError(instance_id, update_id, _ENDED)
        return update_id

    async def _update_result(self, instance_id: str, update_id: str) -> Any:
        while True:
            committed = None if self._engine is None else self._engine.commit_event(instance_id)
            loaded = await load_existing(self.store, instance_id)
            for event in loaded.history:
                if type(event) is UpdateCompleted and event.update_id == update_id:
                    if event.failure is not None:
                        raise UpdateFailedError(instance_id, update_id, event.failure)
                    return self._decode(event.result)
            if loaded.status.is_terminal:
                raise UpdateFailedError(instance_id, update_id, _ENDED)
            if committed is not None:
                await committed.wait()  # the instance's next commit here
            else:
                later = self.clock.now() + timedelta(seconds=self.poll_interval)
                await self.clock.sleep_until(later)

    async def _query_replayed(self, instance_id: str, name: str, args: Raw) -> Raw:
        """Answer a query by replaying the instance's current run from the log here."""
        loaded = await load_existing(self.store, instance_id)
        return await self._replayed(instance_id, loaded, lambda run: answer_query(run, name, args))

    async def _replayed(
        self, instance_id: str, loaded: RunLog, read: Callable[[WorkflowRun], T]
    ) -> T:
        """``read`` the instance's current run, replayed from ``loaded`` here."""
        executor = self._executor()
        if executor is None:
            raise UnknownWorkflowError(
                f"no process holds {instance_id!r} here, and this client has no registry "
                f"to replay {loaded.started.name!r} with: give it one"
            )
        run = executor.new_run(instance_id, loaded.history)
        try:
            if not isinstance(run, WorkflowRun):
                raise UnknownWorkflowError(f"{loaded.started.name!r} runs on remote workers")
            return read(run)
        finally:
            run.close()

    async def _send(
        self, instance_id: str, event: HistoryEvent, *, msg_id: str | None = None
    ) -> bool:
        """Send ``event`` to the start the instance's current run belongs to: only its
        runs apply it. If that run has ended, nothing is sent (False): a later start
        under the id never takes it (Durable Task drops an event for an ended instance
        too)."""
        async with self._busy():
            engine = self._engine
            local = engine.running_here(instance_id) if engine is not None else None
            if local is not None:
                # the run in memory before the write: no run had consumed the message then
                seen: int | None = local.run_start
                to = local.started.origin_run
            else:
                seen = None
                to, ended = await current_start(self.store, instance_id)  # raises if absent
                if ended:
                    return False
            if msg_id is None:
                msg_id = self.ids.message_id(int(self.clock.now().timestamp() * 1e9))
            message = await self._write_message(instance_id, msg_id, event, to)
            if engine is not None:
                await self._retried(partial(engine.announce_message, instance_id, message, seen))
            else:
                await self._retried(partial(self._ring, instance_id))
        return True

    async def _write_message(
        self, instance_id: str, msg_id: str, event: HistoryEvent, to: str
    ) -> InboxMessage:
        """Write a message to the inbox, retrying transient errors under the same id: a
        write that landed but whose answer was lost is then written again in place, and
        the engine applies one message id once, so the event is never delivered twice."""
        return await self._retried(
            partial(send_message, self.store, instance_id, msg_id, event, to)
        )

    async def _retried(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, tried again after a transient store error (a write that is the same
        when repeated: an inbox message under its id, a wakeup), so that one lost
        request does not leave what landed before it unannounced."""
        for attempt in range(_SEND_ATTEMPTS):
            try:
                return await call()
            except StoreError as err:
                if not err.transient or attempt == _SEND_ATTEMPTS - 1:
                    raise
                if attempt:  # the first retry goes at once: a lost answer is the usual case
                    await self.clock.sleep_until(self.clock.now() + _SEND_BACKOFF * attempt)
        raise AssertionError("unreachable")

    def _busy(self) -> _BusyScope:
        return _BusyScope(self._engine)

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


class _BusyScope:
    """Tells an in-process engine that a client call is under way (for auto-advance)."""

    __slots__ = ("_engine",)

    def __init__(self, engine: Engine | None) -> None:
        self._engine = engine

    async def __aenter__(self) -> None:
        if self._engine is not None:
            self._engine.busy_enter()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._engine is not None:
            self._engine.busy_exit()


class WorkflowHandle(Generic[T]):
    """A workflow instance: await it for the result, or steer it.

    ``await handle`` returns the output, or raises ``WorkflowFailed`` with the failure.
    """

    __slots__ = ("_client", "_name", "instance_id")

    def __init__(self, client: Client, instance_id: str, name: str | None) -> None:
        self._client = client
        self.instance_id = instance_id
        self._name = name

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.instance_id!r})"

    def __await__(self) -> Generator[Any, None, T]:
        return self.result().__await__()

    async def result(self, timeout: timedelta | float | None = None) -> T:  # noqa: ASYNC109 (a Clock timeout)
        """The workflow's output once it ends; ``durable.TimeoutError`` if ``timeout``
        (on the client's Clock) passes first."""
        client = self._client
        snap = await within(
            client.clock, timeout, partial(client._wait, self.instance_id),
            f"workflow {self.instance_id!r}",
        )  # fmt: skip
        if snap.status is not WorkflowStatus.COMPLETED:
            failure = snap.failure or FailureDetails(
                snap.status.value, "the workflow did not complete"
            )
            raise WorkflowFailed(self.instance_id, failure)
        _, output_type = client._types(snap.name)
        result: T = client._decode(snap.output, output_type)
        return result

    async def describe(self) -> WorkflowState:
        """The instance's status, payloads and timestamps."""
        return self._client._state(self.instance_id, await self._client._snapshot(self.instance_id))

    async def raise_event(self, name: str, data: Any = None) -> None:
        """Send an external event; it waits in the workflow until asked for."""
        raw = Raw(self._client.codec.encode(data))
        await self._client._send(self.instance_id, EventRaised(name=name, input=raw))

    async def suspend(self, reason: str = "") -> None:
        """Pause the workflow: events queue up until ``resume``."""
        await self._client._send(self.instance_id, WorkflowSuspended(reason=reason))

    async def resume(self, reason: str = "") -> None:
        """Resume a suspended workflow."""
        await self._client._send(self.instance_id, WorkflowResumed(reason=reason))

    async def cancel(self, reason: str = "") -> None:
        """Ask the workflow to cancel, gracefully: it gets ``durable.CancelledError`` at
        its current await and may clean up (run activities, call sub-workflows) before it
        returns or re-raises; if the error escapes, it ends ``CANCELED``."""
        await self._client._send(self.instance_id, WorkflowCancelRequested(reason=reason))

    async def terminate(
        self, reason: str = "", output: Any = None, *, recursive: bool = True
    ) -> None:
        """End the workflow now as TERMINATED, with an optional output. With
        ``recursive`` (the default) its sub-workflows still running are terminated too,
        and theirs: the whole tree."""
        raw = Raw(self._client.codec.encode(output))
        event = WorkflowTerminated(reason=reason, output=raw, recursive=recursive)
        await self._client._send(self.instance_id, event)

    async def query(self, name: str, *args: Any) -> Any:
        """Call the workflow's query handler ``name`` with ``args``; its answer.

        The process that holds the instance answers from its run; else a replay of the
        log here does (this client needs the workflow's code: its registry). Nothing is
        written. ``UnknownQueryError`` for a name with no handler, ``QueryFailedError``
        if the handler raised or tried to change the workflow."""
        return await self._client._query(self.instance_id, name, args)

    async def update(self, name: str, arg: Any = None, *, update_id: str | None = None) -> Any:
        """Deliver update ``name`` with ``arg`` durably; its handler's result.

        The validator runs first (``UpdateRejectedError``: nothing written). An accepted
        update is in history and runs once per ``update_id`` (one is made when none is
        given): after an unclear failure, call again with the same id to get the
        outcome of the one update. ``UpdateFailedError`` if its handler raised,
        ``UnknownUpdateError`` for a name without a handler."""
        update_id = await self.start_update(name, arg, update_id=update_id)
        return await self.update_result(update_id)

    async def start_update(
        self, name: str, arg: Any = None, *, update_id: str | None = None
    ) -> str:
        """Validate and deliver an update, without waiting for its outcome; its id."""
        return await self._client._start_update(self.instance_id, name, arg, update_id)

    async def update_result(self, update_id: str) -> Any:
        """Wait for the outcome of update ``update_id``: its result, or
        ``UpdateFailedError``."""
        return await self._client._update_result(self.instance_id, update_id)

    async def history(self) -> list[HistoryEvent]:
        """The events of the current run, each with ``event_id`` and ``timestamp``."""
        run = await load_existing(self._client.store, self.instance_id)
        return run.history


def _names_update(event: HistoryEvent, update_id: str) -> bool:
    """Whether ``event`` is the request or the outcome of update ``update_id``."""
    return type(event) in (UpdateRequested, UpdateCompleted) and event.update_id == update_id  # type: ignore[union-attr]
