"""Abandons that must not send a turn twice (found in review): one for an item already
waiting in the queue, and a late one from the stream an item was taken away from."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from durable._core._events import TurnStarted, WorkflowStarted
from durable.grpc._dispatch import Dispatcher, Item, TurnWork, WorkerStream

pytestmark = pytest.mark.anyio


def _drain(stream: WorkerStream) -> list[Item]:
    sent: list[Item] = []
    while True:
        try:
            got = stream.outbox.receive_nowait()
        except anyio.WouldBlock:
            return sent
        if got is not None and stream.holds(got):
            sent.append(got)


def _work() -> TurnWork:
    return TurnWork("i", "r", [], [TurnStarted(), WorkflowStarted(name="w", run_id="r")], 0)


async def _sent_then_dropped(d: Dispatcher, tg: anyio.abc.TaskGroup) -> tuple[Item, str]:
    """Submit a turn, take it off a first stream, drop that stream: (item, its token
    on the first send). With no other stream, the item waits in the queue."""
    s1 = d.connect("dapr", stateful=False, pings=False)
    tg.start_soon(d.submit, _work())
    await anyio.wait_all_tasks_blocked()
    item = s1.outbox.receive_nowait()
    assert isinstance(item, Item)
    token = item.wire_token
    d.disconnect(s1)
    return item, token


async def test_an_abandon_of_a_waiting_item_does_not_queue_it_twice() -> None:
    d = Dispatcher()
    async with anyio.create_task_group() as tg:
        item, token = await _sent_then_dropped(d, tg)
        assert not d.abandon(token)  # the worker, reconnecting, gives it back: a no-op
        s2 = d.connect("dapr", stateful=False, pings=False)
        assert _drain(s2) == [item]
        d.resolve(item, "done")
        d.disconnect(s2)


async def test_a_late_abandon_from_an_earlier_send_is_ignored() -> None:
    d = Dispatcher()
    async with anyio.create_task_group() as tg:
        item, first = await _sent_then_dropped(d, tg)
        s2 = d.connect("dapr", stateful=False, pings=False)
        assert _drain(s2) == [item]  # sent again, on stream 2
        assert item.wire_token != first
        assert not d.abandon(first)  # the old worker's abandon comes in late
        assert _drain(s2) == []
        assert d.find(first, "i") is None  # nor may it answer: the item is not its own
        assert d.abandon(item.wire_token)  # the current send may give it back
        d.resolve(item, "done")
        d.disconnect(s2)
