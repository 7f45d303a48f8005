"""The ``durabletask`` SDK's ``rewind_orchestration``, run against a sidecar or against
durabletask's own in-memory backend (test_rewind_sidecar.py compares the two).

    python rewind_sdk.py HOST:PORT      # a sidecar already listening there
    python rewind_sdk.py inmemory       # durabletask's own in-memory backend

Prints one JSON object: each case's outcome, and how often each activity ran.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
from durabletask import client, task, worker
from sdk_durabletask import run

CALLS: dict[str, int] = {}
FAILS: dict[str, int] = {"b": 1, "k2": 1, "t": 2, "p2": 1}  # failures still to come
WAIT = 30  # seconds: a generous bound for each client wait


def step(ctx: task.ActivityContext, name: str) -> str:
    CALLS[name] = CALLS.get(name, 0) + 1
    if FAILS.get(name, 0) > 0:
        FAILS[name] -= 1
        raise RuntimeError(f"{name} fails on purpose")
    return name.upper()


def flow(ctx: task.OrchestrationContext, names: list[str]) -> Any:
    out = []
    for name in names:
        out.append((yield ctx.call_activity(step, input=name)))
    return out


def kid(ctx: task.OrchestrationContext, names: list[str]) -> Any:
    first = yield ctx.call_activity(step, input=names[0])
    second = yield ctx.call_activity(step, input=names[1])
    return [first, second]


def parent(ctx: task.OrchestrationContext, names: list[str]) -> Any:
    own = yield ctx.call_activity(step, input=names[0])
    sub = yield ctx.call_sub_orchestrator(
        kid, input=names[1:], instance_id=f"{ctx.instance_id}-kid"
    )
    return [own, sub]


def _outcome(c: client.TaskHubGrpcClient, instance_id: str) -> dict[str, Any]:
    state = c.wait_for_orchestration_completion(instance_id, timeout=WAIT)
    assert state is not None
    return {
        "status": state.runtime_status.name,
        "output": json.loads(state.serialized_output) if state.serialized_output else None,
    }


def _refused(call: Any) -> str:
    try:
        call()
    except grpc.RpcError as err:
        return str(err.code().name)
    return "accepted"


def scenario(address: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with worker.TaskHubGrpcWorker(host_address=address) as w:
        for orchestrator in (flow, kid, parent):
            w.add_orchestrator(orchestrator)
        w.add_activity(step)
        w.start()
        c = client.TaskHubGrpcClient(host_address=address)

        # a failed activity runs again; the others keep their results
        iid = c.schedule_new_orchestration(flow, input=["a", "b", "c"], instance_id="flow-1")
        out["flow-failed"] = _outcome(c, iid)["status"]
        c.rewind_orchestration(iid, reason="b is fixed")
        out["flow"] = _outcome(c, iid)

        # twice in a row
        iid = c.schedule_new_orchestration(flow, input=["s", "t", "u"], instance_id="flow-2")
        out["twice-failed"] = _outcome(c, iid)["status"]
        c.rewind_orchestration(iid)
        out["twice-once"] = _outcome(c, iid)["status"]
        c.rewind_orchestration(iid)
        out["twice"] = _outcome(c, iid)

        # through a sub-orchestration: the failed child is rewound, not restarted
        iid = c.schedule_new_orchestration(parent, input=["p", "k1", "k2"], instance_id="par-1")
        out["nested-failed"] = _outcome(c, iid)["status"]
        c.rewind_orchestration(iid, reason="k2 is fixed")
        out["nested"] = _outcome(c, iid)
        out["nested-kid"] = _outcome(c, f"{iid}-kid")

        # a purged sub-orchestration is created again from its call
        iid = c.schedule_new_orchestration(parent, input=["q", "p1", "p2"], instance_id="par-2")
        out["purged-failed"] = _outcome(c, iid)["status"]
        c.purge_orchestration(f"{iid}-kid", recursive=False)
        c.rewind_orchestration(iid)
        out["purged"] = _outcome(c, iid)

        # only a failed instance
        out["refused-completed"] = _refused(lambda: c.rewind_orchestration("flow-1"))
        out["refused-unknown"] = _refused(lambda: c.rewind_orchestration("nobody"))
        out["calls"] = dict(sorted(CALLS.items()))
        w.stop()
    return out


if __name__ == "__main__":
    run(scenario)
