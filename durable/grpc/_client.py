"""``RemoteClient``: ``durable.Client``'s surface over a Durable Task sidecar.

Start, list, purge and rerun instances, and steer them through handles, with the
client RPCs of ``TaskHubSidecarService`` in either wire dialect. gRPC statuses
become durable's errors: NOT_FOUND is :class:`~durable.InstanceNotFoundError` (as
for an unknown id in ``Client``), ALREADY_EXISTS :class:`~durable.InstanceExistsError`,
FAILED_PRECONDITION :class:`~durable.InstanceRunningError`, DEADLINE_EXCEEDED
:class:`~durable.TimeoutError`, UNAVAILABLE ``ConnectionError``; anything else a
:class:`~durable.DurableError` naming the call and the status.

``result()`` polls ``GetInstance`` every ``poll_interval`` seconds on the client's
Clock rather than blocking in ``WaitForInstanceCompletion``: some sidecars bound or
starve long blocking waits, and a Clock timeout must stay a Clock timeout.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

import grpclib
import grpclib.const
from msgspec import Raw

from durable._clock import Clock, SystemClock, within
from durable._core._codec import JsonCodec, PayloadCodec
from durable._core._events import NULL
from durable._core._failure import FailureDetails
from durable._core._state import WorkflowState, WorkflowStatus
from durable._errors import (
    DurableError,
    InstanceExistsError,
    InstanceNotFoundError,
    InstanceRunningError,
    TimeoutError,
    WorkflowFailed,
)
from durable._ids import IdSource, validate_instance_id
from durable._observe import current_trace_context
from durable._registry import workflow_name
from durable.grpc import _convert as cv
from durable.grpc._proto import dapr, ms
from durable.grpc._wire import check_dialect, metadata_for, open_channel, unary

if TYPE_CHECKING:
    import builtins
    import ssl as _ssl
    from collections.abc import AsyncIterator, Awaitable, Callable, Generator

    from google.protobuf.message import Message
    from grpclib.client import Channel

    from durable._core._events import HistoryEvent
    from durable._registry import Registry

__all__ = ["RemoteClient", "RemoteWorkflowHandle"]

T = TypeVar("T")
Reply = TypeVar("Reply")

_CALL_TIMEOUT = 30.0  # seconds, for every unary call


def _raise_mapped(err: grpclib.GRPCError, method: str, instance_id: str | None) -> NoReturn:
    """Raise durable's error for a gRPC status (see the module docstring)."""
    status, message = err.status, err.message or ""
    iid = instance_id or ""
    if status is grpclib.Status.NOT_FOUND:
        raise InstanceNotFoundError(iid) from err
    if status is grpclib.Status.ALREADY_EXISTS:
        raise InstanceExistsError(iid) from err
    if status is grpclib.Status.FAILED_PRECONDITION:
        raise InstanceRunningError(iid, message or "not ended") from err
    if status is grpclib.Status.DEADLINE_EXCEEDED:
        raise TimeoutError(f"{method} for {iid!r} ran out of time: {message}") from err
    if status is grpclib.Status.UNAVAILABLE:
        raise ConnectionError(f"{method}: the sidecar is unavailable: {message}") from err
    raise DurableError(f"{method} failed: {status.name}: {message}") from err


class RemoteClient:
    """Manages instances through the sidecar at ``target``; the surface of
    :class:`durable.Client`.

    ``registry`` (optional) lets ``start`` take workflow functions and decodes inputs
    and outputs with their type hints; ``clock`` times ``result(timeout=...)``.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:4001",
        *,
        dialect: str = "dapr",
        api_token: str | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
        codec: PayloadCodec | None = None,
        poll_interval: float = 0.25,
        registry: Registry | None = None,
        clock: Clock | None = None,
        ids: IdSource | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.target = target
        self.dialect = check_dialect(dialect)
        self.codec: PayloadCodec = codec or JsonCodec()
        self.poll_interval = poll_interval
        self.registry = registry
        self.clock: Clock = clock or SystemClock()
        self.ids = ids or IdSource()
        self._metadata = metadata_for(api_token)
        self._channel: Channel = open_channel(target, ssl)

    def __repr__(self) -> str:
        return f"RemoteClient({self.target!r}, dialect={self.dialect!r})"

    async def __aenter__(self) -> RemoteClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection."""
        self._channel.close()

    # -- calls ------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        request: Message,
        reply_type: type[Reply],
        instance_id: str | None = None,
    ) -> Reply:
        try:
            return await unary(  # type: ignore[type-var]
                self._channel,
                method,
                request,
                reply_type,
                metadata=self._metadata,
                seconds=_CALL_TIMEOUT,
            )
        except grpclib.GRPCError as err:
            _raise_mapped(err, method, instance_id)

    # -- starting ---------------------------------------------------------------------

    async def start(
        self,
        workflow: Callable[..., Awaitable[T]] | str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        reuse: bool = False,
        version: str | None = None,
    ) -> RemoteWorkflowHandle[T]:
        """Start a workflow; return its handle. Raises ``InstanceExistsError`` if
        ``instance_id`` is taken (``reuse=True`` starts an ended one again)."""
        name = workflow_name(self.registry, workflow)
        if self.registry is not None:
            version = self.registry.get_workflow(name, version).version
        instance_id = (
            self.ids.instance_id() if instance_id is None else validate_instance_id(instance_id)
        )
        payload = cv.payload_out(Raw(self.codec.encode(input)))
        request: dapr.CreateInstanceRequest | ms.CreateInstanceRequest
        if self.dialect == "dapr":
            request = dapr.CreateInstanceRequest(
                instanceId=instance_id,
                name=name,
                version=cv.text(version),
                input=payload,
                enforceUniqueInstanceId=not reuse,
            )
            reply_type: Any = dapr.CreateInstanceResponse
        else:
            request = ms.CreateInstanceRequest(
                instanceId=instance_id,
                name=name,
                version=cv.text(version),
                input=payload,
                requestTime=cv.time_to_proto(self.clock.now()),
            )
            # a policy always: without one a sidecar replaces an ended instance. Refusing
            # takes a list of none; an empty message is not sent, and CONTINUED_AS_NEW
            # is never an instance's status, so a list of it replaces none
            ended = _ENDED if reuse else (WorkflowStatus.CONTINUED_AS_NEW,)
            request.orchestrationIdReusePolicy.CopyFrom(
                ms.OrchestrationIdReusePolicy(replaceableStatus=[cv.status_to_ms(s) for s in ended])
            )
            reply_type = ms.CreateInstanceResponse
        trace_parent, trace_state = current_trace_context()  # the caller's span, if traced
        if trace_parent:
            if isinstance(request, dapr.CreateInstanceRequest):
                context = cv.trace_context_to_dapr(trace_parent, trace_state)
                request.parentTraceContext.CopyFrom(context)
            else:
                request.parentTraceContext.CopyFrom(
                    cv.trace_context_to_ms(trace_parent, trace_state)
                )
        reply = await self._call("StartInstance", request, reply_type, instance_id)
        return RemoteWorkflowHandle(self, reply.instanceId or instance_id, name)

    def get_handle(self, instance_id: str) -> RemoteWorkflowHandle[Any]:
        """A handle on an existing instance (no I/O: errors surface on use)."""
        return RemoteWorkflowHandle(self, validate_instance_id(instance_id), None)

    # -- listing and housekeeping -----------------------------------------------------

    async def list(
        self,
        *,
        status: WorkflowStatus | str | None = None,
        name: str | None = None,
        created_after: datetime | None = None,
        limit: int | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[WorkflowState]:
        """Yield instances matching every filter given, ``page_size`` at a time, in the
        sidecar's order (MS: QueryInstances; Dapr: ListInstanceIDs, then GetInstance)."""
        wanted = WorkflowStatus(status) if status is not None else None
        count = 0
        async for state in self._states(wanted, created_after, page_size):
            if wanted is not None and state.status is not wanted:
                continue
            if name is not None and state.name != name:
                continue
            if created_after is not None and (
                state.created_at is None or state.created_at <= created_after
            ):
                continue
            yield state
            count += 1
            if limit is not None and count >= limit:
                return

    async def _states(
        self, wanted: WorkflowStatus | None, created_after: datetime | None, page_size: int
    ) -> AsyncIterator[WorkflowState]:
        token: str | None = None
        while True:
            if self.dialect == "ms":
                query = ms.InstanceQuery(
                    maxInstanceCount=page_size,
                    continuationToken=cv.text(token),
                    fetchInputsAndOutputs=True,
                )
                if wanted is not None:
                    query.runtimeStatus.append(cv.status_to_ms(wanted))
                if created_after is not None:
                    query.createdTimeFrom.CopyFrom(cv.time_to_proto(created_after))
                reply = await self._call(
                    "QueryInstances",
                    ms.QueryInstancesRequest(query=query),
                    ms.QueryInstancesResponse,
                )
                for state in reply.orchestrationState:
                    yield self._state(state.instanceId, state)
                token = reply.continuationToken.value
            else:
                listed = await self._call(
                    "ListInstanceIDs",
                    dapr.ListInstanceIDsRequest(continuationToken=token, pageSize=page_size),
                    dapr.ListInstanceIDsResponse,
                )
                for instance_id in listed.instanceIds:
                    try:
                        yield await self._describe(instance_id)
                    except InstanceNotFoundError:
                        continue  # purged since it was listed
                token = listed.continuationToken
            if not token:
                return

    async def purge(self, instance_id: str) -> None:
        """Delete an ended instance; refuses a running one (``InstanceRunningError``)."""
        state = await self._describe(validate_instance_id(instance_id))
        if not state.status.is_terminal:
            raise InstanceRunningError(instance_id, state.status)
        request: Message
        if self.dialect == "dapr":
            request = dapr.PurgeInstancesRequest(instanceId=instance_id)
            reply_type: Any = dapr.PurgeInstancesResponse
        else:
            request = ms.PurgeInstancesRequest(instanceId=instance_id, isOrchestration=True)
            reply_type = ms.PurgeInstancesResponse
        await self._call("PurgeInstances", request, reply_type, instance_id)

    async def rerun(self, instance_id: str, from_event_id: int) -> RemoteWorkflowHandle[Any]:
        """Run an ended instance again from the step ``from_event_id`` on (Dapr's
        RerunWorkflowFromEvent: the id is the sidecar's event id of that step, and the
        rerun may get a new instance id: the handle names it). The MS dialect has no
        such call: ``NotImplementedError``."""
        validate_instance_id(instance_id)
        if self.dialect != "dapr":
            raise NotImplementedError("the MS dialect has no RerunWorkflowFromEvent")
        reply = await self._call(
            "RerunWorkflowFromEvent",
            dapr.RerunWorkflowFromEventRequest(sourceInstanceID=instance_id, eventID=from_event_id),
            dapr.RerunWorkflowFromEventResponse,
            instance_id,
        )
        return RemoteWorkflowHandle(self, reply.newInstanceID or instance_id, None)

    async def rewind(self, instance_id: str, reason: str = "") -> RemoteWorkflowHandle[Any]:
        """Rewind a FAILED instance (RewindInstance: see :meth:`durable.Client.rewind`).
        The Dapr dialect has no such call: ``NotImplementedError``."""
        validate_instance_id(instance_id)
        if self.dialect == "dapr":
            raise NotImplementedError("the Dapr dialect has no RewindInstance")
        request = ms.RewindInstanceRequest(instanceId=instance_id, reason=cv.text(reason))
        await self._call("RewindInstance", request, ms.RewindInstanceResponse, instance_id)
        return RemoteWorkflowHandle(self, instance_id, None)

    # -- reading state ----------------------------------------------------------------

    async def _describe(self, instance_id: str) -> WorkflowState:
        request: Message
        if self.dialect == "dapr":
            request = dapr.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True)
            reply: Any = await self._call(
                "GetInstance", request, dapr.GetInstanceResponse, instance_id
            )
            found = reply.workflowState
        else:
            request = ms.GetInstanceRequest(instanceId=instance_id, getInputsAndOutputs=True)
            reply = await self._call("GetInstance", request, ms.GetInstanceResponse, instance_id)
            found = reply.orchestrationState
        if not reply.exists:
            raise InstanceNotFoundError(instance_id)
        return self._state(instance_id, found)

    def _types(self, name: str) -> tuple[Any, Any]:
        if self.registry is not None and (wf := self.registry.workflows.get(name)) is not None:
            return wf.input_type, wf.output_type
        return Any, Any

    def _decode(self, raw: Raw, type_: Any = Any) -> Any:
        return None if raw == NULL else self.codec.decode(raw, type_)

    def _state(
        self, instance_id: str, state: ms.OrchestrationState | dapr.WorkflowState
    ) -> WorkflowState:
        if isinstance(state, ms.OrchestrationState):
            status = cv.status_from_proto(state.orchestrationStatus)
        else:
            status = cv.status_from_proto(state.workflowStatus)
        input_type, output_type = self._types(state.name)
        details = state.failureDetails
        failure = cv.failure_from_proto(details) if details.errorType else None
        if failure is None and status is WorkflowStatus.TERMINATED:
            # as durable's own log reports a termination (the wire has no reason)
            failure = FailureDetails("Terminated", "terminated")
        return WorkflowState(
            instance_id=state.instanceId or instance_id,
            name=state.name,
            status=status,
            input=self._decode(cv.payload_in(state, "input"), input_type),
            output=self._decode(
                cv.payload_in(state, "output"),
                output_type if status is WorkflowStatus.COMPLETED else Any,
            ),
            failure=failure,
            custom_status=self._decode(cv.payload_in(state, "customStatus")),
            created_at=self._time(state, "createdTimestamp"),
            updated_at=self._time(state, "lastUpdatedTimestamp"),
            version=state.version.value,
        )

    @staticmethod
    def _time(state: ms.OrchestrationState | dapr.WorkflowState, field: str) -> datetime | None:
        """A Timestamp field of ``state``; None when absent."""
        return cv.time_from_proto(getattr(state, field)) if state.HasField(field) else None

    async def _history(self, instance_id: str) -> builtins.list[HistoryEvent]:
        if self.dialect == "dapr":
            reply = await self._call(
                "GetInstanceHistory",
                dapr.GetInstanceHistoryRequest(instanceId=instance_id),
                dapr.GetInstanceHistoryResponse,
                instance_id,
            )
            return cv.events_from_proto(reply.events)
        events: builtins.list[ms.HistoryEvent] = []
        try:
            async with self._channel.request(
                "/TaskHubSidecarService/StreamInstanceHistory",
                grpclib.const.Cardinality.UNARY_STREAM,
                ms.StreamInstanceHistoryRequest,
                ms.HistoryChunk,
                timeout=_CALL_TIMEOUT,
                metadata=self._metadata,
            ) as stream:
                await stream.send_message(
                    ms.StreamInstanceHistoryRequest(instanceId=instance_id), end=True
                )
                while (chunk := await stream.recv_message()) is not None:
                    events += chunk.events
        except grpclib.GRPCError as err:
            _raise_mapped(err, "StreamInstanceHistory", instance_id)
        return cv.events_from_proto(events)

    async def _wait(self, instance_id: str) -> WorkflowState:
        while True:
            state = await self._describe(instance_id)
            if state.status.is_terminal:
                return state
            await self.clock.sleep_until(self.clock.now() + timedelta(seconds=self.poll_interval))

    async def _send(self, instance_id: str, method: str, request: Message) -> None:
        await self._describe(instance_id)  # an unknown id raises, as with Client
        reply_type: Any = _REPLIES[self.dialect][method]
        await self._call(method, request, reply_type, instance_id)


_ENDED = (
    WorkflowStatus.COMPLETED,
    WorkflowStatus.FAILED,
    WorkflowStatus.TERMINATED,
    WorkflowStatus.CANCELED,
)
_REPLIES: dict[str, dict[str, type[Any]]] = {
    "dapr": {
        "RaiseEvent": dapr.RaiseEventResponse,
        "SuspendInstance": dapr.SuspendResponse,
        "ResumeInstance": dapr.ResumeResponse,
        "TerminateInstance": dapr.TerminateResponse,
    },
    "ms": {
        "RaiseEvent": ms.RaiseEventResponse,
        "SuspendInstance": ms.SuspendResponse,
        "ResumeInstance": ms.ResumeResponse,
        "TerminateInstance": ms.TerminateResponse,
    },
}


class RemoteWorkflowHandle(Generic[T]):
    """An instance behind a sidecar: await it for the result, or steer it (the
    surface of :class:`durable.WorkflowHandle`)."""

    __slots__ = ("_client", "_name", "instance_id")

    def __init__(self, client: RemoteClient, instance_id: str, name: str | None) -> None:
        self._client = client
        self.instance_id = instance_id
        self._name = name

    def __repr__(self) -> str:
        return f"RemoteWorkflowHandle({self.instance_id!r})"

    def __await__(self) -> Generator[Any, None, T]:
        return self.result().__await__()

    async def result(self, timeout: timedelta | float | None = None) -> T:  # noqa: ASYNC109 (a Clock timeout)
        """The workflow's output once it ends; ``WorkflowFailed`` if it did not
        complete; ``durable.TimeoutError`` if ``timeout`` (on the client's Clock)
        passes first."""
        client = self._client
        state = await within(
            client.clock, timeout, partial(client._wait, self.instance_id),
            f"workflow {self.instance_id!r}",
        )  # fmt: skip
        if state.status is not WorkflowStatus.COMPLETED:
            failure = state.failure or FailureDetails(
                state.status.value, "the workflow did not complete"
            )
            raise WorkflowFailed(self.instance_id, failure)
        result: T = state.output
        return result

    async def describe(self) -> WorkflowState:
        """The instance's status, payloads and timestamps."""
        return await self._client._describe(self.instance_id)

    async def raise_event(self, name: str, data: Any = None) -> None:
        """Send an external event; it waits in the workflow until asked for."""
        client = self._client
        payload = cv.payload_out(Raw(client.codec.encode(data)))
        request: Message
        if client.dialect == "dapr":
            request = dapr.RaiseEventRequest(instanceId=self.instance_id, name=name, input=payload)
        else:
            request = ms.RaiseEventRequest(instanceId=self.instance_id, name=name, input=payload)
        await client._send(self.instance_id, "RaiseEvent", request)

    async def suspend(self, reason: str = "") -> None:
        """Pause the workflow: events queue up until ``resume``."""
        client = self._client
        cls: Any = dapr.SuspendRequest if client.dialect == "dapr" else ms.SuspendRequest
        request = cls(instanceId=self.instance_id, reason=cv.text(reason))
        await client._send(self.instance_id, "SuspendInstance", request)

    async def resume(self, reason: str = "") -> None:
        """Resume a suspended workflow."""
        client = self._client
        cls: Any = dapr.ResumeRequest if client.dialect == "dapr" else ms.ResumeRequest
        request = cls(instanceId=self.instance_id, reason=cv.text(reason))
        await client._send(self.instance_id, "ResumeInstance", request)

    async def terminate(
        self, reason: str = "", output: Any = None, *, recursive: bool = True
    ) -> None:
        """End the workflow now as TERMINATED, with an optional output; ``recursive``
        ends its sub-workflows too (the protocol has no field for ``reason``: it is not
        sent)."""
        client = self._client
        payload = cv.payload_out(Raw(client.codec.encode(output)))
        cls: Any = dapr.TerminateRequest if client.dialect == "dapr" else ms.TerminateRequest
        request = cls(instanceId=self.instance_id, output=payload, recursive=recursive)
        await client._send(self.instance_id, "TerminateInstance", request)

    async def rewind(self, reason: str = "") -> None:
        """Rewind the FAILED workflow: what failed runs again, what succeeded is kept."""
        await self._client.rewind(self.instance_id, reason)

    async def history(self) -> list[HistoryEvent]:
        """The events of the current run as the sidecar holds them (task ids numbered
        from 0 in each run, as the protocol does)."""
        return await self._client._history(self.instance_id)
