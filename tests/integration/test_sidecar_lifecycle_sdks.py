"""Durable Task SDKs' lifecycle calls on durable's sidecar, each SDK in a process of its
own (see test_sidecar_sdks.py): events between instances, a sub-orchestration retried
under its id, id-reuse policies, recursive terminate and purge, purge by filter,
restart, rerun into a new instance with a new input."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import pytest
from test_sidecar_sdks import HERE, run_sdk

from durable.grpc import Sidecar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sidecar() -> AsyncIterator[Sidecar]:
    async with Sidecar("memory://", port=0) as running:
        yield running


def _done(output: Any, status: str = "COMPLETED") -> dict[str, Any]:
    return {"status": status, "output": output}


async def test_durabletask_sdk_lifecycle(sidecar: Sidecar) -> None:
    """Issue 14: ctx.send_event failed the sender; a sub-orchestration retried under its
    id failed ("already exists (status FAILED)") and hung its parent, and one under the
    id of another, ended instance failed; the reuse policy was ignored; recursive purge
    left the children; RestartInstance was UNIMPLEMENTED."""
    script = str(HERE / "sdk_lifecycle_durabletask.py")
    result = await run_sdk(sys.executable, script, f"127.0.0.1:{sidecar.port}")
    # an event between instances; one to an instance that does not exist is dropped
    assert result["send-sender"] == _done("hello sender")
    assert result["send-receiver"] == _done({"got": {"from": "tx-1"}})
    assert result["send-nobody"] is None
    # the retry of a failed sub-orchestration replaces it, under the same id
    assert result["child-retry"] == _done("kid ok after 2 attempts")
    assert result["child-retry-child"] == _done("kid ok after 2 attempts")
    # a sub-orchestration under an id another instance holds: that one is replaced if
    # it has ended; if it runs, the call fails at once (and it runs on)
    assert result["child-id-ended"] == [_done("hello adopted"), _done("hello adopted")]
    assert result["child-id-running"] == ["COMPLETED", True, "RUNNING"]
    # no policy: an ended instance is replaced; a policy replaces only what it lists,
    # a listed running one too (terminated first)
    assert result["reuse-none"] == "OK"
    assert result["reuse-none-replaced"] == _done("hello 2")
    assert result["reuse-not-listed"] == "ALREADY_EXISTS"
    assert result["reuse-listed"] == "OK"
    assert result["reuse-replaced"] == _done("hello 4")
    assert result["reuse-running"] == "OK"
    assert result["reuse-running-replaced"] == _done("hello 5")
    # recursive terminate ends the tree (a child that had completed stays so); no
    # activity of it runs afterwards (only t1-b's first attempt ran, before)
    assert result["terminated"] == {"t1": "TERMINATED", "t1-a": "TERMINATED",
                                    "t1-b": "TERMINATED", "t1-c": "COMPLETED"}  # fmt: skip
    assert result["ran-after-terminate"] == ["t1-b"]
    # activities queued in the sidecar (the worker takes one at a time) when the tree
    # was terminated: none runs
    assert result["terminated-queued"] == ["TERMINATED", "TERMINATED"]
    assert result["ran-after-terminate-queued"] == []
    assert result["terminated-alone"] == ["TERMINATED", "RUNNING"]
    # recursive purge deletes the tree; without it, the parent alone
    assert result["purged-alone"] == [1, "TERMINATED"]
    assert result["purged-tree"] == [4, [None, None, None, None]]
    # restart: the same id, or a new one; refused for an unknown or running instance
    assert result["restart-same"] == ["restart-1", _done("hello again")]
    assert result["restart-new"] == [True, _done("hello again")]
    assert result["restart-unknown"] == "NOT_FOUND"
    assert result["restart-running"] == "FAILED_PRECONDITION"


async def test_dapr_sdk_lifecycle(sidecar: Sidecar) -> None:
    """Issue 14: a child workflow retried under its id failed; Dapr purge by filter was
    refused, and so was rerun with newInstanceID or overwriteInput."""
    result = await run_sdk(sys.executable, str(HERE / "sdk_lifecycle_dapr.py"), str(sidecar.port))
    assert result["child-retry"] == _done("kid ok after 2 attempts")
    assert result["started-again"] == _done("hello 2")
    assert result["terminated"] == ["TERMINATED", "TERMINATED"]
    assert result["purged-tree"] == [None, None, None]
    # the three completed in the range go; the running one and the older one stay
    assert result["purged-by-filter"] == [3, [None, None, None], "RUNNING", "COMPLETED"]
    steps = ["hello 0", "hello 1", "hello 2", "hello 3"]
    assert result["source"] == _done(steps)
    forked = ["hello 0", "hello 1", "hello X", "hello 3"]
    assert result["rerun-new"] == ["fork", _done(forked), _done(steps)]
    assert result["rerun-new-same-input"] == ["fork-2", _done(steps)]
