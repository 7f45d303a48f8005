"""Durable Entities through the ``durabletask`` SDK, against a sidecar that does not
support them.

Run by tests/integration/test_sidecar_entities.py in a process of its own::

    python sdk_entities_durabletask.py HOST:PORT

An orchestration that calls an entity, one that signals one, then an ordinary one on
the same worker; the client's entity calls. Prints the states and the errors seen.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import grpc
from durabletask import client, entities, task, worker

WAIT = 60
COUNTER = entities.EntityInstanceId("counter", "c1")


def counter(ctx: entities.EntityContext, value: int) -> int:
    total = int(ctx.get_state(int, 0)) + value
    ctx.set_state(total)
    return total


def greet(ctx: task.ActivityContext, name: str) -> str:
    return f"hello {name}"


def calls(ctx: task.OrchestrationContext, _: Any) -> Any:
    said = yield ctx.call_activity(greet, input="before")
    total = yield ctx.call_entity(COUNTER, "add", 1)
    return [said, total]


def signals(ctx: task.OrchestrationContext, _: Any) -> Any:
    ctx.signal_entity(COUNTER, "add", 1)
    said = yield ctx.call_activity(greet, input="after")
    return said


def plain(ctx: task.OrchestrationContext, _: Any) -> Any:
    said = yield ctx.call_activity(greet, input="plain")
    return said


def _state(c: client.TaskHubGrpcClient, instance_id: str) -> list[Any]:
    state = c.wait_for_orchestration_completion(instance_id, timeout=WAIT)
    assert state is not None
    failure = state.failure_details
    return [state.runtime_status.name, state.serialized_output,
            [failure.error_type, failure.message] if failure is not None else None]  # fmt: skip


def _error(call: Any) -> list[Any]:
    try:
        call()
    except grpc.RpcError as err:
        return [err.code().name, err.details()]
    return ["OK", None]


def scenario(address: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with worker.TaskHubGrpcWorker(host_address=address) as w:
        for orchestrator in (calls, signals, plain):
            w.add_orchestrator(orchestrator)
        w.add_activity(greet)
        w.add_entity(counter, "counter")
        w.start()
        c = client.TaskHubGrpcClient(host_address=address)
        for fn in (calls, signals, plain):
            iid = c.schedule_new_orchestration(fn, instance_id=fn.__name__)
            out[fn.__name__] = _state(c, iid)
        out["history"] = len(c.get_orchestration_history("calls"))
        c.purge_orchestration("calls")
        out["purged"] = c.get_orchestration_state("calls") is None
        out["signal_entity"] = _error(lambda: c.signal_entity(COUNTER, "add", 1))
        out["get_entity"] = _error(lambda: c.get_entity(COUNTER))
        out["clean_entity_storage"] = _error(lambda: c.clean_entity_storage())
        w.stop()
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(scenario(sys.argv[1]), sort_keys=True), flush=True)
