"""`python -m benchmarks.soak`: the soak's command line (options, their defaults, text or JSON).

Exits 0 when every enforced check passed, 1 when one failed, 2 for a bad option.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import TypeVar

from handlerbox.benchmarks import soak

T = TypeVar("T")


@dataclass(frozen=True)
class Scale:
    """The defaults of the options that --quick changes."""

    seconds: float
    apps: int
    workers: int
    threads: int
    async_tasks: int


QUICK = Scale(seconds=5.0, apps=6, workers=2, threads=4, async_tasks=1)
FULL = Scale(seconds=60.0, apps=20, workers=2, threads=8, async_tasks=2)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak",
                                     description=(soak.__doc__ or "").partition("\n")[0])
    parser.add_argument("--seconds", type=float, default=None,
                        help="traffic duration (default 60, or 5 with --quick)")
    parser.add_argument("--apps", type=int, default=None, help="apps (default 20; quick 6)")
    parser.add_argument("--workers", type=int, default=None, help="worker budget (default 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="dispatching threads (default 8; quick 4)")
    parser.add_argument("--async-tasks", type=int, default=None,
                        help="coroutines on one asyncio thread (default 2; quick 1)")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds, small numbers; RSS and p99 not enforced")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--timeout", type=float, default=0.3,
                        help="the forever apps' timeout override in seconds (default 0.3)")
    parser.add_argument("--spin-seconds", type=float, default=3.0,
                        help="how long a kill target spins if nobody kills it (default 3)")
    parser.add_argument("--kill-cpu-ms", type=float, default=30.0,
                        help="CPU a kill target must have used before the kill (default 30)")
    parser.add_argument("--slow-slots", type=int, default=None,
                        help="timeouts and kills in flight at once (default workers - 1)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before the RSS baseline (default 20%% of T, at most 10)")
    parser.add_argument("--rss-bound-mb", type=float, default=50.0)
    parser.add_argument("--p99-ms", type=float, default=500.0,
                        help="bound on p99 of the normal dispatches (default 500)")
    parser.add_argument("--max-requests", type=int, default=None,
                        help="stop after this many requests, if before --seconds")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _given(value: T | None, default: T) -> T:
    return default if value is None else value


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    scale = QUICK if args.quick else FULL
    report = soak.run(
        _given(args.seconds, scale.seconds), _given(args.apps, scale.apps),
        _given(args.workers, scale.workers), _given(args.threads, scale.threads),
        async_tasks=_given(args.async_tasks, scale.async_tasks), timeout=args.timeout,
        spin_seconds=args.spin_seconds, kill_cpu_ms=args.kill_cpu_ms,
        slow_slots=args.slow_slots, warmup=args.warmup, rss_bound_mb=args.rss_bound_mb,
        p99_ms=args.p99_ms, seed=args.seed, quick=args.quick, max_requests=args.max_requests)
    print(json.dumps(report, indent=2) if args.json else soak.describe(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
