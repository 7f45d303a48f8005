"""``RemoteWorker``: runs a Registry's workflows and activities for a gRPC sidecar.

The worker calls ``Hello``, opens the ``GetWorkItems`` stream and answers each work
item: an orchestrator request with ``CompleteOrchestratorTask`` (the turn taken by
:class:`~durable.grpc._turns.TurnTaker`), an activity request with
``CompleteActivityTask`` (run by :func:`~durable._activity.execute_activity`), each
echoing the item's completion token. A turn that cannot be taken is answered with a
FAILED completion, never a crash.

With durable's own sidecar it opens durable's work stream instead
(:mod:`durable.grpc._worklink`): the same items, and the same completions sent back on
that stream rather than as a unary call each, acknowledged by the sidecar; a sidecar
without it (a Dapr sidecar) answers UNIMPLEMENTED and the worker falls back to the
standard calls on the same connect. ``work_stream=False`` never offers it.

Dialects: ``dapr`` advertises ``STATEFUL_HISTORY`` and ``HEALTH_PING``, so the sidecar
sends history deltas (``cachedHistory``) and the worker keeps suspended runs in its
:class:`~durable.grpc._cache.HistoryCache`; on a miss it fetches the whole history
with ``GetInstanceHistory``, and if that fails it drops the stream (the sidecar then
re-dispatches). With ``stateful_history=False`` it advertises ``HEALTH_PING`` only and
gets full histories, as a worker without the extension would. ``ms`` sends the two
concurrency limits; its sidecar always sends full histories. With full histories the
cache still saves the replay when they extend a cached run.

When the stream breaks the worker reconnects with jittered exponential backoff,
waiting on its Clock, and clears the cache (the sidecar's record of what this worker
holds is per stream). Work already under way finishes; its answer goes out on the
new connection (and is dropped as stale: the sidecar sent the item again, with a new
token), or, on a work stream, not at all. Everything runs in one anyio task group
owned by the worker.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
import grpclib.const
from google.protobuf.empty_pb2 import Empty

from durable._activity import execute_activity
from durable._clock import Clock, SystemClock
from durable._core._actions import FailWorkflow
from durable._core._codec import JsonCodec, PayloadCodec
from durable._core._events import ActivityErrored, ActivityScheduled
from durable._core._failure import failure_from_exception
from durable._core._state import WorkflowStatus
from durable.grpc import _convert as cv
from durable.grpc._cache import CacheStats, HistoryCache
from durable.grpc._framing import (
    LazyEvents,
    RawMessage,
    UndecodableError,
    parse,
    parse_own,
    split_turn,
)
from durable.grpc._proto import dapr, ms
from durable.grpc._turns import TurnOutcome, TurnTaker
from durable.grpc._wire import check_dialect, metadata_for, open_channel, parse_target, unary
from durable.grpc._worklink import (
    WORK_STREAM,
    Completion,
    Refused,
    WorkLink,
    open_link,
    unsupported,
)

if TYPE_CHECKING:
    import ssl as _ssl
    from collections.abc import Mapping
    from types import TracebackType

    from anyio.abc import TaskStatus
    from google.protobuf.message import Message
    from grpclib.client import Channel, Stream

    from durable._core._events import ActivityCompleted
    from durable._log._memo import MemoStore
    from durable._registry import Registry

__all__ = ["RemoteWorker"]

log = logging.getLogger("durable.grpc.worker")

_CALL_TIMEOUT = 30.0  # seconds: every unary call (Hello, completions, history)
_ACK_TIMEOUT = timedelta(seconds=_CALL_TIMEOUT + 120)
"""How long a completion on a work stream may go unacknowledged: an applied one is
acknowledged with the sidecar's next item or health ping, and it pings at least every
120 s (MS workers give up after 120 s of silence)."""


@dataclass(frozen=True)
class _Kinds:
    """A dialect's work item, turn request and history event messages."""

    item: type[ms.WorkItem] | type[dapr.WorkItem]
    turn: type[ms.OrchestratorRequest] | type[dapr.WorkflowRequest]
    event: type[ms.HistoryEvent] | type[dapr.HistoryEvent]


_MS_KINDS = _Kinds(ms.WorkItem, ms.OrchestratorRequest, ms.HistoryEvent)
_DAPR_KINDS = _Kinds(dapr.WorkItem, dapr.WorkflowRequest, dapr.HistoryEvent)


@dataclass(slots=True)
class _Connection:
    """One work-item stream: a scope to tear it down, the cache generation it fills,
    and the work stream its completions go back on (None: unary calls)."""

    scope: anyio.CancelScope
    generation: int
    link: WorkLink | None = None


class RemoteWorker:
    """Runs ``registry``'s workflows and activities for the sidecar at ``target``.

    ``async with RemoteWorker(registry, "127.0.0.1:4001"):`` runs it in the
    background; ``await worker.run()`` runs it in the foreground until cancelled.
    ``dialect`` is ``"dapr"`` (Dapr 1.19's protocol, with stateful history) or
    ``"ms"`` (Microsoft's ``durabletask``); ``stateful_history=False`` keeps a ``dapr``
    worker from advertising ``STATEFUL_HISTORY``, so the sidecar sends every turn's
    whole history (``ms`` never advertises it). ``ssl`` is an ``ssl.SSLContext`` or True
    (the default context); ``api_token`` is sent as ``dapr-api-token``. Activities
    that use ``ctx.memo`` need a ``memo_store`` (a :class:`~durable.MemoStore` over a
    store this machine reaches). durable's sidecar sends each activity's step number
    (Dapr ``taskExecutionId``, MS tags), so a memo is per step as in the embedded
    runtime, never seen by a later run of the instance; from another sidecar it is per
    wire task id. The protocol carries no attempt number.

    Between reconnects the worker waits ``reconnect_delay``, doubling per failure up
    to ``reconnect_max_delay``, jittered; a stream silent for ``idle_timeout`` (no work,
    no health ping) is dropped and reopened. The history cache keeps suspended runs
    for ``cache_ttl`` after their last turn, at most ``cache_max_instances`` of them
    and ``cache_max_bytes`` of history (estimated from the events they were fed).
    ``work_stream=False`` keeps it from offering durable's work stream (completions on
    the stream their items came on) and uses the standard unary completions.
    """

    def __init__(
        self,
        registry: Registry,
        target: str = "127.0.0.1:4001",
        *,
        dialect: str = "dapr",
        stateful_history: bool = True,
        api_token: str | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
        codec: PayloadCodec | None = None,
        memo_store: MemoStore | None = None,
        clock: Clock | None = None,
        max_concurrent_activities: int = 100,
        max_concurrent_workflows: int = 100,
        cache_ttl: timedelta = timedelta(hours=1),
        cache_max_instances: int = 10_000,
        cache_max_bytes: int = 64 * 1024 * 1024,
        reconnect_delay: timedelta = timedelta(seconds=1),
        reconnect_max_delay: timedelta = timedelta(seconds=30),
        idle_timeout: timedelta | None = timedelta(seconds=120),
        rng: random.Random | None = None,
        work_stream: bool = True,
    ) -> None:
        if max_concurrent_activities < 1 or max_concurrent_workflows < 1:
            raise ValueError("concurrency limits must be at least 1")
        self.registry = registry
        self.target = target
        self.dialect = check_dialect(dialect)
        self.stateful_history = stateful_history and self.dialect == "dapr"
        """Whether the work-item stream advertises ``STATEFUL_HISTORY`` (history deltas)."""
        parse_target(target)  # a bad target fails here, not in the background
        self.codec: PayloadCodec = codec or JsonCodec()
        self.memo_store = memo_store
        self.clock: Clock = clock or SystemClock()
        self.max_concurrent_activities = max_concurrent_activities
        self.max_concurrent_workflows = max_concurrent_workflows
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.idle_timeout = idle_timeout
        self.cache = HistoryCache(
            self.clock,
            ttl=cache_ttl,
            max_instances=cache_max_instances,
            max_bytes=cache_max_bytes,
        )
        self.turns = TurnTaker(registry, self.codec, self.cache)
        self.attempts = 0
        """How many times the worker tried to connect."""
        self.connects = 0
        """How many times the work-item stream was opened."""
        self.history_fetches = 0
        """How many times a cache miss fetched the whole history (GetInstanceHistory)."""
        self._api_token = api_token
        self._ssl = ssl
        self._metadata: Mapping[str, str] | None = metadata_for(api_token)
        self._rng = rng or random.Random()
        # semaphores, not CapacityLimiters: no per-task bookkeeping, no checkpoint when free
        self._workflow_slots = anyio.Semaphore(max_concurrent_workflows, fast_acquire=True)
        self._activity_slots = anyio.Semaphore(max_concurrent_activities, fast_acquire=True)
        self._connected = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._channel: Channel | None = None
        self.work_stream = work_stream
        """Whether to offer durable's work stream at connect (False: standard RPCs only)."""
        self.streamed = False
        """Whether the current (or last) connection runs over durable's work stream."""

    def __repr__(self) -> str:
        full = self.dialect == "dapr" and not self.stateful_history
        extra = ", stateful_history=False" if full else ""
        return f"RemoteWorker({self.target!r}, dialect={self.dialect!r}{extra})"

    # -- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> RemoteWorker:
        if self._tg is not None:
            raise RuntimeError("this RemoteWorker is already running")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await tg.start(self.run)
        except BaseException as exc:
            tg.cancel_scope.cancel()
            await tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._tg = self._tg, None
        assert tg is not None
        tg.cancel_scope.cancel()
        return await tg.__aexit__(exc_type, exc, tb)

    async def wait_connected(self) -> None:
        """Return once the work-item stream has been opened (at least once)."""
        await self._connected.wait()

    def cache_stats(self) -> CacheStats:
        """The history cache's counters (hits, misses, evictions, entries, bytes)."""
        return self.cache.stats()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve work items until cancelled, reconnecting whenever the stream breaks."""
        self._channel = open_channel(self.target, self._ssl)
        try:
            async with anyio.create_task_group() as work:
                task_status.started()
                failures = 0
                while True:
                    opened = self.connects
                    try:
                        await self._serve(work)
                    except Exception as exc:
                        log.warning("work-item stream to %s failed: %r", self.target, exc)
                    else:
                        log.info("work-item stream to %s ended", self.target)
                    failures = 0 if self.connects > opened else failures + 1
                    await self._backoff(failures)
        finally:
            self._channel.close()

    async def _backoff(self, failures: int) -> None:
        """Wait before reconnecting: exponential in the failures in a row, jittered
        (half fixed, half random) so a fleet does not reconnect in lockstep."""
        base = self.reconnect_delay.total_seconds() * 2 ** min(max(failures - 1, 0), 16)
        base = min(base, self.reconnect_max_delay.total_seconds())
        delay = base / 2 + self._rng.uniform(0, base / 2)
        await self.clock.sleep_until(self.clock.now() + timedelta(seconds=delay))

    # -- the stream -------------------------------------------------------------------

    async def _serve(self, work: anyio.abc.TaskGroup) -> None:
        """Say Hello, open the work stream (or, from a sidecar without it, GetWorkItems)
        and hand each item to a task in ``work``."""
        channel = self._channel
        assert channel is not None
        self.attempts += 1
        await unary(
            channel, "Hello", Empty(), Empty, metadata=self._metadata, seconds=_CALL_TIMEOUT
        )
        request = self._work_items_request()
        if self.work_stream and await self._serve_work_stream(work, request):
            return
        with anyio.CancelScope() as scope:
            async with channel.request(
                "/TaskHubSidecarService/GetWorkItems",
                grpclib.const.Cardinality.UNARY_STREAM,
                type(request),
                RawMessage,  # read by _dispatch: a turn's past events stay encoded
                metadata=self._metadata,
            ) as items:
                await items.send_message(request, end=True)
                await self._pump(work, _Connection(scope, 0), items)

    async def _serve_work_stream(
        self, work: anyio.abc.TaskGroup, request: ms.GetWorkItemsRequest | dapr.GetWorkItemsRequest
    ) -> bool:
        """Serve over durable's work stream until it ends; False (at once) when the
        sidecar has none, so the standard calls must serve."""
        channel = self._channel
        assert channel is not None
        link: WorkLink | None = None
        try:
            with anyio.CancelScope() as scope:
                async with channel.request(
                    WORK_STREAM, grpclib.const.Cardinality.STREAM_STREAM, RawMessage,
                    RawMessage, metadata=self._metadata,
                ) as stream:  # fmt: skip
                    link = await open_link(stream, request.SerializeToString(), self.clock)
                    try:
                        await self._pump(work, _Connection(scope, 0, link), stream)
                    finally:
                        link.close()
        except Exception as err:
            if link is not None or not unsupported(err):
                raise
            log.info("%s has no work stream: using GetWorkItems and unary completions",
                     self.target)  # fmt: skip
            return False
        return True

    def _work_items_request(self) -> ms.GetWorkItemsRequest | dapr.GetWorkItemsRequest:
        """The ``GetWorkItemsRequest`` this worker opens its stream with."""
        if self.dialect == "dapr":
            capabilities = [dapr.WORKER_CAPABILITY_HEALTH_PING]
            if self.stateful_history:
                capabilities.insert(0, dapr.WORKER_CAPABILITY_STATEFUL_HISTORY)
            return dapr.GetWorkItemsRequest(capabilities=capabilities)
        return ms.GetWorkItemsRequest(
            maxConcurrentOrchestrationWorkItems=self.max_concurrent_workflows,
            maxConcurrentActivityWorkItems=self.max_concurrent_activities,
        )

    async def _pump(
        self, work: anyio.abc.TaskGroup, conn: _Connection, stream: Stream[Any, RawMessage]
    ) -> None:
        """Read the open stream's messages until it ends, handing each work item to a
        task in ``work`` (on a work stream, acks go to the completions they answer)."""
        self.cache.clear()  # what the sidecar knows we hold is per stream
        conn.generation = self.cache.generation
        self.connects += 1
        self.streamed = conn.link is not None
        self._connected.set()
        log.info("connected to %s (%s dialect%s)", self.target, self.dialect,
                 ", work stream" if self.streamed else "")  # fmt: skip
        link = conn.link
        async with anyio.create_task_group() as watch:
            heard = [self.clock.now()]
            if self.idle_timeout is not None or link is not None:
                watch.start_soon(self._watchdog, conn, heard, self.idle_timeout)
            while (message := await stream.recv_message()) is not None:
                heard[0] = self.clock.now()
                data = message.data if link is None else link.received(message.data)
                if data is not None:
                    self._dispatch(work, conn, data)
            watch.cancel_scope.cancel()

    async def _watchdog(
        self, conn: _Connection, heard: list[datetime], idle: timedelta | None
    ) -> None:
        """Drop the stream when nothing (not even a health ping) came for ``idle``, or
        a completion on a work stream has waited ``_ACK_TIMEOUT`` for its ack (a unary
        completion times out too): a connection can die without either side noticing."""
        ack_timeout = _ACK_TIMEOUT
        while True:
            now = self.clock.now()
            wake: list[datetime] = []
            if idle is not None:
                if now >= heard[0] + idle:
                    log.warning("nothing from %s for %s: reconnecting", self.target, idle)
                    conn.scope.cancel()
                    return
                wake.append(heard[0] + idle)
            if conn.link is not None:
                sent = conn.link.oldest()
                if sent is not None and now >= sent + ack_timeout:
                    log.warning("no ack from %s for %s: reconnecting", self.target, ack_timeout)
                    conn.scope.cancel()
                    return
                wake.append((sent or now) + ack_timeout)
            await self.clock.sleep_until(min(wake))

    def _dispatch(self, work: anyio.abc.TaskGroup, conn: _Connection, data: bytes) -> None:
        """Hand an encoded work item to a task. A turn's past events are split off and
        parsed only as the turn needs them (a cached run needs only the newest)."""
        kinds = _MS_KINDS if self.dialect == "ms" else _DAPR_KINDS
        # durable's sidecar on its work stream speaks the dialect this worker opened it
        # with, from the same schema: its items need no wire-type check
        read = parse_own if conn.link is not None else parse
        split = split_turn(data)
        if split is not None:
            rest, request_data, past = split
            token = read(kinds.item, rest).completionToken
            turn = read(kinds.turn, request_data)
            events = LazyEvents(past, kinds.event)
            work.start_soon(self._workflow_item, conn, turn, events, token)
            return
        item = read(kinds.item, data)
        kind = item.WhichOneof("request")
        token = item.completionToken
        if kind == "activityRequest":
            work.start_soon(self._activity_item, conn, item.activityRequest, token)
        elif kind != "healthPing":  # a ping is liveness only
            log.warning("ignoring a %s work item: durable has no counterpart", kind or "empty")

    # -- workflow turns ---------------------------------------------------------------

    async def _workflow_item(
        self,
        conn: _Connection,
        request: ms.OrchestratorRequest | dapr.WorkflowRequest,
        past: LazyEvents[Any],
        token: str,
    ) -> None:
        async with self._workflow_slots:
            instance_id = request.instanceId
            cached: int | None = None
            if isinstance(request, dapr.WorkflowRequest) and request.HasField("cachedHistory"):
                cached = request.cachedHistory.eventCount
            try:
                outcome = self.turns.take(instance_id, past, request.newEvents, cached)
            except UndecodableError as exc:
                log.warning("instance %r: a damaged work item (%s); reconnecting", instance_id, exc)
                conn.scope.cancel()  # the sidecar sends the item again on the new stream
                return
            except Exception as exc:  # a bug here must not take the worker down
                outcome = TurnOutcome(instance_id, failure=failure_from_exception(exc))
            if outcome is None:
                try:
                    history = await self._fetch_history(instance_id)
                except Exception as exc:
                    log.warning(
                        "instance %r: GetInstanceHistory failed (%r); dropping the stream",
                        instance_id,
                        exc,
                    )
                    conn.scope.cancel()
                    return
                outcome = self.turns.replay(instance_id, history, request.newEvents)
            if outcome.failure is not None:
                log.error(
                    "instance %r: the turn failed: %s: %s",
                    instance_id,
                    outcome.failure.type,
                    outcome.failure.message,
                )
            self.turns.settle(outcome, generation=conn.generation)

            def failed(exc: Exception) -> None:
                self.turns.discard(outcome)
                log.warning(
                    "instance %r: completing the turn failed: %r; reconnecting", instance_id, exc
                )
                conn.scope.cancel()  # as for an activity: have the sidecar send it again

            try:
                await self._complete_workflow(conn, outcome, token, failed)
            except Exception as exc:
                failed(exc)

    async def _fetch_history(self, instance_id: str) -> list[dapr.HistoryEvent]:
        assert self._channel is not None
        self.history_fetches += 1
        reply = await unary(
            self._channel,
            "GetInstanceHistory",
            dapr.GetInstanceHistoryRequest(instanceId=instance_id),
            dapr.GetInstanceHistoryResponse,
            metadata=self._metadata,
            seconds=_CALL_TIMEOUT,
        )
        return list(reply.events)

    async def _complete_workflow(
        self, conn: _Connection, outcome: TurnOutcome, token: str, failed: Refused
    ) -> None:
        response = (
            _workflow_response_dapr(outcome, token)
            if self.dialect == "dapr"
            else _workflow_response_ms(outcome, token)
        )
        await self._complete(conn, "completeTurn", response, failed)

    async def _complete(
        self, conn: _Connection, kind: Completion, response: Message, failed: Refused
    ) -> None:
        """Send a completion on the work stream its item came on (``failed`` hears of
        a refusal when its ack comes), or by the unary call (an empty reply in the
        stream's dialect comes back; a refusal raises)."""
        if conn.link is not None:
            await conn.link.complete(kind, response.SerializeToString(), failed)
            return
        assert self._channel is not None
        method = "CompleteOrchestratorTask" if kind == "completeTurn" else "CompleteActivityTask"
        await unary(
            self._channel, method, response, _complete_reply(self.dialect),
            metadata=self._metadata, seconds=_CALL_TIMEOUT,
        )  # fmt: skip

    # -- activities -------------------------------------------------------------------

    async def _activity_item(
        self, conn: _Connection, request: ms.ActivityRequest | dapr.ActivityRequest, token: str
    ) -> None:
        async with self._activity_slots:
            if isinstance(request, ms.ActivityRequest):
                instance_id = request.orchestrationInstance.instanceId
            else:
                instance_id = request.workflowInstance.instanceId
            step = cv.step_of_activity_request(request)
            scheduled = ActivityScheduled(
                task_id=request.taskId,
                name=request.name,
                input=cv.payload_in(request, "input"),
                step=request.taskId if step is None else step,  # keys the memo
            )
            outcome = await execute_activity(
                self.registry, self.codec, self.memo_store, instance_id, "", scheduled
            )
            response = _activity_response(self.dialect, instance_id, outcome, token)

            def failed(exc: Exception) -> None:
                log.warning(
                    "instance %r: completing activity %r (task %d) failed: %r; reconnecting",
                    instance_id,
                    request.name,
                    request.taskId,
                    exc,
                )
                # the sidecar still holds the item on this stream: a new stream makes it
                # send the item again (at-least-once) instead of waiting for an answer
                conn.scope.cancel()

            try:
                await self._complete(conn, "completeActivity", response, failed)
            except Exception as exc:
                failed(exc)


def _complete_reply(dialect: str) -> type[ms.CompleteTaskResponse | dapr.CompleteTaskResponse]:
    """The reply type of the completion calls in ``dialect``."""
    return dapr.CompleteTaskResponse if dialect == "dapr" else ms.CompleteTaskResponse


def _activity_response(
    dialect: str, instance_id: str, outcome: ActivityCompleted | ActivityErrored, token: str
) -> ms.ActivityResponse | dapr.ActivityResponse:
    """The ActivityResponse for ``outcome``. A failure always carries a message: some
    sidecars (durabletask's in-memory backend) read an empty one as success."""
    if dialect == "dapr":
        response: Any = dapr.ActivityResponse(
            instanceId=instance_id, taskId=outcome.task_id, completionToken=token
        )
    else:
        response = ms.ActivityResponse(
            instanceId=instance_id, taskId=outcome.task_id, completionToken=token
        )
    if isinstance(outcome, ActivityErrored):
        failure = outcome.failure
        to_proto = cv.failure_to_dapr if dialect == "dapr" else cv.failure_to_ms
        details = to_proto(failure)
        details.errorMessage = details.errorMessage or failure.type
        response.failureDetails.CopyFrom(details)
    elif (value := cv.payload_out(outcome.result)) is not None:
        response.result.CopyFrom(value)
    result: ms.ActivityResponse | dapr.ActivityResponse = response
    return result


def _workflow_response_ms(outcome: TurnOutcome, token: str) -> ms.OrchestratorResponse:
    """The MS OrchestratorResponse for a turn."""
    if outcome.failure is not None:
        actions = [cv.action_to_ms(FailWorkflow(outcome.failure))]
    else:
        actions = [cv.action_to_ms(a) for a in outcome.actions]
    if outcome.terminated is not None:
        actions.append(
            ms.OrchestratorAction(
                id=-1,
                completeOrchestration=ms.CompleteOrchestrationAction(
                    orchestrationStatus=cv.status_to_ms(WorkflowStatus.TERMINATED),
                    result=cv.payload_out(outcome.terminated.output),
                ),
            )
        )
    return ms.OrchestratorResponse(
        instanceId=outcome.instance_id,
        actions=[a for a in actions if a is not None],
        customStatus=cv.payload_out(outcome.custom_status),
        completionToken=token,
    )


def _workflow_response_dapr(outcome: TurnOutcome, token: str) -> dapr.WorkflowResponse:
    """The Dapr WorkflowResponse for a turn; the patches the run took so far and its
    version name travel in ``version``."""
    if outcome.failure is not None:
        actions = [cv.action_to_dapr(FailWorkflow(outcome.failure))]
    else:
        actions = [cv.action_to_dapr(a, instance_id=outcome.instance_id) for a in outcome.actions]
    if outcome.terminated is not None:
        actions.append(
            dapr.WorkflowAction(
                id=-1,
                completeWorkflow=dapr.CompleteWorkflowAction(
                    workflowStatus=cv.status_to_dapr(WorkflowStatus.TERMINATED),
                    result=cv.payload_out(outcome.terminated.output),
                ),
            )
        )
    response = dapr.WorkflowResponse(
        instanceId=outcome.instance_id,
        actions=[a for a in actions if a is not None],
        customStatus=cv.payload_out(outcome.custom_status),
        completionToken=token,
    )
    if outcome.patches or outcome.version:
        response.version.CopyFrom(
            dapr.WorkflowVersion(patches=outcome.patches, name=outcome.version or None)
        )
    return response
