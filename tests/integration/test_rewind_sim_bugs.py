"""Rewind bugs the whole-system simulation found, each pinned by a deterministic test."""

from __future__ import annotations

import pytest

import durable
from durable import WorkflowStatus
from durable._core._events import (
    ChildWorkflowScheduled,
    HistoryEvent,
    WorkflowRewound,
    WorkflowStarted,
)
from durable.store import MemoryStore
from durable.testing import Replayer
from tests.integration.test_rewind_engine import Flaky, failed, registry_for, result, runtime

pytestmark = pytest.mark.anyio


def runs(history: list[HistoryEvent]) -> list[WorkflowStarted]:
    return [e for e in history if isinstance(e, WorkflowStarted)]


async def test_a_rerun_of_a_rewound_run_runs_its_sub_workflow_anew() -> None:
    """Simulation seed 243: a rerun of a rewound run inherited the rewound run's
    ``WorkflowStarted.rewinds``, so it counted as a rewind of the run that failed: a
    sub-workflow call it made again was handed the result of that failed run's child
    (which completed after its parent failed) instead of running anew, as a rerun's
    steps do. The rerun is a new start: it rewinds nothing."""
    flaky = Flaky(b=1)
    registry = registry_for(flaky)
    async with runtime(registry) as rt:
        handle = await rt.start("outer", instance_id="o")
        await failed(handle)
        kid = rt.client.get_handle("inner")
        await kid.raise_event("finish", "done")
        assert await result(kid) == "inner done"
        await handle.rewind()
        assert await result(handle) == ["B", "inner done"]
        rewound = await handle.history()
        call = next(e for e in rewound if isinstance(e, ChildWorkflowScheduled))
        await rt.client.rerun("o", call.event_id)
        await rt.wait_idle()
        assert (await kid.describe()).status is WorkflowStatus.RUNNING  # started anew
        await kid.raise_event("finish", "again")
        assert await result(handle) == ["B", "inner again"]
        history = await handle.history()
        inner = runs(await kid.history())
    started = history[0]
    assert isinstance(started, WorkflowStarted)
    assert started.rewinds == ()
    assert [r.parent.run_id if r.parent else None for r in inner] == [started.run_id]
    assert flaky.calls == ["b", "b", "b"]
    Replayer(registry).check(history)


class PurgeOnRead(MemoryStore):
    """Once armed, purges instance ``kid`` (through ``client``) just before the
    ``at``-th read of its meta: a sweep that removes it midway through a look at it."""

    def __init__(self) -> None:
        super().__init__()
        self.client: durable.Client | None = None
        self.kid = ""
        self.at = 0
        self.reads = 0

    async def get_with_etag(self, key: str) -> tuple[bytes, str]:
        if self.client is not None and key == f"instances/{self.kid}/meta":
            self.reads += 1
            if self.reads == self.at:
                client, self.client = self.client, None
                await client.purge(self.kid)
        return await super().get_with_etag(key)


async def test_a_rewind_whose_failed_sub_workflow_is_purged_meanwhile_starts_it_anew() -> None:
    """Simulation seed 254: a rewound parent found its failed sub-workflow to rewind, and
    a sweep purged that sub-workflow before the rewind of it read its log: the
    ``InstanceNotFoundError`` escaped and ended the runtime. The call now looks again and
    starts the sub-workflow anew from its call, as for one purged before."""
    flaky = Flaky(mid1=1)
    store = PurgeOnRead()
    async with runtime(registry_for(flaky), store) as rt:
        handle = await rt.start("top", instance_id="t")
        await failed(handle)
        assert (await rt.client.get_handle("mid").describe()).status is WorkflowStatus.FAILED
        store.kid, store.at = "mid", 2
        store.client = durable.Client(store, clock=rt.client.clock)
        await handle.rewind()
        assert await result(handle) == ["TOP1", ["MID1", ["LEAF1", "LEAF2"]]]
        mid = await rt.client.get_handle("mid").history()
    assert store.client is None  # the purge happened
    assert not [e for e in mid if isinstance(e, WorkflowRewound)]  # started anew
    assert flaky.calls == ["top1", "mid1", "mid1", "leaf1", "leaf2"]
