"""Rewind through the sidecar (issue 14): the ``durabletask`` SDK's
``rewind_orchestration`` (RewindInstance), unchanged, in a process of its own, gives
what the SDK's own in-memory backend gives: failed activities and sub-orchestrations
run again, the rest keep their results, twice in a row, with a purged child too."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest
from test_sidecar_sdks import HERE, in_memory_backend, run_sdk

from durable.grpc import Sidecar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

SCRIPT = str(HERE / "rewind_sdk.py")

EXPECTED = {
    "flow-failed": "FAILED",
    "flow": {"status": "COMPLETED", "output": ["A", "B", "C"]},
    "twice-failed": "FAILED",
    "twice-once": "FAILED",
    "twice": {"status": "COMPLETED", "output": ["S", "T", "U"]},
    "nested-failed": "FAILED",
    "nested": {"status": "COMPLETED", "output": ["P", ["K1", "K2"]]},
    "nested-kid": {"status": "COMPLETED", "output": ["K1", "K2"]},
    "purged-failed": "FAILED",
    "purged": {"status": "COMPLETED", "output": ["Q", ["P1", "P2"]]},
    "refused-completed": "FAILED_PRECONDITION",
    "refused-unknown": "NOT_FOUND",
    # each failed step once more per rewind; what succeeded never again, except in the
    # purged child, whose results went with it (p1)
    "calls": {"a": 1, "b": 2, "c": 1, "s": 1, "t": 3, "u": 1, "p": 1, "k1": 1, "k2": 2,
              "q": 1, "p1": 2, "p2": 2},
}  # fmt: skip


@pytest.fixture
async def sidecar() -> AsyncIterator[Sidecar]:
    async with Sidecar("memory://", port=0) as running:
        yield running


async def test_the_sdks_rewind_works_on_the_sidecar_as_on_its_own_backend(
    sidecar: Sidecar,
) -> None:
    """RewindInstance used to answer UNIMPLEMENTED."""
    result = await run_sdk(sys.executable, SCRIPT, f"127.0.0.1:{sidecar.port}")
    assert result == EXPECTED
    assert in_memory_backend("rewind_sdk.py") == EXPECTED
