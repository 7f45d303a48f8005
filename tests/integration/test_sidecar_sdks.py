"""Durable Task SDKs, unchanged, on durable's sidecar: real workers and clients in
processes of their own, over a real socket.

- ``durabletask`` (Microsoft's dialect): one scenario (sequential and fan-out
  activities, a timer, an external event, a sub-orchestration, a retried activity, a
  caught and an uncaught activity failure, terminate, suspend/resume, purge) against
  the sidecar and against durabletask's own in-memory backend: the results match.
- ``dapr.ext.workflow`` (Dapr 1.19's dialect): the same scenario gives the same
  results; its worker advertises stateful history, and after the second turn the
  sidecar sends it only deltas (counted per turn), while a worker without the
  capability gets the whole history every turn.
- ``@dapr/durabletask-js`` (npm): a two-activity orchestration.

The SDKs are dev dependencies (``durabletask``, ``dapr``): a missing one fails here.
Neither is imported into this process (they cannot share one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest

import durable
from durable.grpc import Sidecar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

HERE = Path(__file__).parent
ROOT = Path(durable.__file__).resolve().parent.parent
NPM_CACHE = ROOT / ".durable" / "npm-durabletask-js"
JS_PACKAGE = "@dapr/durabletask-js@1.0.0"

pytestmark = pytest.mark.anyio


def sdk_env() -> dict[str, str]:
    """The environment for SDK processes: this checkout of durable first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


async def run_sdk(*args: str) -> dict[str, Any]:
    """Run an SDK script; the JSON after its ``RESULT`` line."""
    with anyio.fail_after(90):
        done = await anyio.run_process([*args], env=sdk_env(), check=False)
    out = done.stdout.decode()
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    raise AssertionError(f"{args[1]} printed no result (exit {done.returncode}):\n"
                         f"{out}\n{done.stderr.decode()[-4000:]}")  # fmt: skip


@pytest.fixture
async def sidecar() -> AsyncIterator[Sidecar]:
    async with Sidecar("memory://", port=0) as running:
        yield running


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """The scenario on durabletask's own in-memory backend (what the sidecar must match)."""
    return in_memory_backend("sdk_durabletask.py")


def in_memory_backend(script: str) -> dict[str, Any]:
    """What a durabletask SDK script (see ``sdk_durabletask.run``) gives on the SDK's
    own in-memory backend."""
    done = subprocess.run(
        [sys.executable, str(HERE / script), "inmemory"],
        env=sdk_env(), capture_output=True, timeout=90, check=False,
    )  # fmt: skip
    for line in done.stdout.decode().splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    raise AssertionError(f"the in-memory backend run failed:\n{done.stderr.decode()[-4000:]}")


EXPECTED_MAIN = {
    "first": "hello ada",
    "fan": ["hello 0", "hello 1", "hello 2", "hello 3"],
    "approval": {"ok": True},
    "sub": {"child": 7, "said": "hello child 7"},
    "retried": "flaky ok after 3 attempts",
    "caught": "always broken",
}


MS_ONLY = {"completed-ids", "failed-ids", "purged-terminated"}  # list, query, purge by filter


def check_scenario(result: dict[str, Any], reference: dict[str, Any]) -> None:
    keys = set(reference) - MS_ONLY if "dapr-ids" in result else set(reference)
    assert {k: result.get(k) for k in keys} == {k: reference[k] for k in keys}
    # and the reference itself is what the scenario means (a backend that broke both
    # the same way would not pass)
    assert reference["main"] == {"status": "COMPLETED", "output": EXPECTED_MAIN,
                                 "custom": {"stage": "done"}, "failure": None}  # fmt: skip
    assert reference["purged"] is True
    assert reference["terminated"]["status"] == "TERMINATED"
    assert reference["terminated"]["output"] == {"stopped": True}
    assert reference["suspended"] == "SUSPENDED"
    assert reference["resumed"]["output"] == {"got": 42}
    assert reference["failed"]["status"] == "FAILED"
    assert "always broken" in reference["failed"]["failure"]
    assert reference["continued"]["output"] == {"rounds": 2, "said": "hello round 2"}
    assert reference["completed-ids"] == ["loop-1", "order-1-child", "wait-2"]
    assert reference["failed-ids"] == ["fail-1"]
    assert reference["purged-terminated"] == [1, True]


async def test_durabletask_sdk_matches_its_in_memory_backend(
    sidecar: Sidecar, reference: dict[str, Any]
) -> None:
    script = str(HERE / "sdk_durabletask.py")
    result = await run_sdk(sys.executable, script, f"127.0.0.1:{sidecar.port}")
    check_scenario(result, reference)
    assert {s.cached for s in sidecar.sent} == {None}  # MS workers get full histories


async def test_dapr_sdk_matches_and_gets_deltas(
    sidecar: Sidecar, reference: dict[str, Any]
) -> None:
    result = await run_sdk(sys.executable, str(HERE / "sdk_dapr.py"), str(sidecar.port))
    check_scenario(result, reference)
    steps = [f"hello {i}" for i in range(6)]
    assert result["steps-stateful"] == result["steps-full"] == steps
    assert result["dapr-ids"] == sorted(["order-1-child", "wait-1", "wait-2", "fail-1", "loop-1",
                                         "steps-stateful", "steps-full"])  # fmt: skip
    assert result["dapr-rerun"] == ["steps-full", steps]  # in place, same result
    # the SDK's own id for the retried call comes back with each of its three attempts
    ids = result["dapr-execution-ids"]
    assert len(ids) == 3
    assert len(set(ids)) == 1
    assert ids[0]
    assert not ids[0].startswith("durable:")

    def turns(instance_id: str) -> list[tuple[int, int | None]]:
        return [(s.past, s.cached) for s in sidecar.sent if s.instance_id == instance_id]

    # Six sequential activities: seven turns. Each turn commits three messages (turn
    # start, activity completed, next activity scheduled).
    full = turns("steps-full")
    assert full[:7] == [(3 * i, None) for i in range(7)]  # whole history every turn
    # the rerun from the third activity (its taskScheduled has eventId 3: the worker
    # numbers tasks from 1): first the eight messages before it; the rerun's first turn
    # continues the turn it cut (it commits the activity scheduled again, and no turn
    # start), then as before
    assert full[7:] == [(8, None), (9, None), (12, None), (15, None), (18, None)]
    full = full[:7]
    stateful = turns("steps-stateful")
    assert stateful[:2] == [(0, None), (3, None)]  # start; the first history sent whole
    assert stateful[2:] == [(3, 3 * i) for i in range(1, 6)]  # then deltas only
    sent_full = sum(past for past, _ in full)
    sent_stateful = sum(past for past, _ in stateful)
    assert (sent_full, sent_stateful) == (63, 18)
    size = {
        i: sum(s.size for s in sidecar.sent if s.instance_id == i)
        for i in ("steps-full", "steps-stateful")
    }
    assert size["steps-stateful"] < size["steps-full"]


async def test_durabletask_js_two_activities(sidecar: Sidecar) -> None:
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm/node are not installed: cannot install @dapr/durabletask-js")
    modules = NPM_CACHE / "node_modules" / "@dapr" / "durabletask-js"
    if not modules.is_dir():
        NPM_CACHE.mkdir(parents=True, exist_ok=True)
        with anyio.fail_after(300):
            await anyio.run_process(
                [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NPM_CACHE),
                 JS_PACKAGE],
            )  # fmt: skip
    env = sdk_env()
    env["NODE_PATH"] = str(NPM_CACHE / "node_modules")
    with anyio.fail_after(90):
        done = await anyio.run_process(
            [node, str(HERE / "sdk_js.js"), f"127.0.0.1:{sidecar.port}"], env=env, check=False
        )
    out = done.stdout.decode()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, f"no result (exit {done.returncode}):\n{out}\n{done.stderr.decode()[-4000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result == {"status": "COMPLETED", "output": ["hello ada", "HELLO ADA!"]}
