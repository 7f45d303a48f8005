"""Durable Entities stay out of scope (issue 14, item 3): refused by name with a typed
gRPC error, and an orchestration that uses one fails cleanly, its instance readable,
purgeable, and the worker unharmed. Through the real ``durabletask`` SDK, in a
process of its own."""

from __future__ import annotations

import sys

import pytest
from test_sidecar_sdks import HERE, run_sdk, sidecar  # noqa: F401  (a fixture)

from durable.grpc import Sidecar
from durable.grpc import _convert as cv
from durable.grpc._framing import ENTITIES_UNSUPPORTED, NotSupportedError
from durable.grpc._proto import ms

pytestmark = pytest.mark.anyio


async def test_entities_are_refused_by_name_and_corrupt_nothing(sidecar: Sidecar) -> None:  # noqa: F811
    """Issue 14: call_entity / signal_entity failed the orchestration with "has no
    counterpart in durable" and the entity RPCs answered a bare "Method not found".
    Now the instance fails with a NotSupportedError naming Durable Entities (its
    history readable, purge working, the next orchestration running), and the entity
    RPCs answer UNIMPLEMENTED naming the feature."""
    result = await run_sdk(sys.executable, str(HERE / "sdk_entities_durabletask.py"),
                           f"127.0.0.1:{sidecar.port}")  # fmt: skip
    for name in ("calls", "signals"):
        status, output, (kind, message) = result[name]
        assert (status, output, kind) == ("FAILED", None, "NotSupportedError"), name
        assert ENTITIES_UNSUPPORTED in message
    assert result["plain"] == ["COMPLETED", '"hello plain"', None]
    assert result["history"] > 0
    assert result["purged"] is True
    for rpc in ("signal_entity", "get_entity", "clean_entity_storage"):
        assert result[rpc] == ["UNIMPLEMENTED", ENTITIES_UNSUPPORTED], rpc


def test_an_entity_message_action_is_refused_as_unsupported() -> None:
    """Issue 14: sendEntityMessage is refused as a feature durable lacks, not as a
    malformed message."""
    action = ms.OrchestratorAction(id=1, sendEntityMessage=ms.SendEntityMessageAction())
    with pytest.raises(NotSupportedError, match="Durable Entities"):
        cv.action_from_proto(action)
