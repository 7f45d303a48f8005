"""The sidecar's hot protobuf messages through each candidate Python protobuf runtime.

``python -m benchmarks.proto_runtimes [--rounds 7] [--past 10] [--bp2-venv DIR]``

Per "step" (one activity step of a workflow, as the sidecar and a worker see it), each
runtime builds, encodes, decodes and reads (every field the sidecar or a worker reads):

- a ``WorkItem`` with an ``OrchestratorRequest``: ``--past`` past events and 3 new
  ones (orchestratorStarted with a timestamp, taskScheduled, taskCompleted);
- an ``OrchestratorResponse`` with one ``scheduleTask`` action;
- a ``WorkItem`` with an ``ActivityRequest``, and its ``ActivityResponse``.

Runtimes (the Microsoft dialect's schema, ``protos/durable/grpc/ms``):

- ``betterproto``: 2.0.0b7, pure Python (stubs generated now with
  ``betterproto[compiler]``, which durable no longer depends on: skipped when absent);
- ``betterproto+rust``: the same stubs with ``betterproto-rust-codec`` importable (it
  replaces ``bytes()`` and ``parse()``; building and reading stay in Python). Measured
  in a child process, since betterproto picks the codec at import;
- ``betterproto2``: 0.10 stubs generated now with ``betterproto2-compiler`` (skipped
  when not installed; ``--bp2-venv`` points at a virtualenv that has it);
- ``upb``: the official ``protobuf`` runtime, durable's own ``_pb2`` stubs (what the
  sidecar runs since the measurements below moved it off betterproto).

Figures: µs of CPU (``time.process_time``) per step for build+encode, decode+read and
their sum, the median of ``--rounds`` rounds of 2,000 steps each; and the ratio to pure
betterproto. CPU time, not wall time: the reference machine is shared.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROTO = "durable/grpc/ms/orchestrator_service.proto"
STEPS = 2_000
NOW = datetime(2026, 12, 6, 5, 0, 0, 123456, tzinfo=UTC)
INPUT = '{"order": 42, "items": ["a", "b", "c"]}'


# -- the workload, per runtime ----------------------------------------------------------


class Workload:
    """Build, encode, decode and read the hot messages of one step."""

    def build(self, past: int) -> list[bytes]:
        raise NotImplementedError

    def read(self, encoded: list[bytes]) -> int:
        raise NotImplementedError


class BetterprotoWorkload(Workload):
    """betterproto 2.0.0b7 (``Message().parse``) or betterproto2 (``Message.parse``)."""

    def __init__(self, module: Any, which_one_of: Any, classmethod_parse: bool) -> None:
        self.m = module
        self.which = which_one_of
        self.classmethod_parse = classmethod_parse

    def _parse(self, cls: Any, data: bytes) -> Any:
        return cls.parse(data) if self.classmethod_parse else cls().parse(data)

    def _events(self, n: int, first_id: int) -> list[Any]:
        m = self.m
        out = []
        for i in range(n):
            if i % 3 == 0:
                out.append(
                    m.HistoryEvent(
                        event_id=-1,
                        timestamp=NOW,
                        orchestrator_started=m.OrchestratorStartedEvent(),
                    )
                )
            elif i % 3 == 1:
                out.append(
                    m.HistoryEvent(
                        event_id=first_id + i,
                        timestamp=NOW,
                        task_scheduled=m.TaskScheduledEvent(name="step", input=INPUT),
                    )
                )
            else:
                out.append(
                    m.HistoryEvent(
                        event_id=-1,
                        timestamp=NOW,
                        task_completed=m.TaskCompletedEvent(
                            task_scheduled_id=first_id + i - 1, result=INPUT
                        ),
                    )
                )
        return out  # fmt: skip

    def build(self, past: int) -> list[bytes]:
        m = self.m
        turn = m.WorkItem(
            orchestrator_request=m.OrchestratorRequest(
                instance_id="order-42", execution_id="e1",
                past_events=self._events(past, 0), new_events=self._events(3, past),
            ),
            completion_token="7",
        )  # fmt: skip
        response = m.OrchestratorResponse(
            instance_id="order-42", completion_token="7",
            actions=[m.OrchestratorAction(id=past, schedule_task=m.ScheduleTaskAction(
                name="step", input=INPUT))],
        )  # fmt: skip
        activity = m.WorkItem(
            activity_request=m.ActivityRequest(
                name="step", input=INPUT, task_id=past,
                orchestration_instance=m.OrchestrationInstance(instance_id="order-42"),
            ),
            completion_token="8",
        )  # fmt: skip
        answer = m.ActivityResponse(instance_id="order-42", task_id=past, result=INPUT,
                                    completion_token="8")  # fmt: skip
        return [bytes(turn), bytes(response), bytes(activity), bytes(answer)]

    def read(self, encoded: list[bytes]) -> int:
        m = self.m
        which = self.which
        seen = 0
        turn = self._parse(m.WorkItem, encoded[0]).orchestrator_request
        for event in [*turn.past_events, *turn.new_events]:
            name, value = which(event, "eventType")
            seen += event.event_id + len(name) + event.timestamp.microsecond
            if name == "task_scheduled":
                seen += len(value.name) + len(value.input or "")
            elif name == "task_completed":
                seen += value.task_scheduled_id + len(value.result or "")
        seen += len(turn.instance_id) + len(turn.execution_id or "")
        response = self._parse(m.OrchestratorResponse, encoded[1])
        for action in response.actions:
            name, value = which(action, "orchestratorActionType")
            seen += action.id + len(value.name) + len(value.input or "")
        seen += len(response.completion_token)
        activity = self._parse(m.WorkItem, encoded[2]).activity_request
        seen += activity.task_id + len(activity.name) + len(activity.input or "")
        seen += len(activity.orchestration_instance.instance_id)
        answer = self._parse(m.ActivityResponse, encoded[3])
        seen += answer.task_id + len(answer.result or "") + len(answer.completion_token)
        return int(seen)


class UpbWorkload(Workload):
    """The official ``protobuf`` runtime (upb), camelCase fields as in the schema."""

    def __init__(self, module: Any) -> None:
        self.m = module

    def _events(self, into: Any, n: int, first_id: int) -> None:
        for i in range(n):
            event = into.add()
            event.timestamp.FromDatetime(NOW)
            if i % 3 == 0:
                event.eventId = -1
                event.orchestratorStarted.SetInParent()
            elif i % 3 == 1:
                event.eventId = first_id + i
                event.taskScheduled.name = "step"
                event.taskScheduled.input.value = INPUT
            else:
                event.eventId = -1
                event.taskCompleted.taskScheduledId = first_id + i - 1
                event.taskCompleted.result.value = INPUT

    def build(self, past: int) -> list[bytes]:
        m = self.m
        turn = m.WorkItem(completionToken="7")
        request = turn.orchestratorRequest
        request.instanceId = "order-42"
        request.executionId.value = "e1"
        self._events(request.pastEvents, past, 0)
        self._events(request.newEvents, 3, past)
        response = m.OrchestratorResponse(instanceId="order-42", completionToken="7")
        action = response.actions.add(id=past)
        action.scheduleTask.name = "step"
        action.scheduleTask.input.value = INPUT
        activity = m.WorkItem(completionToken="8")
        activity.activityRequest.name = "step"
        activity.activityRequest.input.value = INPUT
        activity.activityRequest.taskId = past
        activity.activityRequest.orchestrationInstance.instanceId = "order-42"
        answer = m.ActivityResponse(instanceId="order-42", taskId=past, completionToken="8")
        answer.result.value = INPUT
        return [
            turn.SerializeToString(),
            response.SerializeToString(),
            activity.SerializeToString(),
            answer.SerializeToString(),
        ]

    def read(self, encoded: list[bytes]) -> int:
        m = self.m
        seen = 0
        turn = m.WorkItem.FromString(encoded[0]).orchestratorRequest
        for event in [*turn.pastEvents, *turn.newEvents]:
            name = event.WhichOneof("eventType")
            seen += event.eventId + len(name) + event.timestamp.ToDatetime().microsecond
            if name == "taskScheduled":
                value = event.taskScheduled
                seen += len(value.name) + len(value.input.value)
            elif name == "taskCompleted":
                value = event.taskCompleted
                seen += value.taskScheduledId + len(value.result.value)
        seen += len(turn.instanceId) + len(turn.executionId.value)
        response = m.OrchestratorResponse.FromString(encoded[1])
        for action in response.actions:
            name = action.WhichOneof("orchestratorActionType")
            value = getattr(action, name)
            seen += action.id + len(value.name) + len(value.input.value)
        seen += len(response.completionToken)
        activity = m.WorkItem.FromString(encoded[2]).activityRequest
        seen += activity.taskId + len(activity.name) + len(activity.input.value)
        seen += len(activity.orchestrationInstance.instanceId)
        answer = m.ActivityResponse.FromString(encoded[3])
        seen += answer.taskId + len(answer.result.value) + len(answer.completionToken)
        return int(seen)


# -- loading each runtime ---------------------------------------------------------------


def _protoc(plugin_args: list[str], out: Path, python: str = sys.executable) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [python, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}", *plugin_args, PROTO]
    env = {**os.environ, "PATH": f"{Path(python).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(cmd, check=True, cwd=ROOT / "protos", env=env, capture_output=True)


def load(runtime: str, scratch: Path) -> Workload:
    """The workload for ``runtime``, generating its stubs under ``scratch`` if needed."""
    if runtime in ("betterproto", "betterproto+rust"):
        out = scratch / "bp"
        _protoc([f"--python_betterproto_out={out}"], out)
        import betterproto  # type: ignore[import-not-found, unused-ignore]

        module = _load_generated(out, "bench_bp_ms")
        return BetterprotoWorkload(module, betterproto.which_one_of, classmethod_parse=False)
    if runtime == "betterproto2":
        out = scratch / "bp2"
        _protoc([f"--python_betterproto2_out={out}"], out)
        import betterproto2  # type: ignore[import-not-found, unused-ignore]

        module = _load_generated(out, "bench_bp2_ms")
        return BetterprotoWorkload(module, betterproto2.which_one_of, classmethod_parse=True)
    if runtime == "upb":
        from google.protobuf.internal import (  # type: ignore[import-untyped, unused-ignore]
            api_implementation,
        )

        from durable.grpc._proto import ms  # durable's own stubs

        if api_implementation.Type() != "upb":
            raise RuntimeError(f"protobuf runs on {api_implementation.Type()}, not upb")
        return UpbWorkload(ms)
    raise ValueError(runtime)


def _load_generated(out: Path, name: str) -> Any:
    """The module a betterproto plugin wrote for the ``durable.grpc.ms`` package."""
    path = out / "durable" / "grpc" / "ms" / "__init__.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def measure(workload: Workload, past: int, rounds: int) -> dict[str, float]:
    """Median µs of CPU per step: build+encode, decode+read."""
    encoded = workload.build(past)
    expected = workload.read(encoded)
    builds, reads = [], []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(STEPS):
            workload.build(past)
        builds.append((time.process_time() - started) / STEPS * 1e6)
        started = time.process_time()
        for _ in range(STEPS):
            if workload.read(encoded) != expected:
                raise RuntimeError("decoded something else")
        reads.append((time.process_time() - started) / STEPS * 1e6)
    build, read = statistics.median(builds), statistics.median(reads)
    return {"build_us": build, "read_us": read, "step_us": build + read,
            "bytes": float(sum(map(len, encoded)))}  # fmt: skip


def _child(runtime: str, past: int, rounds: int, scratch: Path) -> None:
    if runtime == "betterproto":
        sys.modules["betterproto_rust_codec"] = None  # type: ignore[assignment]
    elif runtime == "betterproto+rust":
        import betterproto_rust_codec  # type: ignore[import-not-found, unused-ignore]

        assert betterproto_rust_codec
    print(json.dumps(measure(load(runtime, scratch), past, rounds)))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proto_runtimes")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--past", type=int, default=10, help="past events per turn")
    parser.add_argument("--bp2-venv", help="a virtualenv with betterproto2(-compiler) and "
                        "betterproto-rust-codec, for the runtimes this one lacks")  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.past, args.rounds, Path(args.scratch))
        return
    print(f"load average {os.getloadavg()[0]:.2f}; {args.past} past events per turn; "
          f"µs of CPU per step, median of {args.rounds} rounds of {STEPS:,} steps")  # fmt: skip
    other = str(Path(args.bp2_venv) / "bin" / "python") if args.bp2_venv else sys.executable
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for runtime in ("betterproto", "betterproto+rust", "betterproto2", "upb"):
            python = sys.executable if runtime in ("betterproto", "upb") else other
            cmd = [python, "-m", "benchmarks.proto_runtimes", "--child", runtime,
                   "--past", str(args.past), "--rounds", str(args.rounds),
                   "--scratch", scratch]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            if done.returncode:
                last = (done.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{runtime:18} skipped: {last}")
                continue
            figures[runtime] = json.loads(done.stdout.strip().splitlines()[-1])
    base = figures.get("betterproto")
    print(f"{'runtime':18} {'build+encode':>13} {'decode+read':>12} {'step':>8} "
          f"{'bytes':>6} {'vs betterproto':>15}")  # fmt: skip
    for runtime, f in figures.items():
        ratio = f"{base['step_us'] / f['step_us']:.1f}x faster" if base else ""
        print(f"{runtime:18} {f['build_us']:13,.0f} {f['read_us']:12,.0f} "
              f"{f['step_us']:8,.0f} {f['bytes']:6,.0f} {ratio:>15}")  # fmt: skip


if __name__ == "__main__":
    main()
