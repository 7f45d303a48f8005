"""A worker process for the update crash test (``test_messages_crash.py``).

``python messages_crash_worker.py STORE_DIR start`` starts workflow ``acct``, asks for
update ``u1`` (``deposit(5)``) and, once it is acknowledged, prints ``acked``; the
handler's activity prints ``running`` and hangs, to be killed. ``... STORE_DIR resume``
recovers the instance, asks for ``u1`` again (a caller retrying after the crash), and
prints the update's result, the balance and how many times history completed it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

import durable
from durable import ActivityContext, WorkflowContext
from durable._core._events import UpdateCompleted

registry = durable.Registry()
MODE = sys.argv[2] if __name__ == "__main__" else ""


@registry.activity
async def record(ctx: ActivityContext, amount: int) -> int:
    if MODE == "start":
        print("running", flush=True)
        await anyio.sleep_forever()
    return amount


@registry.workflow
async def acct(ctx: WorkflowContext) -> int:
    balance = 0

    async def deposit(amount: int) -> int:
        nonlocal balance
        balance += await ctx.call_activity(record, amount)
        return balance

    ctx.set_update_handler("deposit", deposit)
    ctx.set_query_handler("balance", lambda: balance)
    await ctx.wait_for_event("close")
    return balance


async def main(store: Path) -> None:
    async with durable.Runtime(registry, store=f"file://{store}") as rt:
        if MODE == "start":
            handle = await rt.start(acct, instance_id="a")
            await handle.start_update("deposit", 5, update_id="u1")
            print("acked", flush=True)
            await anyio.sleep_forever()
        handle = rt.client.get_handle("a")
        print(f"result {await handle.update('deposit', 5, update_id='u1')}", flush=True)
        await rt.wait_idle()  # whatever the retry set off has run
        print(f"balance {await handle.query('balance')}", flush=True)
        done = [e for e in await handle.history() if isinstance(e, UpdateCompleted)]
        print(f"completed {len(done)}", flush=True)


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]))
