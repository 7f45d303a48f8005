"""A worker process for the heartbeat crash test (``test_semantics_crash.py``).

``python semantics_crash_worker.py STORE_DIR start`` starts workflow ``hb``: its activity
heartbeats progress 1, 2, 3, waits until the details are in the store, prints
``recorded 3`` and hangs, to be killed. ``... STORE_DIR resume`` recovers the instance:
the activity runs again, prints the details it found, and the result is printed.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import anyio

import durable
from durable import ActivityContext, WorkflowContext

registry = durable.Registry()
STORE = Path(sys.argv[1]) if __name__ == "__main__" else Path()


@registry.activity
async def crunch(ctx: ActivityContext, rows: int) -> int:
    print(f"attempt {ctx.attempt} found {ctx.heartbeat_details}", flush=True)
    if ctx.heartbeat_details is not None:
        return int(ctx.heartbeat_details)
    for row in range(1, rows + 1):
        ctx.heartbeat(row)
    while not any(p.read_bytes() == b"3" for p in STORE.glob("memo/hb/*/~heartbeat")):  # noqa: ASYNC110 (another process's file)
        await anyio.sleep(0.01)
    print("recorded 3", flush=True)
    await anyio.sleep_forever()
    return -1


@registry.workflow
async def flow(ctx: WorkflowContext) -> int:
    done: int = await ctx.call_activity(crunch, 3, heartbeat_timeout=timedelta(minutes=10))
    return done


async def main(mode: str) -> None:
    async with durable.Runtime(registry, store=f"file://{STORE}") as rt:
        handle = (
            await rt.start(flow, instance_id="hb")
            if mode == "start"
            else rt.client.get_handle("hb")
        )
        print(f"result {await handle}", flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[2])
