"""Figures shared by durable's scenarios and the peers' (no durable import here).

The peers run in child processes that import only this module and their own SDK, so
what turns raw timestamps into figures lives here, once, for every side of a ratio.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
from dataclasses import dataclass, field

__all__ = [
    "Row",
    "cpu_seconds",
    "latency_figures",
    "percentile",
    "rss_bytes",
    "sequential_figures",
]


@dataclass
class Row:
    """The figures of one (store, size) cell: the median of its runs, and the runs."""

    store: str
    size: int
    median: dict[str, float]
    runs: list[dict[str, float]] = field(default_factory=list)


def percentile(values: list[float], pct: float) -> float:
    """The ``pct``-th percentile (0-100) by linear interpolation between ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def sequential_figures(
    stamps: list[float], started: float, ended: float, k: int
) -> dict[str, float]:
    """Scenario 1's figures from ``perf_counter`` stamps taken as each step began.

    per-step time = the gap between consecutive step calls, averaged (and the median
    taken) over the first and the last tenth of the gaps.
    """
    if len(stamps) != k or k < 2:
        raise RuntimeError(f"sequential run went wrong: {len(stamps)} step calls for K={k}")
    total = ended - started
    tenth = max(1, k // 10)
    first = (stamps[tenth] - stamps[0]) / tenth
    last = (stamps[-1] - stamps[-1 - tenth]) / tenth
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # the median gap shrugs off a few preempted steps (other processes on 2 cores)
    first_median = statistics.median(gaps[:tenth])
    last_median = statistics.median(gaps[-tenth:])
    return {
        "total_s": total,
        "steps_per_s": k / total,
        "first10_step_s": first,
        "last10_step_s": last,
        "last_over_first": last / first,
        "first10_median_gap_s": first_median,
        "last10_median_gap_s": last_median,
        "last_over_first_median_gap": last_median / first_median,
        "start_to_first_step_s": stamps[0] - started,
        "last_step_to_result_s": ended - stamps[-1],
    }


def latency_figures(
    latencies: list[float], total: float, n: int, steps_per_workflow: int
) -> dict[str, float]:
    """Scenario 2's figures: N workflows of ``steps_per_workflow`` steps in ``total`` s."""
    if len(latencies) != n:
        raise RuntimeError(f"concurrent run went wrong: {len(latencies)} results for N={n}")
    return {
        "total_s": total,
        "workflows_per_s": n / total,
        "steps_per_s": n * steps_per_workflow / total,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies),
    }


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far (``/proc``; Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes() -> int:
    """This process's resident set size now (``/proc/self/statm``; Linux)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            resident_pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        import resource  # not "now" but the peak: the best a non-Linux system offers

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return resident_pages * os.sysconf("SC_PAGE_SIZE")
