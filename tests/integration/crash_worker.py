"""The process that ``test_crash.py`` kills: runs chains of activities on a ``file://`` store.

Usage: ``python crash_worker.py STORE_DIR ACTIVITY_LOG N_WORKFLOWS N_STEPS``

With ``DURABLE_CRASH_FAULT_RATE`` set (e.g. ``0.05``), the ``file://`` store is wrapped in
a :class:`durable.store.FaultyStore` that fails that share of calls with transient
errors (before or after the write lands), seeded by ``DURABLE_CRASH_FAULT_SEED``.

It starts workflows ``wf-000`` .. ``wf-{N-1}`` (or takes a handle on those a previous
incarnation started), waits for all of them, prints ``ALL DONE`` and exits 0. Each
workflow runs ``N_STEPS`` activities in sequence, each fed the previous one's result.
Every activity execution appends ``instance_id step attempt`` to ``ACTIVITY_LOG`` before
it returns, and prints a progress line, so the test can kill the process at any point
and later check that every step ran at least once.

The test imports this file for :func:`expected_result` and :func:`build_registry`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

import anyio

import durable
from durable import ActivityContext, Registry, WorkflowContext
from durable.store import FaultyStore, ObjectStore
from durable.store import open_store as open_local

T = TypeVar("T")

MODULUS = 1_000_003


def instance_id(index: int) -> str:
    """The fixed id of the ``index``-th workflow."""
    return f"wf-{index:03d}"


def step_value(index: int, step: int, acc: int) -> int:
    """What the activity of ``step`` in workflow ``index`` returns, given ``acc``."""
    return (acc * 31 + step + index) % MODULUS


def expected_result(index: int, n_steps: int) -> int:
    """The result of workflow ``index`` computed in plain Python."""
    acc = index
    for step in range(n_steps):
        acc = step_value(index, step, acc)
    return acc


def build_registry(activity_log: str | None = None) -> Registry:
    """The registry of the chain workflow; the activity appends to ``activity_log``."""
    registry = Registry()

    @registry.activity
    async def step(ctx: ActivityContext, args: list[int]) -> int:
        index, number, acc = args
        result = step_value(index, number, acc)
        if activity_log is not None:
            line = f"{ctx.instance_id} {number} {ctx.attempt}\n".encode()
            fd = os.open(activity_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)  # one write per line: whole lines survive a SIGKILL
            finally:
                os.close(fd)
        print(f"STEP {ctx.instance_id} {number} {ctx.attempt}", flush=True)
        return result

    @registry.workflow
    async def chain(ctx: WorkflowContext, args: list[int]) -> int:
        index, n_steps = args
        acc = index
        for number in range(n_steps):
            acc = await ctx.call_activity(step, [index, number, acc])
        return acc

    return registry


def open_store(store_dir: str) -> ObjectStore:
    """The store, behind a FaultyStore when ``DURABLE_CRASH_FAULT_RATE`` asks for one."""
    store = open_local(f"file://{store_dir}")
    rate = float(os.environ.get("DURABLE_CRASH_FAULT_RATE") or 0)
    if not rate:
        return store
    seed = int(os.environ.get("DURABLE_CRASH_FAULT_SEED") or os.getpid())
    return FaultyStore(store, seed, error_rate=rate)


async def retrying(call: Callable[[], Awaitable[T]]) -> T:
    """The worker's own calls (start, wait) retried past injected transient errors."""
    while True:
        try:
            return await call()
        except durable.StoreError as err:
            if not err.transient:
                raise
            print(f"RETRY {err}", file=sys.stderr, flush=True)


async def run(store_dir: str, activity_log: str, n_workflows: int, n_steps: int) -> None:
    registry = build_registry(activity_log)
    store = open_store(store_dir)
    async with durable.Runtime(registry, store=store) as runtime:
        handles: list[durable.WorkflowHandle[int]] = []
        for index in range(n_workflows):
            wf_id = instance_id(index)
            try:
                handle = await retrying(
                    partial(runtime.start, "chain", [index, n_steps], instance_id=wf_id)
                )
                print(f"STARTED {wf_id}", flush=True)
            except durable.InstanceExistsError:
                handle = runtime.client.get_handle(wf_id)
                print(f"EXISTS {wf_id}", flush=True)
            handles.append(handle)
        results: dict[str, int] = {}

        async def wait(handle: durable.WorkflowHandle[int]) -> None:
            results[handle.instance_id] = await retrying(handle.result)

        async with anyio.create_task_group() as tg:
            for handle in handles:
                tg.start_soon(wait, handle)
    for index in range(n_workflows):
        wf_id = instance_id(index)
        print(f"RESULT {wf_id} {results[wf_id]}", flush=True)
    if isinstance(store, FaultyStore):
        print(f"FAULTS {len(store.faults)}", flush=True)
    print("ALL DONE", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    store_dir, activity_log, n_workflows, n_steps = argv[1], argv[2], int(argv[3]), int(argv[4])
    anyio.run(run, store_dir, activity_log, n_workflows, n_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
