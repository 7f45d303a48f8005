"""The client RPCs of ``TaskHubSidecarService``, over a :class:`durable.Client`.

Each function takes a request's bytes and returns the reply's bytes. Where the two
dialects give a field number two meanings (``CreateInstanceRequest`` 10,
``PurgeInstancesRequest`` 4 and 5) the wire type says which one was sent; elsewhere
the dialects share the fields read here, and replies use fields both read.

The client passes payloads through untouched (its codec is
:class:`~durable.grpc._remote.RawCodec`): inputs, outputs and events stay the JSON
text the SDKs sent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import anyio

from durable._core._events import (
    EPOCH,
    ActivityScheduled,
    ChildWorkflowScheduled,
    TimerCreated,
    WorkflowStarted,
)
from durable._core._state import WorkflowStatus
from durable._errors import InstanceNotFoundError, InvalidArgumentError
from durable._listing import MAX_PAGE, names_after
from durable._log._records import INSTANCES

from . import _convert as cv
from ._convert import ProtocolError
from ._framing import parse
from ._lifecycle import restart, reuse_of, start_replacing
from ._proto import dapr, ms
from ._remote import wire_order

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from datetime import datetime

    from durable._client import Client, WorkflowHandle
    from durable._core._events import HistoryEvent
    from durable._core._state import WorkflowState

    from ._limits import Waiting

__all__ = [
    "get_instance",
    "get_instance_history",
    "list_instance_ids_dapr",
    "list_instance_ids_ms",
    "purge_instances",
    "query_instances",
    "raise_event",
    "rerun_from_event",
    "restart_instance",
    "resume_instance",
    "rewind_instance",
    "start_instance",
    "suspend_instance",
    "terminate_instance",
    "wait_for_completion",
    "wait_for_start",
]

_RECHECK = timedelta(seconds=5)
_DEFAULT_PAGE = 100


def _wire_types(data: bytes) -> dict[int, set[int]]:
    types: dict[int, set[int]] = {}
    for number, wire in cv.wire_fields(data):
        types.setdefault(number, set()).add(wire)
    return types


def _required(value: str, what: str) -> str:
    if not value:
        raise ProtocolError(f"{what} is required")
    return value


def _state_to_ms(state: WorkflowState, payloads: bool) -> ms.OrchestrationState:
    """A WorkflowState as OrchestrationState (fields 1-15, which both dialects share)."""
    out = ms.OrchestrationState(
        instanceId=state.instance_id,
        name=state.name,
        version=cv.text(state.version),
        orchestrationStatus=cv.status_to_ms(state.status),
    )
    if state.created_at is not None:
        out.createdTimestamp.CopyFrom(cv.time_to_proto(state.created_at))
    if state.updated_at is not None:
        out.lastUpdatedTimestamp.CopyFrom(cv.time_to_proto(state.updated_at))
    for field, payload in (("input", state.input), ("output", state.output)):
        if payloads and payload is not None and (value := cv.payload_out(payload)) is not None:
            getattr(out, field).CopyFrom(value)
    if state.custom_status is not None and (status := cv.payload_out(state.custom_status)):
        out.customStatus.CopyFrom(status)
    if state.failure is not None and state.status is WorkflowStatus.FAILED:
        out.failureDetails.CopyFrom(cv.failure_to_ms(state.failure))
    return out


async def _describe(client: Client, instance_id: str) -> WorkflowState | None:
    try:
        return await client.get_handle(instance_id).describe()
    except InstanceNotFoundError:
        return None


def _instance_reply(state: WorkflowState | None, payloads: bool) -> bytes:
    if state is None:
        return ms.GetInstanceResponse(exists=False).SerializeToString()
    return ms.GetInstanceResponse(
        exists=True, orchestrationState=_state_to_ms(state, payloads)
    ).SerializeToString()


# -- starting and reading ---------------------------------------------------------------


async def start_instance(client: Client, data: bytes) -> bytes:
    """StartInstance: field 10 is an MS Timestamp or a Dapr bool (enforceUniqueInstanceId).
    An id that is taken is replaced as :mod:`._lifecycle` says."""
    request: ms.CreateInstanceRequest | dapr.CreateInstanceRequest
    if cv.VARINT in _wire_types(data).get(10, set()):
        request = parse(dapr.CreateInstanceRequest, data)
    else:
        request = parse(ms.CreateInstanceRequest, data)
    name = _required(request.name, "CreateInstanceRequest.name (the workflow to start)")
    handle: WorkflowHandle[object] = await start_replacing(
        client,
        name,
        cv.payload_in(request, "input"),
        instance_id=request.instanceId or None,
        reuse=reuse_of(request),
        version=request.version.value or None,
        _trace_context=cv.trace_context_from_proto(request.parentTraceContext),
    )
    return ms.CreateInstanceResponse(instanceId=handle.instance_id).SerializeToString()


async def restart_instance(client: Client, data: bytes) -> bytes:
    """RestartInstance: the ended instance's workflow again, same id or a new one."""
    request = parse(ms.RestartInstanceRequest, data)
    instance_id = _required(request.instanceId, "instanceId")
    started = await restart(client, instance_id, request.restartWithNewInstanceId)
    return ms.RestartInstanceResponse(instanceId=started).SerializeToString()


async def get_instance(client: Client, data: bytes) -> bytes:
    """GetInstance: ``exists`` false for an unknown instance."""
    request = parse(ms.GetInstanceRequest, data)
    instance_id = _required(request.instanceId, "instanceId")
    return _instance_reply(await _describe(client, instance_id), request.getInputsAndOutputs)


async def wait_for_start(client: Client, data: bytes, waiting: Waiting) -> bytes:
    """WaitForInstanceStart: once the instance has left PENDING (no deadline needed).
    Woken by the engine when the instance's status changes; looked at again every
    five seconds of the clock all the same (another process of a fleet may run it)."""
    request = parse(ms.GetInstanceRequest, data)
    instance_id = _required(request.instanceId, "instanceId")
    async with waiting:
        while True:
            engine = client._engine
            changed = engine.status_changed(instance_id) if engine is not None else None
            state = await _describe(client, instance_id)
            if state is None or state.status is not WorkflowStatus.PENDING:
                return _instance_reply(state, request.getInputsAndOutputs)
            await _changed_or_later(client, changed)


async def _changed_or_later(client: Client, changed: anyio.Event | None) -> None:
    """Until ``changed`` is set, or five seconds of the client's clock have passed."""
    deadline = client.clock.now() + _RECHECK
    async with anyio.create_task_group() as tg:

        async def wake() -> None:
            if changed is not None:
                await changed.wait()
                tg.cancel_scope.cancel()

        tg.start_soon(wake)
        await client.clock.sleep_until(deadline)
        tg.cancel_scope.cancel()


async def wait_for_completion(client: Client, data: bytes, waiting: Waiting) -> bytes:
    """WaitForInstanceCompletion: once the instance has ended (no deadline needed)."""
    request = parse(ms.GetInstanceRequest, data)
    instance_id = _required(request.instanceId, "instanceId")
    async with waiting:
        if await _describe(client, instance_id) is None:
            return _instance_reply(None, False)
        try:
            await client.get_handle(instance_id).result()
        except Exception:
            pass  # a failed or terminated end is reported in the state
    return _instance_reply(await _describe(client, instance_id), request.getInputsAndOutputs)


# -- steering ---------------------------------------------------------------------------


async def raise_event(client: Client, data: bytes) -> bytes:
    request = parse(ms.RaiseEventRequest, data)
    instance_id = _required(request.instanceId, "instanceId")
    name = _required(request.name, "RaiseEventRequest.name")
    await client.get_handle(instance_id).raise_event(name, cv.payload_in(request, "input"))
    return ms.RaiseEventResponse().SerializeToString()


async def terminate_instance(client: Client, data: bytes) -> bytes:
    request = parse(ms.TerminateRequest, data)
    instance_id = _required(request.instanceId, "instanceId")
    handle = client.get_handle(instance_id)
    output = cv.payload_in(request, "output")
    await handle.terminate("terminated by a client", output, recursive=request.recursive)
    return ms.TerminateResponse().SerializeToString()


async def suspend_instance(client: Client, data: bytes) -> bytes:
    request = parse(ms.SuspendRequest, data)
    instance_id = _required(request.instanceId, "instanceId")
    await client.get_handle(instance_id).suspend(request.reason.value)
    return ms.SuspendResponse().SerializeToString()


async def resume_instance(client: Client, data: bytes) -> bytes:
    request = parse(ms.ResumeRequest, data)
    instance_id = _required(request.instanceId, "instanceId")
    await client.get_handle(instance_id).resume(request.reason.value)
    return ms.ResumeResponse().SerializeToString()


async def _purge_one(client: Client, instance_id: str, recursive: bool) -> int:
    try:
        return await client.purge(instance_id, recursive=recursive)
    except InstanceNotFoundError:
        return 0


async def purge_instances(client: Client, data: bytes) -> bytes:
    """PurgeInstances by id, MS id batch, or filter (created time range, statuses; only
    ended instances match), each with its sub-workflows if ``recursive``. Field 4 is
    an MS message or a Dapr bool, field 5 an MS bool or a Dapr message: wire types
    tell them apart."""
    types = _wire_types(data)
    four, five = types.get(4, set()), types.get(5, set())
    ms_sign = cv.LENGTH_DELIMITED in four or cv.VARINT in five
    dapr_sign = cv.VARINT in four or cv.LENGTH_DELIMITED in five
    if ms_sign and dapr_sign:
        raise ProtocolError("PurgeInstancesRequest mixes the MS and Dapr meanings of fields 4-5")
    request: ms.PurgeInstancesRequest | dapr.PurgeInstancesRequest
    if dapr_sign:
        request = parse(dapr.PurgeInstancesRequest, data)
    else:
        request = parse(ms.PurgeInstancesRequest, data)
    count = 0
    recursive = request.recursive
    kind = request.WhichOneof("request")
    if kind == "instanceId":
        count = await _purge_one(client, request.instanceId, recursive)
    elif kind == "instanceBatch" and isinstance(request, ms.PurgeInstancesRequest):
        for instance_id in request.instanceBatch.instanceIds:
            count += await _purge_one(client, instance_id, recursive)
    elif kind == "purgeInstanceFilter":
        flt = request.purgeInstanceFilter
        wanted = {cv.status_from_proto(s) for s in flt.runtimeStatus}
        since, until = (
            cv.time_from_proto(flt.createdTimeFrom),
            cv.time_from_proto(flt.createdTimeTo),
        )
        matches = [
            state.instance_id
            async for state in _matching(client, wanted, since, until)
            if state.status.is_terminal
        ]  # all first: a recursive purge deletes children that may match as well
        for instance_id in matches:
            count += await _purge_one(client, instance_id, recursive)
    else:
        raise ProtocolError("PurgeInstancesRequest names no instance (instanceId or filter)")
    return ms.PurgeInstancesResponse(
        deletedInstanceCount=count, isComplete={"value": True}
    ).SerializeToString()


async def _matching(
    client: Client, wanted: set[WorkflowStatus], since: datetime | None, until: datetime | None
) -> AsyncIterator[WorkflowState]:
    """Instances with a status in ``wanted`` (all if empty) created in [since, until]
    (an unset Timestamp, the epoch, means no bound)."""
    async for state in client.list(status=next(iter(wanted)) if len(wanted) == 1 else None):
        if _keep(state, wanted, since, until):
            yield state


def _keep(
    state: WorkflowState,
    wanted: set[WorkflowStatus],
    since: datetime | None,
    until: datetime | None,
) -> bool:
    if wanted and state.status not in wanted:
        return False
    created = state.created_at
    if created is not None and since is not None and since > EPOCH and created < since:
        return False
    return not (created is not None and until is not None and until > EPOCH and created > until)


async def rerun_from_event(client: Client, data: bytes) -> bytes:
    """RerunWorkflowFromEvent, from the step the worker numbered ``eventID`` (the id of
    its taskScheduled/timerCreated/...): into ``newInstanceID`` when it names another
    instance (the source stays as it is), else in place (durable's default; Dapr's is
    a new random id). ``overwriteInput`` gives that step ``input`` (null if unset)."""
    request = parse(dapr.RerunWorkflowFromEventRequest, data)
    instance_id = _required(request.sourceInstanceID, "sourceInstanceID")
    into = request.newInstanceID or None
    if into == instance_id:
        into = None
    if request.newChildWorkflowInstanceID:
        raise ProtocolError("newChildWorkflowInstanceID is not supported: the child keeps its id")
    overwrite = {"step_input": cv.payload_in(request, "input")} if request.overwriteInput else {}
    handle = client.get_handle(instance_id)
    history = await handle.history()
    started = history[0]
    base = started.first_task_id if isinstance(started, WorkflowStarted) else 0
    for event in history:
        scheduling = isinstance(event, ActivityScheduled | TimerCreated | ChildWorkflowScheduled)
        if scheduling and event.task_id - base == request.eventID:  # type: ignore[union-attr]
            rerun = await client.rerun(
                instance_id, event.event_id, new_instance_id=into, **overwrite
            )
            return dapr.RerunWorkflowFromEventResponse(
                newInstanceID=rerun.instance_id
            ).SerializeToString()
    raise ProtocolError(f"instance {instance_id!r} has no scheduled step {request.eventID}")


async def rewind_instance(client: Client, data: bytes) -> bytes:
    """RewindInstance (MS): the engine's rewind of a FAILED instance (FAILED_PRECONDITION
    for any other status, NOT_FOUND for an unknown id): its failed activities and
    sub-orchestrations run again, its successful ones keep their results."""
    request = parse(ms.RewindInstanceRequest, data)
    instance_id = _required(request.instanceId, "instanceId")
    await client.rewind(instance_id, request.reason.value)
    return ms.RewindInstanceResponse().SerializeToString()


# -- listing ----------------------------------------------------------------------------


async def query_instances(client: Client, data: bytes) -> bytes:
    """QueryInstances (MS): filter by status, creation time and id prefix; one page of
    the client's listing per call, its cursor the continuation token (a page may come
    back short, even empty, with a token: the caller goes on until there is none)."""
    query = parse(ms.QueryInstancesRequest, data).query
    wanted = {cv.status_from_proto(s) for s in query.runtimeStatus}
    prefix = query.instanceIdPrefix.value
    size = min(query.maxInstanceCount, MAX_PAGE) if query.maxInstanceCount > 0 else _DEFAULT_PAGE
    try:
        page = await client.list_page(
            status=next(iter(wanted)) if len(wanted) == 1 else None,
            page_size=size,
            cursor=query.continuationToken.value or None,
        )
    except InvalidArgumentError as err:
        raise ProtocolError(f"continuationToken: {err}") from None
    since, until = (
        cv.time_from_proto(query.createdTimeFrom),
        cv.time_from_proto(query.createdTimeTo),
    )
    states = [
        _state_to_ms(state, query.fetchInputsAndOutputs)
        for state in page.items
        if state.instance_id.startswith(prefix) and _keep(state, wanted, since, until)
    ]
    return ms.QueryInstancesResponse(
        orchestrationState=states, continuationToken=cv.text(page.next_cursor)
    ).SerializeToString()


async def _ids_after(client: Client, after: str, page: int) -> tuple[list[str], str | None]:
    """A page of instance ids after ``after`` (one LIST on S3, from there on)."""
    chosen = await names_after(client.store, INSTANCES, after, page + 1)
    if len(chosen) > page:
        return chosen[:page], chosen[page - 1]
    return chosen, None


async def list_instance_ids_ms(client: Client, data: bytes) -> bytes:
    """ListInstanceIds (MS): ids by status, paged by ``lastInstanceKey``."""
    request = parse(ms.ListInstanceIdsRequest, data)
    page = request.pageSize if request.pageSize > 0 else _DEFAULT_PAGE
    after = request.lastInstanceKey.value
    if not request.runtimeStatus:
        ids, token = await _ids_after(client, after, page)
        return ms.ListInstanceIdsResponse(
            instanceIds=ids, lastInstanceKey=cv.text(token)
        ).SerializeToString()
    wanted = {cv.status_from_proto(s) for s in request.runtimeStatus}
    ids = []
    token = None
    async for state in _matching(client, wanted, None, None):
        if state.instance_id <= after:
            continue
        if len(ids) == page:
            token = ids[-1]
            break
        ids.append(state.instance_id)
    return ms.ListInstanceIdsResponse(
        instanceIds=ids, lastInstanceKey=cv.text(token)
    ).SerializeToString()


async def list_instance_ids_dapr(client: Client, data: bytes) -> bytes:
    """ListInstanceIDs (Dapr): every id, paged by ``continuationToken``."""
    request = parse(dapr.ListInstanceIDsRequest, data)
    page = request.pageSize or _DEFAULT_PAGE
    ids, token = await _ids_after(client, request.continuationToken, page)
    return dapr.ListInstanceIDsResponse(
        instanceIds=ids, continuationToken=token
    ).SerializeToString()


# -- history ----------------------------------------------------------------------------


def history_to_dapr(instance_id: str, history: list[HistoryEvent]) -> list[dapr.HistoryEvent]:
    """A run's whole committed history as a Dapr worker replays it (work items send
    the same messages, so stateful-history counts agree)."""
    started = history[0] if history else None
    base = started.first_task_id if isinstance(started, WorkflowStarted) else 0
    return cv.events_to_dapr(wire_order(history), instance_id=instance_id, task_base=base)


async def get_instance_history(client: Client, data: bytes) -> bytes:
    """GetInstanceHistory: the complete committed history of the current run."""
    request = parse(dapr.GetInstanceHistoryRequest, data)
    instance_id = _required(request.instanceId, "instanceId")
    history = await client.get_handle(instance_id).history()
    events = history_to_dapr(instance_id, history)
    return dapr.GetInstanceHistoryResponse(events=events).SerializeToString()
