"""Issue 13, items 5 and 6: an instance whose workflow is not registered here (parked)
still obeys terminate, suspend, resume and purge; one bad object in the store fails
that instance or that call, never the whole runtime. Also: the ``durable sweep`` and
``durable terminate`` commands do what they say."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

import durable
from durable import WorkflowContext
from durable._core._events import TurnStarted, WorkflowResumed, WorkflowSuspended
from durable._errors import StoreError
from durable.cli import main as cli
from durable.store import LocalStore, MemoryStore, ObjectStore

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

_WAITING = "waiting for a worker that runs it"


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """A fresh store: in memory, or the ``file://`` local store."""
    if request.param == "memory":
        return MemoryStore()
    return LocalStore(tmp_path / "store", url=f"file://{tmp_path / 'store'}")


def unrelated() -> durable.Registry:
    """A registry that knows some workflow, but not ``ghost``."""
    registry = durable.Registry()

    @registry.workflow
    async def other(ctx: WorkflowContext) -> None:
        pass

    return registry


def with_ghost() -> durable.Registry:
    """The registry of a worker that has ``ghost``: it waits for "go", returns its data."""
    registry = durable.Registry()

    @registry.workflow
    async def ghost(ctx: WorkflowContext, prefix: str) -> str:
        await ctx.call_activity(step, prefix)
        data: str = await ctx.wait_for_event("go")
        return f"{prefix}:{data}"

    @registry.activity
    async def step(ctx: durable.ActivityContext, prefix: str) -> str:
        return prefix

    return registry


@asynccontextmanager
async def runtime(
    registry: durable.Registry, store: ObjectStore, clock: durable.MockClock
) -> AsyncIterator[durable.Runtime]:
    async with durable.Runtime(registry, store=store, clock=clock, poll_interval=1.0) as rt:
        yield rt


async def until(
    rt: durable.Runtime, clock: durable.MockClock, check: Callable[[], Any], what: str
) -> None:
    """Move the MockClock a second at a time (the runtime polls for messages from
    outside once a second) until ``check()`` is true."""
    for _ in range(60):
        await rt._engine.wait_idle()
        if await check():
            return
        clock.advance(timedelta(seconds=1))
    raise AssertionError(f"never happened: {what}")


async def parked(handle: durable.WorkflowHandle[Any]) -> bool:
    return _WAITING in (await handle.describe()).reason


@pytest.mark.parametrize("steer", ["runtime", "client"])
async def test_parked_instance_can_be_terminated_then_purged(
    store: ObjectStore, steer: str
) -> None:
    """Bug: an instance whose workflow is not registered in the runtime that owns it
    never applied a terminate (it waited for code it does not need), so it could not
    be purged either."""
    clock = durable.MockClock(auto_advance=True)
    async with runtime(unrelated(), store, clock) as rt:
        outside = durable.Client(store, clock=clock)
        started = await outside.start("ghost", "a", instance_id="ghost-1")
        await until(rt, clock, lambda: parked(started), "the instance parks")
        steering = rt.client if steer == "runtime" else outside
        handle = steering.get_handle("ghost-1")
        await handle.terminate("no code for it here")
        terminated = durable.WorkflowStatus.TERMINATED
        await until(rt, clock, lambda: _status_is(handle, terminated), "the terminate")
        with pytest.raises(durable.WorkflowFailed) as failed:
            await handle.result()
        assert failed.value.failure.type == "Terminated"
        assert failed.value.failure.message == "no code for it here"
        assert (await handle.describe()).reason == ""  # it waits for nothing any more
        await steering.purge("ghost-1")
        assert await store.list("instances") == []
        assert not rt._engine.is_resident("ghost-1")


@pytest.mark.parametrize("code_ran", [False, True])
async def test_parked_instance_is_suspended_and_resumed_and_the_code_replays_it(
    store: ObjectStore, code_ran: bool
) -> None:
    """Bug: suspend and resume never reached a parked instance. They now change its
    status at once and are recorded, and a worker that has the code later replays
    them and finishes the run: both for a run whose code never took a turn and for
    one that ran elsewhere before."""
    clock = durable.MockClock(auto_advance=True)
    outside = durable.Client(store, clock=clock)
    handle = outside.get_handle("ghost-2")
    if code_ran:  # a worker with the code takes the first turns, then stops
        async with runtime(with_ghost(), store, clock) as rt:
            await rt.client.start("ghost", "b", instance_id="ghost-2")
            await until(rt, clock, lambda: _has_scheduled(handle), "the activity is scheduled")
            await rt._engine.wait_idle()
    else:
        await outside.start("ghost", "b", instance_id="ghost-2")
    resumed_as = durable.WorkflowStatus.RUNNING if code_ran else durable.WorkflowStatus.PENDING

    async with runtime(unrelated(), store, clock) as rt:
        if not code_ran:  # a run that took turns before parks at its next message
            await until(rt, clock, lambda: parked(handle), "the instance parks")
        await handle.suspend("hold on")
        suspended = durable.WorkflowStatus.SUSPENDED
        await until(rt, clock, lambda: _status_is(handle, suspended), "the suspend")
        await handle.raise_event("go", "now")  # kept for the code: not applied here
        await handle.resume("go on")
        await until(rt, clock, lambda: _status_is(handle, resumed_as), "resume")
        assert (await handle.describe()).reason.startswith(_WAITING)
        await rt._engine.wait_idle()

    history = await handle.history()
    kinds = [type(e) for e in history]
    assert WorkflowSuspended in kinds
    assert WorkflowResumed in kinds
    if not code_ran:
        assert TurnStarted not in kinds  # the code took no turn: none recorded

    async with runtime(with_ghost(), store, clock) as rt:
        assert await rt.client.get_handle("ghost-2").result(timeout=timedelta(minutes=1)) == (
            "b:now"
        )


async def _status_is(handle: durable.WorkflowHandle[Any], status: durable.WorkflowStatus) -> bool:
    return (await handle.describe()).status is status


async def _has_scheduled(handle: durable.WorkflowHandle[Any]) -> bool:
    try:
        history = await handle.history()
    except durable.InstanceNotFoundError:
        return False
    return any(type(e).__name__ == "ActivityCompleted" for e in history)


# -- the command line --------------------------------------------------------------


def test_cli_terminate_terminates(tmp_path: Path) -> None:
    """Mutant: ``durable terminate`` turned into a no-op passed every test."""
    url = f"file://{tmp_path / 'store'}"

    async def start() -> None:
        async with durable.Client(url, clock=durable.MockClock()) as client:
            await client.start("ghost", "c", instance_id="ghost-3")

    async def outcome() -> durable.WorkflowState:
        clock = durable.MockClock(auto_advance=True)
        async with durable.Runtime(with_ghost(), store=url, clock=clock) as rt:
            await rt._engine.wait_idle()  # the inbox was read at start
            return await rt.client.get_handle("ghost-3").describe()

    anyio.run(start)
    cli(["terminate", "ghost-3", "--store", url, "--reason", "from the shell"])
    ended = anyio.run(outcome)
    assert ended.status is durable.WorkflowStatus.TERMINATED
    assert ended.failure is not None
    assert ended.failure.message == "from the shell"


def test_cli_sweep_deletes_only_memo_older_than_the_retention(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Mutant: ``durable sweep --retention`` turned into a no-op passed every test."""
    url = f"file://{tmp_path / 'store'}"
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)  # before any day the test may run on
    far_ahead = datetime(2200, 1, 1, tzinfo=UTC)  # after any

    async def fill() -> None:
        memo = durable.MemoStore(url)
        for instance_id, ended in (("old", long_ago), ("recent", far_ahead)):
            await memo.view(instance_id, 0).put("price", 42)
            await memo.mark_terminal(instance_id, ended)
        await memo.store.close()

    async def left() -> tuple[Any, Any, list[str]]:
        memo = durable.MemoStore(url)
        try:
            old = await memo.view("old", 0).get("price")
            recent = await memo.view("recent", 0).get("price")
            return old, recent, await memo.store.list("memo-terminal")
        finally:
            await memo.store.close()

    anyio.run(fill)
    cli(["sweep", "--retention", "7d", "--store", url])
    assert capsys.readouterr().out == "swept the memo of 1 ended instance(s)\n"
    assert anyio.run(left) == (None, 42, ["recent"])


# -- one bad object ----------------------------------------------------------------

_TOO_LONG = "kunde-" + "é" * 130  # 136 characters, 266 bytes: over a file name's 255


def family() -> durable.Registry:
    """A parent that starts ``kid`` under a given id and reports how it went; the kid
    waits for "go"."""
    registry = durable.Registry()

    @registry.workflow
    async def kid(ctx: WorkflowContext) -> str:
        go: str = await ctx.wait_for_event("go")
        return go

    @registry.workflow
    async def parent(ctx: WorkflowContext, kid_id: str) -> str:
        try:
            got: str = await ctx.call_workflow(kid, instance_id=kid_id)
        except durable.WorkflowFailed as err:
            return f"kid failed: {err.failure.message}"
        except durable.InvalidInstanceIdError as err:
            return f"kid refused: {err}"
        return f"kid said {got}"

    @registry.workflow
    async def solo(ctx: WorkflowContext) -> str:
        return "fine"

    return registry


async def test_ids_are_limited_by_their_utf8_bytes(store: ObjectStore) -> None:
    """Bug: an id was checked by its characters only: ``"kunde-" + "é" * 130`` passed
    as a child id and the file system refused its directory, which took the runtime
    down at every start. The limit now counts UTF-8 bytes, and the longest id allowed
    works for every key the runtime makes of it (log, inbox, memo, terminal marker)."""
    with pytest.raises(durable.InvalidInstanceIdError, match="266 bytes"):
        durable.Client(store).get_handle(_TOO_LONG)
    longest = "é" * 123  # 246 bytes
    registry = family()

    @registry.activity
    async def remember(ctx: durable.ActivityContext) -> None:
        await ctx.memo.put("é" * 123, 1)

    @registry.workflow
    async def memoised(ctx: WorkflowContext) -> None:
        await ctx.call_activity(remember)

    clock = durable.MockClock(auto_advance=True)
    async with durable.Runtime(
        registry, store=store, clock=clock, memo_retention=timedelta(days=1)
    ) as rt:
        with pytest.raises(durable.InvalidInstanceIdError, match="266 bytes"):
            await rt.start("solo", instance_id=_TOO_LONG)
        refused = await rt.start("parent", _TOO_LONG, instance_id="p-long")
        assert "266 bytes" in await refused
        await rt.start("parent", longest, instance_id=longest[:-1] + "p")
        await rt._engine.wait_idle()  # the kid has started
        await rt.client.get_handle(longest).raise_event("go", "hello")
        assert await rt.client.get_handle(longest[:-1] + "p") == "kid said hello"
        await (await rt.start(memoised, instance_id=longest, reuse=True))
    async with durable.Runtime(registry, store=store, clock=clock) as rt:  # starts again
        assert await (await rt.start("solo")) == "fine"


@pytest.mark.parametrize("when", ["recovery", "start"])
async def test_a_corrupt_child_log_fails_the_child_not_the_runtime(
    store: ObjectStore, when: str
) -> None:
    """Bug: junk in a child's log record killed the runtime, at every start: the
    parent's check of its child (on recovery) or its start of a child under that id
    re-raised the decode error inside the engine's task group. Now the child fails,
    the parent hears why, and everything else runs."""
    clock = durable.MockClock(auto_advance=True)
    async with durable.Runtime(family(), store=store, clock=clock) as rt:
        await rt.start("parent", "kid-1", instance_id="p-1")
        await rt._engine.wait_idle()  # the kid runs and waits for "go"
    await store.put("instances/kid-1/log/000000000000", b"\x00 not a turn record")
    async with durable.Runtime(family(), store=store, clock=clock) as rt:
        if when == "recovery":
            parent = rt.client.get_handle("p-1")
        else:
            parent = await rt.start("parent", "kid-1", instance_id="p-2")
        said = await parent.result(timeout=timedelta(minutes=1))
        assert "instances/kid-1/log/000000000000" in said
        assert said.startswith("kid failed: ") or when == "start"
        assert await (await rt.start("solo")) == "fine"
        if when == "recovery":
            kid = await rt.client.get_handle("kid-1").describe()
            assert kid.status is durable.WorkflowStatus.FAILED
            assert kid.failure is not None
            assert "corrupt turn record" in kid.failure.message


class RefusingStore(MemoryStore):
    """A store that refuses, for good, every write of a key that starts with
    ``refused`` (as a store refuses a key too long for it, or a path it may not
    write)."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused

    def _check(self, key: str) -> None:
        if key.startswith(self.refused):
            raise StoreError(f"cannot create {key!r}: refused", key=key, transient=False)

    async def put(self, key: str, data: bytes) -> str:
        self._check(key)
        return await super().put(key, data)

    async def put_if_absent(self, key: str, data: bytes) -> str:
        self._check(key)
        return await super().put_if_absent(key, data)


@pytest.mark.parametrize(
    "refused", ["instances/kid-x/", "instances/kid-x/log/000000000001"], ids=["start", "turn"]
)
async def test_a_child_the_store_refuses_fails_in_its_parent(refused: str) -> None:
    """Bug: a permanent store error on a child's records (a key the store will never
    take) was re-raised in the engine's task group and ended the runtime (its start),
    or was retried forever (its turn's commit). The child now fails and its parent
    gets ``ChildWorkflowErrored`` naming the reason; the runtime goes on."""
    store = RefusingStore(refused)
    clock = durable.MockClock(auto_advance=True)
    async with durable.Runtime(family(), store=store, clock=clock) as rt:
        parent = await rt.start("parent", "kid-x", instance_id="p-x")
        said = await parent.result(timeout=timedelta(minutes=1))
        key = "instances/kid-x/log/00000000000" + ("0" if refused.endswith("/") else "1")
        assert said == f"kid failed: cannot create {key!r}: refused"
        assert await (await rt.start("solo")) == "fine"
