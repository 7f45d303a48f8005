"""The committed stubs in durable/grpc/_proto/ are what protos/generate makes from protos/,
and they keep the protocol facts that matter (package-less routes, colliding numbers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from durable.grpc._proto import dapr, ms

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "durable" / "grpc" / "_proto"


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.py"))}


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools.protoc", reason="protos/generate needs the dev extra")
    pytest.importorskip("betterproto.plugin.parser", reason="needs betterproto[compiler]")
    done = subprocess.run(
        [sys.executable, str(ROOT / "protos" / "generate"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    fresh, committed = _tree(tmp_path), _tree(COMMITTED)
    assert sorted(fresh) == sorted(committed), "run protos/generate: the file set changed"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"durable/grpc/_proto is stale ({', '.join(stale)}): run protos/generate"


def _routes(service: type) -> set[str]:
    return set(service().__mapping__())


def test_routes_are_package_less() -> None:
    for service in (ms.TaskHubSidecarServiceBase, dapr.TaskHubSidecarServiceBase):
        routes = _routes(service)
        assert routes
        assert all(r.startswith("/TaskHubSidecarService/") for r in routes), routes


def test_each_dialect_has_its_own_methods() -> None:
    ms_methods = {r.rsplit("/", 1)[1] for r in _routes(ms.TaskHubSidecarServiceBase)}
    dapr_methods = {r.rsplit("/", 1)[1] for r in _routes(dapr.TaskHubSidecarServiceBase)}
    shared = {
        "Hello", "StartInstance", "GetInstance", "WaitForInstanceStart",
        "WaitForInstanceCompletion", "RaiseEvent", "TerminateInstance", "SuspendInstance",
        "ResumeInstance", "PurgeInstances", "GetWorkItems", "CompleteActivityTask",
        "CompleteOrchestratorTask",
    }  # fmt: skip
    assert shared <= ms_methods & dapr_methods
    assert {
        "ListInstanceIds", "QueryInstances", "RewindInstance", "RestartInstance",
        "StreamInstanceHistory", "AbandonTaskOrchestratorWorkItem",
        "AbandonTaskActivityWorkItem", "AbandonTaskEntityWorkItem",
    } <= ms_methods - dapr_methods  # fmt: skip
    assert dapr_methods - ms_methods == {
        "ListInstanceIDs", "RerunWorkflowFromEvent", "GetInstanceHistory", "CompleteWorkflowTask",
    }  # fmt: skip


def _number(message: type, field: str) -> int:
    number: int = message.__dataclass_fields__[field].metadata["betterproto"].number
    return number


@pytest.mark.parametrize(
    ("message", "field", "number"),
    [
        # the numbers the two dialects give different meanings (reference section 3)
        (ms.WorkItem, "health_ping", 4),
        (dapr.WorkItem, "health_ping", 6),
        (ms.WorkItem, "completion_token", 10),
        (dapr.WorkItem, "completion_token", 10),
        (ms.GetWorkItemsRequest, "capabilities", 10),
        (ms.GetWorkItemsRequest, "worker_instance_id", 12),
        (dapr.GetWorkItemsRequest, "capabilities", 4),
        (dapr.WorkflowRequest, "cached_history", 9),
        (dapr.CachedHistory, "event_count", 1),
        (ms.OrchestratorResponse, "orchestration_trace_context", 6),
        (dapr.WorkflowResponse, "version", 6),
        (ms.HistoryEvent, "execution_rewound", 30),
        (dapr.HistoryEvent, "router", 30),
        (dapr.HistoryEvent, "execution_stalled", 31),
        (ms.OrchestratorAction, "rewind_orchestration", 9),
        (dapr.WorkflowAction, "router", 9),
        (ms.CreateInstanceRequest, "request_time", 10),
        (dapr.CreateInstanceRequest, "enforce_unique_instance_id", 10),
        (ms.PurgeInstancesRequest, "is_orchestration", 5),
        (dapr.PurgeInstancesRequest, "router", 5),
        (dapr.ScheduleTaskAction, "task_execution_id", 5),
        (dapr.RerunWorkflowFromEventRequest, "new_child_workflow_instance_id", 6),
    ],
)
def test_protocol_facts(message: type, field: str, number: int) -> None:
    assert _number(message, field) == number


def test_capability_values() -> None:
    assert int(ms.WORKER_CAPABILITY_HISTORY_STREAMING) == 1
    assert int(ms.WORKER_CAPABILITY_LARGE_PAYLOADS) == 3
    assert int(dapr.WORKER_CAPABILITY_STATEFUL_HISTORY) == 2
    assert int(dapr.WORKER_CAPABILITY_HEALTH_PING) == 3
    assert int(dapr.ORCHESTRATION_STATUS_STALLED) == 8
