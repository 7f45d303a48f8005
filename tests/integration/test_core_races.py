"""Races between the operations that end, reuse and clean up an instance: purge, start
with ``reuse=True``, rerun and the memo sweeper. Each race is forced by a store wrapper
that pauses one call at a chosen point and runs the other operation there."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from msgspec import Raw

import durable
from durable import Registry, WorkflowContext
from durable._log._reader import load_run
from durable.store import MemoryStore, ObjectStore

sys.path.insert(0, str(Path(__file__).parent))
from test_memo import paying_registry

pytestmark = pytest.mark.anyio

T0 = datetime(2024, 1, 1, tzinfo=UTC)


class Pausing:
    """Wraps a store; the first call that ``pause_at`` matches waits, before it reaches the
    store, until ``release`` is set (``entered`` tells the test it is waiting)."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner
        self.never_suspends = False
        self._match: Callable[[str, str], bool] | None = None
        self.entered = anyio.Event()
        self.release = anyio.Event()

    def pause_at(self, match: Callable[[str, str], bool]) -> None:
        self._match = match

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in ("get", "get_with_etag", "put", "put_if_absent", "put_if_match",
                        "list", "delete", "delete_prefix"):  # fmt: skip
            return attr

        async def call(key: str, *args: Any) -> Any:
            if self._match is not None and self._match(name, key):
                self._match = None
                self.entered.set()
                await self.release.wait()
            return await attr(key, *args)

        return call


def _is_deletion(op: str, key: str) -> bool:
    return op in ("delete", "delete_prefix")


def _is_reuse_write(op: str, key: str) -> bool:
    return op == "put_if_absent" and "/log/" in key and not key.endswith("/log/000000000000")


def _registry() -> Registry:
    reg = Registry()

    @reg.workflow
    async def echo(ctx: WorkflowContext, value: str) -> str:
        return value

    return reg


async def _ended(store: ObjectStore, clock: durable.MockClock, instance_id: str) -> None:
    async with durable.Runtime(_registry(), store=store, clock=clock) as rt:
        assert await rt.start("echo", "old", instance_id=instance_id) is not None
        assert await rt.client.get_handle(instance_id).result() == "old"


async def _attempt(
    outcome: dict[str, BaseException | None], name: str, call: Awaitable[Any]
) -> None:
    """Run one side of a race; record its error, or ``None`` if it was acknowledged."""
    try:
        await call
        outcome[name] = None
    except durable.DurableError as err:
        outcome[name] = err


async def _assert_whole(store: ObjectStore, clock: durable.MockClock, instance_id: str) -> None:
    """The acknowledged new run is in the log, read from its start as after losing meta,
    and runs to its end."""
    run = await load_run(store, instance_id)
    assert run is not None, "the acknowledged run was erased by the purge"
    assert bytes(run.started.input) == b'"new"', run.started
    async with durable.Runtime(_registry(), store=store, clock=clock) as rt:
        assert await rt.client.get_handle(instance_id).result() == "new"


def _purge(client: durable.Client) -> Awaitable[Any]:
    return client.purge("x")


def _reuse(client: durable.Client) -> Awaitable[Any]:
    return client.start("echo", "new", instance_id="x", reuse=True)


async def _race(
    match: Callable[[str, str], bool],
    paused: tuple[str, Callable[[durable.Client], Awaitable[Any]]],
    meanwhile: tuple[str, Callable[[durable.Client], Awaitable[Any]]],
) -> tuple[MemoryStore, durable.MockClock, dict[str, BaseException | None]]:
    """End instance ``x``, then run ``paused`` until its call that ``match`` picks, run
    ``meanwhile`` to its end there, and let ``paused`` go on; return what each got."""
    inner, clock = MemoryStore(), durable.MockClock(T0)
    await _ended(inner, clock, "x")
    pausing = Pausing(inner)
    outcome: dict[str, BaseException | None] = {}
    pausing.pause_at(match)
    async with anyio.create_task_group() as tg:
        call = paused[1](durable.Client(pausing, clock=clock))
        tg.start_soon(_attempt, outcome, paused[0], call)
        await pausing.entered.wait()
        await _attempt(outcome, meanwhile[0], meanwhile[1](durable.Client(inner, clock=clock)))
        pausing.release.set()
    return inner, clock, outcome


async def test_a_reuse_during_a_purge_is_refused_or_survives() -> None:
    """Bug 12: purge checked "ended", then deleted the whole prefix; a reuse acknowledged
    in between was erased (its handle raised InstanceNotFoundError)."""
    # purge paused after its check, before its first deletion
    inner, clock, outcome = await _race(_is_deletion, ("purge", _purge), ("start", _reuse))
    if outcome["start"] is None:  # acknowledged: it must survive whole
        assert isinstance(outcome["purge"], durable.InstanceRunningError), outcome
        await _assert_whole(inner, clock, "x")
    else:
        assert isinstance(outcome["start"], durable.InstanceExistsError), outcome
        assert await inner.list("instances") == []


async def test_a_purge_during_a_reuse_is_refused_or_the_reuse_is() -> None:
    """Bug 12, the other order: a reuse that read the ended run, paused before writing its
    first record while a purge ran to the end, wrote its run into the emptied directory
    and was acknowledged, with no ``log/0``: lost on the next read without meta."""
    # the reuse paused after its check, before its write
    inner, clock, outcome = await _race(_is_reuse_write, ("start", _reuse), ("purge", _purge))
    if outcome["start"] is None:
        await _assert_whole(inner, clock, "x")
    else:
        assert await inner.list("instances") in ([], ["x"]), await inner.list("instances")
        assert await load_run(inner, "x") is None
        # the id is free again: a fresh start gets a clean log
        await durable.Client(inner, clock=clock).start("echo", "new", instance_id="x")
        await _assert_whole(inner, clock, "x")


async def test_a_purge_cut_short_keeps_starts_out_until_the_next_purge_ends_it() -> None:
    """Bug 12: a purge stopped part-way (here cancelled at its first deletion) must leave
    no log a start could land in; purging again, once the cut-short purge has been under
    way for the takeover time, finishes the job and frees the id (sooner, the purge under
    way is left to finish: see test_core_reuse_purge)."""
    inner, clock = MemoryStore(), durable.MockClock(T0)
    await _ended(inner, clock, "x")
    paused = Pausing(inner)
    paused.pause_at(_is_deletion)
    async with anyio.create_task_group() as tg:
        tg.start_soon(durable.Client(paused, clock=clock).purge, "x")
        await paused.entered.wait()
        tg.cancel_scope.cancel()  # the purging process dies here
    client = durable.Client(inner, clock=clock)
    with pytest.raises(durable.InstanceExistsError):
        await client.start("echo", "new", instance_id="x", reuse=True)
    with pytest.raises(durable.InstanceNotFoundError):
        await client.get_handle("x").describe()
    await client.purge("x")  # under way: left to the purge that began it
    assert await inner.list("instances") == ["x"]
    clock.advance(timedelta(minutes=1))
    await client.purge("x")
    assert await inner.list("instances") == []
    await client.start("echo", "new", instance_id="x")
    await _assert_whole(inner, clock, "x")


# -- the memo sweeper against a reuse (bug 11) -------------------------------------------


@pytest.mark.parametrize("restart", ["reuse", "rerun"])
async def test_a_sweep_racing_a_new_run_keeps_its_memo(restart: str) -> None:
    """Bug 11: the sweeper read an expired terminal marker, then deleted the whole memo of
    the instance; a reuse (or rerun) whose activity wrote memo in between lost it, so the
    retry paid again."""
    inner, clock = MemoryStore(), durable.MockClock(T0)
    paid: list[str] = []
    opts: dict[str, Any] = {
        "memo_retention": timedelta(hours=1), "memo_sweep_interval": timedelta(days=999)
    }  # fmt: skip
    async with durable.Runtime(paying_registry(paid), store=inner, clock=clock, **opts) as rt:
        handle = await rt.start("pay", 1, instance_id="x")
        await anyio.wait_all_tasks_blocked()
        clock.advance(timedelta(seconds=1))  # the retry
        assert await handle == "ch-x-0"
        clock.advance(timedelta(hours=2))  # the marker expires
        paused = Pausing(inner)
        paused.pause_at(_is_deletion)  # the sweeper read the marker, not deleted yet
        sweeper = durable.MemoStore(paused)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sweeper.sweep, clock.now(), timedelta(hours=1))
            await paused.entered.wait()
            if restart == "reuse":
                handle = await rt.start("pay", 2, instance_id="x", reuse=True)
            else:
                scheduled = [e for e in await handle.history() if "Scheduled" in type(e).__name__]
                handle = await rt.client.rerun("x", scheduled[0].event_id)
            await anyio.wait_all_tasks_blocked()  # attempt 1 paid, wrote memo, failed
            paused.release.set()
        clock.advance(timedelta(seconds=1))  # the retry
        result = await handle
    assert paid == ["ch-x-0", result], f"the retry paid again: {paid}"


@pytest.mark.parametrize("dialect", ["dapr", "ms"])
async def test_a_reused_instance_on_a_sidecar_keeps_its_steps_above_the_old_runs(
    dialect: str,
) -> None:
    """Bug 11 through the sidecar: a worker numbers steps from its wire task ids, so the
    sidecar must move them above the old runs' steps (``step_base``), or a reused run's
    memo is shared with, and swept along with, the old run's; its retry still finds what
    its first attempt wrote."""
    from test_remote_sidecar import billing, charges, failed_once, memo_registry

    from durable.grpc import RemoteClient, RemoteWorker, Sidecar

    charges.clear()
    failed_once.clear()
    store = MemoryStore()
    memo = durable.MemoStore(store)
    async with Sidecar(store, port=0) as sidecar:
        target = f"127.0.0.1:{sidecar.port}"
        async with (
            RemoteWorker(memo_registry, target, dialect=dialect, memo_store=memo),
            RemoteClient(target, dialect=dialect, registry=memo_registry) as client,
        ):
            with anyio.fail_after(30):
                assert await (await client.start(billing, 3, instance_id="bill")) == 30
                old_steps = await store.list("memo/bill")
                # the sidecar serves no reuse: start it again through the store
                await sidecar.client.start("billing", Raw(b"4"), instance_id="bill", reuse=True)
                assert await client.get_handle("bill").result() == 40
    new_steps = await store.list("memo/bill")
    assert charges == [("bill", 3), ("bill", 4)]  # once per run: the retry found the memo
    assert old_steps == ["0"]
    assert len(new_steps) == 1, new_steps
    assert int(new_steps[0]) > 0, new_steps


# -- an S3 purge over more keys than one listing page -----------------------------------


def _stepping() -> Registry:
    reg = Registry()

    @reg.activity
    async def step(ctx: durable.ActivityContext, n: int) -> int:
        await ctx.memo.put("n", n)
        return n

    @reg.workflow
    async def steps(ctx: WorkflowContext, count: int) -> int:
        for n in range(count):
            await ctx.call_activity(step, n)
        return count

    return reg


async def test_an_s3_purge_over_many_pages_leaves_nothing_for_a_reuse_to_mix(
    moto_server: Any,
) -> None:
    """Suspected: an S3 purge cut off after one listing page (1,000 keys) leaves the tail
    of the log, and a reuse mixes histories. Refuted: listings follow continuation
    tokens (here pages of 2 keys), and the purge deletes ``log/0`` last, so even a purge
    cut short leaves no log a start could land in (see the cut-short test above)."""
    store = moto_server.store()
    store._page_size = 2  # every listing takes several pages
    try:
        await _purge_many_pages(store)
    finally:
        await store.close()


async def _purge_many_pages(store: Any) -> None:
    clock = durable.MockClock(T0)
    async with durable.Runtime(_stepping(), store=store, clock=clock) as rt:
        assert await (await rt.start("steps", 6, instance_id="many")) == 6
        assert len(await store.list("instances/many/log")) > 6
        assert len(await store.list("memo/many")) == 6
        await rt.client.purge("many")
        assert await store.list("instances") == []
        assert await store.list("memo") == []
        assert await (await rt.start("steps", 1, instance_id="many")) == 1
        run = await load_run(store, "many")
        assert run is not None
        assert run.run_start == 0
        assert len(await store.list("instances/many/log")) == run.last_seq + 1


# -- the memo prefix ---------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["instances", "wakeups", "leases", "members", "config"])
def test_a_memo_prefix_on_the_stores_own_objects_is_refused(prefix: str) -> None:
    """Suspected, proved: ``memo_prefix`` was not checked against the store's own
    prefixes, so a purge of an instance's memo could delete, say, its log."""
    with pytest.raises(durable.InvalidInstanceIdError, match="store keeps its own"):
        durable.Runtime(_registry(), store=MemoryStore(), memo_prefix=prefix)
    durable.MemoStore(MemoryStore(), f"{prefix}-memo")  # a name merely like one is fine


async def test_an_outside_client_purges_the_memo_under_the_runtimes_prefix() -> None:
    """Suspected, proved: an outside ``Client`` always used the prefix ``"memo"``, so its
    purge left the memo of a runtime given another prefix; ``Client(memo_prefix=)``."""
    inner, clock = MemoryStore(), durable.MockClock(T0)
    paid: list[str] = []
    async with durable.Runtime(
        paying_registry(paid), store=inner, clock=clock, memo_prefix="billing-memo"
    ) as rt:
        handle = await rt.start("pay", 1, instance_id="x")
        await anyio.wait_all_tasks_blocked()
        clock.advance(timedelta(seconds=1))
        assert await handle == "ch-x-0"
    assert await inner.list("billing-memo") == ["x"]
    await durable.Client(inner, clock=clock, memo_prefix="billing-memo").purge("x")
    assert await inner.list("") == ["config", "indexed"]  # the store's settings and index marker


# -- raise_event across a caller's retry (suspected) -------------------------------------


class LostAnswer(Pausing):
    """The first inbox write lands, but its caller gets a transient error."""

    def __getattr__(self, name: str) -> Any:
        attr = super().__getattr__(name)
        if name != "put":
            return attr

        async def put(key: str, data: bytes) -> str:
            etag = await attr(key, data)
            if "/inbox/" in key and not self.entered.is_set():
                self.entered.set()
                raise durable.StoreError(f"lost the answer to {key!r}", key=key, transient=True)
            return etag  # type: ignore[no-any-return]

        return put


async def test_raise_event_retried_after_a_lost_answer_is_delivered_once() -> None:
    """Suspected, proved (it delivered twice): ``raise_event`` whose write landed but
    whose answer was lost is retried under the same message id, so it arrives once."""
    inner, clock = MemoryStore(), durable.MockClock(T0)
    reg = Registry()

    @reg.workflow
    async def count_go(ctx: WorkflowContext, _: None) -> int:
        await ctx.wait_for_event("go")
        try:
            await ctx.wait_for_event("go", timeout=timedelta(seconds=10))
        except durable.TimeoutError:
            return 1
        return 2

    async with durable.Runtime(reg, store=inner, clock=clock) as rt:
        handle = await rt.start("count_go", None, instance_id="x")
        await anyio.wait_all_tasks_blocked()
        outside = durable.Client(LostAnswer(inner), clock=clock).get_handle("x")
        for _ in range(2):  # the caller retries a transient error, as it should
            try:
                await outside.raise_event("go")
                break
            except durable.StoreError:
                continue
        for _ in range(3):
            await anyio.wait_all_tasks_blocked()
            clock.advance(timedelta(seconds=5))
        assert await handle == 1, "the event was delivered twice"
