"""OpenTelemetry spans and metrics of the embedded runtime, read from the SDK's in-memory
span exporter and metric reader (issue 17: tracing and metrics)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the dev extra's opentelemetry-sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import durable
from durable import ActivityContext, MockClock, Registry, RetryPolicy, WorkflowContext
from durable.store import MemoryStore

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Telemetry:
    """An SDK tracer provider and meter provider of the test's own (no global state)."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def options(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name.startswith(prefix)]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:  # nothing was ever recorded
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for m in scope.metrics
            if m.name == metric
            for point in m.data.data_points
        ]


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


def registry() -> Registry:
    reg = Registry()
    flaky: Counter[str] = Counter()

    @reg.activity
    async def double(ctx: ActivityContext, x: int) -> int:
        return 2 * x

    @reg.activity
    async def wobbly(ctx: ActivityContext, x: int) -> int:
        flaky[ctx.instance_id] += 1
        if flaky[ctx.instance_id] == 1:
            raise ValueError("first try fails")
        return x

    @reg.workflow
    async def child(ctx: WorkflowContext, x: int) -> int:
        return await ctx.call_activity(double, x)

    @reg.workflow
    async def parent(ctx: WorkflowContext, x: int) -> int:
        a = await ctx.call_activity(double, x)
        b = await ctx.call_activity(
            wobbly, a, retry=RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=1))
        )
        c = await ctx.call_workflow(child, b, instance_id=f"{ctx.instance_id}-child")
        return c

    @reg.workflow
    async def waits(ctx: WorkflowContext, x: int) -> int:
        a = await ctx.call_activity(double, x)
        got = await ctx.wait_for_event("go")
        return a + int(got)

    @reg.workflow
    async def fails(ctx: WorkflowContext, x: int) -> int:
        raise RuntimeError("no luck")

    return reg


async def test_a_run_is_one_trace_under_the_caller(telemetry: Telemetry) -> None:
    """Spans of a run (workflow, turns, activity attempts) and of its child join the trace
    of the caller of start(); the child's workflow span nests under the parent's."""
    tracer = telemetry.tracer_provider.get_tracer("test")
    store = MemoryStore()
    async with durable.Runtime(
        registry(), store=store, clock=MockClock(T0, auto_advance=True), **telemetry.options()
    ) as rt:
        with tracer.start_as_current_span("http request") as request:
            handle = await rt.start("parent", 3, instance_id="order-1")
        assert await handle == 12

    caller = request.get_span_context()
    spans = telemetry.finished()
    assert {s.context.trace_id for s in spans} == {caller.trace_id}
    (wf,) = telemetry.named("workflow parent")
    (child,) = telemetry.named("workflow child")
    assert wf.parent is not None
    assert wf.parent.span_id == caller.span_id
    assert child.parent is not None
    assert child.parent.span_id == wf.context.span_id
    assert wf.attributes is not None
    assert wf.attributes["durable.instance_id"] == "order-1"
    assert wf.attributes["durable.status"] == "COMPLETED"
    assert wf.attributes["durable.run_id"]
    assert wf.start_time == int(T0.timestamp()) * 10**9

    for span in telemetry.named("turn") + telemetry.named("activity"):
        assert span.parent is not None
        owner = span.attributes["durable.instance_id"] if span.attributes else None
        expected = wf if owner == "order-1" else child
        assert span.parent.span_id == expected.context.span_id, span.name

    attempts = [
        (s.attributes["durable.attempt"], s.attributes["durable.status"])
        for s in telemetry.named("activity wobbly")
        if s.attributes
    ]
    assert attempts == [(1, "failed"), (2, "completed")]
    failed = telemetry.named("activity wobbly")[0]
    assert failed.status.status_code is StatusCode.ERROR


async def test_replay_after_a_restart_emits_no_duplicate_spans(telemetry: Telemetry) -> None:
    """A run picked up by a new runtime (replayed from the log) records each committed
    turn and each attempt once, all under the one workflow span of the run."""
    store = MemoryStore()
    clock = MockClock(T0, auto_advance=True)
    tracer = telemetry.tracer_provider.get_tracer("test")
    async with durable.Runtime(registry(), store=store, clock=clock, **telemetry.options()) as rt:
        with tracer.start_as_current_span("caller") as caller_span:
            await rt.start("waits", 5, instance_id="w-1")
        await rt.wait_idle()
    before = len(telemetry.named("turn"))
    assert before == 2  # the first turn, and the one the activity's result brought
    async with durable.Runtime(registry(), store=store, clock=clock, **telemetry.options()) as rt:
        handle = rt.client.get_handle("w-1")
        await handle.raise_event("go", 1)
        assert await handle == 11

    turns = telemetry.named("turn")
    assert [s.attributes["durable.seq"] for s in turns if s.attributes] == [1, 2, 3]
    assert len(telemetry.named("activity double")) == 1
    (wf,) = telemetry.named("workflow waits")
    assert {s.context.trace_id for s in telemetry.finished()} == {
        caller_span.get_span_context().trace_id
    }
    assert all(s.parent is not None and s.parent.span_id == wf.context.span_id for s in turns)


async def test_a_run_without_a_caller_is_a_trace_of_its_own(telemetry: Telemetry) -> None:
    """Started outside any span, the run's workflow span is the root of a new trace, and
    a failed run's span has an error status."""
    async with durable.Runtime(
        registry(), store=MemoryStore(), clock=MockClock(T0, auto_advance=True),
        **telemetry.options(),
    ) as rt:  # fmt: skip
        handle = await rt.start("fails", 1)
        with pytest.raises(durable.WorkflowFailed):
            await handle
    (wf,) = telemetry.named("workflow fails")
    assert wf.parent is None
    assert wf.status.status_code is StatusCode.ERROR
    assert "no luck" in (wf.status.description or "")
    assert {s.context.trace_id for s in telemetry.finished()} == {wf.context.trace_id}


async def test_metrics_of_runs_turns_attempts_and_the_store(telemetry: Telemetry) -> None:
    """The issue's metrics table: counters, histograms by label, and the gauges."""
    async with durable.Runtime(
        registry(), store=MemoryStore(), clock=MockClock(T0, auto_advance=True),
        **telemetry.options(),
    ) as rt:  # fmt: skip
        assert await (await rt.start("parent", 1, instance_id="m-1")) == 4
        with pytest.raises(durable.WorkflowFailed):
            await (await rt.start("fails", 1))
        resident = telemetry.points("durable.instances.resident")
        held = telemetry.points("durable.fleet.partitions_held")
        assert [p.value for p in held] == [len(rt.partitions)]
        assert len(resident) == 1

    started = {
        p.attributes["workflow"]: p.value for p in telemetry.points("durable.workflow.started")
    }
    assert started == {"parent": 1, "child": 1, "fails": 1}
    ended = {
        (p.attributes["workflow"], p.attributes["status"]): p.value
        for p in telemetry.points("durable.workflow.ended")
    }
    assert ended == {("parent", "COMPLETED"): 1, ("child", "COMPLETED"): 1, ("fails", "FAILED"): 1}
    attempts = {
        (p.attributes["activity"], p.attributes["outcome"]): p.value
        for p in telemetry.points("durable.activity.attempts")
    }
    assert attempts == {("double", "completed"): 2, ("wobbly", "failed"): 1,
                        ("wobbly", "completed"): 1}  # fmt: skip
    turns = telemetry.points("durable.turn.duration")
    assert sum(p.count for p in turns) >= 6
    operations = {
        p.attributes["operation"] for p in telemetry.points("durable.store.request.duration")
    }
    assert {"put_if_absent", "get", "put_if_match", "list"} <= operations
    assert telemetry.points("durable.activity.duration")


async def test_telemetry_off_records_nothing(telemetry: Telemetry) -> None:
    """``telemetry=False``: no observer, no timed store, no spans, no metrics."""
    async with durable.Runtime(
        registry(), store=MemoryStore(), clock=MockClock(T0, auto_advance=True),
        telemetry=False, **telemetry.options(),
    ) as rt:  # fmt: skip
        assert isinstance(rt.store, MemoryStore)
        assert await (await rt.start("parent", 1)) == 4
    assert telemetry.finished() == []
    assert telemetry.points("durable.workflow.started") == []


def test_observe_knows_no_engine() -> None:
    """The telemetry layer sits beside the engine: it imports the core and the log, never
    the engine, the runtime or the client (the engine calls it, not the other way)."""
    from tests.unit.test_layers import _offenders

    banned = ("durable._engine", "durable._runtime", "durable._client", "durable.grpc")
    assert _offenders("durable._observe", banned) == []


async def test_the_simulation_records_spans_and_checks_them() -> None:
    """The whole-system simulation traces every process with one recording tracer and
    checks at the end that no turn and no run's workflow span was recorded twice; the
    check sees a duplicate when there is one."""
    from durable.testing import _system
    from durable.testing._system_trace import Recorded, SpanLog

    seen: list[SpanLog] = []
    final = _system._Driver._final_checks

    def spy(driver: Any) -> None:
        seen.append(driver.spans)
        final(driver)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_system._Driver, "_final_checks", spy)
        result = await _system.simulate_system(3)
    # (the seed may find an engine bug of its own: only the span checks matter here)
    assert not [v for v in result.violations if "span" in v], result.format()
    names = Counter(span.name.split()[0] for span in seen[0].spans)
    assert names["turn"]
    assert names["workflow"]
    assert names["activity"]

    log = SpanLog()
    log.spans = [Recorded("turn", 1, 2, 9, {"durable.seq": 4})] * 2
    log.spans.append(Recorded("workflow w", 1, 9, 0, {}))
    log.spans.append(Recorded("activity a", 7, 3, 9, {}))
    found: list[str] = []
    log.check(found.append)
    assert len(found) == 2
    assert "turn seq 4" in found[0]
    assert "not in its run's trace" in found[1]


async def test_runtimes_sharing_a_meter_provider_all_count(telemetry: Telemetry) -> None:
    """Bug: the SDK keeps one instrument per name and meter, with the callbacks of its
    first registration only, so a second runtime on the same meter provider (a restart
    in one process, two runtimes side by side) counted nothing and showed in no gauge.
    Every runtime on a meter now shares its counters and adds to its gauges."""
    clock = MockClock(T0, auto_advance=True)
    for _ in range(2):  # one after the other, as a process restarting its runtime
        async with durable.Runtime(
            registry(), store=MemoryStore(), clock=clock, **telemetry.options()
        ) as rt:
            with pytest.raises(durable.WorkflowFailed):
                await (await rt.start("fails", 1))
    points = telemetry.points("durable.workflow.ended")
    assert [(p.attributes["status"], p.value) for p in points] == [("FAILED", 2)]
    async with (
        durable.Runtime(registry(), store=MemoryStore(), clock=clock, **telemetry.options()) as a,
        durable.Runtime(registry(), store=MemoryStore(), clock=clock, **telemetry.options()) as b,
    ):
        held = telemetry.points("durable.fleet.partitions_held")
        assert [p.value for p in held] == [len(a.partitions) + len(b.partitions)]
