"""Rewind bugs the whole-system simulation found, each pinned by a deterministic test."""

from __future__ import annotations

import pytest

from durable import WorkflowStatus
from durable._core._events import ChildWorkflowScheduled, HistoryEvent, WorkflowStarted
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
