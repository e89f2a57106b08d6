"""Runs every question of the suite, contenders interleaved, and gathers one results dict.

No untrusted input. Each section starts its case processes together, then measures in rounds;
every round visits every contender, in an order rotated each round, so machine drift hits all
of them alike. While one case measures, the other cases of its section are stopped (SIGSTOP),
so their idle pool threads never run beside it. Sections, and the question each answers:

    latency     a-f: one dispatch of the ~350 B payload, floor vs peers vs handlerbox
    sweep       k:   the same at 350 B, 10 KB and 256 KB, against the floor at that size
    throughput  g:   dispatches/s with N workers and 64 calls in flight
    timeout     h:   lateness of a timeout result, and time back to normal service
    cold        i:   time until a new worker serves
    restricted  j:   a restricted handler call against the same code as plain Python
    many_apps   l:   100 installations round-robin under a budget of 4: latency and memory
    fairness    m:   app A floods with 3-second handlers (budget 4, cap 2 per app): app B's
                     latency (benchmarks/pool_questions.py)
    density     n:   1000 installations kept warm: memory of host, zygote and workers, and
                     round-robin latency over all of them
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from handlerbox.benchmarks import payloads, pool_questions
from handlerbox.benchmarks.cases import CaseProcess, MissingCase
from handlerbox.benchmarks.stats import median, percentile, summarise_ns

SECTIONS = ("latency", "sweep", "throughput", "timeout", "cold", "restricted", "many_apps",
            "fairness", "density")

PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "setup_warmup": 300, "op_timeout": 600.0,
        "latency": {"rounds": 20, "calls": 2000, "warmup": 50},
        "sweep": {"rounds": 8, "calls": {"350": 1000, "10k": 500, "256k": 100}, "warmup": 5},
        "throughput": {"rounds": 6, "tasks": 5000, "in_flight": 64},
        "timeout": {"trials": 20, "limit": 0.2},
        "cold": {"trials": 30},
        "restricted": {"rounds": 30, "calls": 2000},
        "many_apps": {"apps": 100, "budget": 4, "rounds": 8, "calls": 500, "warmup": 20},
        "fairness": {"budget": 4, "cap": 2, "flood": 8, "seconds": 3.0, "rounds": 8,
                     "calls": 1000, "warmup": 20},
        "density": {"installations": 1000, "budget": 4, "idle_memory_mb": 8192, "rounds": 4,
                    "calls": 2000, "warmup": 0},
    },
    "quick": {
        "setup_warmup": 100, "op_timeout": 120.0,
        "latency": {"rounds": 6, "calls": 600, "warmup": 20},
        "sweep": {"rounds": 3, "calls": {"350": 300, "10k": 150, "256k": 30}, "warmup": 3},
        "throughput": {"rounds": 3, "tasks": 2000, "in_flight": 64},
        "timeout": {"trials": 4, "limit": 0.2},
        "cold": {"trials": 8},
        "restricted": {"rounds": 10, "calls": 1000},
        "many_apps": {"apps": 100, "budget": 4, "rounds": 3, "calls": 300, "warmup": 10},
        "fairness": {"budget": 4, "cap": 2, "flood": 8, "seconds": 3.0, "rounds": 3,
                     "calls": 600, "warmup": 20},
        "density": {"installations": 1000, "budget": 4, "idle_memory_mb": 8192, "rounds": 1,
                    "calls": 1000, "warmup": 0},
    },
    "smoke": {
        "setup_warmup": 5, "op_timeout": 60.0,
        "latency": {"rounds": 1, "calls": 10, "warmup": 1},
        "sweep": {"rounds": 1, "calls": {"350": 3, "10k": 3, "256k": 2}, "warmup": 0},
        "throughput": {"rounds": 1, "tasks": 128, "in_flight": 64},
        "timeout": {"trials": 1, "limit": 0.2},
        "cold": {"trials": 1},
        "restricted": {"rounds": 1, "calls": 20},
        "many_apps": {"apps": 6, "budget": 4, "rounds": 1, "calls": 12, "warmup": 0},
        "fairness": {"budget": 4, "cap": 2, "flood": 4, "seconds": 0.5, "rounds": 1,
                     "calls": 10, "warmup": 1},
        "density": {"installations": 12, "budget": 4, "idle_memory_mb": 512, "rounds": 1,
                    "calls": 24, "warmup": 0},
    },
}
"""Counts per profile: "full" is the default, "quick" must finish in under a minute, "smoke"
is for the test suite (shape only; its numbers mean nothing)."""

LABELS = {
    "floor": "floor (raw os.pipe)",
    "floor_small_reply": "floor, small reply",
    "mp_pool": "multiprocessing.Pool.apply",
    "executor": "ProcessPoolExecutor.submit",
    "pebble": "pebble.ProcessPool.schedule",
    "handlerbox_sync": "handlerbox Engine.dispatch",
    "handlerbox_async": "handlerbox Engine.dispatch_async",
    "handlerbox_threads": "handlerbox Engine.dispatch, threads",
    "handlerbox": "handlerbox",
    "handlerbox_cold": "handlerbox (zygote fork + bind)",
    "mp_spawn": "multiprocessing spawn",
    "mp_forkserver": "multiprocessing forkserver",
}
LATENCY = ("floor", "mp_pool", "executor", "pebble", "handlerbox_sync", "handlerbox_async")
THROUGHPUT = {"handlerbox_async": "handlerbox_async", "handlerbox_threads": "handlerbox_sync",
              "mp_pool": "mp_pool", "executor": "executor", "pebble": "pebble"}
"""Throughput contender -> the case process that runs it."""
SWEEP = {"floor": ("floor", {"reply": "echo"}),
         "floor_small_reply": ("floor", {"reply": "small"}),
         "handlerbox_sync": ("handlerbox_sync", {})}
TIMEOUTS = {"handlerbox": "handlerbox_timeout", "pebble": "pebble_timeout"}
REQUIRES = {"pebble": "pebble", "pebble_timeout": "pebble"}
"""Case process -> the package it needs beyond handlerbox's own (from the `bench` extra)."""
COLD = {"handlerbox_cold": {}, "mp_spawn": {"method": "spawn"},
        "mp_forkserver": {"method": "forkserver"}}


def rotations(names: list[str], rounds: int) -> Iterator[tuple[int, list[str]]]:
    for r in range(rounds):
        shift = r % len(names) if names else 0
        yield r, names[shift:] + names[:shift]


class Suite:
    def __init__(self, profile: str, placement: dict[str, Any], workers: int,
                 sections: tuple[str, ...], tick: Callable[[str], None]) -> None:
        self.profile = PROFILES[profile]
        self.placement = placement
        self.workers = workers
        self.sections = sections
        self.tick = tick
        self.errors: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.described: dict[str, Any] = {}

    def steps(self) -> int:
        """How many ops the run will send (for the progress bar)."""
        p, total = self.profile, 0
        if "latency" in self.sections:
            total += p["latency"]["rounds"] * len(LATENCY)
        if "sweep" in self.sections:
            total += p["sweep"]["rounds"] * len(SWEEP) * len(payloads.SIZES)
        if "throughput" in self.sections:
            total += p["throughput"]["rounds"] * len(THROUGHPUT)
        if "timeout" in self.sections:
            total += p["timeout"]["trials"] * len(TIMEOUTS)
        if "cold" in self.sections:
            total += p["cold"]["trials"] * len(COLD)
        if "restricted" in self.sections:
            total += 1
        if "many_apps" in self.sections:
            total += p["many_apps"]["rounds"] + 1
        if "fairness" in self.sections:
            total += p["fairness"]["rounds"]
        if "density" in self.sections:
            total += p["density"]["rounds"] + 1
        return total

    @contextmanager
    def cases(self, kinds: dict[str, dict[str, Any]]
              ) -> Iterator[dict[str, CaseProcess | MissingCase]]:
        """Start case processes together, wait until each is ready, stop them all after."""
        base = {"placement": self.placement, "workers": self.workers,
                "setup_warmup": self.profile["setup_warmup"]}
        started: dict[str, CaseProcess | MissingCase] = {}
        for name, settings in kinds.items():
            settings = dict(settings)
            kind = settings.pop("kind", name)
            package = REQUIRES.get(kind)
            if package and importlib.util.find_spec(package) is None:
                reason = f"{package} is not installed (pip install -e '.[bench]')"
                started[name] = MissingCase(name, reason)
                self.skipped[name] = reason
            else:
                started[name] = CaseProcess(name, kind, {**base, **settings})
        try:
            for case in started.values():
                case.ready(self.profile["op_timeout"])
                if case.info:
                    self.described[case.name] = {k: v for k, v in case.info.items()
                                                 if k != "pid"}
            for case in started.values():
                case.pause()
            yield started
        finally:
            for name, case in started.items():
                case.close()
                if case.error:
                    self.errors[name] = case.error

    def op(self, case: CaseProcess | MissingCase, what: str, **args: Any) -> Any:
        """One op on one case; every other case of the section is stopped meanwhile."""
        self.tick(case.name)
        case.resume()
        try:
            return case.call(what, self.profile["op_timeout"], **args)
        finally:
            case.pause()

    # -- sections --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        pools = [s for s in ("latency", "sweep", "throughput") if s in self.sections]
        if pools:
            with self.cases({name: {} for name in LATENCY}) as running:
                for section in pools:
                    result[section] = getattr(self, section)(running)
        if "timeout" in self.sections:
            limit = self.profile["timeout"]["limit"]
            with self.cases({n: {"kind": k, "limit": limit} for n, k in TIMEOUTS.items()}
                            ) as running:
                result["timeout"] = self.timeout(running)
        if "cold" in self.sections:
            with self.cases({n: dict(c) for n, c in COLD.items()}) as running:
                result["cold_start"] = self.cold(running)
        if "restricted" in self.sections:
            with self.cases({"restricted": {}}) as running:
                p = self.profile["restricted"]
                result["restricted"] = self.op(running["restricted"], "measure", **p) or {}
        if "many_apps" in self.sections:
            p = self.profile["many_apps"]
            with self.cases({"many_apps": {"apps": p["apps"], "budget": p["budget"]}}
                            ) as running:
                result["many_apps"] = self.many_apps(running["many_apps"])
        if "fairness" in self.sections:
            result["fairness"] = pool_questions.fairness(self)
        if "density" in self.sections:
            result["density"] = pool_questions.density(self)
        return result

    def latency(self, running: dict[str, CaseProcess | MissingCase]) -> dict[str, Any]:
        p = self.profile["latency"]
        samples: dict[str, list[int]] = {name: [] for name in LATENCY}
        for _, order in rotations(list(LATENCY), p["rounds"]):
            for name in order:
                batch = self.op(running[name], "latency", calls=p["calls"],
                                warmup=p["warmup"], size="350")
                samples[name].extend(batch or [])
        contenders = {name: {"label": LABELS[name], **summarise_ns(samples[name])}
                      for name in LATENCY if samples[name]}
        floor = contenders.get("floor", {}).get("p50_us")
        for stats in contenders.values():
            stats["ratio_to_floor"] = stats["p50_us"] / floor if floor else None
        return {"payload_bytes": len(payloads.payload_bytes("350")), **p,
                "contenders": contenders}

    def sweep(self, running: dict[str, CaseProcess | MissingCase]) -> dict[str, Any]:
        p = self.profile["sweep"]
        samples: dict[tuple[str, str], list[int]] = {
            (name, size): [] for name in SWEEP for size in payloads.SIZES}
        for _, order in rotations(list(SWEEP), p["rounds"]):
            for size in payloads.SIZES:
                for name in order:
                    case, extra = SWEEP[name]
                    batch = self.op(running[case], "latency", calls=p["calls"][size],
                                    warmup=p["warmup"], size=size, **extra)
                    samples[name, size].extend(batch or [])
        sizes = {}
        for size in payloads.SIZES:
            found = {}
            for name in SWEEP:
                if samples[name, size]:
                    stats = summarise_ns(samples[name, size])
                    stats.pop("cdf_us")
                    found[name] = {"label": LABELS[name], **stats}
            p50 = {name: stats["p50_us"] for name, stats in found.items()}
            hb = p50.get("handlerbox_sync")
            sizes[size] = {
                "bytes": len(payloads.payload_bytes(size)), "contenders": found,
                "ratio_to_floor": hb / p50["floor"] if hb and "floor" in p50 else None,
                "ratio_to_small_reply_floor": (hb / p50["floor_small_reply"]
                                               if hb and "floor_small_reply" in p50 else None),
            }
        return {**p, "sizes": sizes}

    def throughput(self, running: dict[str, CaseProcess | MissingCase]) -> dict[str, Any]:
        p = self.profile["throughput"]
        rates: dict[str, list[float]] = {name: [] for name in THROUGHPUT}
        errors = dict.fromkeys(THROUGHPUT, 0)
        callers: dict[str, dict[str, float]] = {name: {} for name in THROUGHPUT}
        for _, order in rotations(list(THROUGHPUT), p["rounds"]):
            for name in order:
                done = self.op(running[THROUGHPUT[name]], "throughput", tasks=p["tasks"],
                               in_flight=p["in_flight"])
                if done:
                    rates[name].append(done["tasks"] / done["seconds"])
                    errors[name] += done["errors"]
                    seen = callers[name]  # the worst round: p99 and worst wait, spread
                    for key, worst in (("p99_ms", max), ("max_ms", max),
                                       ("caller_min", min), ("caller_max", max)):
                        if key in done:
                            seen[key] = worst(seen.get(key, done[key]), done[key])
        contenders: dict[str, dict[str, Any]] = {
            name: {"label": LABELS[name], "per_s": median(rates[name]),
                   "per_s_rounds": rates[name], "errors": errors[name], **callers[name]}
            for name in THROUGHPUT if rates[name]}
        pebble = contenders.get("pebble", {}).get("per_s")
        for stats in contenders.values():
            stats["vs_pebble"] = stats["per_s"] / pebble if pebble else None
        return {**p, "workers": self.workers, "contenders": contenders}

    def timeout(self, running: dict[str, CaseProcess | MissingCase]) -> dict[str, Any]:
        p = self.profile["timeout"]
        trials: dict[str, list[dict[str, Any]]] = {name: [] for name in TIMEOUTS}
        for _, order in rotations(list(TIMEOUTS), p["trials"]):
            for name in order:
                found = self.op(running[name], "trial")
                if found:
                    trials[name].append(found)
        contenders = {}
        for name, found in trials.items():
            if not found:
                continue
            stats: dict[str, Any] = {"label": LABELS[name]}
            for key in ("late_ms", "recovery_ms", "first_call_ms"):
                values = sorted(t[key] for t in found)
                stats[f"{key}_p50"] = percentile(values, 50)
                stats[f"{key}_max"] = values[-1]
            stats["all_recovered"] = all(t["recovered"] for t in found)
            stats["trials"] = found
            contenders[name] = stats
        return {"limit_s": p["limit"], "workers": self.workers, "contenders": contenders}

    def cold(self, running: dict[str, CaseProcess | MissingCase]) -> dict[str, Any]:
        p = self.profile["cold"]
        trials: dict[str, list[dict[str, Any]]] = {name: [] for name in COLD}
        for _, order in rotations(list(COLD), p["trials"]):
            for name in order:
                found = self.op(running[name], "trial")
                if found:
                    trials[name].append(found)
        contenders = {}
        for name, found in trials.items():
            if not found:
                continue
            stats: dict[str, Any] = {"label": LABELS[name]}
            for key in (k for k, v in found[0].items() if isinstance(v, float)):
                values = sorted(t[key] for t in found)
                stats[f"{key}_p50"] = percentile(values, 50)
                stats[f"{key}_max"] = values[-1]
            stats["trials"] = found
            contenders[name] = stats
        return {"contenders": contenders}

    def many_apps(self, case: CaseProcess | MissingCase) -> dict[str, Any]:
        p = self.profile["many_apps"]
        samples: list[int] = []
        workers, errors = 0, 0
        for _ in range(p["rounds"]):
            found = self.op(case, "latency", calls=p["calls"], warmup=p["warmup"])
            if found:
                samples.extend(found["samples_ns"])
                workers = max(workers, found["worker_pids"])
                errors += found["errors"]
        memory = self.op(case, "memory") or {}
        stats = summarise_ns(samples) if samples else {}
        return {**p, "workers_per_round": workers, "errors": errors, **stats,
                "memory": memory}


def run(profile: str, placement: dict[str, Any], workers: int, sections: tuple[str, ...],
        tick: Callable[[str], None]) -> dict[str, Any]:
    """Measure `sections` with a profile's counts; the results dict, without machine info."""
    suite = Suite(profile, placement, workers, sections, tick)
    start = time.perf_counter()
    result = suite.run()
    floor = result.get("latency", {}).get("contenders", {}).get("floor", {}).get("p50_us")
    pool_questions.add_floor_ratios(result, floor)
    result["seconds"] = time.perf_counter() - start
    result["errors"] = suite.errors
    result["skipped"] = suite.skipped
    result["cases"] = suite.described
    return result
