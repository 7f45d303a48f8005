"""A process for the memo crash test: one payment step that memoizes the charge.

Usage: python memo_worker.py STORE_DIR PAYMENTS_FILE [crash]
With ``crash`` the activity blocks right after the memo put, so the test can SIGKILL
the process between the memo write and the commit of the step's result.
"""

from __future__ import annotations

import os
import sys

import anyio

import durable
from durable import ActivityContext, WorkflowContext

registry = durable.Registry()
PAYMENTS = sys.argv[2] if len(sys.argv) > 2 else os.devnull
CRASH = len(sys.argv) > 3 and sys.argv[3] == "crash"


@registry.activity
async def charge(ctx: ActivityContext, cents: int) -> str:
    charge_id = await ctx.memo.get("charge_id")
    if charge_id is None:
        charge_id = f"ch-{cents}-{ctx.attempt}"
        fd = os.open(PAYMENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{charge_id}\n".encode())
        os.close(fd)
        await ctx.memo.put("charge_id", charge_id)
    print("MEMO WRITTEN", flush=True)
    if CRASH:
        await anyio.sleep_forever()
    return charge_id


@registry.workflow
async def pay(ctx: WorkflowContext, cents: int) -> str:
    return await ctx.call_activity(charge, cents)


async def main() -> None:
    async with durable.Runtime(registry, store=f"file://{sys.argv[1]}") as runtime:
        try:
            handle = await runtime.start(pay, 4200, instance_id="payment")
        except durable.InstanceExistsError:
            handle = runtime.client.get_handle("payment")
        print(f"RESULT {await handle}", flush=True)


if __name__ == "__main__":
    anyio.run(main)
