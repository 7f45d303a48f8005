"""An order workflow: reserve stock, charge a card (with retries), wait, ship.

Run it with ``durable demo``. Stop it at any moment (Ctrl-C, or kill the process) and
run it again: the order picks up where its history left off.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import durable
from durable import ActivityContext, RetryPolicy, WorkflowContext

registry = durable.Registry()


@dataclass
class Order:
    order_id: str
    items: list[str]
    amount_cents: int


@dataclass
class Receipt:
    order_id: str
    charge_id: str
    tracking: list[str]


class PaymentGatewayTimeout(Exception):
    """The card processor did not answer (the demo's first attempt always does this)."""


@registry.activity
async def reserve(ctx: ActivityContext, item: str) -> str:
    print(f"  reserve  {item:<8} step {ctx.task_id}, attempt {ctx.attempt}", flush=True)
    return f"bin-{sum(map(ord, item)) % 97:02d}"


@registry.activity
async def charge(ctx: ActivityContext, order: Order) -> str:
    print(f"  charge   {order.amount_cents / 100:.2f} EUR, attempt {ctx.attempt}", flush=True)
    if ctx.attempt == 1:
        raise PaymentGatewayTimeout("card processor timed out")
    return f"ch_{order.order_id}"


@registry.activity
async def ship(ctx: ActivityContext, item: str) -> str:
    print(f"  ship     {item}", flush=True)
    return f"TRACK-{item.upper()}"


@registry.workflow
async def place_order(ctx: WorkflowContext, order: Order) -> Receipt:
    """Reserve every item at once, charge with retries, let the warehouse pack, ship."""
    ctx.set_custom_status("reserving")
    await ctx.all([ctx.call_activity(reserve, item) for item in order.items])
    ctx.set_custom_status("charging")
    charge_id = await ctx.call_activity(
        charge,
        order,
        retry=RetryPolicy(max_attempts=4, initial_interval=timedelta(seconds=1)),
    )
    ctx.set_custom_status("packing")
    if not ctx.is_replaying:
        print("  wait     2 s for the warehouse (a durable timer)", flush=True)
    await ctx.sleep(timedelta(seconds=2))
    ctx.set_custom_status("shipping")
    tracking = await ctx.all([ctx.call_activity(ship, item) for item in order.items])
    return Receipt(order.order_id, charge_id, tracking)


async def main(store: str = "file://./.durable") -> Receipt:
    """Run (or resume) the demo order on ``store`` and return its receipt."""
    order = Order("demo-order", ["lamp", "desk", "chair"], 12_950)
    async with durable.Runtime(registry, store=store) as runtime:
        try:
            handle = await runtime.start(place_order, order, instance_id=order.order_id)
            print(f"started {order.order_id} on {store}", flush=True)
        except durable.InstanceExistsError:
            handle = runtime.client.get_handle(order.order_id)
            state = await handle.describe()
            if state.status.is_terminal:
                handle = await runtime.start(
                    place_order, order, instance_id=order.order_id, reuse=True
                )
                print(f"started {order.order_id} again on {store}", flush=True)
            else:
                print(f"resuming {order.order_id} ({state.custom_status})", flush=True)
        receipt = await handle
        print(f"done: {receipt}", flush=True)
        return receipt
