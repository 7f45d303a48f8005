"""The generated messages talk: a grpclib server with a handler table over them, and
grpclib client calls, over a real socket on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpclib
import pytest
from dapr_stub import handler_table
from google.protobuf.empty_pb2 import Empty
from grpclib.client import Channel
from grpclib.const import Cardinality, Handler
from grpclib.events import RecvRequest, listen
from grpclib.server import Server
from msgspec import Raw
from msgspec.structs import replace

from durable._core._actions import (
    CompleteWorkflow,
    ScheduleActivity,
    StartChildWorkflow,
    StartTimer,
)
from durable._core._events import (
    ActivityCompleted,
    ActivityScheduled,
    ChildWorkflowCompleted,
    ChildWorkflowScheduled,
    EventRaised,
    HistoryEvent,
    TimerCreated,
    TimerFired,
    TurnStarted,
    WorkflowStarted,
)
from durable.grpc import _convert as cv
from durable.grpc._proto import dapr, ms
from durable.grpc._wire import unary

AT = datetime(2024, 5, 1, 12, tzinfo=UTC)
HISTORY: list[HistoryEvent] = [
    WorkflowStarted(event_id=0, timestamp=AT, name="checkout", input=Raw(b'{"sku":"x"}')),
    TurnStarted(event_id=1, timestamp=AT),
    ActivityScheduled(event_id=2, timestamp=AT, task_id=0, name="quote", step=0),
]


class Sidecar:
    """Just enough of a sidecar (MS dialect) to answer three calls."""

    def __init__(self) -> None:
        self.started: list[ms.CreateInstanceRequest] = []

    def __mapping__(self) -> dict[str, Handler]:
        unary = Cardinality.UNARY_UNARY
        return handler_table({
            "Hello": (self.hello, unary, Empty, Empty),
            "StartInstance": (
                self.start_instance, unary, ms.CreateInstanceRequest, ms.CreateInstanceResponse
            ),
            "GetWorkItems": (
                self.get_work_items, Cardinality.UNARY_STREAM, ms.GetWorkItemsRequest, ms.WorkItem
            ),
        })  # fmt: skip

    async def hello(self, empty: Empty) -> Empty:
        return Empty()

    async def start_instance(
        self, create_instance_request: ms.CreateInstanceRequest
    ) -> ms.CreateInstanceResponse:
        self.started.append(create_instance_request)
        return ms.CreateInstanceResponse(instanceId=create_instance_request.instanceId or "new")

    async def get_work_items(
        self, get_work_items_request: ms.GetWorkItemsRequest
    ) -> AsyncIterator[ms.WorkItem]:
        request = ms.OrchestratorRequest(
            instanceId="order-42", newEvents=cv.events_to_ms(HISTORY, instance_id="order-42")
        )
        yield ms.WorkItem(healthPing=ms.HealthPing())
        yield ms.WorkItem(orchestratorRequest=request, completionToken="t-1")


async def call(channel: Channel, method: str, request: Any, reply: Any) -> Any:
    """One unary call to ``/TaskHubSidecarService/{method}``."""
    return await unary(channel, method, request, reply, metadata=None, seconds=5)


@pytest.fixture
async def sidecar() -> AsyncIterator[tuple[Sidecar, list[str], int]]:
    service = Sidecar()
    server = Server([service])
    paths: list[str] = []

    async def record(event: RecvRequest) -> None:
        paths.append(event.method_name)

    listen(server, RecvRequest, record)
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]  # the bound port: no public accessor
    try:
        yield service, paths, port
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.anyio
async def test_hello_and_start_instance_over_loopback(
    sidecar: tuple[Sidecar, list[str], int],
) -> None:
    service, paths, port = sidecar
    channel = Channel("127.0.0.1", port)
    try:
        assert await call(channel, "Hello", Empty(), Empty) == Empty()
        created = await call(
            channel,
            "StartInstance",
            ms.CreateInstanceRequest(
                instanceId="order-42",
                name="checkout",
                input={"value": '{"sku":"x"}'},
                requestTime=AT,
            ),
            ms.CreateInstanceResponse,
        )
        assert created.instanceId == "order-42"
        # a Dapr client reaches the same paths; their shared fields read the same
        await call(channel, "Hello", Empty(), Empty)
        created = await call(
            channel,
            "StartInstance",
            dapr.CreateInstanceRequest(name="checkout"),
            dapr.CreateInstanceResponse,
        )
        assert created.instanceId == "new"
        # ...but not the Dapr spelling of a method the MS service spells differently.
        # (grpclib answers an unknown path with a trailers-only UNIMPLEMENTED that has no
        # content-type, which its own client reports as UNKNOWN.)
        with pytest.raises(grpclib.GRPCError) as err:
            await call(
                channel,
                "ListInstanceIDs",
                dapr.ListInstanceIDsRequest(),
                dapr.ListInstanceIDsResponse,
            )
        assert err.value.status in {grpclib.Status.UNIMPLEMENTED, grpclib.Status.UNKNOWN}
    finally:
        channel.close()
    assert paths == [
        "/TaskHubSidecarService/Hello",
        "/TaskHubSidecarService/StartInstance",
        "/TaskHubSidecarService/Hello",
        "/TaskHubSidecarService/StartInstance",
    ]  # RecvRequest fires only for paths the service has
    assert [(r.instanceId, r.name, r.input.value) for r in service.started] == [
        ("order-42", "checkout", '{"sku":"x"}'),
        ("", "checkout", ""),
    ]
    assert not service.started[1].HasField("input")
    assert service.started[0].requestTime.ToDatetime(tzinfo=UTC) == AT


@pytest.mark.anyio
async def test_work_items_stream_and_convert_back(
    sidecar: tuple[Sidecar, list[str], int],
) -> None:
    _, paths, port = sidecar
    channel = Channel("127.0.0.1", port)
    try:
        items = []
        async with channel.request(
            "/TaskHubSidecarService/GetWorkItems",
            Cardinality.UNARY_STREAM,
            ms.GetWorkItemsRequest,
            ms.WorkItem,
        ) as stream:
            await stream.send_message(
                ms.GetWorkItemsRequest(maxConcurrentOrchestrationWorkItems=8), end=True
            )
            while (item := await stream.recv_message()) is not None:
                items.append(item)
    finally:
        channel.close()
    assert paths == ["/TaskHubSidecarService/GetWorkItems"]
    assert [item.completionToken for item in items] == ["", "t-1"]
    request = items[1].orchestratorRequest
    assert request.newEvents[2].eventId == 0  # taskScheduled: eventId = action id
    assert cv.events_from_proto(request.newEvents) == HISTORY


def test_durabletask_worker_replays_our_history() -> None:
    """The real ``durabletask`` 1.12 orchestration executor (the ``bench`` extra) replays
    histories built by _convert, turn after turn, and its actions convert back: the
    event-id convention, payloads and timers as an MS worker needs them."""
    worker = pytest.importorskip("durabletask.worker")
    serialization = pytest.importorskip("durabletask.serialization")
    pb = pytest.importorskip("durabletask.internal.orchestrator_service_pb2")

    def checkout(ctx: Any, order: Any) -> Any:
        price = yield ctx.call_activity("quote", input=order)
        yield ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=5))
        shipped = yield ctx.call_sub_orchestrator("ship", input=price, instance_id="ship-1")
        approved = yield ctx.wait_for_external_event("approval")
        return [price, shipped, approved]

    registry = worker._Registry()
    registry.add_named_orchestrator("checkout", checkout)
    base = 5  # task ids of this run start at 5, as after a continue-as-new
    history: list[HistoryEvent] = [
        WorkflowStarted(event_id=0, timestamp=AT, name="checkout", input=Raw(b'"x"'),
                        first_task_id=base),
    ]  # fmt: skip

    def turn(now: datetime, inbox: list[HistoryEvent]) -> list[Any]:
        nonlocal history
        new = [TurnStarted(), *inbox]
        new = [replace(e, event_id=len(history) + i, timestamp=now) for i, e in enumerate(new)]
        past_wire, new_wire = (
            [
                pb.HistoryEvent.FromString(e.SerializeToString())
                for e in cv.events_to_ms(h, task_base=base)
            ]
            for h in (history, new)
        )
        executor = worker._OrchestrationExecutor(
            registry, logging.getLogger("durabletask"), serialization.JsonDataConverter()
        )
        result = executor.execute("order-42", past_wire, new_wire)
        actions = [
            cv.action_from_proto(
                ms.OrchestratorAction.FromString(a.SerializeToString()), task_base=base
            )
            for a in result.actions
        ]
        recorded: list[HistoryEvent] = []
        for action in actions:  # what durable's engine records for them
            match action:
                case ScheduleActivity():
                    recorded.append(
                        ActivityScheduled(
                            task_id=action.task_id, name=action.name, input=action.input
                        )
                    )
                case StartTimer():
                    recorded.append(TimerCreated(task_id=action.task_id, fire_at=action.fire_at))
                case StartChildWorkflow():
                    recorded.append(
                        ChildWorkflowScheduled(
                            task_id=action.task_id, name=action.name, instance_id=action.instance_id
                        )
                    )
        start = len(history) + len(new)
        recorded = [replace(e, event_id=start + i, timestamp=now) for i, e in enumerate(recorded)]
        history = history + new + recorded
        return actions

    (quote,) = turn(AT, [])
    assert isinstance(quote, ScheduleActivity)
    assert quote.task_id > base
    assert quote.name == "quote"
    (timer,) = turn(
        AT + timedelta(seconds=1), [ActivityCompleted(task_id=quote.task_id, result=Raw(b"42"))]
    )
    assert isinstance(timer, StartTimer)
    assert timer.fire_at == AT + timedelta(seconds=6)
    (ship,) = turn(
        AT + timedelta(seconds=6), [TimerFired(task_id=timer.task_id, fire_at=timer.fire_at)]
    )
    assert isinstance(ship, StartChildWorkflow)
    assert (ship.instance_id, ship.input) == ("ship-1", Raw(b"42"))
    assert (
        turn(
            AT + timedelta(seconds=7),
            [ChildWorkflowCompleted(task_id=ship.task_id, result=Raw(b'"ok"'))],
        )
        == []
    )
    (done,) = turn(AT + timedelta(seconds=8), [EventRaised(name="approval", input=Raw(b"true"))])
    assert done == CompleteWorkflow(Raw(b'[42, "ok", true]'))
