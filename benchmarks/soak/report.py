"""The soak's report: its figures and checks as a JSON-able dict, and the same as text.

No untrusted input.
"""

from __future__ import annotations

from typing import Any

from handlerbox.benchmarks.soak.checks import Check
from handlerbox.benchmarks.soak.findings import Findings, percentile
from handlerbox.benchmarks.soak.tally import MAX_EXAMPLES


def summarize(found: Findings, settings: dict[str, Any],
              checks: dict[str, Check]) -> dict[str, Any]:
    """The report: `settings`, the figures of `found`, `checks`, and whether it passed (every
    enforced check ok)."""
    callers = found.callers
    normal = found.normal_ms
    seconds = found.traffic_seconds
    return {
        "settings": settings,
        "traffic_seconds": round(seconds, 2),
        "requests": callers.requests, "results": callers.results,
        "rate_per_s": round(callers.requests / seconds, 1) if seconds else None,
        "outcomes": dict(sorted(found.outcomes.items())),
        "classes": found.classes,
        "normal_ms": {"count": len(normal), "p50": _round(percentile(normal, 0.50)),
                      "p99": _round(found.p99_normal_ms),
                      "max": _round(normal[-1] if normal else None)},
        "kills": {"injected": found.kills_injected,
                  "confirmed": callers.kills_confirmed,
                  "missed": callers.kills_missed,
                  "late": callers.kills_late,
                  "p50_kill_delay_ms": _round(percentile(sorted(found.kill_delays_ms), 0.5))},
        "host_rss_mb": {"warm": _mb(found.rss_warm), "end": _mb(found.rss_end),
                        "peak": _mb(found.rss_peak),
                        "growth": round(found.rss_growth_mb, 1)},
        "engine_processes_seen": found.processes_seen,
        "distinct_worker_pids": found.distinct_worker_pids,
        "spawn_requests": found.spawns,
        "orphans": found.orphans,
        "close_ms": round(found.close_ms, 1),
        "raised": callers.raised[:MAX_EXAMPLES],
        "hung_threads": found.hung_threads,
        "problems": callers.problems[:MAX_EXAMPLES],
        "problem_count": callers.problem_count,
        "checks": checks,
        "passed": all(c["ok"] for c in checks.values() if c["enforced"]),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _mb(size: int) -> float:
    return round(size / 2**20, 1)


def describe(report: dict[str, Any]) -> str:
    """The report as text: the figures, the first unexpected results, a line per check."""
    s = report["settings"]
    lines = [
        f"soak: {report['traffic_seconds']:.1f} s, {s['apps']} apps ({s['groups']}), "
        f"{s['workers']} workers, {s['threads']} threads + {s['async_tasks']} async tasks, "
        f"slow slots {s['slow_slots']}",
        f"requests {report['requests']}  results {report['results']}  "
        f"({report['rate_per_s']}/s)",
        "outcomes " + _pairs(report["outcomes"]),
    ]
    for kind, counts in report["classes"].items():
        lines.append(f"  {kind:<8} -> " + _pairs(counts))
    n, k, r = report["normal_ms"], report["kills"], report["host_rss_mb"]
    lines += [
        f"normal dispatches: {n['count']}, p50 {n['p50']} ms, p99 {n['p99']} ms, "
        f"max {n['max']} ms",
        f"kills: {k['injected']} injected, {k['confirmed']} confirmed crashed by pid, "
        f"{k['missed']} missed, {k['late']} late; median {k['p50_kill_delay_ms']} ms "
        "from arming to the kill",
        f"host RSS: {r['warm']} MB after warm-up, {r['end']} MB at the end "
        f"({r['growth']:+} MB), peak {r['peak']} MB",
        f"workers: {report['spawn_requests']} spawned, {report['distinct_worker_pids']} "
        f"distinct worker pids in results; {report['engine_processes_seen']} engine "
        f"processes tracked alive; orphans after close {len(report['orphans'])}, close "
        f"{report['close_ms']} ms",
    ]
    if report["problems"]:
        lines.append(f"unexpected results ({report['problem_count']}), first ones:")
        lines += [f"  {p}" for p in report["problems"]]
    if report["raised"]:
        lines.append("dispatches that raised:")
        lines += [f"  {p}" for p in report["raised"]]
    for name, c in report["checks"].items():
        mark = "PASS" if c["ok"] else ("FAIL" if c["enforced"] else "MISS (not enforced)")
        lines.append(f"{mark:<4} {name}: {c['detail']}")
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)


def _pairs(counts: dict[str, int]) -> str:
    return "  ".join(f"{k} {v}" for k, v in counts.items())
