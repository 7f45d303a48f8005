"""The ``TaskHubSidecarService`` gRPC service: both dialects on one set of paths.

The service is a grpclib handler table over raw bytes (:class:`BytesCodec`), so each
call decodes its request itself: a worker stream's dialect comes from its
``GetWorkItemsRequest``, a completion's from the stream its item went to, and a client
request's from the wire types where the dialects collide. Every call checks the API
token first (``dapr-api-token`` metadata) when one is configured. Errors map to gRPC
statuses: malformed requests to INVALID_ARGUMENT, unknown instances to NOT_FOUND; a
bug in a handler is logged and answered INTERNAL, and never takes the server down.

Beside the standard service it serves durable's own worker stream
(``/durable.grpc.ext.DurableWorker/WorkStream``, see :mod:`durable.grpc._worklink`):
a ``GetWorkItems`` whose completions come back on the same call, each answered by an
``Ack`` once applied (or dropped, or refused with the status a unary completion would
have failed with), and only for an item that stream holds.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
from grpclib import GRPCError, Status
from grpclib.const import Cardinality, Handler
from grpclib.encoding.base import CodecBase

from durable._core._actions import FailWorkflow
from durable._core._events import ActivityErrored
from durable._core._failure import FailureDetails
from durable._errors import (
    DurableError,
    InstanceExistsError,
    InstanceNotFoundError,
    SerializationError,
    UnknownWorkflowError,
)

from . import _management as mgmt
from ._auth import Gate
from ._convert import ProtocolError
from ._dispatch import ActivityWork, TurnWork
from ._filters import work_filters
from ._framing import ENTITIES_UNSUPPORTED, VARINT, NotSupportedError, field_chunk, varint_bytes
from ._history import history_chunks
from ._limits import (
    DEFAULT_MAX_MESSAGE,
    DEFAULT_MAX_WAITING,
    Waiting,
    checked_reply,
    receive,
    receive_next,
    too_big,
)
from ._pastcache import PastCache
from ._proto import dapr, ext, ms
from ._remote import TurnOutcome
from ._workitems import (
    Envelope,
    SentTurn,
    decode_activity,
    decode_turn,
    detect_dialect,
    encode_item,
    encode_ping,
    parse,
    stream_options,
    worker_limits,
)
from ._worklink import WORK_STREAM

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from grpclib.server import Stream

    from durable._client import Client
    from durable._clock import Clock

    from ._dispatch import Dispatcher, Item, WorkerStream

__all__ = ["BytesCodec", "SidecarService"]

log = logging.getLogger("durable.grpc.server")

_PATH = "/TaskHubSidecarService/"
_EXT_WORK_ITEM = 1  # SidecarMessage.workItem
_EXT_HANDLED = bytes([3 << 3 | VARINT])  # SidecarMessage.handled
_SENT_KEPT = 10_000  # SentTurn records kept for measurements


class BytesCodec(CodecBase):
    """grpclib codec that hands handlers the raw message bytes (they decode per
    dialect) and sends the bytes they return."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        if not isinstance(message, bytes):
            raise TypeError(f"expected bytes, got {type(message).__name__}")
        return message

    def decode(self, data: bytes, message_type: Any) -> bytes:
        return data


Unary = Callable[[bytes], "Awaitable[bytes]"]
FromWorker = Callable[[bytes, Hashable], "Awaitable[bytes]"]
"""A worker's call: its request and the connection it came on (see :func:`origin_of`)."""


class SidecarService:
    """The service's handlers, over a dispatcher (workers) and a client (instances)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        client: Client,
        clock: Clock,
        *,
        api_token: str | None = None,
        ping_interval: float = 30.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
        max_waiting: int = DEFAULT_MAX_WAITING,
    ) -> None:
        if ping_interval <= 0 or ping_interval >= 120:
            raise ValueError("ping_interval must be in (0, 120) seconds: MS workers give up at 120")
        self.dispatcher = dispatcher
        self.client = client
        self.clock = clock
        self.gate = Gate(api_token, clock)
        self._ping = timedelta(seconds=ping_interval)
        self.max_message_size = max_message_size
        self.waiting = Waiting(max_waiting)
        """Callers in WaitForInstanceStart/Completion now, and how many may be."""
        self._past = PastCache()
        self.sent: deque[SentTurn] = deque(maxlen=_SENT_KEPT)
        """What went out for recent turns (messages in past/new events, delta or not)."""

    def __mapping__(self) -> dict[str, Handler]:
        c = self.client
        client: dict[str, Unary] = {
            "Hello": self._hello,
            "StartInstance": lambda d: mgmt.start_instance(c, d),
            "GetInstance": lambda d: mgmt.get_instance(c, d),
            "WaitForInstanceStart": lambda d: mgmt.wait_for_start(c, d, self.waiting),
            "WaitForInstanceCompletion": lambda d: mgmt.wait_for_completion(c, d, self.waiting),
            "RaiseEvent": lambda d: mgmt.raise_event(c, d),
            "TerminateInstance": lambda d: mgmt.terminate_instance(c, d),
            "SuspendInstance": lambda d: mgmt.suspend_instance(c, d),
            "ResumeInstance": lambda d: mgmt.resume_instance(c, d),
            "PurgeInstances": lambda d: mgmt.purge_instances(c, d),
            "QueryInstances": lambda d: mgmt.query_instances(c, d),
            "ListInstanceIds": lambda d: mgmt.list_instance_ids_ms(c, d),
            "ListInstanceIDs": lambda d: mgmt.list_instance_ids_dapr(c, d),
            "RerunWorkflowFromEvent": lambda d: mgmt.rerun_from_event(c, d),
            "RestartInstance": lambda d: mgmt.restart_instance(c, d),
            "RewindInstance": lambda d: mgmt.rewind_instance(c, d),
            "GetInstanceHistory": lambda d: mgmt.get_instance_history(c, d),
            **dict.fromkeys(_ENTITY_RPCS, _refuse_entities),
        }
        worker: dict[str, FromWorker] = {
            "CompleteOrchestratorTask": self._complete_turn,
            "CompleteWorkflowTask": self._complete_turn,
            "CompleteActivityTask": self._complete_activity,
            "AbandonTaskOrchestratorWorkItem": self._abandon_turn,
            "AbandonTaskActivityWorkItem": self._abandon_activity,
        }
        unary: dict[str, FromWorker] = {
            **{name: _ignoring_origin(fn) for name, fn in client.items()},
            **worker,
        }
        mapping = {
            _PATH + name: Handler(self._unary(name, fn), Cardinality.UNARY_UNARY, bytes, bytes)
            for name, fn in unary.items()
        }
        mapping[_PATH + "GetWorkItems"] = Handler(
            self._get_work_items, Cardinality.UNARY_STREAM, bytes, bytes
        )
        mapping[WORK_STREAM] = Handler(self._work_stream, Cardinality.STREAM_STREAM, bytes, bytes)
        mapping[_PATH + "StreamInstanceHistory"] = Handler(
            self._stream_history, Cardinality.UNARY_STREAM, bytes, bytes
        )
        return mapping

    # -- plumbing -------------------------------------------------------------------

    def _unary(self, name: str, fn: FromWorker) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
        async def handle(stream: Stream[Any, Any]) -> None:
            self.gate.check(stream)
            with _statuses(name):
                data = await receive(stream, self.max_message_size)
                reply = checked_reply(await fn(data, origin_of(stream)), self.max_message_size)
            await stream.send_message(reply)

        return handle

    async def _hello(self, data: bytes) -> bytes:
        return b""

    async def _stream_history(self, stream: Stream[Any, Any]) -> None:
        self.gate.check(stream)
        with _statuses("StreamInstanceHistory"):
            data = await receive(stream, self.max_message_size)
            chunks = [checked_reply(c, self.max_message_size)
                      for c in await history_chunks(self.client, data)]  # fmt: skip
        for chunk in chunks:
            await stream.send_message(chunk)

    # -- workers --------------------------------------------------------------------

    async def _get_work_items(self, stream: Stream[Any, Any]) -> None:
        self.gate.check(stream)
        with _statuses("GetWorkItems"):
            data = await receive(stream, self.max_message_size)
        worker = self._connect(stream, data)
        try:
            async with anyio.create_task_group() as tg:
                if worker.pings:
                    tg.start_soon(self._pinger, worker)
                await stream.send_initial_metadata()
                await self._feed(worker, stream.send_message)
                tg.cancel_scope.cancel()
        finally:
            self.dispatcher.disconnect(worker)

    async def _work_stream(self, stream: Stream[Any, Any]) -> None:
        """durable's worker stream (``protos/.../ext/worker_stream.proto``): work items
        out and completions in on one call, each acknowledged once applied (see
        :meth:`_acks`)."""
        self.gate.check(stream)
        with _statuses("WorkStream"):
            opening = parse(ext.WorkerMessage, await receive(stream, self.max_message_size))
            if opening.WhichOneof("kind") != "open":
                raise ProtocolError("a work stream's first message is `open`")
        worker = self._connect(stream, opening.open)
        lock = anyio.Lock(fast_acquire=True)

        async def send(message: bytes) -> None:
            async with lock:  # a message goes out whole: one sender at a time
                await stream.send_message(message)

        handled = [0]  # the completions applied so far (seq): told with every item

        async def send_item(message: bytes) -> None:
            count = handled[0]
            await send(field_chunk(_EXT_WORK_ITEM, message)
                       + (_EXT_HANDLED + varint_bytes(count) if count else b""))  # fmt: skip

        failed: list[BaseException] = []
        try:
            async with anyio.create_task_group() as tg:
                if worker.pings:
                    tg.start_soon(self._pinger, worker)
                await stream.send_initial_metadata()
                tg.start_soon(self._acks, stream, worker, send, handled, tg.cancel_scope, failed)
                await self._feed(worker, send_item)
                tg.cancel_scope.cancel()
        finally:
            self.dispatcher.disconnect(worker)
        if failed:
            raise failed[0]

    async def _acks(
        self, stream: Stream[Any, Any], worker: WorkerStream,
        send: Callable[[bytes], Awaitable[None]], handled: list[int],
        scope: anyio.CancelScope, failed: list[BaseException],
    ) -> None:  # fmt: skip
        """Apply each completion that comes on a work stream: one applied counts in
        ``handled`` (told with the next item or ping), one dropped or refused is
        answered at once; the stream ends (``scope``) when the worker stops sending or
        breaks the protocol."""
        origin = origin_of(stream)
        try:
            while True:
                with _statuses("WorkStream"):
                    data = await receive_next(stream, self.max_message_size)
                    if data is None:
                        break
                    message = parse(ext.WorkerMessage, data)
                ack = await self._ack(message, origin, worker)
                if ack.outcome != ext.ACK_APPLIED:
                    await send(ext.SidecarMessage(ack=ack).SerializeToString())
                handled[0] = max(handled[0], message.seq)
        except Exception as err:  # the stream ends with it, as a unary call would
            failed.append(err)
        scope.cancel()

    async def _ack(self, message: ext.WorkerMessage, origin: Hashable,
                   worker: WorkerStream) -> ext.Ack:  # fmt: skip
        """Apply one completion from a work stream: what its Ack says."""
        kind = message.WhichOneof("kind")
        try:
            with _statuses(kind or "WorkStream"):
                if kind == "completeTurn":
                    applied = await self._take_turn(message.completeTurn, origin, worker)
                elif kind == "completeActivity":
                    applied = await self._take_activity(message.completeActivity, origin, worker)
                else:
                    raise ProtocolError(f"a work stream takes completions, not {kind or 'nothing'}")
        except GRPCError as err:
            return ext.Ack(seq=message.seq, outcome=ext.ACK_REFUSED, code=err.status.value,
                           message=err.message or "")  # fmt: skip
        return ext.Ack(seq=message.seq, outcome=ext.ACK_APPLIED if applied else ext.ACK_DROPPED)

    def _connect(self, stream: Stream[Any, Any], data: bytes) -> WorkerStream:
        """A worker stream for the ``GetWorkItemsRequest`` ``data`` (its dialect, limits
        and filters), on the connection ``stream`` came on."""
        with _statuses("GetWorkItems"):
            dialect, capabilities = detect_dialect(data)
            limits = worker_limits(dialect, data)
            filters = work_filters(dialect, data)
        stateful, pings = stream_options(dialect, capabilities)
        return self.dispatcher.connect(
            dialect,
            stateful=stateful,
            pings=pings,
            origin=origin_of(stream),
            **limits,
            accepts=filters.accepts if filters is not None else None,
        )

    async def _feed(self, worker: WorkerStream, send: Callable[[bytes], Awaitable[None]]) -> None:
        """Send the stream's work items (and health pings), encoded in its dialect,
        until it is closed."""
        async for item in worker.outbox:
            if item is None:
                await send(encode_ping(worker.dialect))
                continue
            if not worker.holds(item):
                continue  # resolved or moved since it was queued
            message, sent = encode_item(worker, item, self._past)
            if len(message) > self.max_message_size:  # the worker would refuse it
                self._fail_too_big(worker, item, len(message))
                continue
            if sent is not None:
                self.sent.append(sent)
            await send(message)

    def _fail_too_big(self, worker: WorkerStream, item: Item, size: int) -> None:
        """An item no worker could receive fails (once), instead of going out again on
        every reconnect and holding up the items queued behind it."""
        log.warning("work item for %r not sent: %d bytes, over the limit of %d",
                    item.work.instance_id, size, self.max_message_size)  # fmt: skip
        worker.warm.pop(item.work.instance_id, None)  # the worker never got this history
        self.dispatcher.resolve(item, too_big(item, size, self.max_message_size))

    async def _pinger(self, worker: WorkerStream) -> None:
        while True:
            await self.clock.sleep_until(self.clock.now() + self._ping)
            worker.ping()

    async def _complete_turn(self, data: bytes, origin: Hashable) -> bytes:
        await self._take_turn(data, origin)
        return ms.CompleteTaskResponse().SerializeToString()

    async def _complete_activity(self, data: bytes, origin: Hashable) -> bytes:
        await self._take_activity(data, origin)
        return ms.CompleteTaskResponse().SerializeToString()

    async def _take_turn(
        self, data: bytes, origin: Hashable, holder: WorkerStream | None = None
    ) -> bool:
        """Apply a turn's completion (from a work stream: ``holder``); False when it was
        dropped (stale, a duplicate, or not the sender's)."""
        envelope = Envelope.read(data)
        item = self.dispatcher.find(envelope.completion_token, envelope.instance_id,
                                    origin=origin, holder=holder)  # fmt: skip
        if item is None or not isinstance(item.work, TurnWork):
            log.info("dropped a stale orchestrator completion for %r", envelope.instance_id)
            return False
        try:
            outcome = decode_turn(item.dialect, data, item.work)
        except ProtocolError as err:
            kind = type(err).__name__ if isinstance(err, NotSupportedError) else "ProtocolError"
            failure = FailureDetails(kind, f"durable cannot apply this turn: {err}")
            self.dispatcher.resolve(item, TurnOutcome([FailWorkflow(failure)]))
            raise
        if not envelope.completion_token and _reuses_task_ids(outcome, item.work):
            # matched by instance only: a late answer to an earlier turn of it (sent
            # again after its worker went quiet) must not stand for this one
            instance_id = item.work.instance_id
            log.info("dropped a tokenless completion of an earlier turn of %r", instance_id)
            return False
        return self.dispatcher.resolve(item, outcome)

    async def _take_activity(
        self, data: bytes, origin: Hashable, holder: WorkerStream | None = None
    ) -> bool:
        """Apply an activity's completion (from a work stream: ``holder``); False when
        it was dropped."""
        shared = parse(dapr.ActivityResponse, data)  # fields 1, 2 and 5 are shared
        item = self.dispatcher.find(shared.completionToken, shared.instanceId, shared.taskId,
                                    origin=origin, holder=holder)  # fmt: skip
        if item is None or not isinstance(item.work, ActivityWork):
            log.info("dropped a stale activity completion for %r", shared.instanceId)
            return False
        try:
            outcome = decode_activity(item.dialect, data, item.work, as_dapr=shared)
        except ProtocolError as err:  # an unreadable answer is a failed attempt, not a hang
            failure = FailureDetails("ProtocolError", f"unreadable activity completion: {err}")
            task_id = item.work.scheduled.task_id
            self.dispatcher.resolve(item, ActivityErrored(task_id=task_id, failure=failure))
            raise
        return self.dispatcher.resolve(item, outcome)

    async def _abandon_turn(self, data: bytes, origin: Hashable) -> bytes:
        request = parse(ms.AbandonOrchestrationTaskRequest, data)
        self.dispatcher.abandon(request.completionToken)
        return ms.AbandonOrchestrationTaskResponse().SerializeToString()

    async def _abandon_activity(self, data: bytes, origin: Hashable) -> bytes:
        request = parse(ms.AbandonActivityTaskRequest, data)
        self.dispatcher.abandon(request.completionToken)
        return ms.AbandonActivityTaskResponse().SerializeToString()


def origin_of(stream: Stream[Any, Any]) -> Hashable:
    """The connection a call came on: its peer's address, unique among open
    connections (a connection without one gets a name of its own)."""
    return stream.peer.addr() or object()


def _ignoring_origin(fn: Unary) -> FromWorker:
    """A client call, which answers whatever connection it came on alike."""

    async def call(data: bytes, origin: Hashable) -> bytes:
        return await fn(data)

    return call


class _statuses:
    """Map durable's errors to gRPC statuses; log and hide anything unexpected."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: Any
    ) -> None:
        if err is None or isinstance(err, GRPCError) or not isinstance(err, Exception):
            return
        status = _status_of(err)
        if status is Status.INTERNAL:
            log.exception("%s failed", self.name, exc_info=err)
            raise GRPCError(Status.INTERNAL, f"{self.name} failed: {type(err).__name__}") from err
        if status is Status.INVALID_ARGUMENT:  # one line: a client's mistake is no bug here
            log.info("%s refused: %s", self.name, err)
        raise GRPCError(status, str(err)) from None


_ENTITY_RPCS = ("SignalEntity", "GetEntity", "QueryEntities", "CleanEntityStorage",
                "CompleteEntityTask", "AbandonTaskEntityWorkItem")  # fmt: skip


async def _refuse_entities(data: bytes) -> bytes:
    """The entity RPCs, client's and worker's: refused by name."""
    raise NotSupportedError(ENTITIES_UNSUPPORTED)


def _status_of(err: Exception) -> Status:
    if isinstance(err, NotSupportedError):
        return Status.UNIMPLEMENTED
    if isinstance(err, InstanceNotFoundError):
        return Status.NOT_FOUND
    if isinstance(err, InstanceExistsError):
        return Status.ALREADY_EXISTS
    if isinstance(err, UnknownWorkflowError):
        return Status.NOT_FOUND
    # ProtocolError and InvalidInstanceIdError are ValueErrors too; durable raises
    # ValueError for arguments it refuses (a rerun from an event that is no step)
    if isinstance(err, ValueError | SerializationError):
        return Status.INVALID_ARGUMENT
    if isinstance(err, DurableError):
        return Status.FAILED_PRECONDITION
    return Status.INTERNAL


def _reuses_task_ids(outcome: TurnOutcome, work: TurnWork) -> bool:
    """Whether the turn's actions schedule a task id an earlier turn already used."""
    return any(
        task_id < work.next_task
        for action in outcome.actions
        if (task_id := getattr(action, "task_id", None)) is not None
    )
