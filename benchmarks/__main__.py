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

from . import _aging, _churn, _scale, _scenarios, _sidecar, _sidecar_sdk, _telemetry
from ._peers import PEER_SIZES, PEERS, column_for, comparisons, peer_sizes, run_peers, unavailable
from ._suite import ALL_STORES, DEFAULT_STORES, SCENARIOS, environment, run_scenario

if TYPE_CHECKING:
    from ._peers import Comparison, PeerResult
    from ._suite import Row, Scenario

assert _aging  # imported for its scenarios
assert _churn  # imported for its scenarios
assert _scale  # imported for its scenarios
assert _sidecar  # imported for its scenarios
assert _sidecar_sdk  # imported for its scenarios
assert _telemetry  # imported for its scenarios


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
        choices=ALL_STORES,
        help="run only on this store (repeatable; default: memory and file, and s3 for "
        "store-ops; file-fsync is file with fsync=1, only when named)",
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
    parser.add_argument(
        "--max-resident",
        type=int,
        metavar="N",
        help="timers scenario: run with Runtime(max_resident_workflows=N) (eviction)",
    )
    parser.add_argument(
        "--peer",
        action="append",
        choices=sorted(PEERS),
        help="run only this peer (repeatable; default: every installed peer)",
    )
    parser.add_argument("--no-peers", action="store_true", help="run no peer")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


_STARTED = perf_counter()


def _progress(message: str) -> None:
    print(f"  .. [{perf_counter() - _STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def _format(value: float, fmt: str, scale: float) -> str:
    if math.isnan(value):
        return "n/a"
    return format(value * scale, fmt)


def _ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}x"


def _table(sc: Scenario, rows: list[Row], repeat: int, title: str | None = None) -> str:
    headers = ["store", sc.size_name] + [c.header for c in sc.columns]
    body = [
        [row.store, f"{row.size:,}"]
        + [_format(row.median.get(c.key, math.nan), c.fmt, c.scale) for c in sc.columns]
        for row in rows
    ]
    left = 1  # left-aligned columns
    if sc.variants or sc.ratios:  # one line per variant, then one per ratio
        headers.insert(2, sc.variant_name)
        body = []
        for row in rows:
            for label in (*sc.variants, *sc.ratios):
                cells = [row.store, f"{row.size:,}", label]
                for c in sc.columns:
                    value = row.median.get(f"{label}.{c.key}", math.nan)
                    is_ratio = label in sc.ratios
                    cells.append(_ratio(value) if is_ratio else _format(value, c.fmt, c.scale))
                body.append(cells)
        left = 3
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        padded = [cell.ljust(w) for cell, w in zip(cells[:left], widths[:left], strict=True)]
        padded += [cell.rjust(w) for cell, w in zip(cells[left:], widths[left:], strict=True)]
        return "  ".join(padded)

    runs = repeat if sc.repeatable else 1
    title = title or f"{sc.name}: {sc.description}"
    out = [f"== {title} (median of {runs} run{'s' * (runs != 1)})"]
    out.append(line(headers))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(cells) for cells in body)
    out.extend(f"   note: {note}" for note in sc.notes)
    return "\n".join(out)


def _ahead(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.1f}x"


def _comparison_table(found: list[Comparison], stores: tuple[str, ...]) -> str:
    headers = ["scenario", "size", "figure", "peer", "peer's"]
    for store in stores:
        headers += [f"durable {store}", f"{store} ahead"]
    body: list[list[str]] = []
    for c in found:
        sc = SCENARIOS[c.scenario]
        header, fmt, scale = column_for(sc, c.metric)
        cells = [c.scenario, f"{sc.size_name}={c.size:,}", header, c.peer]
        cells.append(_format(c.theirs, fmt, scale))
        for store in stores:
            cells += [_format(c.ours.get(store, math.nan), fmt, scale), _ahead(c.ahead(store))]
        body.append(cells)
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        left = [cell.ljust(w) for cell, w in zip(cells[:4], widths[:4], strict=True)]
        right = [cell.rjust(w) for cell, w in zip(cells[4:], widths[4:], strict=True)]
        return "  ".join(left + right)

    out = ["== durable vs peers, measured in this run on this machine"]
    out.append(line(headers))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(cells) for cells in body)
    out.append(
        "   note: ahead = ours/theirs for a rate (steps/s), theirs/ours for a time "
        "(per-step µs): > 1x means durable is ahead; each figure is the median of its runs"
    )
    return "\n".join(out)


def _peers_section(
    results: list[PeerResult],
    durable_rows: dict[str, list[Row]],
    stores: tuple[str, ...],
    repeat: int,
) -> tuple[str, list[Comparison]]:
    out = ["== peers (each in a child process of its own; same scenarios, same machine)"]
    for result in results:
        out.append(f"   {result.peer.name}: {result.title}")
        out.append(f"      durability: {result.peer.durability}")
        if result.status != "ok":  # the whole note is in --json
            out.extend(f"      {line}" for line in result.note.splitlines()[-8:])
    out.append("")
    for name in ("sequential", "concurrent"):
        peer_rows = [row for result in results for row in result.rows.get(name, [])]
        if not peer_rows:
            continue
        sizes = {row.size for row in peer_rows}
        mine = [row for row in durable_rows.get(name, []) if row.size in sizes]
        sc = SCENARIOS[name]
        title = f"{name} with peers: {sc.description}"
        out.append(_table(sc, mine + peer_rows, repeat, title))
        if name == "concurrent":
            out.append(
                "   note: peers' latency: dbos = start_workflow() call to its Future's "
                "completion; durabletask = the backend's created_at to last_updated_at "
                "(started all, then 4 waiter threads); all started = when the last start "
                "call returned: DBOS's start_workflow() blocks while earlier workflows run "
                "(admission is throttled, so its latencies are short and not comparable; "
                "the ratios below compare throughput only)"
            )
        out.append("")
    found = comparisons(durable_rows, results)
    if found:
        out.append(_comparison_table(found, stores))
    else:
        out.append("   (no peer figure to compare: no peer ran, or no durable row of its size)")
    return "\n".join(out), found


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for sc in SCENARIOS.values():
            full = ",".join(map(str, sc.sizes))
            quick = ",".join(map(str, sc.quick_sizes))
            print(f"{sc.name:12} {sc.description} [{sc.size_name}={full}; quick {quick}]")
        for peer in PEERS.values():
            why = unavailable(peer) or "installed"
            print(f"peer {peer.name:19} {why}")
        return 0
    if args.repeat < 1:
        print("--repeat must be at least 1", file=sys.stderr)
        return 2
    if args.max_resident is not None and args.max_resident < 1:
        print("--max-resident must be at least 1", file=sys.stderr)
        return 2
    _scale.TIMERS_MAX_RESIDENT = args.max_resident
    env = environment()
    env["options"] = {
        "quick": args.quick,
        "repeat": args.repeat,
        "scenarios": args.scenario,
        "stores": args.store,
        "sizes": args.sizes,
        "warmup": not args.no_warmup,
        "profile": args.profile,
        "peers": args.peer,
        "no_peers": args.no_peers,
        "max_resident": args.max_resident,
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
    stores = tuple(args.store) if args.store else DEFAULT_STORES
    profiler = cProfile.Profile() if args.profile else None
    results: dict[str, Any] = {}
    durable_rows: dict[str, list[Row]] = {}
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
        durable_rows[name] = rows
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
    peers_json: dict[str, Any] = {}
    found: list[Comparison] = []
    if not args.no_peers and any(name in PEER_SIZES for name in selected):
        chosen = [PEERS[name] for name in args.peer] if args.peer else list(PEERS.values())
        peer_results = run_peers(
            chosen,
            selected,
            quick=args.quick,
            named=bool(args.peer),
            sizes=args.sizes,
            repeat=args.repeat,
            progress=_progress,
        )
        section, found = _peers_section(peer_results, durable_rows, stores, args.repeat)
        print(section, flush=True)
        print(flush=True)
        for result in peer_results:
            peers_json[result.peer.name] = {
                "title": result.title,
                "version": result.version,
                "durability": result.peer.durability,
                "status": result.status,
                "note": result.note,
                "sizes": {
                    name: list(peer_sizes(name, quick=args.quick, override=args.sizes))
                    for name in result.rows
                },
                "results": {
                    name: [
                        {"store": r.store, "size": r.size, "median": r.median, "runs": r.runs}
                        for r in rows
                    ]
                    for name, rows in result.rows.items()
                },
            }
    env["suite_seconds"] = perf_counter() - suite_started
    env["loadavg_at_end"] = list(os.getloadavg())
    if profiler is not None:
        profiler.dump_stats(args.profile)
        print(f"wrote profile {args.profile} (read it with pstats; profiling slows the runs)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            document = {
                "environment": env,
                "results": results,
                "peers": peers_json,
                "comparisons": [c.as_json() for c in found],
            }
            json.dump(document, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
