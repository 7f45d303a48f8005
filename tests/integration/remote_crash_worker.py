"""``python remote_crash_worker.py TARGET ACTIVITY_LOG``: a ``RemoteWorker`` serving the
chain workflow of ``crash_worker.py`` for the sidecar at TARGET until it is killed.
Every activity execution is appended to ACTIVITY_LOG and printed as a STEP line."""

from __future__ import annotations

import sys
from datetime import timedelta

import anyio
import crash_worker

from durable.grpc import RemoteWorker


async def serve(target: str, activity_log: str) -> None:
    registry = crash_worker.build_registry(activity_log)
    worker = RemoteWorker(
        registry, target, reconnect_delay=timedelta(seconds=0.1),
        reconnect_max_delay=timedelta(seconds=0.5),
    )  # fmt: skip
    async with worker:
        print("READY", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(serve, sys.argv[1], sys.argv[2])
