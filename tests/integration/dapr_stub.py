"""A small Dapr-dialect sidecar for tests: grpclib on loopback, state in memory.

It plays the part ``durable sidecar`` will play for a RemoteWorker that advertises
stateful history: history kept in durable's model and sent in the Dapr dialect,
``cachedHistory`` deltas per stream (as the reference describes the Go server:
``warm[instance]`` is the length last sent, reset per stream), ``GetInstanceHistory``,
completions matched by token, actions recorded as durable's engine records them,
timers that fire at once, sub-workflows, and the client RPCs ``RemoteClient`` uses.
Every dispatch is logged in ``sent`` so tests can count what went over the wire.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import grpclib
import msgspec
from google.protobuf.empty_pb2 import Empty
from google.protobuf.wrappers_pb2 import StringValue
from grpclib.const import Cardinality, Handler
from grpclib.events import RecvRequest, listen
from grpclib.server import Server
from msgspec import Raw

from durable._core._actions import (
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    ScheduleActivity,
    StartChildWorkflow,
    StartTimer,
)
from durable._core._events import (
    NULL,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowErrored,
    ChildWorkflowScheduled,
    EventRaised,
    HistoryEvent,
    ParentRef,
    PatchApplied,
    TimerCreated,
    TimerFired,
    TurnStarted,
    WorkflowCompleted,
    WorkflowErrored,
    WorkflowResumed,
    WorkflowStarted,
    WorkflowSuspended,
    WorkflowTerminated,
)
from durable._core._failure import FailureDetails
from durable._core._state import WorkflowStatus
from durable.grpc import _convert as cv
from durable.grpc._proto import dapr

AT = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Instance:
    instance_id: str
    name: str
    input: Raw
    history: list[HistoryEvent] = field(default_factory=list)
    inbox: list[HistoryEvent] = field(default_factory=list)
    status: WorkflowStatus = WorkflowStatus.PENDING
    output: Raw = field(default_factory=lambda: NULL)
    failure: FailureDetails | None = None
    custom_status: Raw = field(default_factory=lambda: NULL)
    parent: ParentRef | None = None
    in_flight: bool = False


@dataclass
class Sent:
    """One workflow dispatch: the instance, pastEvents sent, and cachedHistory."""

    instance_id: str
    past: int
    new: int
    cached: int | None


def _unary(fn: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[None]]:
    async def handle(stream: Any) -> None:
        request = await stream.recv_message()
        await stream.send_message(await fn(request))

    return handle


def _streaming(fn: Callable[[Any], AsyncIterator[Any]]) -> Callable[[Any], Awaitable[None]]:
    async def handle(stream: Any) -> None:
        request = await stream.recv_message()
        async for reply in fn(request):
            await stream.send_message(reply)

    return handle


def wrapped(value: str | None) -> StringValue | None:
    """A StringValue holding ``value`` as given (empty included); None leaves it absent."""
    return None if value is None else StringValue(value=value)


def handler_table(table: dict[str, tuple[Any, Cardinality, Any, Any]]) -> dict[str, Handler]:
    """grpclib's handler table for ``{method: (function, cardinality, request type, reply
    type)}``: each function takes the request and returns the reply (or yields them)."""
    return {
        f"/TaskHubSidecarService/{name}": Handler(
            _streaming(fn) if kind is Cardinality.UNARY_STREAM else _unary(fn),
            kind,
            request,
            reply,
        )
        for name, (fn, kind, request, reply) in table.items()
    }


class DaprStub:
    def __mapping__(self) -> dict[str, Handler]:
        """grpclib's handler table: each RPC the stub answers, at its package-less path."""
        unary = Cardinality.UNARY_UNARY
        table = {
            "Hello": (self.hello, unary, Empty, Empty),
            "GetWorkItems": (
                self.get_work_items, Cardinality.UNARY_STREAM, dapr.GetWorkItemsRequest,
                dapr.WorkItem,
            ),
            "GetInstanceHistory": (
                self.get_instance_history, unary, dapr.GetInstanceHistoryRequest,
                dapr.GetInstanceHistoryResponse,
            ),
            "CompleteOrchestratorTask": (
                self.complete_orchestrator_task, unary, dapr.WorkflowResponse,
                dapr.CompleteTaskResponse,
            ),
            "CompleteActivityTask": (
                self.complete_activity_task, unary, dapr.ActivityResponse,
                dapr.CompleteTaskResponse,
            ),
            "StartInstance": (
                self.start_instance, unary, dapr.CreateInstanceRequest,
                dapr.CreateInstanceResponse,
            ),
            "GetInstance": (
                self.get_instance, unary, dapr.GetInstanceRequest, dapr.GetInstanceResponse,
            ),
            "RaiseEvent": (
                self.raise_event, unary, dapr.RaiseEventRequest, dapr.RaiseEventResponse,
            ),
            "TerminateInstance": (
                self.terminate_instance, unary, dapr.TerminateRequest, dapr.TerminateResponse,
            ),
            "SuspendInstance": (
                self.suspend_instance, unary, dapr.SuspendRequest, dapr.SuspendResponse,
            ),
            "ResumeInstance": (
                self.resume_instance, unary, dapr.ResumeRequest, dapr.ResumeResponse,
            ),
            "PurgeInstances": (
                self.purge_instances, unary, dapr.PurgeInstancesRequest,
                dapr.PurgeInstancesResponse,
            ),
            "ListInstanceIDs": (
                self.list_instance_i_ds, unary, dapr.ListInstanceIDsRequest,
                dapr.ListInstanceIDsResponse,
            ),
        }  # fmt: skip
        return handler_table(table)

    def __init__(self, api_token: str | None = None) -> None:
        self.api_token = api_token
        self.instances: dict[str, Instance] = {}
        self.sent: list[Sent] = []
        self.history_calls: list[str] = []
        self.fail_history = False  # fail the next GetInstanceHistory
        self.patch_lists: list[list[str]] = []  # WorkflowResponse.version.patches, per turn
        self.requests: list[dapr.GetWorkItemsRequest] = []
        self.streams = 0
        self.warm: dict[str, int] = {}
        self.stateful = False
        self._tokens = itertools.count(1)
        self._turns: dict[str, tuple[str, list[HistoryEvent]]] = {}
        self._out: anyio.abc.ObjectSendStream[dapr.WorkItem] | None = None
        self._runs = itertools.count(1)

    # -- plumbing ---------------------------------------------------------------------

    def attach(self, server: Server) -> None:
        async def check(event: RecvRequest) -> None:
            if self.api_token is None:
                return
            if dict(event.metadata).get("dapr-api-token") != self.api_token:
                raise grpclib.GRPCError(grpclib.Status.UNAUTHENTICATED, "bad api token")

        listen(server, RecvRequest, check)

    def drop_stream(self) -> None:
        """End the current GetWorkItems stream (the worker should reconnect)."""
        if self._out is not None:
            self._out.close()
            self._out = None

    def wire(self, inst: Instance, events: list[HistoryEvent]) -> list[dapr.HistoryEvent]:
        return cv.events_to_dapr(events, instance_id=inst.instance_id)

    def _pump(self) -> None:
        if self._out is None:
            return
        for inst in self.instances.values():
            if inst.in_flight or not inst.inbox or inst.status.is_terminal:
                continue
            new = [TurnStarted(timestamp=AT), *inst.inbox]
            inst.inbox = []
            inst.in_flight = True
            past = self.wire(inst, inst.history)
            full = len(past)
            request = dapr.WorkflowRequest(
                instanceId=inst.instance_id, newEvents=self.wire(inst, new)
            )
            warm = self.warm.get(inst.instance_id, 0)
            if self.stateful and 0 < warm <= full:
                past = past[warm:]
                request.cachedHistory.eventCount = warm
            request.pastEvents.extend(past)
            if self.stateful:
                self.warm[inst.instance_id] = full
            self.sent.append(Sent(inst.instance_id, len(past), len(new), warm or None))
            token = f"t{next(self._tokens)}"
            self._turns[token] = (inst.instance_id, new)
            self._out.send_nowait(dapr.WorkItem(workflowRequest=request, completionToken=token))

    def _dispatch_activity(self, inst: Instance, event: ActivityScheduled) -> None:
        assert self._out is not None
        request = cv.activity_request_to_dapr(event, instance_id=inst.instance_id)
        self._out.send_nowait(
            dapr.WorkItem(activityRequest=request, completionToken=f"a{next(self._tokens)}")
        )

    # -- worker RPCs ------------------------------------------------------------------

    async def hello(self, empty: Empty) -> Empty:
        return Empty()

    async def get_work_items(
        self, get_work_items_request: dapr.GetWorkItemsRequest
    ) -> AsyncIterator[dapr.WorkItem]:
        self.requests.append(get_work_items_request)
        self.streams += 1
        self.stateful = dapr.WORKER_CAPABILITY_STATEFUL_HISTORY in (
            get_work_items_request.capabilities
        )
        self.warm = {}  # per stream
        for inst in self.instances.values():  # what was in flight is re-dispatched
            if inst.in_flight:
                inst.in_flight = False
                for token, (iid, new) in list(self._turns.items()):
                    if iid == inst.instance_id:
                        inst.inbox = [e for e in new if not isinstance(e, TurnStarted)] + (
                            inst.inbox
                        )
                        del self._turns[token]
        send, receive = anyio.create_memory_object_stream[dapr.WorkItem](1000)
        self._out = send
        try:
            yield dapr.WorkItem(healthPing={})
            self._pump()
            async for item in receive:
                yield item
        finally:
            send.close()
            receive.close()
            if self._out is send:
                self._out = None

    async def get_instance_history(
        self, get_instance_history_request: dapr.GetInstanceHistoryRequest
    ) -> dapr.GetInstanceHistoryResponse:
        iid = get_instance_history_request.instanceId
        self.history_calls.append(iid)
        if self.fail_history:
            self.fail_history = False
            raise grpclib.GRPCError(grpclib.Status.UNAVAILABLE, "history store is down")
        inst = self._get(iid)
        return dapr.GetInstanceHistoryResponse(events=self.wire(inst, inst.history))

    async def complete_orchestrator_task(
        self, workflow_response: dapr.WorkflowResponse
    ) -> dapr.CompleteTaskResponse:
        turn = self._turns.pop(workflow_response.completionToken, None)
        if turn is None:
            return dapr.CompleteTaskResponse()  # stale: dropped
        iid, new = turn
        inst = self.instances[iid]
        inst.in_flight = False
        actions = [cv.action_from_proto(a) for a in workflow_response.actions]
        recorded: list[HistoryEvent] = []
        terminated = next((e for e in new if isinstance(e, WorkflowTerminated)), None)
        for action in actions:
            match action:
                case ScheduleActivity():
                    event = ActivityScheduled(
                        task_id=action.task_id,
                        name=action.name,
                        input=action.input,
                        step=action.task_id,
                    )
                    recorded.append(event)
                    self._dispatch_activity(inst, event)
                case StartTimer():
                    recorded.append(TimerCreated(task_id=action.task_id, fire_at=action.fire_at))
                    inst.inbox.append(TimerFired(task_id=action.task_id, fire_at=action.fire_at))
                case StartChildWorkflow():
                    recorded.append(
                        ChildWorkflowScheduled(
                            task_id=action.task_id,
                            name=action.name,
                            instance_id=action.instance_id,
                            input=action.input,
                        )
                    )
                    self._create(
                        action.instance_id,
                        action.name,
                        action.input,
                        ParentRef(iid, action.task_id),
                    )
                case CompleteWorkflow():
                    recorded.append(WorkflowCompleted(result=action.result))
                    inst.status, inst.output = WorkflowStatus.COMPLETED, action.result
                case FailWorkflow():
                    recorded.append(WorkflowErrored(failure=action.failure))
                    inst.status, inst.failure = WorkflowStatus.FAILED, action.failure
                case ContinueAsNew():
                    inst.history, inst.input = [], action.input
                    inst.inbox = [self._started(inst), *action.carryover, *inst.inbox]
                    inst.custom_status = cv.payload_in(workflow_response, "customStatus")
                    self._pump()
                    return dapr.CompleteTaskResponse()
        taken = {e.patch_id for e in inst.history if isinstance(e, PatchApplied)}
        patches = cv.patches_from_proto(workflow_response, recorded=taken)
        recorded += [PatchApplied(patch_id=p.patch_id) for p in patches]
        self.patch_lists.append(list(workflow_response.version.patches))
        inst.history += new + recorded
        inst.history = [msgspec.structs.replace(e, event_id=i) for i, e in enumerate(inst.history)]
        inst.custom_status = cv.payload_in(workflow_response, "customStatus")
        if terminated is not None and not inst.status.is_terminal:
            inst.status, inst.output = WorkflowStatus.TERMINATED, terminated.output
        if not inst.status.is_terminal:
            pauses = [e for e in inst.history if isinstance(e, WorkflowSuspended | WorkflowResumed)]
            suspended = bool(pauses) and isinstance(pauses[-1], WorkflowSuspended)
            inst.status = WorkflowStatus.SUSPENDED if suspended else WorkflowStatus.RUNNING
        elif inst.parent is not None:
            parent = self.instances[inst.parent.instance_id]
            if inst.status is WorkflowStatus.COMPLETED:
                parent.inbox.append(
                    ChildWorkflowCompleted(task_id=inst.parent.task_id, result=inst.output)
                )
            else:
                failure = inst.failure or FailureDetails("TERMINATED", "terminated")
                parent.inbox.append(
                    ChildWorkflowErrored(task_id=inst.parent.task_id, failure=failure)
                )
        self._pump()
        return dapr.CompleteTaskResponse()

    async def complete_activity_task(
        self, activity_response: dapr.ActivityResponse
    ) -> dapr.CompleteTaskResponse:
        inst = self.instances.get(activity_response.instanceId)
        if inst is not None and not inst.status.is_terminal:
            inst.inbox.append(cv.activity_result_from_proto(activity_response))
            self._pump()
        return dapr.CompleteTaskResponse()

    # -- client RPCs ------------------------------------------------------------------

    def _get(self, instance_id: str) -> Instance:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise grpclib.GRPCError(grpclib.Status.NOT_FOUND, f"no instance {instance_id!r}")
        return inst

    def _started(self, inst: Instance) -> WorkflowStarted:
        return WorkflowStarted(
            timestamp=AT,
            name=inst.name,
            input=inst.input,
            run_id=f"run{next(self._runs)}",
            parent=inst.parent,
        )

    def _create(self, iid: str, name: str, input: Raw, parent: ParentRef | None = None) -> None:
        inst = Instance(iid, name, input, parent=parent)
        inst.inbox.append(self._started(inst))
        self.instances[iid] = inst

    async def start_instance(
        self, create_instance_request: dapr.CreateInstanceRequest
    ) -> dapr.CreateInstanceResponse:
        req = create_instance_request
        existing = self.instances.get(req.instanceId)
        if existing is not None and (
            req.enforceUniqueInstanceId or not existing.status.is_terminal
        ):
            raise grpclib.GRPCError(grpclib.Status.ALREADY_EXISTS, "taken")
        self._create(req.instanceId, req.name, cv.payload_in(req, "input"))
        self._pump()
        return dapr.CreateInstanceResponse(instanceId=req.instanceId)

    async def get_instance(
        self, get_instance_request: dapr.GetInstanceRequest
    ) -> dapr.GetInstanceResponse:
        inst = self.instances.get(get_instance_request.instanceId)
        if inst is None:
            return dapr.GetInstanceResponse(exists=False)
        state = dapr.WorkflowState(
            instanceId=inst.instance_id,
            name=inst.name,
            workflowStatus=cv.status_to_dapr(inst.status),
            createdTimestamp=AT,
            lastUpdatedTimestamp=AT,
            input=cv.payload_out(inst.input),
            output=cv.payload_out(inst.output),
            customStatus=cv.payload_out(inst.custom_status),
        )
        if inst.failure is not None:
            state.failureDetails.CopyFrom(cv.failure_to_dapr(inst.failure))
        return dapr.GetInstanceResponse(exists=True, workflowState=state)

    def _deliver(self, instance_id: str, event: HistoryEvent) -> None:
        inst = self._get(instance_id)
        if not inst.status.is_terminal:
            inst.inbox.append(event)
            self._pump()

    async def raise_event(
        self, raise_event_request: dapr.RaiseEventRequest
    ) -> dapr.RaiseEventResponse:
        req = raise_event_request
        self._deliver(req.instanceId, EventRaised(name=req.name, input=cv.payload_in(req, "input")))
        return dapr.RaiseEventResponse()

    async def terminate_instance(
        self, terminate_request: dapr.TerminateRequest
    ) -> dapr.TerminateResponse:
        req = terminate_request
        output = cv.payload_in(req, "output")
        self._deliver(req.instanceId, WorkflowTerminated(output=output))
        return dapr.TerminateResponse()

    async def suspend_instance(self, suspend_request: dapr.SuspendRequest) -> dapr.SuspendResponse:
        self._deliver(
            suspend_request.instanceId, WorkflowSuspended(reason=suspend_request.reason.value)
        )
        return dapr.SuspendResponse()

    async def resume_instance(self, resume_request: dapr.ResumeRequest) -> dapr.ResumeResponse:
        self._deliver(
            resume_request.instanceId, WorkflowResumed(reason=resume_request.reason.value)
        )
        return dapr.ResumeResponse()

    async def purge_instances(
        self, purge_instances_request: dapr.PurgeInstancesRequest
    ) -> dapr.PurgeInstancesResponse:
        inst = self._get(purge_instances_request.instanceId)
        if not inst.status.is_terminal:
            raise grpclib.GRPCError(grpclib.Status.FAILED_PRECONDITION, "still running")
        del self.instances[inst.instance_id]
        return dapr.PurgeInstancesResponse(deletedInstanceCount=1)

    async def list_instance_i_ds(
        self, list_instance_i_ds_request: dapr.ListInstanceIDsRequest
    ) -> dapr.ListInstanceIDsResponse:
        ids = sorted(self.instances)
        start = int(list_instance_i_ds_request.continuationToken or 0)
        size = list_instance_i_ds_request.pageSize or 100
        page = ids[start : start + size]
        more = start + size < len(ids)
        return dapr.ListInstanceIDsResponse(
            instanceIds=page, continuationToken=str(start + size) if more else None
        )


async def serve(stub: DaprStub, port: int = 0) -> tuple[Server, int]:
    """Start ``stub`` on loopback (on a free port unless ``port`` is given)."""
    server = Server([stub])
    stub.attach(server)
    await server.start("127.0.0.1", port)
    port: int = server._server.sockets[0].getsockname()[1]  # no public accessor
    return server, port
