"""Fairness (issue 19): a worker that never answers loses its items after a timeout
(its late answer dropped), a worker is handed no more than it advertised it takes,
and WaitForInstanceStart is woken by the instance's change, with a cap on waiting
callers. Raw gRPC over real sockets; time is a MockClock."""

from __future__ import annotations

from datetime import timedelta

import anyio
import anyio.lowlevel
import pytest
from grpclib import GRPCError, Status
from grpclib.client import Channel
from test_sidecar_protocol import call, completion, next_item, outcome, start, work_stream

from durable import MockClock
from durable.grpc import Sidecar
from durable.grpc._proto import ms
from durable.grpc._server import BytesCodec

pytestmark = pytest.mark.anyio


def worker(turns: int = 0) -> ms.GetWorkItemsRequest:
    """An MS worker's request; ``turns`` is its maxConcurrentOrchestrationWorkItems."""
    return ms.GetWorkItemsRequest(
        maxConcurrentOrchestrationWorkItems=turns, maxConcurrentActivityWorkItems=5
    )


async def until(condition: object) -> None:
    with anyio.fail_after(10):
        while not condition():  # type: ignore[operator]
            await anyio.lowlevel.checkpoint()


async def test_a_worker_is_handed_no_more_turns_than_it_takes() -> None:
    """Issue 19: the worker's own maxConcurrentOrchestrationWorkItems was ignored: a
    worker taking one turn at a time was handed every turn."""
    async with Sidecar("memory://", port=0) as sidecar:
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            for i in range(3):
                await start(ch, f"i{i}")
            async with work_stream(ch, worker(turns=1)) as one_at_a_time:
                await until(lambda: sidecar.dispatcher.streams)
                (stream,) = sidecar.dispatcher.streams
                first = await next_item(one_at_a_time, ms.WorkItem)
                assert len(stream.held) == 1
                assert sidecar.dispatcher.waiting == 2
                await call(ch, "CompleteOrchestratorTask", completion(first, '"ok"'))
                second = await next_item(one_at_a_time, ms.WorkItem)  # room again: the next
                assert second.orchestratorRequest.instanceId != "i0"
                assert len(stream.held) == 1
        finally:
            ch.close()


async def test_an_unanswered_turn_goes_to_another_worker_and_the_late_answer_drops() -> None:
    """Issue 19: a worker that never answers kept its share of items forever: there was
    no work-item timeout."""
    clock = MockClock()
    async with Sidecar("memory://", port=0, clock=clock, turn_timeout=10) as sidecar:
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            await start(ch, "slow")
            async with work_stream(ch, worker()) as silent:
                lost = await next_item(silent, ms.WorkItem)
                async with work_stream(ch, worker()) as other:
                    await until(lambda: len(sidecar.dispatcher.streams) == 2)
                    (item,) = [i for s in sidecar.dispatcher.streams for i in s.held.values()]
                    clock.advance(timedelta(seconds=1))  # the sweep notes when it was sent
                    await until(lambda: item.sent_at is not None)
                    clock.advance(timedelta(seconds=9))
                    await anyio.sleep(0.05)
                    assert item.stream is not None
                    assert item.stream.held  # not yet
                    clock.advance(timedelta(seconds=2))
                    again = await next_item(other, ms.WorkItem)
                    assert again.orchestratorRequest.instanceId == "slow"
                    await call(ch, "CompleteOrchestratorTask", completion(lost, '"late"'))
                    await call(ch, "CompleteOrchestratorTask", completion(again, '"other"'))
                    assert (await outcome(ch, "slow")).output.value == '"other"'
        finally:
            ch.close()


async def test_wait_for_start_is_woken_by_the_start_and_waiters_are_capped() -> None:
    """Issue 19: WaitForInstanceStart polled the store every 50 ms per caller, with no
    cap: 1,000 callers took 93% of a core. Waiters are woken when the instance starts
    (the clock never moves here), and one over ``max_waiting`` is refused."""
    clock = MockClock()
    async with Sidecar("memory://", port=0, clock=clock, max_waiting=2) as sidecar:
        ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
        try:
            await start(ch, "later")
            replies: list[ms.GetInstanceResponse] = []

            async def wait() -> None:
                request = ms.GetInstanceRequest(instanceId="later")
                replies.append(ms.GetInstanceResponse.FromString(
                    await call(ch, "WaitForInstanceStart", request)))  # fmt: skip

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                tg.start_soon(wait)
                await until(lambda: sidecar.service.waiting.now == 2)
                with pytest.raises(GRPCError) as err:
                    await call(
                        ch, "WaitForInstanceStart", ms.GetInstanceRequest(instanceId="later")
                    )
                assert err.value.status is Status.RESOURCE_EXHAUSTED
                assert replies == []
                async with work_stream(ch, worker()) as stream:
                    turn = await next_item(stream, ms.WorkItem)
                    await call(ch, "CompleteOrchestratorTask", ms.OrchestratorResponse(
                        instanceId="later", completionToken=turn.completionToken))  # fmt: skip
            statuses = [r.orchestrationState.orchestrationStatus for r in replies]
            assert statuses == [ms.ORCHESTRATION_STATUS_RUNNING] * 2
            assert sidecar.service.waiting.now == 0
        finally:
            ch.close()
