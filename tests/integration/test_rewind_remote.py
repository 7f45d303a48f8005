"""Rewind of workflows that durable's own RemoteWorker runs through the sidecar, in
both dialects (Dapr's workers cache history: the rewound run is another history)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import durable
from durable import ActivityContext, RetryPolicy, WorkflowContext, WorkflowStatus
from durable.grpc import RemoteClient, RemoteWorker, Sidecar

registry = durable.Registry()
calls: list[str] = []
broken: set[str] = set()


@registry.activity
async def step(ctx: ActivityContext, name: str) -> str:
    calls.append(name)
    if name in broken:
        raise RuntimeError(f"{name} is broken")
    return name.upper()


@registry.workflow
async def three(ctx: WorkflowContext, tag: str) -> list[str]:
    once = RetryPolicy(max_attempts=1)
    return [await ctx.call_activity(step, f"{tag}-{n}", retry=once) for n in "abc"]


@pytest.fixture(params=["dapr", "ms"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Sidecar, Any]]:
    dialect = request.param
    async with Sidecar("memory://", port=0) as sidecar:
        target = f"127.0.0.1:{sidecar.port}"
        async with (
            RemoteWorker(registry, target, dialect=dialect) as worker,
            RemoteClient(target, dialect=dialect, registry=registry, poll_interval=0.02) as rc,
        ):
            with anyio.fail_after(10):
                await worker.wait_connected()
            yield sidecar, rc


@pytest.mark.anyio
async def test_a_remote_workers_run_is_rewound(env: tuple[Sidecar, Any]) -> None:
    """b failed the run; the rewind (RewindInstance in the MS dialect, the sidecar's
    own client in Dapr's, which has no such call) runs b again, not a, and the worker
    finishes the run from the rewound history; twice in a row too."""
    sidecar, client = env
    tag = client.dialect
    broken.add(f"{tag}-b")
    with anyio.fail_after(30):
        handle = await client.start(three, tag, instance_id=f"three-{tag}")
        with pytest.raises(durable.WorkflowFailed):
            await handle
        for round_ in range(2):
            if client.dialect == "ms":
                await handle.rewind("again")
            else:
                with pytest.raises(NotImplementedError):
                    await handle.rewind()
                await sidecar.client.rewind(handle.instance_id, "again")
            if round_ == 0:
                with pytest.raises(durable.WorkflowFailed):
                    await handle
                broken.discard(f"{tag}-b")
        assert await handle == [f"{tag.upper()}-A", f"{tag.upper()}-B", f"{tag.upper()}-C"]
        assert (await handle.describe()).status is WorkflowStatus.COMPLETED
    assert [c for c in calls if c.startswith(tag)] == [f"{tag}-{n}" for n in "abbbc"]
