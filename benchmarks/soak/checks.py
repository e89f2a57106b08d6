"""The end-of-run checks: what must hold after a soak, each with a one-line detail.

No untrusted input. The checks (the run exits 1 if an enforced one fails):

    one_result_each   results == requests: no dispatch raised, none hung
    outcomes          each class ends in its outcome (normal ok, errors handler_error, timeouts
                      timeout, bombs memory_limit, kills crashed), values echo their own request;
                      slack only for the races classes.py tolerates (kills ending ok, timeouts
                      overloaded)
    mix               outcome counts within tolerance of the 90/3/3/2/2 mix
    no_orphans        every process ever seen (processes.py) is gone within 3 s of
                      engine.close()
    host_rss          host RSS growth from the end of warm-up to the end under --rss-bound-mb
    p99_normal        p99 of the normal dispatches (caller's wall clock) under --p99-ms
                      (the last two are reported but not enforced with --quick)
"""

from __future__ import annotations

from typing import TypedDict

from handlerbox.benchmarks.soak.classes import CLASSES, MIX
from handlerbox.benchmarks.soak.findings import Findings

MIX_TOLERANCE = 0.01
"""Outcome shares may differ from the mix by 1 point of all requests (or 3 requests)."""


class Check(TypedDict):
    ok: bool
    enforced: bool
    detail: str


def evaluate(found: Findings, *, rss_bound_mb: float, p99_bound_ms: float,
             quick: bool) -> dict[str, Check]:
    """Every check, by name, in the order above; `quick` leaves host_rss and p99_normal
    unenforced."""
    checks: dict[str, Check] = {}

    def check(name: str, ok: bool, detail: str, enforced: bool = True) -> None:
        checks[name] = {"ok": bool(ok), "enforced": enforced, "detail": detail}

    callers = found.callers
    requests = callers.requests
    check("one_result_each",
          callers.results == requests and not callers.raised and not found.hung_threads,
          f"{requests} requests, {callers.results} results, {len(callers.raised)} raised, "
          f"{len(found.hung_threads)} callers hung")
    check("outcomes", *_outcomes(found))
    mix_off = []
    for kind, n in MIX.items():
        expected_n = n / 100.0 * requests
        got = found.outcomes.get(CLASSES[kind].outcome, 0)
        if abs(got - expected_n) > max(3.0, MIX_TOLERANCE * requests):
            mix_off.append(f"{CLASSES[kind].outcome} {got} vs {expected_n:.0f}")
    check("mix", not mix_off and requests > 0,
          "; ".join(mix_off) or f"within {MIX_TOLERANCE:.0%} of {requests} (or 3 requests)")
    orphans, leftovers = found.orphans, found.leftovers
    check("no_orphans", not orphans,
          f"{found.processes_seen} engine processes tracked alive ({found.zygotes} "
          f"zygote), every worker_pid checked; {len(orphans)} left after close"
          + (f": {orphans[:5]}" if orphans else "")
          + (f"; {len(leftovers) - len(orphans)} reparented zombies"
             if len(leftovers) > len(orphans) else ""))
    growth_mb = found.rss_growth_mb
    check("host_rss", growth_mb <= rss_bound_mb,
          f"{growth_mb:+.1f} MB after warm-up (bound {rss_bound_mb:g} MB)", enforced=not quick)
    p99 = found.p99_normal_ms
    check("p99_normal", p99 is not None and p99 <= p99_bound_ms,
          f"p99 {p99 if p99 is None else round(p99, 1)} ms (bound {p99_bound_ms:g} ms)",
          enforced=not quick)
    return checks


def _outcomes(found: Findings) -> tuple[bool, str]:
    off_class = []
    for kind, counts in found.classes.items():
        expected = CLASSES[kind]
        total = sum(counts.values())
        allowed = int(expected.slack * total) + 1 if expected.tolerated else 0
        slack = sum(n for outcome, n in counts.items() if outcome in expected.tolerated)
        other = total - counts.get(expected.outcome, 0) - slack
        if other or slack > allowed:
            off_class.append(f"{kind}: {counts} (tolerated {slack}/{allowed})")
    confirmed = found.callers.kills_confirmed
    wrong_values = found.callers.wrong_values
    verified = confirmed == found.classes["kill"].get("crashed", 0)
    return (not off_class and not wrong_values and verified,
            "; ".join(off_class) or (f"every class ended as expected; {wrong_values} wrong "
                                     f"values; {confirmed} kills confirmed by pid"
                                     + ("" if verified else " (some crashed kills unconfirmed)")))
