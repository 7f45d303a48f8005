"""Events between instances (``ctx.send_event``) through the public API, on memory://,
file:// and s3:// (the shared ``store`` fixture), on a MockClock: sent after the
sending turn commits, delivered once and in order per (sender, receiver), dropped
(logged) for an instance that does not exist."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import durable
from durable import MockClock, Registry, WorkflowContext
from durable._core._events import EventRaised, EventSent
from durable._errors import StoreError
from durable.store import ObjectStore

pytestmark = pytest.mark.anyio

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)  # on the MockClock: a wait that would hang fails instead


def block_posts(store: ObjectStore, receiver: str) -> Callable[[], None]:
    """Writes to ``receiver``'s inbox fail (transiently) until the returned function is
    called: events sent to it stay unposted, as when a process stops after the commit."""
    put = store.put
    blocked = True

    async def lost(key: str, data: bytes) -> str:
        if blocked and key.startswith(f"instances/{receiver}/inbox/"):
            raise StoreError("the process stops before this", key=key, transient=True)
        return await put(key, data)

    def unblock() -> None:
        nonlocal blocked
        blocked = False

    store.put = lost  # type: ignore[method-assign]
    return unblock


def pair(count: int) -> Registry:
    """A receiver that collects ``count`` events "n", and a sender that sends them to
    it one per turn (a timer between each), then ends."""
    registry = Registry()

    @registry.workflow
    async def receiver(ctx: WorkflowContext) -> list[int]:
        return [await ctx.wait_for_event("n") for _ in range(count)]

    @registry.workflow
    async def sender(ctx: WorkflowContext, target: str) -> str:
        for i in range(count):
            ctx.send_event(target, "n", i)
            if i % 2:
                await ctx.sleep(SECOND)
        return "sent"

    return registry


async def test_events_reach_the_receiver_once_in_the_order_sent(
    runtime_factory: Callable[..., Any],
) -> None:
    """send_event delivers each event once, in the order one sender sent them, across
    turns and within one; history records EventSent with distinct message ids."""
    async with runtime_factory(pair(6)) as rt:
        receiving = await rt.start("receiver", instance_id="rx")
        sending = await rt.start("sender", "rx", instance_id="tx")
        assert await sending == "sent"
        assert await receiving == [0, 1, 2, 3, 4, 5]
        sent = [e for e in await sending.history() if isinstance(e, EventSent)]
        assert [e.instance_id for e in sent] == ["rx"] * 6
        ids = [e.message_id for e in sent]
        assert ids == sorted(ids)
        assert len(set(ids)) == 6


async def test_an_event_for_no_such_instance_is_dropped_and_logged(
    runtime_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Sending to an instance that does not exist drops the event and logs it (the
    Durable Task behaviour); the sender goes on and nothing is created."""
    async with runtime_factory(pair(1)) as rt:
        with caplog.at_level(logging.WARNING, logger="durable.engine"):
            assert await (await rt.start("sender", "nobody", instance_id="tx")) == "sent"
        assert any("no such instance" in r.getMessage() for r in caplog.records)
        with pytest.raises(durable.InstanceNotFoundError):
            await rt.client.get_handle("nobody").describe()


async def test_an_invalid_receiver_id_is_a_typed_error_in_the_workflow(
    runtime_factory: Callable[..., Any],
) -> None:
    """send_event to an id that cannot be an object key raises InvalidInstanceIdError
    where it is called, so the workflow can handle it."""
    registry = Registry()

    @registry.workflow
    async def bad(ctx: WorkflowContext) -> str:
        try:
            ctx.send_event("a/../b", "n")
        except durable.InvalidInstanceIdError:
            return "refused"
        return "sent"

    async with runtime_factory(registry) as rt:
        assert await (await rt.start(bad)) == "refused"


async def test_the_event_leaves_only_after_the_sending_turn_commits(
    runtime_factory: Callable[..., Any], store: ObjectStore
) -> None:
    """The receiver's inbox message is written after the sender's log record holding
    the EventSent, never before."""
    writes: list[str] = []
    put, put_if_absent = store.put, store.put_if_absent

    async def recording_put(key: str, data: bytes) -> str:
        writes.append(key)
        return await put(key, data)

    async def recording_put_if_absent(key: str, data: bytes) -> str:
        writes.append(key)
        return await put_if_absent(key, data)

    store.put = recording_put  # type: ignore[method-assign]
    store.put_if_absent = recording_put_if_absent  # type: ignore[method-assign]
    async with runtime_factory(pair(1)) as rt:
        receiving = await rt.start("receiver", instance_id="rx")
        await (await rt.start("sender", "rx", instance_id="tx"))
        assert await receiving == [0]
    inbox = next(i for i, key in enumerate(writes) if key.startswith("instances/rx/inbox/"))
    turn = next(i for i, key in enumerate(writes) if key.startswith("instances/tx/log/00000000000"))
    first_turn = [k for k in writes if k.startswith("instances/tx/log/")][1]
    assert turn < writes.index(first_turn) < inbox


async def test_a_failed_post_holds_later_events_back_and_is_retried(
    runtime_factory: Callable[..., Any], store: ObjectStore
) -> None:
    """While the post of an event fails (the store, transiently), the events the
    sender sends after it wait behind it: the receiver gets all, once, in order."""
    failures = 3
    put = store.put

    async def flaky(key: str, data: bytes) -> str:
        nonlocal failures
        if key.startswith("instances/rx/inbox/") and failures:
            failures -= 1
            raise StoreError("injected", key=key, transient=True)
        return await put(key, data)

    store.put = flaky  # type: ignore[method-assign]
    async with runtime_factory(pair(6)) as rt:
        receiving = await rt.start("receiver", instance_id="rx")
        await (await rt.start("sender", "rx", instance_id="tx"))
        assert await receiving == [0, 1, 2, 3, 4, 5]
    assert failures == 0


async def test_events_of_turns_after_the_meta_are_posted_again_on_load(
    store: ObjectStore,
) -> None:
    """A process that stops after a send commits but before it is posted: the next
    process to load the sender posts it (the same message id), and the receiver gets it
    once."""
    registry = pair(1)
    unblock = block_posts(store, "rx")
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        await rt.start("receiver", instance_id="rx")
        await (await rt.start("sender", "rx", instance_id="tx"))
    unblock()
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        assert await rt.client.get_handle("rx").result(timeout=MINUTE) == [0]
        history = await rt.client.get_handle("rx").history()
        assert len([e for e in history if isinstance(e, EventRaised)]) == 1


@pytest.mark.parametrize("dialect", ["dapr", "ms"])
async def test_send_event_through_the_sidecar_and_a_remote_worker(dialect: str) -> None:
    """A workflow run by a RemoteWorker sends events through the sidecar: the Durable
    Task SendEvent action becomes EventSent, posted like any other; the receiver gets
    them in order, and one for an instance that does not exist is dropped."""
    import anyio

    from durable.grpc import RemoteClient, RemoteWorker, Sidecar

    registry = pair(3)

    @registry.workflow
    async def lost(ctx: WorkflowContext) -> str:
        ctx.send_event("nobody-here", "n", 1)
        return "sent"

    async with Sidecar("memory://", port=0) as sidecar:
        target = f"127.0.0.1:{sidecar.port}"
        async with (
            RemoteWorker(registry, target, dialect=dialect) as worker,
            RemoteClient(target, dialect=dialect, registry=registry, poll_interval=0.02) as rc,
        ):
            with anyio.fail_after(30):
                await worker.wait_connected()
                receiving = await rc.start("receiver", instance_id="rx")
                assert await (await rc.start("sender", "rx", instance_id="tx")) == "sent"
                assert await receiving == [0, 1, 2]
                assert await (await rc.start(lost)) == "sent"


def test_the_send_event_action_and_event_round_trip_both_dialects() -> None:
    """SendEvent and EventSent convert to Durable Task's sendEvent action and eventSent
    event and back, in both dialects (the message id stays with the sidecar's log)."""
    from msgspec import Raw

    from durable._core._actions import SendEvent
    from durable.grpc import _convert as cv

    action = SendEvent(7, "rx", "n", Raw(b"1"))
    assert cv.action_from_proto(cv.action_to_ms(action)) == action  # type: ignore[arg-type]
    assert cv.action_from_proto(cv.action_to_dapr(action)) == action  # type: ignore[arg-type]
    sent = EventSent(task_id=7, instance_id="rx", name="n", input=Raw(b"1"), message_id="m")
    for wire in (cv.event_to_ms(sent), cv.event_to_dapr(sent)):
        back = cv.event_from_proto(wire)  # type: ignore[arg-type]
        assert isinstance(back, EventSent)
        assert (back.task_id, back.instance_id, back.name, back.input) == (7, "rx", "n", Raw(b"1"))


def fail_meta_writes(store: ObjectStore, instance_id: str) -> None:
    """Every meta update of ``instance_id`` fails (transiently): its meta stays behind
    its log, as after a crash between a commit and the meta write."""
    put_if_match = store.put_if_match

    async def failing(key: str, data: bytes, etag: str) -> str:
        if key == f"instances/{instance_id}/meta":
            raise StoreError("injected", key=key, transient=True)
        return await put_if_match(key, data, etag)

    store.put_if_match = failing  # type: ignore[method-assign]


async def test_a_send_posted_again_after_the_receiver_continued_as_new_is_not_applied(
    store: ObjectStore,
) -> None:
    """The sender's meta stays behind its log, so the next process to load it posts its
    events again (same message ids), after the receiver applied them and continued as new:
    the receiver's new run skips both events (its sender's watermark, the later one,
    came along), and applies the next event instead. Without the watermark it took the
    first event again."""
    registry = Registry()

    @registry.workflow
    async def receiver(ctx: WorkflowContext, got: list[Any]) -> list[Any]:
        if not got:
            got = [await ctx.wait_for_event("n"), await ctx.wait_for_event("n")]
            await ctx.sleep(SECOND)  # their messages are deleted before the next run
            ctx.continue_as_new(got)
        return [*got, await ctx.wait_for_event("n")]

    @registry.workflow
    async def sender(ctx: WorkflowContext) -> str:
        ctx.send_event("rx", "n", "first")
        ctx.send_event("rx", "n", "then")
        return "sent"

    fail_meta_writes(store, "tx")
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        await rt.start(receiver, [], instance_id="rx")
        assert await (await rt.start(sender, instance_id="tx")) == "sent"
        await rt.wait_idle()
        assert (await rt.client.get_handle("rx").describe()).input == ["first", "then"]
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        await rt.wait_idle()  # the sender is loaded again and posts its event again
        await rt.client.get_handle("rx").raise_event("n", "second")
        want = ["first", "then", "second"]
        assert await rt.client.get_handle("rx").result(timeout=MINUTE) == want


async def test_sends_not_posted_before_a_continue_as_new_and_a_crash_are_posted(
    store: ObjectStore,
) -> None:
    """Events sent, not posted (the store fails), then the sender continues as new and
    the process stops: the next process posts them, though they belong to a run before
    the current one."""
    registry = pair(2)

    @registry.workflow
    async def looping(ctx: WorkflowContext, round: int) -> str:
        if round == 0:
            ctx.send_event("rx", "n", 0)
            ctx.send_event("rx", "n", 1)
            await ctx.sleep(SECOND)  # a turn after the one that sent them
            ctx.continue_as_new(1)
        return "done"

    unblock = block_posts(store, "rx")
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        await rt.start("receiver", instance_id="rx")
        assert await (await rt.start(looping, 0, instance_id="tx")) == "done"
    unblock()
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        assert await rt.client.get_handle("rx").result(timeout=MINUTE) == [0, 1]


async def test_sends_not_posted_before_a_reuse_are_posted(store: ObjectStore) -> None:
    """The sender ends, its events not posted, the process stops, and a client starts
    the sender's id again (reuse): the old run's events are still posted."""
    registry = pair(1)
    unblock = block_posts(store, "rx")
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        await rt.start("receiver", instance_id="rx")
        await (await rt.start("sender", "nobody", instance_id="tx0"))  # a warm-up
        assert await (await rt.start("sender", "rx", instance_id="tx")) == "sent"
    unblock()
    client = durable.Client(store=store, registry=registry, clock=clock)
    await client.start("sender", "nobody", instance_id="tx", reuse=True)
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        assert await rt.client.get_handle("rx").result(timeout=MINUTE) == [0]


async def test_a_send_posted_again_after_the_receiver_was_started_again_is_not_applied(
    store: ObjectStore,
) -> None:
    """Found by the simulation (seed 7): the receiver applied the event, ended and was
    started again (reuse); the sender's meta was behind, so a new process posted the
    event again, and the new start applied it a second time. The new start now gets
    the old one's watermarks, and skips it."""
    registry = Registry()

    @registry.workflow
    async def receiver(ctx: WorkflowContext) -> Any:
        return await ctx.wait_for_event("n")

    @registry.workflow
    async def sender(ctx: WorkflowContext) -> str:
        ctx.send_event("rx", "n", "first")
        return "sent"

    fail_meta_writes(store, "tx")
    clock = MockClock(auto_advance=True)
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        receiving = await rt.start(receiver, instance_id="rx")
        assert await (await rt.start(sender, instance_id="tx")) == "sent"
        assert await receiving == "first"
        await rt.start(receiver, instance_id="rx", reuse=True)
    async with durable.Runtime(registry, store=store, clock=clock) as rt:
        await rt.wait_idle()  # the sender is loaded again and posts its event again
        await rt.client.get_handle("rx").raise_event("n", "second")
        assert await rt.client.get_handle("rx").result(timeout=MINUTE) == "second"
