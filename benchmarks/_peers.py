"""Peers: the same scenarios on other durable-execution runtimes, in the same run.

Each peer runs in a child process of its own (``python -m benchmarks._child peer NAME
PLAN``) that imports its SDK and :mod:`benchmarks._figures`, never durable; durable's
scenarios import no peer. A peer whose package is not installed is skipped with a note
(install them with ``pip install -e ".[bench]"``); one that fails is reported with the
end of its output, and the suite goes on.

Every peer module has ``open_bench(variant)`` returning an object with
``measure(scenario, size) -> {metric: value}`` (the same metrics as durable's scenario
of that name) and ``close()``. A fresh bench (fresh database or backend) serves each
(scenario, size) cell, warmed up before its ``repeat`` measured runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Protocol

from ._figures import Row

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._suite import Scenario

__all__ = [
    "PEERS",
    "PEER_SIZES",
    "Comparison",
    "Peer",
    "PeerResult",
    "comparisons",
    "run_peer_in_this_process",
    "run_peers",
]

# The scenarios peers run: durable's scenario name -> the peer sizes (full, quick).
PEER_SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "sequential": ((100, 1_000), (100,)),
    "concurrent": ((1_000,), (20,)),
}


@dataclass(frozen=True)
class Peer:
    """One peer configuration: a row label, its package, its module and variant."""

    name: str
    distribution: str  # the PyPI name (version reported from its metadata)
    import_name: str  # a module whose absence means "not installed"
    module: str  # the benchmarks module with open_bench()
    variant: str
    title: str  # what it is, with {version} filled in
    durability: str
    in_quick: bool = True  # False: --quick skips it unless --peer names it


PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer(
            name="dbos-sqlite",
            distribution="dbos",
            import_name="dbos",
            module="benchmarks._peer_dbos",
            variant="default",
            title="DBOS {version}, SQLite system database as DBOS configures it "
            "(rollback journal, synchronous=FULL), synchronous workflows and steps",
            durability="survives power loss (every commit fsynced)",
        ),
        Peer(
            name="dbos-sqlite-nosync",
            distribution="dbos",
            import_name="dbos",
            module="benchmarks._peer_dbos",
            variant="nosync",
            title="DBOS {version}, SQLite with PRAGMA synchronous=OFF, otherwise the same",
            durability="survives a process crash, not power loss (as durable's file://)",
            in_quick=False,
        ),
        Peer(
            name="durabletask",
            distribution="durabletask",
            import_name="durabletask",
            module="benchmarks._peer_durabletask",
            variant="in-memory",
            title="durabletask {version} SDK worker + client, its in-memory gRPC test "
            "backend (durabletask.testing) on loopback, in the same process",
            durability="none (in memory)",
        ),
    )
}


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


def unavailable(peer: Peer) -> str | None:
    """Why ``peer`` cannot run here, or None."""
    if importlib.util.find_spec(peer.import_name) is None:
        return (
            f"skipped: the {peer.distribution!r} package is not installed "
            '(pip install -e ".[bench]")'
        )
    return None


# -- the child's side ---------------------------------------------------------------------


class _Bench(Protocol):
    def measure(self, scenario: str, size: int) -> dict[str, float]: ...
    def close(self) -> None: ...


def run_peer_in_this_process(
    name: str, plan: dict[str, Any], progress: Callable[[str], None]
) -> dict[str, Any]:
    """Measure peer ``name`` on every cell of ``plan`` (the child's side)."""
    peer = PEERS[name]
    module = importlib.import_module(peer.module)
    repeat = int(plan["repeat"])
    cells: list[dict[str, Any]] = []
    for scenario, size in plan["cells"]:
        progress(f"{name}: {scenario} size={size:,}: starting a fresh {peer.distribution}")
        bench: _Bench = module.open_bench(peer.variant)
        runs: list[dict[str, float]] = []
        try:
            for i in range(repeat):
                progress(f"{name}: {scenario} size={size:,} run {i + 1}/{repeat}")
                runs.append(bench.measure(scenario, int(size)))
        finally:
            bench.close()
        cells.append({"scenario": scenario, "size": int(size), "runs": runs})
    return {"version": _version(peer.distribution), "cells": cells}


# -- the parent's side --------------------------------------------------------------------


@dataclass
class PeerResult:
    """What one peer gave: rows per scenario, or why it gave none."""

    peer: Peer
    version: str
    status: str  # "ok", "skipped", "failed"
    note: str = ""
    rows: dict[str, list[Row]] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return self.peer.title.format(version=self.version)


def peer_sizes(scenario: str, *, quick: bool, override: tuple[int, ...] | None) -> tuple[int, ...]:
    full, small = PEER_SIZES[scenario]
    return override or (small if quick else full)


def run_peers(
    peers: list[Peer],
    scenarios: list[str],
    *,
    quick: bool,
    named: bool,
    sizes: tuple[int, ...] | None,
    repeat: int,
    progress: Callable[[str], None],
) -> list[PeerResult]:
    """Run each available peer in its own child process on the scenarios it has.

    ``named``: the peers were named with --peer (so --quick skips none of them).
    """
    from ._suite import ChildFailed, median_of_runs, run_child

    cells = [
        [scenario, size]
        for scenario in scenarios
        if scenario in PEER_SIZES
        for size in peer_sizes(scenario, quick=quick, override=sizes)
    ]
    results: list[PeerResult] = []
    for peer in peers:
        result = PeerResult(peer, _version(peer.distribution), "ok")
        results.append(result)
        why = unavailable(peer)
        if why is not None:
            result.status, result.note = "skipped", why
            continue
        if quick and not peer.in_quick and not named:
            result.status = "skipped"
            result.note = f"skipped by --quick (runs without it, or with --peer {peer.name})"
            continue
        if not cells:
            result.status, result.note = "skipped", "no selected scenario has peers"
            continue
        plan = {"repeat": repeat, "cells": cells}
        try:
            import json

            out = run_child(["peer", peer.name, json.dumps(plan)], timeout=7200, progress=progress)
        except ChildFailed as failed:
            result.status, result.note = "failed", str(failed)
            continue
        result.version = str(out["version"])
        for cell in out["cells"]:
            runs = [{str(k): float(v) for k, v in run.items()} for run in cell["runs"]]
            row = Row(peer.name, int(cell["size"]), median_of_runs(runs), runs)
            result.rows.setdefault(str(cell["scenario"]), []).append(row)
    return results


# -- comparing ----------------------------------------------------------------------------

# The figures compared, per scenario: (metric key, True if higher is better). Not the
# concurrent latencies: DBOS's start_workflow() blocks while earlier workflows run, so
# its workflows start spread over the whole run and each one's latency is short, while
# durable and durabletask take all N starts at once; the tables show them side by side.
COMPARED: dict[str, tuple[tuple[str, bool], ...]] = {
    "sequential": (("steps_per_s", True), ("last10_step_s", False)),
    "concurrent": (("steps_per_s", True),),
}


@dataclass(frozen=True)
class Comparison:
    """durable's figure on each store beside a peer's, and how far ahead durable is."""

    scenario: str
    size: int
    metric: str
    higher_is_better: bool
    peer: str
    theirs: float
    ours: dict[str, float]  # store -> figure

    def ahead(self, store: str) -> float:
        """ours/theirs for a rate, theirs/ours for a time: > 1 means durable is ahead."""
        ours = self.ours.get(store, math.nan)
        if math.isnan(ours) or math.isnan(self.theirs) or not ours or not self.theirs:
            return math.nan
        return ours / self.theirs if self.higher_is_better else self.theirs / ours

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "size": self.size,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "peer": self.peer,
            "theirs": self.theirs,
            "ours": self.ours,
            "durable_ahead": {store: self.ahead(store) for store in self.ours},
        }


def comparisons(durable_rows: dict[str, list[Row]], results: list[PeerResult]) -> list[Comparison]:
    """Every compared figure for which durable has a row of the same scenario and size."""
    out: list[Comparison] = []
    for scenario, metrics in COMPARED.items():
        ours_rows = durable_rows.get(scenario, [])
        for result in results:
            for row in result.rows.get(scenario, []):
                mine = {r.store: r for r in ours_rows if r.size == row.size}
                if not mine:
                    continue
                for metric, higher in metrics:
                    out.append(
                        Comparison(
                            scenario=scenario,
                            size=row.size,
                            metric=metric,
                            higher_is_better=higher,
                            peer=result.peer.name,
                            theirs=row.median.get(metric, math.nan),
                            ours={s: r.median.get(metric, math.nan) for s, r in mine.items()},
                        )
                    )
    return out


def column_for(sc: Scenario, metric: str) -> tuple[str, str, float]:
    """(header, format, scale) of ``metric`` as ``sc``'s table shows it."""
    for column in sc.columns:
        if column.key == metric:
            return column.header, column.fmt, column.scale
    return metric, ",.3g", 1.0
