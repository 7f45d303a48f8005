"""No event applied twice, none taken by the wrong run, no acknowledged start left unrun
(issue 13, found by the whole-system simulation).

Each race is forced by a store wrapper that pauses one call at a chosen point and runs
the other side of the race there; nothing sleeps on real time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

import durable
from durable import MockClock, Registry, WorkflowContext
from durable._errors import ObjectNotFoundError, StoreError
from durable._fleet._partitions import StoreConfig
from durable._log._reader import load_run, read_meta, write_meta
from durable._log._records import decode_record, log_key
from durable.store import MemoryStore, ObjectStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_CALLS = ("get", "get_with_etag", "put", "put_if_absent", "put_if_match", "list", "delete",
          "delete_if_match", "delete_prefix")  # fmt: skip
DELETES = ("delete", "delete_if_match")  # a purge deletes records and meta by ETag


class Hold:
    """Wraps a store; the first call that ``hold_at`` matches waits, before it reaches the
    store (or, with ``after=True``, once the store answered, before its caller hears),
    until ``release`` is set. ``entered`` tells the test it waits."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner
        self.never_suspends = False
        self._match: Callable[[str, str], bool] | None = None
        self._after = False
        self.entered = anyio.Event()
        self.release = anyio.Event()

    def hold_at(self, match: Callable[[str, str], bool], *, after: bool = False) -> None:
        self._match, self._after = match, after
        self.entered, self.release = anyio.Event(), anyio.Event()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in _CALLS:
            return attr

        async def call(key: str, *args: Any) -> Any:
            held = self._match is not None and self._match(name, key)
            if held:
                self._match = None
            if held and not self._after:
                self.entered.set()
                await self.release.wait()
            result = await attr(key, *args)
            if held and self._after:
                self.entered.set()
                await self.release.wait()
            return result

        return call


def _registry() -> Registry:
    registry = Registry()

    @registry.workflow
    async def ticker(ctx: WorkflowContext, got: list[int]) -> list[int]:
        """Each run takes one "tick" and continues as new with the ticks so far; the
        third run returns them."""
        got = [*got, await ctx.wait_for_event("tick")]
        if len(got) == 3:
            return got
        ctx.continue_as_new(got)

    return registry


async def _applied(store: ObjectStore, instance_id: str, name: str) -> list[Any]:
    """The data of every ``name`` event the log of ``instance_id`` applied, in order."""
    found: list[Any] = []
    seq = 0
    while True:
        try:
            record = decode_record(await store.get(log_key(instance_id, seq)), "")
        except durable.DurableError:
            return found
        for event in record.events:
            if type(event).__name__ == "EventRaised" and event.name == name:  # type: ignore[attr-defined]
                found.append(bytes(event.input))  # type: ignore[attr-defined]
        seq += 1


async def _until(done: Callable[[], bool]) -> None:
    """Let other tasks run until ``done()`` (a bounded number of scheduling points)."""
    for _ in range(10_000):
        if done():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError("never happened")


def _runs(store: MemoryStore, instance_id: str) -> int:
    """How many runs the log of ``instance_id`` has begun (read without awaiting)."""
    prefix = f"instances/{instance_id}/log/"
    records = [decode_record(v[0], k) for k, v in store._objects.items() if k.startswith(prefix)]
    return sum(1 for r in records if r.next_run)


async def test_an_inbox_read_from_before_a_continue_as_new_applies_nothing_twice() -> None:
    """Pins the doubled event (simulation seeds 126, 567): a process loading an instance
    read a message from its inbox, then waited; meanwhile another process (the
    partition's next holder) applied the message, the run continued as new and the
    message was deleted. The first process's copy, behind the log, reloaded the new run
    and applied the message again: the new run's first record names only the consumed
    messages still in the inbox, so it did not know it."""
    inner, clock = MemoryStore(), MockClock(T0)
    outside = durable.Client(inner, clock=clock)
    handle = await outside.start("ticker", [], instance_id="t")
    slow_store = Hold(inner)
    async with (
        durable.Runtime(_registry(), store=slow_store, clock=clock, max_resident_workflows=0) as a,
        durable.Runtime(_registry(), store=inner, clock=clock, max_resident_workflows=0) as b,
    ):
        await a.wait_idle()
        await b.wait_idle()
        assert not a._engine.is_resident("t")
        assert not b._engine.is_resident("t")
        # the load the first tick causes in process a reads the tick, and waits there
        slow_store.hold_at(lambda op, key: op == "get" and "/inbox/" in key, after=True)
        await a.client.get_handle("t").raise_event("tick", 1)
        await slow_store.entered.wait()
        # meanwhile process b takes both ticks: the run continues as new twice
        clock.advance(timedelta(seconds=1))  # (message ids sort by the time they are sent)
        await b.client.get_handle("t").raise_event("tick", 2)
        await _until(lambda: _runs(inner, "t") == 3)
        await b.wait_idle()
        slow_store.release.set()
        await a.wait_idle()
        clock.advance(timedelta(seconds=1))
        await b.client.get_handle("t").raise_event("tick", 3)
        await b.wait_idle()
        await a.wait_idle()
    assert await _applied(inner, "t", "tick") == [b"1", b"2", b"3"]
    assert await handle.result(timeout=5) == [1, 2, 3]


async def _outcome(rt: durable.Runtime, handle: durable.WorkflowHandle[Any]) -> Any:
    """The instance's output once the runtime has nothing left to do (its timers fired
    on the auto-advancing clock); None if it has not ended then."""
    for _ in range(50):
        await rt.wait_idle()
        state = await handle.describe()
        if state.status.is_terminal:
            return state.output
        await anyio.lowlevel.checkpoint()
    return None


async def _run_to_its_end(rt: durable.Runtime) -> durable.WorkflowHandle[Any]:
    """Start waiter ``w`` and let it end (with "old")."""
    handle = await rt.start("waiter", "a", instance_id="w")
    await rt.wait_idle()
    await handle.raise_event("go", "old")
    assert await _outcome(rt, handle) == "old"
    return handle


def decode_config(data: bytes) -> StoreConfig:
    return msgspec.json.decode(data, type=StoreConfig)


def _waiting() -> Registry:
    registry = Registry()

    @registry.workflow
    async def waiter(ctx: WorkflowContext, _: str) -> str:
        """Sleeps a second (a step to rerun from), then returns the first "go"."""
        await ctx.sleep(timedelta(seconds=1))
        got: str = await ctx.wait_for_event("go")
        return got

    return registry


async def test_an_event_raised_to_a_run_that_ends_before_it_lands_is_not_taken_by_a_reuse() -> None:
    """Pins an event taken by the wrong run (simulation seeds 179, 223, 259, 326, 348,
    355, 473, 511): an outside client read the run as current and wrote its event; the
    run was terminated and the instance started again (reuse) before the write landed.
    The reuse cleared the inbox before it began, so the event landed after and its new
    run took it. An event is for the start it was raised to: once that has ended, the
    event is dropped, never taken by a later start under the same id."""
    inner, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    outside_store = Hold(inner)
    async with durable.Runtime(_waiting(), store=inner, clock=clock) as rt:
        first = await rt.start("waiter", "a", instance_id="w")
        await rt.wait_idle()
        outside = durable.Client(outside_store, clock=clock)
        outside_store.hold_at(lambda op, key: op == "put" and "/inbox/" in key)
        async with anyio.create_task_group() as tg:
            tg.start_soon(outside.get_handle("w").raise_event, "go", "to-the-first-run")
            await outside_store.entered.wait()  # it read the run as current, and writes
            await first.terminate("replaced")
            with pytest.raises(durable.WorkflowFailed):
                await first.result(timeout=5)
            second = await rt.start("waiter", "b", instance_id="w", reuse=True)
            await rt.wait_idle()
            outside_store.release.set()
        await rt._engine.poll_wakeups()  # the runtime's next poll: it reads the inbox
        await rt.wait_idle()
        await second.raise_event("go", "to-the-second-run")
        assert await second.result(timeout=5) == "to-the-second-run"


async def test_a_reuse_that_loses_to_a_rerun_leaves_the_reruns_messages() -> None:
    """Pins an inbox message deleted before its run applied it (simulation seed 498): a
    reuse read the instance as ended and cleared its inbox, but a rerun had begun the
    next run meanwhile and an event had been raised to it; the reuse then lost the
    race for the seq, and the rerun's event was gone (the rerun waited for ever)."""
    inner, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    reusing = Hold(inner)
    async with durable.Runtime(_waiting(), store=inner, clock=clock) as rt:
        handle = await rt.start("waiter", "a", instance_id="w")
        await rt.wait_idle()
        await handle.raise_event("go", "old")
        assert await handle.result(timeout=5) == "old"
        timer = next(e for e in await handle.history() if type(e).__name__ == "TimerCreated")
        outside = durable.Client(reusing, clock=clock, registry=_waiting())
        # the reuse has read the old run as ended; it waits before clearing what it left
        reusing.hold_at(lambda op, key: op == "list" and key.startswith("memo/"))
        outcome: list[BaseException | None] = []

        async def reuse() -> None:
            try:
                await outside.start("waiter", "b", instance_id="w", reuse=True)
                outcome.append(None)
            except durable.DurableError as err:
                outcome.append(err)

        async with anyio.create_task_group() as tg:
            tg.start_soon(reuse)
            await reusing.entered.wait()
            rerun = await rt.client.rerun("w", timer.event_id)
            await rt.wait_idle()
            sender = durable.Client(inner, clock=clock)  # through the inbox and a wakeup
            await sender.get_handle("w").raise_event("go", "new")
            reusing.release.set()
        assert isinstance(outcome[0], durable.InstanceExistsError)
        await rt._engine.poll_wakeups()  # the runtime's next poll: it reads the inbox
        assert await _outcome(rt, rerun) == "new"


async def test_an_outside_client_first_on_a_store_leaves_the_partition_count_to_the_fleet() -> None:
    """Pins a fleet kept out by a client: an outside ``Client`` that was the first to use
    a store wrote the default partition count (16) there to ring a wakeup, and a fleet
    configured with 4 then refused to start (``StoreConfigError``). A client only reads
    the count; on a store no runtime has used yet it rings nothing, and the first
    runtime finds the instance in the log."""
    inner, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    outside = durable.Client(inner, clock=clock)
    await outside.start("waiter", "a", instance_id="w")
    fleet = durable.Fleet(partitions=4, owner="p0")
    async with durable.Runtime(_waiting(), store=inner, clock=clock, fleet=fleet) as rt:
        await rt.wait_idle()
        await outside.get_handle("w").raise_event("go", "ran")
        await rt._engine.poll_wakeups()
        assert await _outcome(rt, outside.get_handle("w")) == "ran"
    assert decode_config(inner._objects["config"][0]).partitions == 4


class FailOnce:
    """Wraps a store; the first call that ``fail_at`` matches fails transiently, before
    it reaches the store."""

    def __init__(self, inner: ObjectStore, fail_at: Callable[[str, str], bool]) -> None:
        self._inner = inner
        self.never_suspends = False
        self._match: Callable[[str, str], bool] | None = fail_at

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in _CALLS:
            return attr

        async def call(key: str, *args: Any) -> Any:
            if self._match is not None and self._match(name, key):
                self._match = None
                raise StoreError(f"injected: {name} {key}", key=key)
            return await attr(key, *args)

        return call


async def test_a_start_whose_wakeup_write_fails_once_is_still_announced() -> None:
    """Pins an acknowledged-looking start left unrun: an outside client wrote a new run,
    then its wakeup write failed once; the start failed, though the run was in the log,
    and the process that ran its partition never heard of it (until a lease moved). A
    wakeup is written again, like an inbox message, after a transient error."""
    inner, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    async with durable.Runtime(_waiting(), store=inner, clock=clock) as rt:
        flaky = FailOnce(inner, lambda op, key: op == "put" and key.startswith("wakeups/"))
        outside = durable.Client(flaky, clock=clock)
        handle = await outside.start("waiter", "a", instance_id="w")
        await rt._engine.poll_wakeups()  # the runtime's next poll: the bell was rung
        await rt.wait_idle()
        assert rt._engine.is_resident("w")
        await handle.raise_event("go", "ran")
        await rt._engine.poll_wakeups()
        assert await _outcome(rt, handle) == "ran"


async def test_a_reuse_started_here_while_the_old_run_ends_here_is_run() -> None:
    """Pins an acknowledged start that never ran: the runtime's own client started the
    instance again (reuse) while this runtime was finishing the old run's last turn, whose
    record had landed (so the start saw it ended). The new run was announced to the
    copy of the old run still in memory, which ignored it, then let go; nothing else
    ever loaded the new run."""
    inner, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    store = Hold(inner)
    async with durable.Runtime(_waiting(), store=store, clock=clock) as rt:
        first = await rt.start("waiter", "a", instance_id="w")
        await rt.wait_idle()
        # the terminating turn's record lands; the turn waits before it hears so
        store.hold_at(lambda op, key: op == "put_if_absent" and "/log/" in key, after=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.terminate, "replaced")
            await store.entered.wait()
            second = await rt.client.start("waiter", "b", instance_id="w", reuse=True)
            store.release.set()
        await rt._engine.poll_wakeups()  # the runtime's next poll
        await rt.wait_idle()
        assert (await second.describe()).status is not durable.WorkflowStatus.PENDING
        await second.raise_event("go", "ran")
        assert await _outcome(rt, second) == "ran"


async def test_a_start_between_two_racing_purges_is_refused_or_survives_them() -> None:
    """Pins an acknowledged start erased by a purge (and, had the purge stopped short of
    ``log/0``, a start written beside a purge's records, which never runs: simulation
    seed 171): two purges of one ended instance raced; the second finished the first's
    work and deleted ``log/0`` last, a new start then took ``log/0``, and the first
    purge, going on from where it paused, deleted the new run's records. A purge that
    finds another under way leaves it to finish (unless it has been under way so long
    that it was cut short)."""
    inner, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    async with durable.Runtime(_waiting(), store=inner, clock=clock) as rt:
        await _run_to_its_end(rt)
        slow_store = Hold(inner)
        slow = durable.Client(slow_store, clock=clock)
        slow_store.hold_at(lambda op, key: op in DELETES and key == log_key("w", 1))
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow.purge, "w")
            await slow_store.entered.wait()
            await durable.Client(inner, clock=clock).purge("w")
            try:
                second: durable.WorkflowHandle[Any] | None = await rt.client.start(
                    "waiter", "b", instance_id="w"
                )
            except durable.InstanceExistsError:
                second = None  # refused while the first purge is under way
            slow_store.release.set()
        if second is None:
            return  # nothing was promised
        await _second_run_ends(rt, inner, second)


async def _second_run_ends(
    rt: durable.Runtime, inner: MemoryStore, second: durable.WorkflowHandle[Any]
) -> None:
    """The second start of ``w`` (with "b") runs to its end, and the log holds it whole."""
    await second.raise_event("go", "new")
    assert await _outcome(rt, second) == "new"
    run = await load_run(inner, "w")
    assert run is not None, sorted(k for k in inner._objects if "/w/" in k)
    assert bytes(run.started.input) == b'"b"'
    assert run.status is durable.WorkflowStatus.COMPLETED


async def test_a_meta_write_after_a_purge_does_not_bring_the_purged_run_back() -> None:
    """Pins a start after a purge that never ran (simulation seeds 263, 317): the write
    of an ended run's meta failed, the instance was purged, and the retry of that write
    found the meta gone and wrote it again. A new start under the id then stood beside
    the purged run's meta, which said the instance had ended: no runtime loaded it, and
    a client sent it nothing. A meta deleted since it was read is never written again."""
    inner, clock = MemoryStore(), MockClock(T0, auto_advance=True)
    async with durable.Runtime(_waiting(), store=inner, clock=clock) as rt:
        await _run_to_its_end(rt)
        found = await read_meta(inner, "w")
        assert found is not None
        ended, etag = found
        await rt.client.purge("w")
        with pytest.raises(ObjectNotFoundError):  # the retry of the ended run's meta
            await write_meta(inner, ended, etag)
        second = await rt.client.start("waiter", "b", instance_id="w")
        await second.raise_event("go", "new")
        assert await _outcome(rt, second) == "new"
