"""durable's worker stream (``DurableWorker.WorkStream``): work items and completions on
one call between durable's RemoteWorker and durable's sidecar, each completion acked
once applied (issue 14, speed: a unary call per completion cost ~0.7 ms of CPU).

Raw gRPC over real sockets, as an attacker would: a completion for work the stream
was not given is dropped, another stream cannot complete a stream's work; a stream cut
at each point of a completion loses nothing and applies nothing twice. And the
RemoteWorker: it uses the stream with durable's sidecar, and falls back to the standard
calls with a sidecar that answers UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from dapr_stub import DaprStub, serve
from grpclib import GRPCError, Status
from grpclib.client import Channel
from grpclib.const import Cardinality
from test_sidecar_protocol import MS_WORKER, completion, outcome, start
from test_sidecar_security_fuzz import CASES

import durable
from durable import ActivityContext, WorkflowContext
from durable._core._events import ActivityCompleted, ActivityScheduled, HistoryEvent
from durable.grpc import RemoteClient, RemoteWorker, Sidecar
from durable.grpc._proto import ext, ms
from durable.grpc._server import BytesCodec, SidecarService
from durable.grpc._worklink import WORK_STREAM

if TYPE_CHECKING:
    from grpclib.client import Stream

    from durable.grpc._dispatch import WorkerStream

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sidecar() -> AsyncIterator[Sidecar]:
    async with Sidecar("memory://", port=0) as running:
        yield running


@pytest.fixture
async def victim(sidecar: Sidecar) -> AsyncIterator[Channel]:
    """The connection of the worker the work was sent to."""
    ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
    yield ch
    ch.close()


@pytest.fixture
async def attacker(sidecar: Sidecar) -> AsyncIterator[Channel]:
    """Another connection."""
    ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
    yield ch
    ch.close()


# -- a hand-written worker on the work stream ------------------------------------------


class Link:
    """A raw work stream: items and acks as they come."""

    def __init__(self, stream: Stream[bytes, bytes]) -> None:
        self.stream = stream
        self.seq = 0
        self.handled = 0  # the sidecar's count of applied completions, as last told

    async def next(self) -> ext.SidecarMessage:
        with anyio.fail_after(10):
            while True:
                data = await self.stream.recv_message()
                assert data is not None, "the work stream ended"
                message = ext.SidecarMessage.FromString(data)
                assert message.handled >= self.handled, "the count of applied went back"
                self.handled = message.handled
                if message.WhichOneof("kind") == "workItem":
                    item = ms.WorkItem.FromString(message.workItem)
                    if item.WhichOneof("request") == "healthPing":
                        continue
                return message

    async def item(self) -> ms.WorkItem:
        message = await self.next()
        assert message.WhichOneof("kind") == "workItem", message
        return ms.WorkItem.FromString(message.workItem)

    async def send(self, kind: str, data: bytes) -> int:
        self.seq += 1
        await self.stream.send_message(
            ext.WorkerMessage(seq=self.seq, **{kind: data}).SerializeToString()
        )
        return self.seq

    async def ack(self) -> ext.Ack:
        message = await self.next()
        assert message.WhichOneof("kind") == "ack", message
        return message.ack

    async def complete(self, kind: str, data: bytes) -> ext.Ack:
        """Send a completion the sidecar will not apply: its Ack comes at once."""
        seq = await self.send(kind, data)
        ack = await self.ack()
        assert ack.seq == seq
        return ack

    async def applied(self, kind: str, data: bytes) -> ms.WorkItem:
        """Send a completion the sidecar applies: no Ack of its own, the next item
        (the work it led to) counts it as handled."""
        seq = await self.send(kind, data)
        item = await self.item()
        assert self.handled == seq
        return item


@asynccontextmanager
async def work_link(
    ch: Channel, request: ms.GetWorkItemsRequest = MS_WORKER
) -> AsyncIterator[Link]:
    """A worker's work stream; leaving the block drops it (a disconnect)."""
    async with ch.request(WORK_STREAM, Cardinality.STREAM_STREAM, bytes, bytes) as s:
        await s.send_message(
            ext.WorkerMessage(open=request.SerializeToString()).SerializeToString()
        )
        yield Link(s)
        await s.cancel()


def schedule(item: ms.WorkItem) -> bytes:
    """A turn's completion that schedules activity ``a`` (task 0)."""
    action = ms.OrchestratorAction(id=0, scheduleTask=ms.ScheduleTaskAction(name="a"))
    return ms.OrchestratorResponse(
        instanceId=item.orchestratorRequest.instanceId, actions=[action],
        completionToken=item.completionToken,
    ).SerializeToString()  # fmt: skip


def activity_done(item: ms.WorkItem, result: str, token: str | None = None) -> bytes:
    request = item.activityRequest
    response = ms.ActivityResponse(
        instanceId=request.orchestrationInstance.instanceId, taskId=request.taskId,
        completionToken=item.completionToken if token is None else token,
    )  # fmt: skip
    response.result.value = result
    return response.SerializeToString()


def holder(sidecar: Sidecar, instance_id: str) -> WorkerStream | None:
    """The stream that holds the instance's item now."""
    for stream in sidecar.dispatcher.streams:
        if any(item.work.instance_id == instance_id for item in stream.held.values()):
            return stream
    return None


async def history(sidecar: Sidecar, instance_id: str) -> list[HistoryEvent]:
    return await sidecar._load_history(instance_id)


async def test_a_workflow_runs_over_the_work_stream_with_acks(
    sidecar: Sidecar, victim: Channel
) -> None:
    """Issue 14 (speed): completions go on the stream the work came on, and each one
    applied is counted (``handled``) on the next message the sidecar sends, with no
    message of its own; no unary call is needed."""
    await start(victim, "w")
    async with work_link(victim) as link:
        turn = await link.item()
        assert link.handled == 0
        task = await link.applied("completeTurn", schedule(turn))
        assert task.activityRequest.name == "a"
        turn = await link.applied("completeActivity", activity_done(task, '"r"'))
        await link.send("completeTurn", completion(turn, '"ok"'))
        assert (await outcome(victim, "w")).output.value == '"ok"'


async def test_a_completion_for_work_the_stream_was_not_given_is_dropped(
    sidecar: Sidecar, victim: Channel, attacker: Channel
) -> None:
    """Issue 14: a work stream may complete only the items it holds, by the token of
    their send: another stream (on another connection, or on the same one) with the
    victim's token, without a token, or with a made-up one is acked DROPPED and the
    item stays the victim's; an unknown kind of message is REFUSED."""
    await start(victim, "v")
    async with work_link(victim) as link:
        turn = await link.item()
        victim_stream = holder(sidecar, "v")
        assert victim_stream is not None
        async with work_link(attacker) as spy, work_link(victim) as twin:
            for other in (spy, twin):
                for token in (turn.completionToken, "", "0" * 32):
                    forged = completion(turn, '"forged"', token=token)
                    ack = await other.complete("completeTurn", forged)
                    assert ack.outcome == ext.ACK_DROPPED
                    assert holder(sidecar, "v") is victim_stream
        task = await link.applied("completeTurn", schedule(turn))  # only the victim is on
        async with work_link(attacker) as spy, work_link(victim) as twin:
            for other in (spy, twin):
                for token in (task.completionToken, ""):
                    forged = activity_done(task, '"forged"', token=token)
                    ack = await other.complete("completeActivity", forged)
                    assert ack.outcome == ext.ACK_DROPPED
                    assert holder(sidecar, "v") is victim_stream
            refused = await spy.complete("open", MS_WORKER.SerializeToString())
            assert refused.outcome == ext.ACK_REFUSED
            assert refused.code == Status.INVALID_ARGUMENT.value
        turn = await link.applied("completeActivity", activity_done(task, '"real"'))
        results = [e.taskCompleted.result.value for e in turn.orchestratorRequest.newEvents
                   if e.WhichOneof("eventType") == "taskCompleted"]  # fmt: skip
        assert results == ['"real"']
        await link.send("completeTurn", completion(turn, '"ok"'))
        assert (await outcome(victim, "v")).output.value == '"ok"'


async def test_a_stream_must_open_with_open(sidecar: Sidecar, victim: Channel) -> None:
    """Issue 14: a work stream whose first message is a completion is refused
    (INVALID_ARGUMENT), and no worker stream is connected for it."""
    bad = ext.WorkerMessage(seq=1, completeTurn=b"").SerializeToString()
    with anyio.fail_after(10), pytest.raises(GRPCError) as caught:  # noqa: PT012
        async with victim.request(WORK_STREAM, Cardinality.STREAM_STREAM, bytes, bytes) as s:
            await s.send_message(bad, end=True)  # half-closed: the status comes unreset
            await s.recv_message()
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert sidecar.dispatcher.streams == []


async def _ends_with(ch: Channel, first: bytes, then: bytes | None) -> tuple[Status | None, int]:
    """Open a work stream with ``first``, send ``then`` as a completion of either kind:
    the status the stream ends with (None: still open) and the worst ack code."""
    worst = 0
    try:
        with anyio.move_on_after(5):
            async with ch.request(WORK_STREAM, Cardinality.STREAM_STREAM, bytes, bytes) as s:
                await s.send_message(first, end=then is None)
                if then is None:
                    await s.recv_message()
                    return None, worst
                await s.recv_initial_metadata()
                for seq, kind in enumerate(("completeTurn", "completeActivity"), 1):
                    message = ext.WorkerMessage(seq=seq, **{kind: then})
                    await s.send_message(message.SerializeToString())
                    while True:
                        reply = ext.SidecarMessage.FromString(await s.recv_message() or b"")
                        if reply.WhichOneof("kind") == "ack":
                            worst = max(worst, reply.ack.code)
                            break
                await s.send_message(b"\xff", end=True)  # junk: the stream must end
                await s.recv_message()
    except GRPCError as err:
        return (err.status if err.message else Status.UNKNOWN), worst
    return None, worst


async def test_junk_on_the_work_stream_gets_no_internal(
    sidecar: Sidecar, victim: Channel, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14 (and 19's fuzz): junk as a work stream's opening message, in its
    ``open``, and as a completion of either kind gets a clear status or a REFUSED ack
    saying why, never INTERNAL or a traceback; the sidecar keeps serving."""
    caplog.set_level(logging.INFO)
    bad: list[tuple[bytes, bytes | None, Status | None, int]] = []
    opening = ext.WorkerMessage(open=MS_WORKER.SerializeToString()).SerializeToString()
    for data in CASES:
        for first, then in (
            (data, None),
            (ext.WorkerMessage(open=data).SerializeToString(), None),
            (opening, data),
        ):
            status, worst = await _ends_with(victim, first, then)
            if status in (Status.INTERNAL, Status.UNKNOWN) or worst in (2, 13):
                bad.append((first, then, status, worst))
    assert bad == []
    tracebacks = [r for r in caplog.records if r.exc_info and r.name.startswith("durable")]
    assert tracebacks == []
    await start(victim, "after")
    async with work_link(victim) as link:
        await link.send("completeTurn", completion(await link.item(), '"ok"'))
        assert (await outcome(victim, "after")).output.value == '"ok"'


# -- a stream cut at each point of a completion ----------------------------------------


class Pause:
    """Holds the sidecar's handling of the next work-stream completion before or after
    it applies it (wrapping ``SidecarService._ack``), until released; later ones pass."""

    def __init__(self, service: SidecarService, *, after: bool) -> None:
        self.reached = anyio.Event()
        self.release = anyio.Event()
        self.outcome: int | None = None  # the held completion's, if it got that far
        original: Callable[..., Awaitable[ext.Ack]] = service._ack

        async def paused(*args: Any) -> ext.Ack:
            if self.reached.is_set():
                return await original(*args)
            if not after:
                self.reached.set()
                await self.release.wait()
            ack = await original(*args)
            self.outcome = ack.outcome
            if after:
                self.reached.set()
                await self.release.wait()
            return ack

        service._ack = paused  # type: ignore[method-assign]


def completed_tasks(events: list[HistoryEvent]) -> list[int]:
    return [e.task_id for e in events if isinstance(e, ActivityCompleted)]


@pytest.mark.parametrize("point", ["before-send", "before-apply", "before-ack", "after-ack"])
async def test_a_stream_cut_mid_completion_loses_nothing_and_applies_nothing_twice(
    sidecar: Sidecar, victim: Channel, point: str
) -> None:
    """Issue 14: the stream breaks at each point of an activity's completion: before
    the worker sent it, sent but not yet applied, applied but not yet acked, acked.
    Unapplied, the item goes out again (a new send, a new token) and the old answer,
    sent again on the new stream, is dropped; applied, it is not sent again and a
    repeat is dropped. Either way the instance records the activity once."""
    await start(victim, "cut")
    pause = None
    async with work_link(victim) as first:
        task = await first.applied("completeTurn", schedule(await first.item()))
        answer = activity_done(task, '"first"')
        if point != "before-send":
            if point in ("before-apply", "before-ack"):
                pause = Pause(sidecar.service, after=point == "before-ack")
                await first.send("completeActivity", answer)
                with anyio.fail_after(10):
                    await pause.reached.wait()
            else:  # acknowledged: counted on the item it led to
                await first.applied("completeActivity", answer)
    with anyio.fail_after(10):  # the sidecar saw the stream go
        while sidecar.dispatcher.streams:
            await anyio.lowlevel.checkpoint()
    if pause is not None:  # a paused completion may go on now (on a stream that is gone)
        pause.release.set()
    applied = point in ("before-ack", "after-ack")
    async with work_link(victim) as second:
        if applied:
            turn = await second.item()
            assert turn.WhichOneof("request") == "orchestratorRequest"
        else:
            again = await second.item()
            assert again.activityRequest.taskId == task.activityRequest.taskId
            assert again.completionToken != task.completionToken
        stale = await second.complete("completeActivity", answer)
        assert stale.outcome == ext.ACK_DROPPED
        if not applied:
            turn = await second.applied("completeActivity", activity_done(again, '"second"'))
        await second.send("completeTurn", completion(turn, '"ok"'))
    assert (await outcome(victim, "cut")).output.value == '"ok"'
    events = await history(sidecar, "cut")
    assert completed_tasks(events) == [0]
    assert sum(isinstance(e, ActivityScheduled) for e in events) == 1
    result = next(e for e in events if isinstance(e, ActivityCompleted)).result
    assert bytes(result) == (b'"first"' if applied else b'"second"')
    if point == "before-ack":
        assert pause is not None
        assert pause.outcome == ext.ACK_APPLIED
    if point == "before-apply":  # cancelled with its stream, or dropped: it is gone
        assert pause is not None
        assert pause.outcome in (None, ext.ACK_DROPPED)


# -- RemoteWorker ----------------------------------------------------------------------

registry = durable.Registry()
runs: list[int] = []


@registry.activity
async def step(ctx: ActivityContext, x: int) -> int:
    runs.append(x)
    return x + 1


@registry.workflow
async def steps(ctx: WorkflowContext, n: int) -> int:
    total = 0
    for _ in range(n):
        total = await ctx.call_activity(step, total)
    return total


def _no_unary(service: SidecarService) -> None:
    async def refuse(data: bytes, origin: Any) -> bytes:
        raise AssertionError("a unary completion: the worker should use its work stream")

    service._complete_turn = refuse  # type: ignore[method-assign]
    service._complete_activity = refuse  # type: ignore[method-assign]


@pytest.mark.parametrize("dialect", ["dapr", "ms"])
async def test_remote_worker_completes_over_the_work_stream(sidecar: Sidecar, dialect: str) -> None:
    """Issue 14 (speed): RemoteWorker, against durable's sidecar, opens the work stream
    and sends no unary completion (the sidecar's unary completion handlers are gone)."""
    _no_unary(sidecar.service)
    target = f"127.0.0.1:{sidecar.port}"
    async with (
        RemoteWorker(registry, target, dialect=dialect) as worker,
        RemoteClient(target, dialect=dialect, registry=registry, poll_interval=0.01) as client,
    ):
        with anyio.fail_after(30):
            await worker.wait_connected()
            assert worker.streamed
            assert await (await client.start(steps, 5, instance_id=f"s-{dialect}")) == 5


@pytest.mark.parametrize("after", [False, True], ids=["before-apply", "before-ack"])
async def test_remote_worker_survives_a_stream_cut_mid_completion(
    sidecar: Sidecar, after: bool
) -> None:
    """Issue 14: the sidecar's end of a RemoteWorker's work stream breaks while a
    completion is in flight (before it is applied, or applied and not yet acked): the
    worker's completion fails, it reconnects, and the workflow ends with every step
    recorded once."""
    original = sidecar.service._ack
    broken = [False]

    async def cut(message: ext.WorkerMessage, origin: Any, worker: Any) -> ext.Ack:
        if broken[0] or message.WhichOneof("kind") != "completeActivity":
            return await original(message, origin, worker)
        broken[0] = True
        if after:
            await original(message, origin, worker)
        raise GRPCError(Status.UNAVAILABLE, "cut")  # ends the stream, acking nothing

    sidecar.service._ack = cut  # type: ignore[method-assign]
    target = f"127.0.0.1:{sidecar.port}"
    runs.clear()
    worker = RemoteWorker(registry, target, reconnect_delay=timedelta(0))
    async with (
        worker,
        RemoteClient(target, registry=registry, poll_interval=0.01) as client,
    ):
        with anyio.fail_after(30):
            assert await (await client.start(steps, 3, instance_id="cut")) == 3
    assert broken[0]
    assert worker.connects >= 2
    assert completed_tasks(await history(sidecar, "cut")) == [0, 1, 2]
    assert runs == ([0, 1, 2] if after else [0, 0, 1, 2])  # at least once: re-sent unapplied


async def _runs_without_the_stream(target: str, dialect: str) -> None:
    async with (
        RemoteWorker(registry, target, dialect=dialect) as worker,
        RemoteClient(target, dialect=dialect, registry=registry, poll_interval=0.01) as client,
    ):
        with anyio.fail_after(30):
            await worker.wait_connected()
            assert not worker.streamed
            handle = await client.start(steps, 3, instance_id=f"fallback-{dialect}")
            assert await handle == 3
    assert worker.connects == 1


async def test_remote_worker_falls_back_on_a_sidecar_without_the_work_stream() -> None:
    """Issue 14: a grpclib sidecar without durable's work stream (the Dapr-dialect
    stub) answers UNIMPLEMENTED in its headers: the RemoteWorker uses GetWorkItems and
    the unary completions, on the same connect, and workflows run as before."""
    stub = DaprStub()
    server, port = await serve(stub)
    try:
        await _runs_without_the_stream(f"127.0.0.1:{port}", "dapr")
    finally:
        server.close()
        await server.wait_closed()


async def test_remote_worker_falls_back_on_a_grpcio_sidecar() -> None:
    """Issue 14: a grpcio server (the durabletask SDK's in-memory backend, as Dapr's
    own Go server does) resets the unknown call after UNIMPLEMENTED, so the status
    comes out as the call closes: the worker still falls back."""
    testing = pytest.importorskip("durabletask.testing", reason="the `bench` extra")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = testing.create_test_backend(port)
    try:
        await _runs_without_the_stream(f"127.0.0.1:{port}", "ms")
    finally:
        await anyio.to_thread.run_sync(backend.stop, 0)


async def test_remote_worker_reconnects_when_a_completion_is_refused(sidecar: Sidecar) -> None:
    """Issue 14: the worker does not wait for acks, so a refusal (what a failed unary
    completion was) comes later, on the stream: the worker drops the stream as it did
    for a failed call, the sidecar sends the unapplied item again, and the workflow
    ends with each step recorded once."""
    original = sidecar.service._ack
    refused: list[int] = []

    async def refuse_first(message: ext.WorkerMessage, origin: Any, worker: Any) -> ext.Ack:
        if refused or message.WhichOneof("kind") != "completeActivity":
            return await original(message, origin, worker)
        refused.append(message.seq)  # not applied: refused as a unary call would fail
        return ext.Ack(seq=message.seq, outcome=ext.ACK_REFUSED, code=14, message="busy")

    sidecar.service._ack = refuse_first  # type: ignore[method-assign]
    target = f"127.0.0.1:{sidecar.port}"
    runs.clear()
    worker = RemoteWorker(registry, target, reconnect_delay=timedelta(0))
    async with worker, RemoteClient(target, registry=registry, poll_interval=0.01) as client:
        with anyio.fail_after(30):
            assert await (await client.start(steps, 2, instance_id="refused")) == 2
    assert refused
    assert worker.connects == 2
    assert completed_tasks(await history(sidecar, "refused")) == [0, 1]
    assert runs == [0, 0, 1]  # the refused attempt ran again


async def test_remote_worker_drops_a_stream_whose_ack_is_overdue(sidecar: Sidecar) -> None:
    """Issue 14: a completion whose ack never comes (a unary call timed out after
    30 s; an applied one is acknowledged with the sidecar's next item or ping, at least
    every 120 s) makes the worker's watchdog drop the stream once 150 s pass on its
    clock; the item goes out again on the new stream and the workflow ends."""
    original = sidecar.service._ack
    held = anyio.Event()

    async def never_ack(message: ext.WorkerMessage, origin: Any, worker: Any) -> ext.Ack:
        if held.is_set() or message.WhichOneof("kind") != "completeActivity":
            return await original(message, origin, worker)
        held.set()
        await anyio.sleep_forever()  # until the stream goes
        raise AssertionError("unreachable")

    sidecar.service._ack = never_ack  # type: ignore[method-assign]
    clock = durable.MockClock()
    target = f"127.0.0.1:{sidecar.port}"
    worker = RemoteWorker(  # no idle timeout: the sidecar pings on its own clock
        registry, target, clock=clock, reconnect_delay=timedelta(0), idle_timeout=None
    )
    async with worker, RemoteClient(target, registry=registry, poll_interval=0.01) as client:
        with anyio.fail_after(30):
            handle = await client.start(steps, 1, instance_id="overdue")
            await held.wait()
            clock.advance(timedelta(seconds=149))
            for _ in range(50):
                await anyio.lowlevel.checkpoint()
            assert worker.connects == 1  # not yet due
            clock.advance(timedelta(seconds=2))
            assert await handle == 1
    assert worker.connects == 2
    assert completed_tasks(await history(sidecar, "overdue")) == [0]


async def test_a_health_ping_counts_the_last_completions_as_handled() -> None:
    """Issue 14: with no item to follow it (the workflow's last turn), an applied
    completion is acknowledged by the next health ping's ``handled``, so a quiet
    stream never looks overdue to the worker."""
    clock = durable.MockClock()
    async with Sidecar("memory://", port=0, clock=clock) as sidecar:
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            await start(ch, "last")
            async with work_link(ch) as link:
                seq = await link.send("completeTurn", completion(await link.item(), '"ok"'))
                assert (await outcome(ch, "last")).output.value == '"ok"'
                assert link.handled < seq
                clock.advance(timedelta(seconds=30))  # the sidecar's ping interval
                with anyio.fail_after(10):
                    data = await link.stream.recv_message()
                assert data is not None
                ping = ext.SidecarMessage.FromString(data)
                assert ms.WorkItem.FromString(ping.workItem).WhichOneof("request") == "healthPing"
                assert ping.handled == seq
        finally:
            ch.close()
