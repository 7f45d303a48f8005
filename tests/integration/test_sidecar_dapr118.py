"""Dapr's Workflow SDK of the 1.18 release (``dapr-ext-workflow`` 1.18.3 with ``dapr``
1.18.3), unchanged, on durable's sidecar (issue 14, item 5): the same scenario as
1.19's gives the same results as durabletask's own backend.

1.18 cannot share a Python environment with 1.19 (the dev dependency), so the test
installs it, once, into a virtual environment of its own under ``.durable/`` (as the
durabletask-js test keeps its npm package there); a failed install fails the test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_sidecar_sdks import HERE, MS_ONLY, ROOT, check_scenario, reference, run_sdk, sidecar  # noqa: F401

from durable.grpc import Sidecar

pytestmark = pytest.mark.anyio

PACKAGES = ["dapr-ext-workflow==1.18.3", "dapr==1.18.3"]
VENV = ROOT / ".durable" / "venv-dapr-1.18.3"


async def dapr118_python() -> Path:
    """The Python of a virtual environment with Dapr 1.18's SDK (made on first use)."""
    python = VENV / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    ready = VENV / "installed"
    if not ready.exists():
        with anyio.fail_after(600):
            await anyio.run_process([sys.executable, "-m", "venv", "--clear", str(VENV)])
            await anyio.run_process([str(python), "-m", "pip", "install", "--quiet",
                                     "--disable-pip-version-check", *PACKAGES])  # fmt: skip
        ready.write_text(" ".join(PACKAGES) + "\n")
    return python


async def test_dapr_118_sdk_matches_its_scenario(
    sidecar: Sidecar,  # noqa: F811
    reference: dict[str, Any],  # noqa: F811
) -> None:
    """Issue 14: only dapr 1.19.0 was tested. Dapr 1.18.3's worker sends an empty
    GetWorkItemsRequest (the minimal dialect: whole histories, no pings); its
    scenario's results match the durabletask SDK's on its own backend."""
    python = await dapr118_python()
    result = await run_sdk(str(python), str(HERE / "sdk_dapr.py"), str(sidecar.port))
    keys = set(reference) - MS_ONLY  # 1.18 lists, queries and purges by filter nothing
    assert {k: result.get(k) for k in keys} == {k: reference[k] for k in keys}
    check_scenario({**result, **{k: reference[k] for k in MS_ONLY}}, reference)
    assert result["steps-full"] == [f"hello {i}" for i in range(6)]
    assert {s.cached for s in sidecar.sent} == {None}  # no stateful history in 1.18
