"""The pool's questions, run by the suite: fairness under a flood, and density at scale.

No untrusted input. Each runs one case process of its own (see benchmarks/fairness.py and
benchmarks/density.py) and summarises what it measured; ratios to the floor are added once the
whole run is done (the floor comes from the latency section of the same run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from handlerbox.benchmarks.stats import summarise_ns

if TYPE_CHECKING:
    from handlerbox.benchmarks.suite import Suite


def fairness(suite: Suite) -> dict[str, Any]:
    p = suite.profile["fairness"]
    settings = {k: p[k] for k in ("budget", "cap", "flood", "seconds")}
    with suite.cases({"fairness": settings}) as running:
        case = running["fairness"]
        samples: list[int] = []
        errors, running_a, waiting_a, finished = 0, [], [], {}
        for _ in range(p["rounds"]):
            found = suite.op(case, "latency", calls=p["calls"], warmup=p["warmup"])
            if found:
                samples.extend(found["samples_ns"])
                errors += found["errors"]
                running_a.append(found["a_running"])
                waiting_a.append(found["a_waiting"])
                finished = found["a_finished"]
    stats = summarise_ns(samples) if samples else {}
    stats.pop("cdf_us", None)
    return {**p, **stats, "errors": errors, "a_running_min": min(running_a, default=None),
            "a_waiting_min": min(waiting_a, default=None), "a_finished": finished}


def density(suite: Suite) -> dict[str, Any]:
    p = suite.profile["density"]
    settings = {k: p[k] for k in ("installations", "budget", "idle_memory_mb")}
    with suite.cases({"density": settings}) as running:
        case = running["density"]
        samples: list[int] = []
        workers, errors = 0, 0
        for _ in range(p["rounds"]):
            found = suite.op(case, "latency", calls=p["calls"], warmup=p["warmup"])
            if found:
                samples.extend(found["samples_ns"])
                workers = max(workers, found["worker_pids"])
                errors += found["errors"]
        memory = suite.op(case, "memory") or {}
    stats = summarise_ns(samples) if samples else {}
    stats.pop("cdf_us", None)
    return {**p, **stats, "errors": errors, "workers_per_round": workers, "memory": memory,
            "load_seconds": suite.described.get("density", {}).get("load_seconds")}


def add_floor_ratios(result: dict[str, Any], floor: float | None) -> None:
    """p50 and p99 over the floor's p50, for every section timed against it; and the
    fairness p99 over the p99 of the same dispatch with no flood (the latency section's)."""
    for name in ("many_apps", "fairness", "density"):
        section = result.get(name)
        if section and "p99_us" in section:
            section["ratio_p99_to_floor"] = section["p99_us"] / floor if floor else None
            section["ratio_p50_to_floor"] = section["p50_us"] / floor if floor else None
    fair = result.get("fairness")
    alone = (result.get("latency", {}).get("contenders", {}).get("handlerbox_sync", {})
             .get("p99_us"))
    if fair and "p99_us" in fair:
        fair["ratio_p99_to_no_flood"] = fair["p99_us"] / alone if alone else None
