"""Work-item filters and strict versioning through the ``durabletask`` SDK.

Run by tests/integration/test_sidecar_filters.py in a process of its own::

    python sdk_filters_durabletask.py HOST:PORT

Three orchestrations are started before any worker connects: ``main`` at version
2.0, ``other`` at 1.0, then worker A (version 1.0, STRICT, filters from its registry:
``main`` and ``greet`` at 1.0) connects and ``main`` at 1.0 is started; it runs to the
end (its activity has no version of its own: it counts as 1.0). The other two must
still be pending. Worker B (2.0, STRICT, filters) takes ``main`` 2.0 but not
``other`` 1.0; worker C (explicit filters: ``other`` any version, ``greet``) takes it.
A's ``parent`` (1.0) starts its ``main`` sub-orchestration at A's default version,
1.0, and A runs it. Prints the status of each instance at each stage and which
worker ran what.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from durabletask import client, task, worker

WAIT = 20
RAN: list[list[str]] = []


def greet_as(who: str) -> Any:
    def greet(ctx: task.ActivityContext, name: str) -> str:
        RAN.append([who, "greet", name])
        return f"hello {name} from {who}"

    return greet


def main(ctx: task.OrchestrationContext, name: str) -> Any:
    said = yield ctx.call_activity("greet", input=name)
    return said


def parent(ctx: task.OrchestrationContext, name: str) -> Any:
    said = yield ctx.call_sub_orchestrator("main", input=name, instance_id=f"{ctx.instance_id}-c")
    return said


def other(ctx: task.OrchestrationContext, name: str) -> Any:
    said = yield ctx.call_activity("greet", input=name)
    return said


def _worker(
    address: str, who: str, orchestrators: list[Any], **how: Any
) -> worker.TaskHubGrpcWorker:
    w = worker.TaskHubGrpcWorker(host_address=address)
    for fn in orchestrators:
        w.add_orchestrator(fn)
    w.add_activity(greet_as(who))  # registered as "greet"
    if "version" in how:
        w.use_versioning(worker.VersioningOptions(
            version=how["version"], default_version=how["version"],
            match_strategy=worker.VersionMatchStrategy.STRICT))  # fmt: skip
    if "filters" in how:
        w.use_work_item_filters(how["filters"])
    else:
        w.use_work_item_filters()  # from its registry (and its version, STRICT)
    return w


def _statuses(c: client.TaskHubGrpcClient, ids: list[str]) -> dict[str, Any]:
    out = {}
    for iid in ids:
        state = c.get_orchestration_state(iid)
        out[iid] = [state.runtime_status.name, state.serialized_output] if state else None
    return out


def _done(c: client.TaskHubGrpcClient, iid: str) -> None:
    c.wait_for_orchestration_completion(iid, timeout=WAIT)


def scenario(address: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    c = client.TaskHubGrpcClient(host_address=address)
    c.schedule_new_orchestration("main", input="v2", instance_id="main-v2", version="2.0")
    c.schedule_new_orchestration("other", input="o1", instance_id="other-v1", version="1.0")
    ids = ["main-v1", "main-v2", "other-v1"]

    a = _worker(address, "A", [main, parent], version="1.0")
    a.start()
    c.schedule_new_orchestration("main", input="v1", instance_id="main-v1", version="1.0")
    _done(c, "main-v1")
    # its sub-orchestration runs at the worker's default version, 1.0: A takes it too
    c.schedule_new_orchestration("parent", input="p1", instance_id="parent-v1", version="1.0")
    _done(c, "parent-v1")
    out["parent"] = _statuses(c, ["parent-v1", "parent-v1-c"])
    out["after A"] = _statuses(c, ids)
    a.stop()

    b = _worker(address, "B", [main, other], version="2.0")
    b.start()
    _done(c, "main-v2")
    out["after B"] = _statuses(c, ids)
    b.stop()

    only_other = worker.WorkItemFilters(
        orchestrations=[worker.OrchestrationWorkItemFilter("other")],
        activities=[worker.ActivityWorkItemFilter("greet")],
    )
    w = _worker(address, "C", [other], filters=only_other)
    w.start()
    _done(c, "other-v1")
    out["after C"] = _statuses(c, ids)
    w.stop()
    out["ran"] = RAN
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(scenario(sys.argv[1]), sort_keys=True), flush=True)
