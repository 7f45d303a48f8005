"""The committed stubs in durable/grpc/_proto/ are what protos/generate makes from protos/,
and they keep the protocol facts that matter (each dialect's methods, colliding numbers)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf.message import Message

from durable.grpc._proto import dapr, ms

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "durable" / "grpc" / "_proto"


def _tree(root: Path) -> dict[str, bytes]:
    files = sorted([*root.rglob("*.py"), *root.rglob("*.pyi")])
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools.protoc", reason="protos/generate needs the dev extra")
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


def _methods(module: ModuleType) -> set[str]:
    return set(module.DESCRIPTOR.services_by_name["TaskHubSidecarService"].methods_by_name)


def test_dialects_have_packages_of_their_own() -> None:
    """Two package-less files would clash in protobuf's descriptor pool (and with the
    SDKs' own stubs, in a process that imports both); routes are built by hand."""
    assert ms.DESCRIPTOR.package == "durable.grpc.ms"
    assert dapr.DESCRIPTOR.package == "durable.grpc.dapr"
    assert ms.HistoryEvent.DESCRIPTOR.full_name == "durable.grpc.ms.HistoryEvent"


def test_each_dialect_has_its_own_methods() -> None:
    ms_methods = _methods(ms)
    dapr_methods = _methods(dapr)
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


def _number(message: type[Message], field: str) -> int:
    number: int = message.DESCRIPTOR.fields_by_name[field].number
    return number


@pytest.mark.parametrize(
    ("message", "field", "number"),
    [
        # the numbers the two dialects give different meanings (reference section 3)
        (ms.WorkItem, "healthPing", 4),
        (dapr.WorkItem, "healthPing", 6),
        (ms.WorkItem, "completionToken", 10),
        (dapr.WorkItem, "completionToken", 10),
        (ms.GetWorkItemsRequest, "capabilities", 10),
        (ms.GetWorkItemsRequest, "worker_instance_id", 12),
        (dapr.GetWorkItemsRequest, "capabilities", 4),
        (dapr.WorkflowRequest, "cachedHistory", 9),
        (dapr.CachedHistory, "eventCount", 1),
        (ms.OrchestratorResponse, "orchestrationTraceContext", 6),
        (dapr.WorkflowResponse, "version", 6),
        (ms.HistoryEvent, "executionRewound", 30),
        (dapr.HistoryEvent, "router", 30),
        (dapr.HistoryEvent, "executionStalled", 31),
        (ms.OrchestratorAction, "rewindOrchestration", 9),
        (dapr.WorkflowAction, "router", 9),
        (ms.CreateInstanceRequest, "requestTime", 10),
        (dapr.CreateInstanceRequest, "enforceUniqueInstanceId", 10),
        (ms.PurgeInstancesRequest, "isOrchestration", 5),
        (dapr.PurgeInstancesRequest, "router", 5),
        (dapr.ScheduleTaskAction, "taskExecutionId", 5),
        (dapr.RerunWorkflowFromEventRequest, "newChildWorkflowInstanceID", 6),
    ],
)
def test_protocol_facts(message: type[Message], field: str, number: int) -> None:
    assert _number(message, field) == number


def test_capability_values() -> None:
    assert int(ms.WORKER_CAPABILITY_HISTORY_STREAMING) == 1
    assert int(ms.WORKER_CAPABILITY_LARGE_PAYLOADS) == 3
    assert int(dapr.WORKER_CAPABILITY_STATEFUL_HISTORY) == 2
    assert int(dapr.WORKER_CAPABILITY_HEALTH_PING) == 3
    assert int(dapr.ORCHESTRATION_STATUS_STALLED) == 8
