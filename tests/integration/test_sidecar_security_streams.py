"""Work belongs to the stream it was sent to (issue 19, group 4 of the review): a
completion or abandon from another connection is refused, with or without a token;
tokens are 128 random bits and name one send. Raw gRPC over real sockets."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest
from dapr_stub import wrapped
from grpclib.client import Channel
from test_sidecar_protocol import MS_WORKER, call, completion, next_item, outcome, start
from test_sidecar_protocol import work_stream as stream_on

from durable.grpc import Sidecar
from durable.grpc._proto import ms
from durable.grpc._server import BytesCodec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from durable.grpc._dispatch import WorkerStream

pytestmark = pytest.mark.anyio

SCHEDULE = ms.OrchestratorAction(
    id=0, scheduleTask=ms.ScheduleTaskAction(name="a", input=wrapped("1"))
)


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
    """Another connection: a plain gRPC client, or another worker."""
    ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
    yield ch
    ch.close()


def holder(sidecar: Sidecar, instance_id: str) -> WorkerStream | None:
    """The stream that holds the instance's item now."""
    for stream in sidecar.dispatcher.streams:
        if any(item.work.instance_id == instance_id for item in stream.held.values()):
            return stream
    return None


async def test_a_tokenless_completion_from_another_connection_is_refused(
    sidecar: Sidecar, victim: Channel, attacker: Channel
) -> None:
    """Issue 19: a connection sending no completion token completed another worker's
    orchestration, or its activity, given only the instance id and ``task_id=0``."""
    await start(victim, "v")
    async with stream_on(victim, MS_WORKER) as worker:
        turn = await next_item(worker, ms.WorkItem)
        await call(attacker, "CompleteOrchestratorTask", completion(turn, '"hijacked"', token=""))
        token = turn.completionToken
        await call(victim, "CompleteOrchestratorTask", ms.OrchestratorResponse(
            instanceId="v", actions=[SCHEDULE], completionToken=token))  # fmt: skip
        task = await next_item(worker, ms.WorkItem)
        assert task.activityRequest.taskId == 0
        await call(attacker, "CompleteActivityTask", ms.ActivityResponse(
            instanceId="v", taskId=0, result=wrapped('"forged"')))  # fmt: skip
        assert holder(sidecar, "v") is not None  # still the victim's to answer
        await call(victim, "CompleteActivityTask", ms.ActivityResponse(
            instanceId="v", taskId=0, result=wrapped('"real"'),
            completionToken=task.completionToken))  # fmt: skip
        turn = await next_item(worker, ms.WorkItem)
        events = turn.orchestratorRequest.newEvents
        kinds = [(e.WhichOneof("eventType"), e) for e in events]
        assert [e.taskCompleted.result.value for k, e in kinds if k == "taskCompleted"] == [
            '"real"'
        ]
        await call(victim, "CompleteOrchestratorTask", completion(turn, '"ok"'))
        assert (await outcome(victim, "v")).output.value == '"ok"'


async def test_a_tokenless_worker_is_matched_on_its_own_connection(
    victim: Channel,
) -> None:
    """Issue 19: tokenless SDKs (durabletask-js) still work: their answers are matched
    by instance on the connection that holds the item."""
    await start(victim, "js")
    async with stream_on(victim, MS_WORKER) as worker:
        turn = await next_item(worker, ms.WorkItem)
        await call(victim, "CompleteOrchestratorTask", completion(turn, '"ok"', token=""))
        assert (await outcome(victim, "js")).output.value == '"ok"'


async def test_guessed_and_bare_tokens_are_refused(
    sidecar: Sidecar, victim: Channel, attacker: Channel
) -> None:
    """Issue 19: tokens were a per-process prefix and a counter, and an abandon with a
    bare token skipped the send check: that moved another worker's item, with its
    input, to the attacker's stream. Tokens are now 128 random bits, one per send, and
    nothing derived from one's own token names another item."""
    await start(victim, "v", data='"secret"')
    async with stream_on(victim, MS_WORKER) as worker:
        theirs = await next_item(worker, ms.WorkItem)
        await start(victim, "mine")
        async with stream_on(attacker, MS_WORKER) as spy:
            with anyio.fail_after(10):
                while holder(sidecar, "mine") is None:
                    await anyio.lowlevel.checkpoint()
            if holder(sidecar, "mine") is sidecar.dispatcher.streams[0]:
                own = await next_item(worker, ms.WorkItem)  # round robin gave it to the victim
            else:
                own = await next_item(spy, ms.WorkItem)
            for token in (theirs.completionToken, own.completionToken):
                assert re.fullmatch(r"[0-9a-f]{32}", token), token
            assert theirs.completionToken != own.completionToken
            victim_stream = holder(sidecar, "v")
            for guess in _guesses(own.completionToken, theirs.completionToken):
                for method, request in (
                    ("AbandonTaskOrchestratorWorkItem",
                     ms.AbandonOrchestrationTaskRequest(completionToken=guess)),
                    ("CompleteOrchestratorTask", completion(theirs, '"forged"', token=guess)),
                ):  # fmt: skip
                    await call(attacker, method, request)
                    assert holder(sidecar, "v") is victim_stream
        await call(victim, "CompleteOrchestratorTask", completion(theirs, '"ok"'))
        assert (await outcome(victim, "v")).output.value == '"ok"'


def _guesses(own: str, theirs: str) -> list[str]:
    """Tokens an attacker derives from its own one: neighbours of a trailing counter,
    with and without a send suffix, and the victim's as the old scheme would name it
    (a bare base, another send)."""
    base, _, send = own.rpartition(".")
    prefix, _, number = (base or own).rpartition("-")
    out = {theirs.rpartition(".")[0], theirs + ".1", theirs + ".2", theirs[:-1] + "0"}
    if number.isdigit():
        for n in range(max(1, int(number) - 3), int(number) + 4):
            out |= {f"{prefix}-{n}", f"{prefix}-{n}.1", f"{prefix}-{n}.{send or 1}"}
    return sorted(t for t in out if t and t != theirs)


async def test_a_late_answer_from_the_stream_an_item_left_is_dropped(
    sidecar: Sidecar, victim: Channel, attacker: Channel
) -> None:
    """Issue 19: an answer to an earlier send (the item has since gone to another
    stream) was taken as the answer: work belongs to the send it was given in."""
    await start(victim, "moved")
    async with stream_on(attacker, MS_WORKER) as first:
        lost = await next_item(first, ms.WorkItem)
    async with stream_on(victim, MS_WORKER) as second:
        again = await next_item(second, ms.WorkItem)
        assert again.completionToken != lost.completionToken
        await call(attacker, "CompleteOrchestratorTask", completion(lost, '"late"'))
        abandon = ms.AbandonOrchestrationTaskRequest(completionToken=lost.completionToken)
        await call(attacker, "AbandonTaskOrchestratorWorkItem", abandon)
        assert holder(sidecar, "moved") is sidecar.dispatcher.streams[0]
        await call(victim, "CompleteOrchestratorTask", completion(again, '"second"'))
        assert (await outcome(victim, "moved")).output.value == '"second"'
