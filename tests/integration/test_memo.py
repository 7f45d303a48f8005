"""The per-step memo: retries find what an attempt paid for; retention cleans up."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import durable
from durable import (
    ActivityContext,
    MemoStore,
    MockClock,
    Registry,
    RetryPolicy,
    WorkflowContext,
)
from durable._core._events import ActivityErrored, ActivityScheduled
from durable.store import MemoryStore, ObjectStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RETRY = RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=1))


def paying_registry(paid: list[str]) -> Registry:
    registry = Registry()

    @registry.activity
    async def charge(ctx: ActivityContext, cents: int) -> str:
        charge_id = await ctx.memo.get("charge_id")
        if charge_id is None:
            charge_id = f"ch-{ctx.instance_id}-{ctx.task_id}"
            paid.append(charge_id)  # the expensive, non-idempotent call
            await ctx.memo.put("charge_id", charge_id)
        if ctx.attempt == 1:
            raise ConnectionError("lost the answer after paying")
        return charge_id

    @registry.workflow
    async def pay(ctx: WorkflowContext, cents: int) -> str:
        return await ctx.call_activity(charge, cents, retry=RETRY)

    @registry.workflow
    async def pay_twice(ctx: WorkflowContext, cents: int) -> list[str]:
        first = await ctx.call_activity(charge, cents, retry=RETRY)
        second = await ctx.call_activity(charge, cents, retry=RETRY)
        return [first, second]

    return registry


async def test_the_retry_finds_what_attempt_one_paid_for(runtime_factory: Any) -> None:
    paid: list[str] = []
    async with runtime_factory(paying_registry(paid)) as rt:
        handle = await rt.start("pay", 100, instance_id="p1")
        assert await handle == "ch-p1-0"
        assert await rt.memo_store.view("p1", 0).get("charge_id") == "ch-p1-0"
    assert paid == ["ch-p1-0"]


async def test_steps_and_instances_do_not_see_each_other(runtime_factory: Any) -> None:
    paid: list[str] = []
    async with runtime_factory(paying_registry(paid)) as rt:
        assert await (await rt.start("pay_twice", 1, instance_id="a")) == ["ch-a-0", "ch-a-3"]
        assert await (await rt.start("pay", 1, instance_id="b")) == "ch-b-0"
        memo = rt.memo_store
        assert await memo.view("a", 0).get("charge_id") == "ch-a-0"
        assert await memo.view("a", 3).get("charge_id") == "ch-a-3"
        assert await memo.view("b", 0).get("charge_id") == "ch-b-0"
        assert await memo.view("a", 1).get("charge_id") is None
    assert sorted(paid) == ["ch-a-0", "ch-a-3", "ch-b-0"]


async def test_prefixes_separate_runtimes_on_one_store(store: ObjectStore) -> None:
    left, right = MemoStore(store, "left"), MemoStore(store, "right")
    await left.view("same", 0).put("k", "from left")
    assert await right.view("same", 0).get("k") is None
    await right.view("same", 0).put("k", "from right")
    assert await left.view("same", 0).get("k") == "from left"
    assert await store.list("") == ["left", "right"]


async def test_a_separate_memo_store(store: ObjectStore) -> None:
    paid: list[str] = []
    elsewhere = MemoryStore()
    async with durable.Runtime(
        paying_registry(paid),
        store=store,
        clock=MockClock(auto_advance=True),
        memo_store=MemoStore(elsewhere, "m"),
    ) as rt:
        assert await (await rt.start("pay", 5, instance_id="x")) == "ch-x-0"
    assert await elsewhere.list("m/x/0") == ["charge_id"]
    assert await store.list("") == ["config", "indexed", "instances"]  # no memo in the main store


async def test_bad_keys_and_values_write_nothing(store: ObjectStore) -> None:
    memo = MemoStore(store).view("inst", 3)
    for bad in ["", "../up", "a/b", "x" * 300, ".dot"]:
        with pytest.raises(durable.InvalidInstanceIdError, match="memo key"):
            await memo.put(bad, 1)
    with pytest.raises(durable.SerializationError):
        await memo.put("ok", object())
    with pytest.raises(durable.InvalidInstanceIdError):
        MemoStore(store).view("../etc", 0)
    assert await store.list("") == []


class _FlakyStore:
    """Delegates to a store, failing the first ``failures`` reads."""

    def __init__(self, inner: ObjectStore, failures: int) -> None:
        self._inner = inner
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get(self, key: str) -> bytes:
        if self.failures:
            self.failures -= 1
            raise durable.StoreError("injected outage", key=key)
        return await self._inner.get(key)


async def test_memo_failures_are_transient_and_retried(store: ObjectStore) -> None:
    paid: list[str] = []
    flaky = _FlakyStore(MemoryStore(), failures=1)
    async with durable.Runtime(
        paying_registry(paid),
        store=store,
        clock=MockClock(auto_advance=True),
        memo_store=MemoStore(flaky),  # type: ignore[arg-type]
    ) as rt:
        handle = await rt.start("pay", 7, instance_id="f")
        assert await handle == "ch-f-0"
        history = await handle.history()
    attempts = [e.attempt for e in history if isinstance(e, ActivityScheduled)]
    assert attempts == [1, 2]  # the outage cost attempt 1; attempt 2 paid and answered
    (failed,) = [e for e in history if isinstance(e, ActivityErrored)]
    assert failed.failure.type == "durable.StoreError"
    assert "injected outage" in failed.failure.message
    assert paid == ["ch-f-0"]


def hold_registry() -> Registry:
    registry = Registry()

    @registry.activity
    async def note(ctx: ActivityContext, value: str) -> str:
        await ctx.memo.put("note", value)
        return value

    @registry.workflow
    async def hold(ctx: WorkflowContext, mode: str) -> str:
        await ctx.call_activity(note, mode)
        if mode == "loop":
            ctx.continue_as_new("rest")
        if mode == "fail":
            raise RuntimeError("failing on purpose")
        return await ctx.wait_for_event("finish")

    return registry


async def test_retention_markers_and_sweeps_on_virtual_time(store: ObjectStore) -> None:
    clock = MockClock(T0)
    retention = timedelta(days=3)
    opts = {"memo_retention": retention, "memo_sweep_interval": timedelta(hours=1)}
    async with durable.Runtime(hold_registry(), store=store, clock=clock, **opts) as rt:
        memo = rt.memo_store
        done = await rt.start("hold", "done", instance_id="done")
        failed = await rt.start("hold", "fail", instance_id="failed")
        killed = await rt.start("hold", "killed", instance_id="killed")
        await rt.start("hold", "loop", instance_id="looping")
        await rt.wait_idle()
        await done.raise_event("finish", "ok")
        await killed.terminate("stop")
        assert await done == "ok"
        with pytest.raises(durable.WorkflowFailed):
            await failed
        await rt.wait_idle()
        markers = await store.list("memo-terminal")
        assert markers == ["done", "failed", "killed"]  # not the continued-as-new one
        assert await memo.terminal_time("done") == T0
        clock.advance(retention - timedelta(seconds=1))
        assert await rt.sweep() == 0
        assert await memo.view("done", 0).get("note") == "done"
    # a fresh runtime sweeps at start and catches the old markers
    clock.advance(timedelta(seconds=1))
    async with durable.Runtime(hold_registry(), store=store, clock=clock, **opts) as rt:
        await rt.wait_idle()
        assert await store.list("memo-terminal") == []
        assert await store.list("memo") == ["looping"]  # continued-as-new keeps its memo
        assert await rt.memo_store.view("looping", 0).get("note") == "loop"
        assert await rt.memo_store.view("looping", 1).get("note") == "rest"


async def test_purge_deletes_memo_and_marker(runtime_factory: Any, store: ObjectStore) -> None:
    async with runtime_factory(hold_registry(), memo_retention=timedelta(days=1)) as rt:
        handle = await rt.start("hold", "fail", instance_id="gone")
        with pytest.raises(durable.WorkflowFailed):
            await handle
        assert await store.list("memo-terminal") == ["gone"]
        await rt.client.purge("gone")
        assert await store.list("") == ["config", "indexed"]  # the store's own settings stay


async def test_reuse_starts_with_an_empty_memo(runtime_factory: Any) -> None:
    async with runtime_factory(hold_registry()) as rt:
        first = await rt.start("hold", "fail", instance_id="again")
        with pytest.raises(durable.WorkflowFailed):
            await first
        await rt.memo_store.view("again", 0).put("stale", True)  # a late old attempt
        await rt.start("hold", "new", instance_id="again", reuse=True)
        await rt.wait_idle()
        assert await rt.memo_store.view("again", 0).get("stale") is None
        assert await rt.memo_store.view("again", 0).get("note") is None
        # the new run's steps begin above the old run's: it never shares their memo
        assert await rt.memo_store.view("again", 1).get("note") == "new"


@pytest.mark.timeout(60)
def test_sigkill_between_memo_put_and_commit(tmp_path: Path) -> None:
    worker = Path(__file__).with_name("memo_worker.py")
    payments = tmp_path / "payments.txt"
    store = tmp_path / "store"
    args = [sys.executable, str(worker), str(store), str(payments)]
    with subprocess.Popen([*args, "crash"], stdout=subprocess.PIPE, text=True) as first:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "MEMO WRITTEN"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    second = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
    assert second.stdout.splitlines() == ["MEMO WRITTEN", "RESULT ch-4200-1"]
    assert payments.read_text().splitlines() == ["ch-4200-1"]  # paid once across the crash


# -- a property: sweeps never touch the memo of an instance that has not ended ----------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.integers(0, 1)),
        st.tuples(st.just("put"), st.integers(0, 1), st.integers(0, 2)),
        st.tuples(st.just("finish"), st.integers(0, 1)),
        st.tuples(st.just("crash")),
        st.tuples(st.just("advance"), st.sampled_from([1, 12, 25, 72])),
        st.tuples(st.just("sweep")),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops)
# a run started again (reuse) must not inherit the ended run's marker
@example(ops=[("start", 0), ("finish", 0), ("start", 0), ("put", 0, 1), ("advance", 25)])
# a crash between finishing and sweeping, then the sweep at the next start
@example(ops=[("start", 1), ("put", 1, 0), ("start", 0), ("put", 0, 2), ("finish", 1),
              ("crash",), ("advance", 72), ("sweep",)])  # fmt: skip
def test_sweeps_never_delete_memo_of_running_instances(ops: list[tuple[Any, ...]]) -> None:
    import anyio

    anyio.run(_check_sweeps, ops)


async def _check_sweeps(ops: list[tuple[Any, ...]]) -> None:
    store = MemoryStore()
    clock = MockClock(T0)
    retention = timedelta(hours=24)
    registry = Registry()

    @registry.workflow
    async def waiter(ctx: WorkflowContext, _: None) -> None:
        await ctx.wait_for_event("finish")

    running: set[str] = set()
    written: dict[str, set[tuple[int, str]]] = {}
    opts: dict[str, Any] = {"memo_retention": retention, "memo_sweep_interval": timedelta(hours=1)}
    rt = durable.Runtime(registry, store=store, clock=clock, **opts)
    await rt.__aenter__()
    try:
        for op in ops:
            kind = op[0]
            if kind == "start":
                iid = f"i{op[1]}"
                if iid in running:
                    continue
                await rt.start("waiter", instance_id=iid, reuse=True)
                running.add(iid)
                written[iid] = set()
            elif kind == "put" and f"i{op[1]}" in running:
                iid = f"i{op[1]}"
                await rt.memo_store.view(iid, op[2]).put("k", op[2])
                written[iid].add((op[2], "k"))
            elif kind == "finish" and f"i{op[1]}" in running:
                iid = f"i{op[1]}"
                handle = rt.client.get_handle(iid)
                await handle.raise_event("finish")
                await handle
                running.discard(iid)
            elif kind == "crash":
                await rt.__aexit__(None, None, None)
                rt = durable.Runtime(registry, store=store, clock=clock, **opts)
                await rt.__aenter__()
            elif kind == "advance":
                clock.advance(timedelta(hours=op[1]))
            elif kind == "sweep":
                await rt.sweep()
            await rt.wait_idle()
            for iid in running:
                for step, key in written[iid]:
                    got = await rt.memo_store.view(iid, step).get(key)
                    assert got == step, f"memo of running {iid} step {step} lost after {op}"
    finally:
        await rt.__aexit__(None, None, None)
