"""Run the whole-system simulation over many seeds: ``python -m durable.testing.soak``.

Each failing seed is printed with what it broke and a shrunk trace (the smallest
configuration found that still fails), and can be replayed alone with ``--seed``.
Set ``PYTHONHASHSEED`` (the command does, to 0, when it is unset) so a seed replays
the same way in another process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import anyio

from durable.testing._system import SystemConfig, simulate_system
from durable.testing._system_shrink import kind_of, shrink

__all__ = ["main"]


async def _soak(
    first: int, count: int, operations: int, stop_after: int, quiet: bool, kinds: bool
) -> int:
    failures = 0
    seed = first
    for seed in range(first, first + count):
        result = await simulate_system(seed, SystemConfig(operations=operations))
        if kinds:  # one JSON line per seed: the kinds of violation it found
            print(json.dumps([seed, sorted({kind_of(v) for v in result.violations})]))
            continue
        if result.ok:
            continue
        failures += 1
        print(f"seed {seed}: FAILED ({len(result.violations)} violations)", flush=True)
        if not quiet:
            print((await shrink(result)).format(), flush=True)
        if failures >= stop_after:
            break
    if not kinds:
        print(f"{failures} failing seed(s) in {first}..{seed}", flush=True)
    return failures


def main(argv: list[str] | None = None) -> int:
    """Run the soak; exit status 1 if any seed failed."""
    parser = argparse.ArgumentParser(prog="python -m durable.testing.soak", description=__doc__)
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    parser.add_argument("--first", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, help="run this one seed and print its trace")
    parser.add_argument("--operations", type=int, default=SystemConfig.operations)
    parser.add_argument("--stop-after", type=int, default=sys.maxsize,
                        help="stop after this many failing seeds")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="print failing seeds only")
    parser.add_argument("--kinds", action="store_true",
                        help="print each seed's kinds of violation as a JSON line")  # fmt: skip
    args = parser.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") is None and argv is None:
        os.environ["PYTHONHASHSEED"] = "0"  # set iteration order: replayable elsewhere
        os.execv(sys.executable, [sys.executable, "-m", "durable.testing.soak", *sys.argv[1:]])
    logging.disable(logging.CRITICAL)  # the runtimes log every injected fault
    if args.seed is not None:
        result = anyio.run(simulate_system, args.seed, SystemConfig(operations=args.operations))
        print(result.format(tail=len(result.trace)))
        return 0 if result.ok else 1
    failures = anyio.run(_soak, args.first, args.seeds, args.operations, args.stop_after,
                         args.quiet, args.kinds)  # fmt: skip
    return 1 if failures and not args.kinds else 0


if __name__ == "__main__":
    sys.exit(main())
