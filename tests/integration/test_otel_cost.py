"""Telemetry of runs that end in every way, and what the leaner span and metric paths
still record (issue 17: tracing and metrics, and their cost)."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the dev extra's opentelemetry-sdk")

from opentelemetry.trace import StatusCode
from test_otel_spans import T0, Telemetry

import durable
from durable import ActivityContext, MockClock, Registry, WorkflowContext, WorkflowStatus
from durable.store import MemoryStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


async def test_a_cancelled_run_ends_its_workflow_span_and_counts_as_ended(
    telemetry: Telemetry,
) -> None:
    """Bug: the observer ended a run only on COMPLETED, FAILED or TERMINATED, so a run
    that ended CANCELED (``handle.cancel()``) never emitted its ``workflow`` span nor
    counted in ``durable.workflow.ended``: its turns and attempts nested under a span
    that no process ever recorded."""
    registry = Registry()

    @registry.activity
    async def hang(ctx: ActivityContext) -> None:
        await ctx.cancelled.wait()

    @registry.workflow
    async def stoppable(ctx: WorkflowContext) -> None:
        await ctx.call_activity(hang)

    async with durable.Runtime(
        registry, store=MemoryStore(), clock=MockClock(T0, auto_advance=True),
        **telemetry.options(),
    ) as rt:  # fmt: skip
        handle = await rt.start(stoppable, instance_id="c-1")
        await rt.wait_idle()
        await handle.cancel("enough")
        with pytest.raises(durable.WorkflowFailed):
            await handle
        assert (await handle.describe()).status is WorkflowStatus.CANCELED

    (run,) = telemetry.named("workflow stoppable")
    assert run.attributes is not None
    assert run.attributes["durable.status"] == "CANCELED"
    assert run.status.status_code is StatusCode.ERROR
    for span in telemetry.named("turn") + telemetry.named("activity"):
        assert span.parent is not None
        assert span.parent.span_id == run.context.span_id, span.name
    ended = {
        (p.attributes["workflow"], p.attributes["status"]): p.value
        for p in telemetry.points("durable.workflow.ended")
    }
    assert ended == {("stoppable", "CANCELED"): 1}


def test_the_simulation_checks_every_ended_run_has_its_workflow_span() -> None:
    """The whole-system simulation's span check missed the bug above: it looked for
    duplicate spans only. Now a run that ended (any terminal status) without its
    ``workflow`` span is a violation, unless a write of its log landed while its writer
    was told otherwise (a crash or an error after the write: no process knows to emit
    it)."""
    from durable.testing._system_trace import Recorded, SpanLog

    log = SpanLog()
    assert log.provider() is not None
    log.spans = [
        Recorded("workflow w", 1, 9, 0, {"durable.instance_id": "a", "durable.status": "COMPLETED"})
    ]
    found: list[str] = []
    ended = [("a", "COMPLETED"), ("b", "CANCELED"), ("c", "FAILED")]
    log.check_ends(ended, {"c"}, found.append)
    assert found == [
        "'b' ended CANCELED 1 time(s), but its workflow span with that status was emitted 0 time(s)"
    ]
