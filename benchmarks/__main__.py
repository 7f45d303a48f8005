"""``python -m benchmarks``: run the scenarios, print a table per scenario, optionally JSON."""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import sys
from time import perf_counter
from typing import TYPE_CHECKING, Any

from . import _scenarios
from ._suite import SCENARIOS, STORES, environment, run_scenario

if TYPE_CHECKING:
    from ._suite import Row, Scenario


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(",") if part)
    except ValueError:
        message = f"sizes must be integers like 100,1000: {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run durable's benchmark scenarios; print medians of --repeat runs.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a fast check")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell (default 3)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument(
        "--store",
        action="append",
        choices=STORES,
        help="run only on this store (repeatable; default: all)",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        metavar="N[,N...]",
        help="override every selected scenario's sizes (K or N), e.g. 1000",
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="cProfile the measured runs only (not imports or warm-up) into PATH (pstats)",
    )
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _format(value: float, fmt: str, scale: float) -> str:
    if math.isnan(value):
        return "n/a"
    return format(value * scale, fmt)


def _table(sc: Scenario, rows: list[Row], repeat: int) -> str:
    headers = ["store", sc.size_name] + [c.header for c in sc.columns]
    body = [
        [row.store, f"{row.size:,}"]
        + [_format(row.median.get(c.key, math.nan), c.fmt, c.scale) for c in sc.columns]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        padded = [cells[0].ljust(widths[0])]
        padded += [cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(padded)

    runs = repeat if sc.repeatable else 1
    out = [f"== {sc.name}: {sc.description} (median of {runs} run{'s' * (runs != 1)})"]
    out.append(line(headers))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(cells) for cells in body)
    out.extend(f"   note: {note}" for note in sc.notes)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for sc in SCENARIOS.values():
            full = ",".join(map(str, sc.sizes))
            quick = ",".join(map(str, sc.quick_sizes))
            print(f"{sc.name:12} {sc.description} [{sc.size_name}={full}; quick {quick}]")
        return 0
    if args.repeat < 1:
        print("--repeat must be at least 1", file=sys.stderr)
        return 2
    env = environment()
    env["options"] = {
        "quick": args.quick,
        "repeat": args.repeat,
        "scenarios": args.scenario,
        "stores": args.store,
        "sizes": args.sizes,
        "warmup": not args.no_warmup,
        "profile": args.profile,
    }
    print(f"durable benchmarks  {env['date']}")
    print(f"  python {env['python']} ({env['python_build']}) on {env['platform']}")
    load = ", ".join(f"{x:.2f}" for x in env["loadavg_at_start"])
    print(f"  cpus: {env['cpu_count']} ({env['cpus_usable']} usable); load average {load}")
    print(
        f"  durable {env['durable']} git {env['git']} source {env['durable_source_digest']}; "
        f"anyio {env['anyio']}, msgspec {env['msgspec']}; temp dir {env['temp_dir']}"
    )
    print(f"  repeat {args.repeat}{', quick sizes' if args.quick else ''}; figures are medians")
    print(flush=True)

    if not args.no_warmup:
        _progress("warm-up")
        _scenarios.warm_up()
    selected = args.scenario or list(SCENARIOS)
    stores = tuple(args.store) if args.store else STORES
    profiler = cProfile.Profile() if args.profile else None
    results: dict[str, Any] = {}
    suite_started = perf_counter()
    for name in selected:
        sc = SCENARIOS[name]
        sizes = args.sizes or (sc.quick_sizes if args.quick else sc.sizes)
        rows = run_scenario(
            sc,
            stores=stores,
            sizes=sizes,
            repeat=args.repeat,
            progress=_progress,
            profiler=profiler,
        )
        print(_table(sc, rows, args.repeat), flush=True)
        print(flush=True)
        results[name] = {
            "description": sc.description,
            "size_name": sc.size_name,
            "notes": list(sc.notes),
            "rows": [
                {"store": r.store, "size": r.size, "median": r.median, "runs": r.runs} for r in rows
            ],
        }
    env["suite_seconds"] = perf_counter() - suite_started
    env["loadavg_at_end"] = list(os.getloadavg())
    if profiler is not None:
        profiler.dump_stats(args.profile)
        print(f"wrote profile {args.profile} (read it with pstats; profiling slows the runs)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"environment": env, "results": results}, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
