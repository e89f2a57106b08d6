"""The results for humans: one table per question, then the goals as PASS/MISS lines.

No untrusted input. Goals are checked on the run's own numbers (every ratio is against the
floor measured in the same run, same placement) and are reported, never asserted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from handlerbox.benchmarks.machine import busy_note, one_line


def fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, line(headers), rule, *(line(r) for r in rows)])


def _get(result: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


# -- goals ---------------------------------------------------------------------------------

def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal of the issue, with what this run measured."""
    lat = _get(result, "latency", "contenders") or {}
    floor = _get(lat, "floor", "p50_us")
    hb = lat.get("handlerbox_sync", {})
    thr = _get(result, "throughput", "contenders") or {}
    hbt = _get(result, "timeout", "contenders", "handlerbox") or {}
    apps = _get(result, "many_apps", "apps")

    def goal(name: str, value: float | None, limit: float, at_most: bool, unit: str,
             detail: str = "") -> dict[str, Any]:
        passed = None if value is None else (value <= limit if at_most else value >= limit)
        return {"goal": name, "value": value, "limit": limit, "unit": unit,
                "passed": passed, "detail": detail}

    fair = result.get("fairness") or {}
    return [
        goal("handlerbox sync p50 <= 3x floor", _ratio(hb.get("p50_us"), floor), 3, True, "x",
             f"{fmt(hb.get('p50_us'))} us vs floor {fmt(floor)} us"),
        goal("handlerbox sync p99 <= 8x floor", _ratio(hb.get("p99_us"), floor), 8, True, "x",
             f"p99 {fmt(hb.get('p99_us'))} us"),
        goal("handlerbox sync p50 >= 1.5x faster than multiprocessing.Pool",
             _ratio(_get(lat, "mp_pool", "p50_us"), hb.get("p50_us")), 1.5, False, "x",
             f"Pool {fmt(_get(lat, 'mp_pool', 'p50_us'))} us"),
        goal("handlerbox async throughput >= 3x pebble",
             _get(thr, "handlerbox_async", "vs_pebble"), 3, False, "x",
             f"{fmt(_get(thr, 'handlerbox_async', 'per_s'), 0)}/s vs "
             f"{fmt(_get(thr, 'pebble', 'per_s'), 0)}/s; threads "
             f"{fmt(_get(thr, 'handlerbox_threads', 'vs_pebble'))}x"),
        goal("timeout result <= 2 ms after the deadline (worst trial)",
             hbt.get("late_ms_max"), 2, True, "ms", f"median {fmt(hbt.get('late_ms_p50'), 2)} ms"),
        goal("normal service <= 1 ms after the deadline (median trial)",
             hbt.get("recovery_ms_p50"), 1, True, "ms",
             f"worst {fmt(hbt.get('recovery_ms_max'), 2)} ms"),
        goal("worker start <= 5 ms (median)",
             _get(result, "cold_start", "contenders", "handlerbox_cold", "total_ms_p50"), 5,
             True, "ms"),
        goal("restricted call <= 2x plain", _get(result, "restricted", "ratio"), 2, True, "x",
             f"{fmt(_get(result, 'restricted', 'restricted_us'), 2)} us vs "
             f"{fmt(_get(result, 'restricted', 'plain_us'), 2)} us"),
        goal(f"{apps or 100} installations round-robin p99 <= 10x floor",
             _get(result, "many_apps", "ratio_p99_to_floor"), 10, True, "x",
             f"p99 {fmt(_get(result, 'many_apps', 'p99_us'))} us"),
        goal("app B p99 <= 10x floor while app A floods (fairness)",
             fair.get("ratio_p99_to_floor"), 10, True, "x",
             f"p99 {fmt(fair.get('p99_us'))} us; A running {fair.get('a_running_min')}, "
             f"waiting {fair.get('a_waiting_min')}"),
    ]


def goal_lines(checked: list[dict[str, Any]]) -> list[str]:
    lines = []
    for g in checked:
        mark = {True: "PASS", False: "MISS", None: "n/a "}[g["passed"]]
        digits = 2 if g["unit"] == "ms" else 1
        value = fmt(g["value"], digits, " " + g["unit"] if g["unit"] == "ms" else "x")
        detail = f"  ({g['detail']})" if g["detail"] else ""
        lines.append(f"{mark}  {g['goal']}: {value}{detail}")
    return lines


# -- tables --------------------------------------------------------------------------------

def render(result: dict[str, Any]) -> str:
    header = "\n".join([
        f"machine: {one_line(result['machine'])}",
        f"placement: {result['placement']['describe']}; workers N={result['workers']}; "
        f"profile {result['profile']}; {fmt(result.get('seconds'), 0)} s",
        *filter(None, [busy_note(**result["load_average"])
                       if "load_average" in result else ""])])
    blocks = [show(result[section]) for section, show in SECTIONS if section in result]
    note = ("" if result["placement"]["name"] == "same"
            else "; they are defined for 'same' placement, this run is not")
    checked = "\n".join([f"goals (this run{note}):", *goal_lines(result["goals"])])
    errors = [f"ERROR in {name}: {error.splitlines()[0]}"
              for name, error in result.get("errors", {}).items()]
    errors += [f"SKIPPED {name}: {reason}" for name, reason in result.get("skipped", {}).items()]
    return "\n\n".join([header, *blocks, checked, *(["\n".join(errors)] if errors else [])])


def _latency(section: dict[str, Any]) -> str:
    rows = [[c["label"], fmt(c["p50_us"]), fmt(c["p90_us"]), fmt(c["p99_us"]),
             fmt(c["ratio_to_floor"], 2, "x"), str(c["n"])]
            for c in section["contenders"].values()]
    return table(f"latency: one call, {section['payload_bytes']} B payload (us)",
                 ["contender", "p50", "p90", "p99", "p50/floor", "calls"], rows)


def _sweep(section: dict[str, Any]) -> str:
    rows = []
    for size in section["sizes"].values():
        c = size["contenders"]
        rows.append([f"{size['bytes']:,} B", fmt(_get(c, "floor", "p50_us")),
                     fmt(_get(c, "floor_small_reply", "p50_us")),
                     fmt(_get(c, "handlerbox_sync", "p50_us")),
                     fmt(_get(c, "handlerbox_sync", "p99_us")),
                     fmt(size["ratio_to_floor"], 2, "x"),
                     fmt(size["ratio_to_small_reply_floor"], 2, "x")])
    return table("payload size sweep: p50 us (floor echoes the payload; small reply answers "
                 "like a handler)",
                 ["payload", "floor", "floor small reply", "handlerbox", "handlerbox p99",
                  "hb/floor", "hb/small-reply floor"], rows)


def _throughput(section: dict[str, Any]) -> str:
    rows = [[c["label"], fmt(c["per_s"], 0), fmt(c["vs_pebble"], 2, "x"), str(c["errors"]),
             fmt(c.get("p99_ms"), 2), fmt(c.get("max_ms"), 2),
             f"{c['caller_min']}-{c['caller_max']}" if "caller_min" in c else "-"]
            for c in section["contenders"].values()]
    return table(f"throughput: {section['in_flight']} in flight, N={section['workers']} "
                 "workers (dispatches/s, median of rounds; a dispatch's p99 and worst time "
                 "and dispatches per caller, worst round)",
                 ["contender", "per s", "vs pebble", "errors", "p99 ms", "max ms",
                  "per caller"], rows)


def _timeout(section: dict[str, Any]) -> str:
    rows = [[c["label"], fmt(c["late_ms_p50"], 2), fmt(c["late_ms_max"], 2),
             fmt(c["first_call_ms_p50"], 2), fmt(c["recovery_ms_p50"], 2),
             fmt(c["recovery_ms_max"], 2), str(len(c["trials"]))]
            for c in section["contenders"].values()]
    return table(f"timeout recovery: never-returning handler, limit {section['limit_s']:g} s "
                 "(ms after the deadline)",
                 ["contender", "late p50", "late max", "next call", "normal p50",
                  "normal max", "trials"], rows)


def _cold(section: dict[str, Any]) -> str:
    rows = [[c["label"], fmt(c["total_ms_p50"], 2), fmt(c["total_ms_max"], 2),
             fmt(c.get("spawn_ms_p50"), 2), fmt(c.get("ready_ms_p50"), 2),
             fmt(c.get("engine_ms_p50"), 2), str(len(c["trials"]))]
            for c in section["contenders"].values()]
    return table("cold start: new worker to first result (ms; handlerbox: spawned, bound, "
                 "and the same through Engine.dispatch)",
                 ["contender", "p50", "max", "spawned", "bound", "via engine", "trials"], rows)


def _restricted(section: dict[str, Any]) -> str:
    return table("restricted vs plain: a typical 50-line handler, in process (us per call)",
                 ["plain", "restricted", "ratio"],
                 [[fmt(section.get("plain_us"), 2), fmt(section.get("restricted_us"), 2),
                   fmt(section.get("ratio"), 2, "x")]])


def _fairness(section: dict[str, Any]) -> str:
    finished = section.get("a_finished") or {}
    return table(
        f"fairness: app A floods with {section['flood']} x {section['seconds']:g} s handlers "
        f"(budget {section['budget']}, at most {section['cap']} per app); app B's dispatches (us)",
        ["p50", "p90", "p99", "p99/floor", "p99/no flood", "B errors", "A running",
         "A waiting", "A finished"],
        [[fmt(section.get("p50_us")), fmt(section.get("p90_us")), fmt(section.get("p99_us")),
          fmt(section.get("ratio_p99_to_floor"), 1, "x"),
          fmt(section.get("ratio_p99_to_no_flood"), 2, "x"), str(section.get("errors")),
          str(section.get("a_running_min")), str(section.get("a_waiting_min")),
          ", ".join(f"{k} {v}" for k, v in sorted(finished.items())) or "-"]])


def _density(section: dict[str, Any]) -> str:
    memory = section.get("memory") or {}
    roles = memory.get("roles") or {}

    def role(name: str, key: str) -> str:
        return fmt((roles.get(name) or {}).get(key))

    rows = [[name, str(int((roles.get(name) or {}).get("processes", 0))), role(name, "rss_mb"),
             role(name, "uss_mb"), role(name, "pss_mb")] for name in ("host", "zygote",
                                                                        "workers")]
    memory_table = table(
        f"density: {section['installations']} installations warm (budget {section['budget']}, "
        f"idle_memory_mb {section['idle_memory_mb']}; loaded in "
        f"{fmt(section.get('load_seconds'))} s): memory (MiB)",
        ["role", "processes", "RSS", "USS", "PSS"], rows)
    latency = table(
        "density: round-robin over every installation (us)",
        ["p50", "p99", "p99/floor", "workers used/calls", "USS/worker MiB", "tree PSS MiB",
         "pool idle MiB / workers"],
        [[fmt(section.get("p50_us")), fmt(section.get("p99_us")),
          fmt(section.get("ratio_p99_to_floor"), 1, "x"),
          f"{section.get('workers_per_round')}/{section.get('calls')}",
          fmt(memory.get("uss_mb_per_worker"), 2), fmt(memory.get("tree_pss_mb")),
          f"{memory.get('pool_idle_mb')} / {memory.get('pool_idle_workers')}"]])
    return memory_table + "\n\n" + latency


def _many_apps(section: dict[str, Any]) -> str:
    memory = section.get("memory", {})
    procs = memory.get("processes", {})
    roles = memory.get("uss_mb_by_role", {})
    workers = procs.get("workers", 0)
    per_worker = roles.get("workers", 0.0) / workers if workers else None
    return table(
        f"many installations: {section['apps']} (one app each) round-robin, worker budget "
        f"{section['budget']} (processes: host+zygote+workers)",
        ["p50 us", "p99 us", "p99/floor", "workers used/calls", "processes", "RSS MiB",
         "USS MiB", "PSS MiB", "USS/worker MiB"],
        [[fmt(section.get("p50_us")), fmt(section.get("p99_us")),
          fmt(section.get("ratio_p99_to_floor"), 1, "x"),
          f"{section.get('workers_per_round')}/{section.get('calls')}",
          f"{procs.get('host', 0)}+{procs.get('zygote', 0)}+{workers}",
          fmt(memory.get("rss_mb")), fmt(memory.get("uss_mb")), fmt(memory.get("pss_mb")),
          fmt(per_worker, 2)]])


SECTIONS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("latency", _latency), ("throughput", _throughput), ("timeout", _timeout),
    ("cold_start", _cold), ("restricted", _restricted), ("sweep", _sweep),
    ("many_apps", _many_apps), ("fairness", _fairness), ("density", _density),
]
