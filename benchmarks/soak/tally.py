"""Each caller's tallies, and each result checked against its own request.

No untrusted input. Every caller owns its CallerStats (no lock on the hot path); the run merges
them at the end. Kept small whatever the duration: counters, an array of normal latencies, and
at most MAX_EXAMPLES texts of each kind.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from handlerbox.benchmarks.soak.classes import CLASSES

if TYPE_CHECKING:
    from handlerbox import InvocationResult

MAX_EXAMPLES = 12


@dataclass
class CallerStats:
    """One caller's tallies."""

    requests: int = 0
    results: int = 0
    raised: list[str] = field(default_factory=list)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    normal_ms: array[float] = field(default_factory=lambda: array("d"))
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    wrong_values: int = 0
    kills_confirmed: int = 0
    kills_missed: int = 0
    kills_late: int = 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_EXAMPLES:
            self.problems.append(text)

    @classmethod
    def merged(cls, stats: Iterable[CallerStats]) -> CallerStats:
        """Every caller's tallies in one, their texts in caller order (none dropped)."""
        total = cls()
        for s in stats:
            total.requests += s.requests
            total.results += s.results
            total.raised += s.raised
            total.outcomes.update(s.outcomes)
            total.normal_ms += s.normal_ms
            total.problems += s.problems
            total.problem_count += s.problem_count
            total.wrong_values += s.wrong_values
            total.kills_confirmed += s.kills_confirmed
            total.kills_missed += s.kills_missed
            total.kills_late += s.kills_late
        return total


def record(stats: CallerStats, kind: str, seq: int, result: InvocationResult,
           killed_pid: int | None, elapsed_ms: float) -> None:
    """Tally one result and check it against its request."""
    stats.results += 1
    outcome = result.outcome
    stats.outcomes[(kind, outcome)] += 1
    message = result.error.message if result.error is not None else ""
    if kind == "normal" and outcome == "ok":
        stats.normal_ms.append(elapsed_ms)
        if not (isinstance(result.value, dict) and result.value.get("seq") == seq):
            stats.wrong_values += 1
            stats.problem(f"normal #{seq}: value of another request: {result.value!r:.120}")
    elif kind == "error" and outcome == "handler_error":
        if message != f"soak error {seq}":
            stats.wrong_values += 1
            stats.problem(f"error #{seq}: message of another request: {message!r:.120}")
    elif kind == "kill":
        if outcome == "crashed":
            if killed_pid is not None and result.worker_pid == killed_pid \
                    and "SIGKILL" in message:
                stats.kills_confirmed += 1
            else:
                stats.problem(f"kill #{seq}: crashed, but killed pid {killed_pid}, result "
                              f"pid {result.worker_pid}: {message:.160}")
        elif outcome == "ok":
            if killed_pid is None:
                stats.kills_missed += 1
            else:
                stats.kills_late += 1
    if outcome != CLASSES[kind].outcome:
        stats.problem(f"{kind} #{seq} on {result.app}: {outcome} (pid {result.worker_pid}, "
                      f"{elapsed_ms:.0f} ms): {message:.200}")
