"""`python -m benchmarks`: how close is a handlerbox dispatch to this machine's floor, and how
far ahead of the peer pools? Runs every question (see benchmarks/suite.py), interleaved, each
case in a process of its own, then prints tables and the goals, and writes JSON and a chart.

    python -m benchmarks [--quick] [--placement same|split|unpinned] [--workers N]
                         [--only latency,sweep,...] [--out FILE.json] [--chart FILE.png]

Goals are reported as PASS/MISS lines, not asserted: the exit status is 0 when every case ran
(whatever the numbers), 1 when a case failed, 2 for a bad option.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from handlerbox.benchmarks import chart, machine, placement, report, suite

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    if argv and argv[0] == "--":  # `handlerbox bench -- --quick` passes the separator on
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and calls: under a minute (same as --profile quick)")
    parser.add_argument("--profile", choices=sorted(suite.PROFILES), default=None,
                        help="counts to run: full (default), quick, or smoke (tests only)")
    parser.add_argument("--placement", choices=placement.PLACEMENTS, default="same",
                        help="CPU placement of each case's processes (default: same)")
    parser.add_argument("--workers", type=int, default=2, help="N, the pool size (default 2)")
    parser.add_argument("--only", default=",".join(suite.SECTIONS),
                        help=f"comma-separated sections, of: {', '.join(suite.SECTIONS)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results (default: benchmarks/results/latest.json for a "
                             "full run with same placement, else <profile>-<placement>.json)")
    parser.add_argument("--chart", type=Path, default=None,
                        help="PNG chart (default: latency.png next to latest.json, else "
                             "<json stem>-latency.png); 'none' for no chart")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.quick and args.profile not in (None, "quick"):
        parser.error("--quick and --profile disagree")
    args.profile = args.profile or ("quick" if args.quick else "full")
    args.sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = sorted(set(args.sections) - set(suite.SECTIONS))
    if unknown or not args.sections:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(suite.SECTIONS)}")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    default = args.profile == "full" and args.placement == "same"
    if args.out is None:
        args.out = RESULTS / ("latest.json" if default
                              else f"{args.profile}-{args.placement}.json")
    if args.chart is None:
        args.chart = args.out.with_name("latency.png" if args.out.name == "latest.json"
                                        else f"{args.out.stem}-latency.png")
    elif str(args.chart) == "none":
        args.chart = None
    return args


class Progress:
    """A tqdm bar on stderr when tqdm is there and wanted; otherwise silent."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, unit="op", file=sys.stderr, leave=False,
                            dynamic_ncols=True)

    def tick(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_description(name)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    plan = placement.plan(args.placement)
    print(f"placement: {plan['describe']}", file=sys.stderr)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load_before = machine.load_average()
    steps = suite.Suite(args.profile, plan, args.workers, args.sections, print).steps()
    progress = Progress(steps, not args.no_progress and sys.stderr.isatty())
    try:
        measured = suite.run(args.profile, plan, args.workers, args.sections, progress.tick)
    finally:
        progress.close()
    result: dict[str, Any] = {
        "schema": 1, "started": started, "profile": args.profile, "sections": args.sections,
        "machine": machine.describe(), "placement": plan, "workers": args.workers,
        "load_average": {"start": load_before, "end": machine.load_average()},
        **measured,
    }
    result["goals"] = report.goals(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(report.render(result))
    print(f"\nwrote {args.out}")
    if args.chart is not None and chart.write_chart(result, args.chart):
        print(f"wrote {args.chart}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
