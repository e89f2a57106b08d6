"""What a soak run found (every caller's tallies merged, kills, processes, host RSS, timings),
and the figures derived from it that the checks and the report share.

No untrusted input.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property

from handlerbox.benchmarks.soak.classes import MIX
from handlerbox.benchmarks.soak.processes import ProcessInfo
from handlerbox.benchmarks.soak.tally import CallerStats


@dataclass
class Findings:
    """The raw facts of one run, gathered once the engine is closed."""

    callers: CallerStats
    """Every caller's tallies, merged."""
    hung_threads: list[str]
    kills_injected: int
    kill_delays_ms: list[float]
    processes_seen: int
    zygotes: int
    distinct_worker_pids: int
    orphans: list[ProcessInfo]
    leftovers: list[ProcessInfo]
    rss_warm: int
    rss_end: int
    rss_peak: int
    traffic_seconds: float
    close_ms: float
    spawns: int | None

    @cached_property
    def classes(self) -> dict[str, dict[str, int]]:
        """Each request class's outcome counts (outcomes sorted)."""
        by_class = sorted(self.callers.outcomes.items())
        return {kind: {outcome: n for (k, outcome), n in by_class if k == kind}
                for kind in MIX}

    @cached_property
    def outcomes(self) -> Counter[str]:
        """Outcome counts over every class."""
        outcomes: Counter[str] = Counter()
        for (_, outcome), n in self.callers.outcomes.items():
            outcomes[outcome] += n
        return outcomes

    @cached_property
    def normal_ms(self) -> list[float]:
        """The normal dispatches' latencies (caller's wall clock), sorted."""
        return sorted(self.callers.normal_ms)

    @property
    def p99_normal_ms(self) -> float | None:
        return percentile(self.normal_ms, 0.99)

    @property
    def rss_growth_mb(self) -> float:
        """Host RSS growth from the end of warm-up to the end."""
        return (self.rss_end - self.rss_warm) / 2**20


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The value at rank round(q * (n - 1)) of sorted data, q in [0, 1]; None if empty."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]
