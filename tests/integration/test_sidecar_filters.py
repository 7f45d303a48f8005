"""Work-item filters and strict versioning (issue 14, item 4): a worker stream gets
only the orchestrations and activities its ``workItemFilters`` take, by name and
version; work no connected worker takes stays pending (it does not go to the wrong
worker). Through the real ``durabletask`` SDK (its ``use_work_item_filters`` and
STRICT versioning), in a process of its own, and with raw gRPC."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import anyio
import pytest
from dapr_stub import wrapped
from grpclib.client import Channel
from test_sidecar_protocol import call, next_item, start, work_stream
from test_sidecar_sdks import HERE, run_sdk, sidecar  # noqa: F401  (a fixture)

from durable._core._events import ActivityScheduled
from durable.grpc import Sidecar
from durable.grpc._dispatch import ActivityWork, TurnWork
from durable.grpc._filters import WorkFilters, work_filters
from durable.grpc._proto import ms
from durable.grpc._server import BytesCodec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


async def test_durabletask_sdk_filters_and_strict_versions(sidecar: Sidecar) -> None:  # noqa: F811
    """Issue 14: work-item filters were ignored, so a STRICT 1.0 worker got a 2.0
    orchestration (and failed it with VersionMismatch) and a worker got orchestrations
    it never registered. Now each instance waits, PENDING, for a worker whose filters
    take it; an activity with no version of its own counts as its orchestration's.
    A sub-orchestration started at version 1.0 ran at version "" (durable dropped the
    version), so no STRICT worker took it."""
    result = await run_sdk(sys.executable, str(HERE / "sdk_filters_durabletask.py"),
                           f"127.0.0.1:{sidecar.port}")  # fmt: skip
    v1, v2, o1 = ["COMPLETED", '"hello v1 from A"'], ["COMPLETED", '"hello v2 from B"'], [
        "COMPLETED", '"hello o1 from C"']  # fmt: skip
    pending = ["PENDING", None]
    assert result["after A"] == {"main-v1": v1, "main-v2": pending, "other-v1": pending}
    from_a = ["COMPLETED", '"hello p1 from A"']  # the child ran at its parent's version
    assert result["parent"] == {"parent-v1": from_a, "parent-v1-c": from_a}
    assert result["after B"] == {"main-v1": v1, "main-v2": v2, "other-v1": pending}
    assert result["after C"] == {"main-v1": v1, "main-v2": v2, "other-v1": o1}
    assert result["ran"] == [["A", "greet", "v1"], ["A", "greet", "p1"], ["B", "greet", "v2"],
                             ["C", "greet", "o1"]]  # fmt: skip


@pytest.fixture
async def channel(sidecar: Sidecar) -> AsyncIterator[Channel]:  # noqa: F811
    ch = Channel("127.0.0.1", sidecar.port, codec=BytesCodec())
    try:
        yield ch
    finally:
        ch.close()


def filtered(orchestrations: dict[str, list[str]], activities: dict[str, list[str]]) -> bytes:
    return ms.GetWorkItemsRequest(
        maxConcurrentOrchestrationWorkItems=4,
        workItemFilters=ms.WorkItemFilters(
            orchestrations=[
                ms.OrchestrationFilter(name=n, versions=v) for n, v in orchestrations.items()
            ],
            activities=[ms.ActivityFilter(name=n, versions=v) for n, v in activities.items()],
        ),
    ).SerializeToString()  # fmt: skip


async def until(condition: object) -> None:
    with anyio.fail_after(10):
        while not condition():  # type: ignore[operator]
            await anyio.lowlevel.checkpoint()


async def test_raw_filters_route_by_name_and_version(sidecar: Sidecar, channel: Channel) -> None:  # noqa: F811
    """Issue 14: two raw MS streams with filters: each orchestration goes to the one
    whose filters take its name and version, and an orchestration neither takes
    waits; an activity goes only to a stream whose activity filters take it."""
    await start(channel, "x-1", name="x")
    await start(channel, "y-1", name="y")  # version "": neither stream takes it
    for version in "23":
        await call(channel, "StartInstance", ms.CreateInstanceRequest(
            instanceId=f"y-{version}", name="y", version=wrapped(version)))  # fmt: skip
    schedule = ms.OrchestratorAction(id=0, scheduleTask=ms.ScheduleTaskAction(name="a"))
    async with (
        work_stream(channel, filtered({"x": []}, {})) as xs,
        work_stream(channel, filtered({"y": ["2", "3"], "z": []}, {"a": ["3"]})) as ys,
    ):
        x = await next_item(xs, ms.WorkItem)
        assert x.orchestratorRequest.instanceId == "x-1"
        got = {(await next_item(ys, ms.WorkItem)).orchestratorRequest.instanceId
               for _ in range(2)}  # fmt: skip
        assert got == {"y-2", "y-3"}
        # x-1 schedules activity "a" at version "": no stream's activity filters take it
        answer = ms.OrchestratorResponse(
            instanceId="x-1", actions=[schedule], completionToken=x.completionToken
        )
        await call(channel, "CompleteOrchestratorTask", answer)
        await until(lambda: sidecar.dispatcher.waiting == 2)  # y-1's turn, x-1's activity
        held = [[i.work for i in s.held.values()] for s in sidecar.dispatcher.streams]
        assert [[w.instance_id for w in works] for works in held] == [[], ["y-2", "y-3"]]


def test_filter_matching() -> None:
    """Issue 14: the Durable Task backends' matching: exact names, an empty version
    list takes any, an unset version is "", an empty category takes nothing."""
    turn = TurnWork("i", "r", [], [], 0, name="wf", version="")
    turn2 = TurnWork("i", "r", [], [], 0, name="wf", version="2")
    act = ActivityWork("i", "r", ActivityScheduled(task_id=0, name="a", step=0), 0, version="2")
    any_version = WorkFilters({"wf": frozenset()}, {})
    strict = WorkFilters({"wf": frozenset({"2"})}, {"a": frozenset({"2"})})
    unset = WorkFilters({"wf": frozenset({""})}, {})
    assert [any_version.accepts(w) for w in (turn, turn2, act)] == [True, True, False]
    assert [strict.accepts(w) for w in (turn, turn2, act)] == [False, True, True]
    assert [unset.accepts(w) for w in (turn, turn2, act)] == [True, False, False]
    assert not WorkFilters({"WF": frozenset()}, {}).accepts(turn)  # names are exact


def test_a_request_without_filters_takes_everything() -> None:
    """Issue 14: no filters (and the Dapr and minimal dialects, which have none)
    means no filtering; a name listed twice takes what either entry takes."""
    plain = ms.GetWorkItemsRequest(maxConcurrentOrchestrationWorkItems=1)
    assert work_filters("ms", plain.SerializeToString()) is None
    assert work_filters("dapr", b"") is None
    entries = [
        ms.OrchestrationFilter(name="wf", versions=["1"]),
        ms.OrchestrationFilter(name="wf", versions=["2"]),
    ]
    request = ms.GetWorkItemsRequest(workItemFilters=ms.WorkItemFilters(orchestrations=entries))
    twice = work_filters("ms", request.SerializeToString())
    assert twice == WorkFilters({"wf": frozenset({"1", "2"})}, {})
