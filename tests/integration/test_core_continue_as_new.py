"""Continue-as-new loses nothing and stays small (issue 13, items 1 and 7).

Everything that arrives after the event on which a run continues as new belongs to the
new run; events the old run had received but not consumed carry over; and the first
record of a new run does not grow with the number of runs before it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from msgspec import Raw

import durable
from durable import MockClock, Registry, WorkflowContext, WorkflowStatus
from durable._core._codec import JsonCodec
from durable._core._events import (
    ContinuedAsNew,
    EventRaised,
    TurnStarted,
    WorkflowResumed,
    WorkflowStarted,
    WorkflowSuspended,
)
from durable._core._replay import WorkflowRun
from durable._errors import StoreError
from durable._log._instances import send_message
from durable._log._records import decode_record
from durable.store import MemoryStore, ObjectStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def workflows() -> Registry:
    """The workflows of these tests: each continues as new on an event."""
    registry = Registry()

    @registry.workflow
    async def relay(ctx: WorkflowContext, n: int) -> str:
        """Run 0 waits for "go" and continues; run 1 returns the first "data"."""
        if n == 0:
            await ctx.wait_for_event("go")
            ctx.continue_as_new(1)
        data: str = await ctx.wait_for_event("data")
        return data

    @registry.workflow
    async def carrier(ctx: WorkflowContext, n: int) -> list[str]:
        """Run 0 continues on "go"; run 1 returns the "early" events the first run held."""
        if n == 0:
            await ctx.wait_for_event("go")
            ctx.continue_as_new(1)
        first: str = await ctx.wait_for_event("early")
        second: str = await ctx.wait_for_event("early")
        return [first, second]

    @registry.workflow
    async def ticker(ctx: WorkflowContext, n: int) -> int:
        """Each run takes one "tick" and continues with the count so far."""
        step: int = await ctx.wait_for_event("tick")
        ctx.continue_as_new(n + step)

    @registry.workflow
    async def two_step(ctx: WorkflowContext, n: int) -> str:
        """Run 0 takes an "a", then continues on "go"; run 1 returns the next "a"."""
        if n == 0:
            await ctx.wait_for_event("a")
            await ctx.wait_for_event("go")
            ctx.continue_as_new(1)
        got: str = await ctx.wait_for_event("a")
        return got

    return registry


async def send(handle: durable.WorkflowHandle[Any], step: str) -> None:
    """One outside operation: suspend, resume, or raise the event named ``step``."""
    if step in ("suspend", "resume"):
        await getattr(handle, step)(step)
    else:
        await handle.raise_event(step, "payload" if step == "data" else None)


@pytest.mark.parametrize(
    "batch",
    [["go", "data"], ["suspend", "go", "data", "resume"], ["go", "suspend", "data"]],
    ids=["go-data", "suspend-go-data-resume", "go-suspend-data"],
)
async def test_events_after_the_trigger_in_one_batch_reach_the_new_run(batch: list[str]) -> None:
    """Bug: with "go" (the trigger) and more operations in one batch, those after the
    trigger were marked consumed by the old run: "data" never reached the new run, which
    waited forever, and a suspend after the trigger did not suspend the new run. (With
    suspend-go-data-resume, the resume replays the held "go" and "data".)"""
    async with durable.Runtime(workflows(), store=MemoryStore(), clock=MockClock(T0)) as rt:
        handle = await rt.start("relay", 0, instance_id="r")
        await rt.wait_idle()
        for step in batch:  # all land in one turn
            await send(handle, step)
        await rt.wait_idle()
        if batch[-1] != "resume" and "suspend" in batch:  # the new run was suspended
            assert (await handle.describe()).status is WorkflowStatus.SUSPENDED
            await handle.resume("go on")
            await rt.wait_idle()
        state = await handle.describe()
        assert state.status is WorkflowStatus.COMPLETED, state
        assert state.output == "payload"


class DiesAfterContinue:
    """A store that stops answering (as a crashed process would) once a record that
    continues a run as new is committed."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner
        self.dead = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name in ("url", "close"):
            return attr

        async def call(*args: Any) -> Any:
            if self.dead:
                raise StoreError(f"{name}: the process is gone", transient=True)
            return await attr(*args)

        return call

    async def put_if_absent(self, key: str, data: bytes) -> str:
        if self.dead:
            raise StoreError("put_if_absent: the process is gone", transient=True)
        etag = await self._inner.put_if_absent(key, data)
        if "/log/" in key and b"continued_as_new" in data:
            self.dead = True
        return etag


async def test_events_after_the_trigger_survive_a_crash_after_the_commit() -> None:
    """Bug: the events after the trigger were recorded as consumed by the old run's last
    record, so a process that stopped right after that commit left them lost for good."""
    inner, clock = MemoryStore(), MockClock(T0)
    dying = DiesAfterContinue(inner)
    async with durable.Runtime(workflows(), store=dying, clock=clock) as rt:
        handle = await rt.start("relay", 0, instance_id="r")
        await rt.wait_idle()
        await handle.raise_event("go")
        await handle.raise_event("data", "payload")
        await rt.wait_idle()
        assert dying.dead
    async with durable.Runtime(workflows(), store=inner, clock=clock) as rt:
        handle = rt.client.get_handle("r")
        await rt.wait_idle()
        state = await handle.describe()
        assert state.status is WorkflowStatus.COMPLETED, state
        assert state.output == "payload"


def test_the_old_run_records_only_what_it_took() -> None:
    """The old run's history holds the events it took before it continued; the rest are
    reported untaken, and that history replays to the same continue-as-new."""
    registry = workflows()
    definition = registry.get_workflow("relay")
    started = WorkflowStarted(event_id=0, timestamp=T0, name="relay", input=b"0")  # type: ignore[arg-type]
    run = WorkflowRun("r", definition, registry, JsonCodec())
    run.apply([started], replaying=True)
    batch = [
        TurnStarted(event_id=1, timestamp=T0),
        WorkflowSuspended(event_id=2, timestamp=T0),
        EventRaised(event_id=3, timestamp=T0, name="go"),
        EventRaised(event_id=4, timestamp=T0, name="data", input=b'"x"'),  # type: ignore[arg-type]
        WorkflowResumed(event_id=5, timestamp=T0),
    ]
    actions = run.apply(batch, replaying=False)
    assert [type(a).__name__ for a in actions] == ["ContinueAsNew"]
    assert run.untaken == [batch[3]]
    taken = [e for e in batch if e not in run.untaken]
    again = WorkflowRun("r", definition, registry, JsonCodec())
    again.apply([started, *taken, ContinuedAsNew(event_id=5, input=b"1")], replaying=True)  # type: ignore[arg-type]
    again.check_complete()


async def test_events_buffered_before_the_trigger_carry_over() -> None:
    """Mutant: continue-as-new dropping the events the run had received but not waited
    for. ``ContinuedAsNew.carryover`` promises they reach the new run, in order, also
    when the old run was replayed from the log in between."""
    store, clock = MemoryStore(), MockClock(T0)
    async with durable.Runtime(workflows(), store=store, clock=clock) as rt:
        handle = await rt.start("carrier", 0, instance_id="c")
        await rt.wait_idle()
        await handle.raise_event("early", "one")  # buffered: the run waits for "go"
        await rt.wait_idle()
    async with durable.Runtime(workflows(), store=store, clock=clock) as rt:
        handle = rt.client.get_handle("c")
        await rt.wait_idle()
        await handle.raise_event("early", "two")  # in the trigger's batch, before it
        await handle.raise_event("go")
        await rt.wait_idle()
        state = await handle.describe()
        assert state.status is WorkflowStatus.COMPLETED, state
        assert state.output == ["one", "two"]
        history = await handle.history()
    carried = [e for e in history if isinstance(e, EventRaised)]
    assert [e.name for e in carried] == ["early", "early"]


async def largest_object(store: ObjectStore, instance_id: str) -> int:
    """The size of the largest object under ``instances/{id}/``."""
    root = f"instances/{instance_id}"
    keys = [f"{root}/meta"]
    for folder in ("log", "inbox"):
        keys += [f"{root}/{folder}/{name}" for name in await store.list(f"{root}/{folder}")]
    return max([len(await store.get(key)) for key in keys])


async def test_the_largest_object_stays_small_after_400_runs() -> None:
    """Bug: each new run's first record copied every message id the instance had ever
    consumed (36 KB after 1,000 runs): it names only those that may still be in the
    inbox."""
    store = MemoryStore()
    async with durable.Runtime(workflows(), store=store, clock=MockClock(T0)) as rt:
        handle = await rt.start("ticker", 0, instance_id="t")
        await rt.wait_idle()
        for _ in range(400):
            await handle.raise_event("tick", 1)
            await rt.wait_idle()
        state = await handle.describe()
        assert (state.status, state.input) == (WorkflowStatus.PENDING, 400) or (
            state.status is WorkflowStatus.RUNNING and state.input == 400
        ), state
    assert await largest_object(store, "t") < 4096


class DeleteFails:
    """A store on which deleting an inbox message always fails."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def delete(self, key: str) -> None:
        if "/inbox/" in key:
            raise StoreError(f"delete of {key!r} failed", key=key, transient=True)
        await self._inner.delete(key)


async def test_a_message_whose_delete_failed_is_never_applied_twice() -> None:
    """The guarantee the copied ids gave, kept with the bound: a consumed message left in
    the inbox (its delete failed) is applied neither again to its run nor to a later run,
    across continue-as-new and restarts that read the inbox again."""
    inner, clock = MemoryStore(), MockClock(T0)
    store = DeleteFails(inner)
    ticks = 0
    for _ in range(3):
        async with durable.Runtime(workflows(), store=store, clock=clock) as rt:
            handle = (
                await rt.start("ticker", 0, instance_id="t")
                if ticks == 0
                else rt.client.get_handle("t")
            )
            await rt.wait_idle()
            for _ in range(3):
                await handle.raise_event("tick", 1)
                ticks += 1
                await rt.wait_idle()
                await rt._engine.poll_wakeups()  # reads the inbox again
                await rt.wait_idle()
                assert (await handle.describe()).input == ticks
    assert len(await inner.list("instances/t/inbox")) == ticks  # none could be deleted
    for name in sorted(await inner.list("instances/t/log"), reverse=True):
        key = f"instances/t/log/{name}"
        if (record := decode_record(await inner.get(key), key)).next_run:
            break  # the record that starts the current run
    assert len(record.consumed) == ticks  # ... so it names them all


class HoldsOneRead:
    """A store that, once armed, reads one key and then holds the answer until released:
    the read saw the object, the caller sees it only later."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner
        self.never_suspends = False
        self.key = ""
        self.read = anyio.Event()
        self.release = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _held(self, key: str) -> None:
        if key == self.key:
            self.key = ""
            self.read.set()
            await self.release.wait()

    async def get(self, key: str) -> bytes:
        data = await self._inner.get(key)
        await self._held(key)
        return data

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        found = await self._inner.get_with_etag(key)
        await self._held(key)
        return found


@pytest.mark.parametrize("late", ["scan", "announce"])
async def test_a_late_copy_of_a_consumed_message_is_not_applied_to_the_new_run(late: str) -> None:
    """With the bound, a new run no longer names the old run's deleted messages. A copy
    of such a message read before its delete, and queued only after the new run began,
    was applied to the new run: from an inbox scan held across the new run ("scan"), or
    announced to an instance not in memory whose load was held meanwhile while another
    load read it ("announce"; now the other load joins the held one instead)."""
    inner, clock = MemoryStore(), MockClock(T0)
    store = HoldsOneRead(inner)
    async with durable.Runtime(workflows(), store=store, clock=clock) as rt:
        eng = rt._engine
        handle = await rt.start("two_step", 0, instance_id="s")
        await rt.wait_idle()
        if late == "announce":
            eng.forget("s")  # not in memory here (as if evicted)
        message = await send_message(
            inner, "s", "m-first", EventRaised(name="a", input=Raw(b'"old"'))
        )
        async with anyio.create_task_group() as tg:
            if late == "scan":
                store.key = "instances/s/inbox/m-first"
                tg.start_soon(eng._scan_inbox, eng.local("s"))  # reads m-first, then is held
                await store.read.wait()
                eng.deliver("s", message.event, msg_id=message.id)  # its announcement
            else:
                store.key = "instances/s/meta"
                tg.start_soon(eng.announce_message, "s", message)  # its load is held
                await store.read.wait()
                # another load joins the one under way (one read of an inbox at a time),
                # so no copy is read beside it: the held load goes on and reads m-first
                assert await eng.recover("s") is None
                store.release.set()
            await anyio.wait_all_tasks_blocked()  # m-first consumed by run 0, and deleted
            await handle.raise_event("go")  # run 0 continues as new
            await anyio.wait_all_tasks_blocked()  # (wait_idle would wait for the held read)
            assert (await handle.describe()).input == 1
            store.release.set()  # the late copy arrives, in run 1
        await rt.wait_idle()
        state = await handle.describe()
        assert (state.status, state.input) == (WorkflowStatus.RUNNING, 1), state
        await handle.raise_event("a", "new")
        await rt.wait_idle()
        assert (await handle.describe()).output == "new"
