"""Compare this tree's benchmark figures with a baseline tree's, in alternating runs.

``python -m benchmarks.compare BASE_DIR`` (or ``python benchmarks/compare.py BASE_DIR``)
runs ``python -m benchmarks`` once per round in each tree, in a child process of its own
with that tree on ``PYTHONPATH``, alternating which tree goes first so drift in the
machine's load falls on both alike. It prints every run's figure, the medians and the
ratio this/base (> 1 means this tree is faster for a rate such as steps/s).

BASE_DIR is a checkout of the baseline (e.g. ``git worktree add --detach ../base REV``);
it needs a ``benchmarks`` package that takes ``--json`` and ``--no-peers``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent.parent

# A run's figures: (scenario, store, size) -> value of the compared figure.
Figures = dict[tuple[str, str, int], float]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare",
        description="Run the benchmarks in this tree and in BASE_DIR, alternating; "
        "print medians and ratios this/base.",
    )
    parser.add_argument("base", metavar="BASE_DIR", help="checkout of the baseline tree")
    parser.add_argument("--rounds", type=int, default=5, help="runs per tree (default 5)")
    parser.add_argument(
        "--scenario",
        action="append",
        help="scenario to run (repeatable; default: sequential and concurrent)",
    )
    parser.add_argument(
        "--store", action="append", help="store to run on (repeatable; default: memory)"
    )
    parser.add_argument("--sizes", help="sizes to pass on (default: the scenarios' --quick sizes)")
    parser.add_argument(
        "--figure", default="steps_per_s", help="the figure to compare (default steps_per_s)"
    )
    return parser


def _run(tree: Path, args: argparse.Namespace, bench_dir: str) -> Figures:
    """One ``python -m benchmarks`` run in ``tree``: the compared figure per cell."""
    command = [sys.executable, "-m", "benchmarks", "--no-peers", "--repeat", "1"]
    for name in args.scenario or ("sequential", "concurrent"):
        command += ["--scenario", name]
    for store in args.store or ("memory",):
        command += ["--store", store]
    command += ["--sizes", args.sizes] if args.sizes else ["--quick"]
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    try:
        env = dict(os.environ, PYTHONPATH=str(tree), DURABLE_BENCH_DIR=bench_dir)
        subprocess.run(
            [*command, "--json", path], cwd=tree, env=env, check=True, capture_output=True
        )
        with open(path, encoding="utf-8") as fh:
            document = json.load(fh)
    finally:
        os.unlink(path)
    figures: Figures = {}
    for name, result in document["results"].items():
        for row in result["rows"]:
            figures[(name, row["store"], row["size"])] = row["median"][args.figure]
    return figures


def _git(tree: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    base = Path(args.base).resolve()
    if not (base / "benchmarks").is_dir():
        print(f"{base} has no benchmarks package", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        return 2
    trees = {"base": base, "this": _HERE}
    runs: dict[str, list[Figures]] = {"base": [], "this": []}
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"base {base} ({_git(base)}); this {_HERE} ({_git(_HERE)})")
    print(f"figure {args.figure}, {args.rounds} rounds, alternating; load average {load}")
    bench_dir = tempfile.mkdtemp(prefix="durable-compare-")
    try:
        for i in range(args.rounds):
            order = ("base", "this") if i % 2 == 0 else ("this", "base")
            for label in order:
                print(f"  .. round {i + 1}/{args.rounds}: {label}", file=sys.stderr, flush=True)
                runs[label].append(_run(trees[label], args, bench_dir))
    finally:
        shutil.rmtree(bench_dir, ignore_errors=True)
    cells = sorted(set(runs["base"][0]) & set(runs["this"][0]))
    header = f"{'scenario':12} {'store':7} {'size':>6} {'base':>10} {'this':>10} {'this/base':>9}"
    print(header)
    print("-" * len(header))
    for cell in cells:
        base_median = statistics.median(r[cell] for r in runs["base"])
        this_median = statistics.median(r[cell] for r in runs["this"])
        name, store, size = cell
        print(
            f"{name:12} {store:7} {size:>6,} {base_median:>10,.0f} {this_median:>10,.0f} "
            f"{this_median / base_median:>8.3f}x"
        )
        for label in ("base", "this"):
            values = ", ".join(f"{r[cell]:,.0f}" for r in runs[label])
            print(f"{'':27}{label} runs: {values}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"   note: medians of {args.rounds} runs per tree; load average at end {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
