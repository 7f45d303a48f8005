"""Classifying and shrinking a failed simulation: what kind of failure a violation is,
and the smallest configuration whose run from the same seed still fails that way."""

from __future__ import annotations

import dataclasses
import re

from durable.testing._system import SystemConfig, SystemResult, simulate_system

__all__ = ["kind_of", "shrink"]


def kind_of(violation: str) -> str:
    """A violation with its ids, tags and numbers blanked: what kind of failure it is."""
    return re.sub(r"'[^']*'|\d+", "_", violation.split(": ", 1)[-1])


async def shrink(result: SystemResult) -> SystemResult:
    """A smaller configuration whose run, from ``result``'s seed, still fails the same
    way first: each kind of fault or operation turned off where the failure survives
    it, then fewer operations."""
    best = result
    if best.ok:
        return best
    kind = kind_of(best.violations[0])

    async def still_fails(config: SystemConfig) -> SystemResult | None:
        found = await simulate_system(best.seed, config)
        return found if found.violations and kind_of(found.violations[0]) == kind else None

    switches = [f.name for f in dataclasses.fields(SystemConfig) if f.type in (bool, "bool")]
    for name in switches:
        found = await still_fails(dataclasses.replace(best.config, **{name: False}))
        best = found or best
    while best.config.operations > 1:
        found = await still_fails(
            dataclasses.replace(best.config, operations=best.config.operations // 2)
        )
        if found is None:
            break
        best = found
    return best
