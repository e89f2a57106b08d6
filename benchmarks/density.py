"""Density: many installations kept warm under a small budget; what does it cost in memory, and
what does a dispatch to any of them cost?

No untrusted input. One app (tests/apps/bench_call_create) installed in `installations`
accounts; the budget counts running dispatches, so after one dispatch each, every installation
keeps a warm worker while their memory fits `idle_memory_mb`. Ops:

    latency(calls, warmup)   nanoseconds per dispatch, round-robin over the installations, and
                             how many distinct workers served them
    memory()                 the tree after the pool measured its idle workers: host, zygote and
                             workers (RSS, USS, PSS), and the pool's own idle-memory account
"""

from __future__ import annotations

import time
from typing import Any

from handlerbox.benchmarks import payloads
from handlerbox.benchmarks.engines import pool_engine

MEASURE_WAIT = 60.0
"""Seconds to wait for the pool's keeper to measure every idle worker."""


class Density:
    def __init__(self, config: dict[str, Any]) -> None:
        count = int(config["installations"])
        self.idle_memory_mb = int(config["idle_memory_mb"])
        self.engine, self.configured_on_pool = pool_engine(
            int(config["budget"]), spares=1, idle_memory_mb=self.idle_memory_mb)
        self.app = self.engine.load_app(payloads.CALL_APP)
        base = payloads.payload("350")
        self.payloads = [{**base, "account_id": f"acct-{i:05d}"} for i in range(count)]
        started = time.perf_counter()
        for payload in self.payloads:  # one dispatch each: a worker starts and stays warm
            result = self.engine.dispatch(self.app, payload)
            if result.outcome != "ok":
                raise RuntimeError(f"loading ended {result.outcome}: {result.error}")
        self.load_seconds = time.perf_counter() - started
        self.next = 0

    def describe(self) -> dict[str, Any]:
        return {"caps_set_on_pool": self.configured_on_pool,
                "load_seconds": round(self.load_seconds, 2),
                "installations": len(self.payloads)}

    def latency(self, calls: int, warmup: int) -> dict[str, Any]:
        engine, app, payloads_ = self.engine, self.app, self.payloads
        clock = time.perf_counter_ns
        samples, pids, errors = [], set(), 0
        for i in range(warmup + calls):
            payload = payloads_[self.next % len(payloads_)]
            self.next += 1
            start = clock()
            result = engine.dispatch(app, payload)
            elapsed = clock() - start
            if i >= warmup:
                samples.append(elapsed)
                pids.add(result.worker_pid)
                errors += result.outcome != "ok"
        return {"samples_ns": samples, "worker_pids": len(pids), "errors": errors}

    def memory(self) -> dict[str, Any]:
        import psutil

        pool = self.engine._pool
        deadline = time.monotonic() + MEASURE_WAIT
        while time.monotonic() < deadline:
            with pool._lock:
                due = len(pool.warm.due())
            if not due:
                break
            time.sleep(0.2)
        stats = self.engine.stats()
        me = psutil.Process()
        zygote = self.engine.zygote_pid
        roles: dict[str, dict[str, float]] = {
            role: {"processes": 0, "rss_mb": 0.0, "uss_mb": 0.0, "pss_mb": 0.0}
            for role in ("host", "zygote", "workers")}
        for process in [me, *me.children(recursive=True)]:
            try:
                info = process.memory_full_info()
            except psutil.Error:
                continue  # it exited meanwhile
            role = ("host" if process.pid == me.pid
                    else "zygote" if process.pid == zygote else "workers")
            totals = roles[role]
            totals["processes"] += 1
            for key in ("rss", "uss", "pss"):
                totals[f"{key}_mb"] += getattr(info, key) / 2**20
        workers = roles["workers"]["processes"]
        return {
            "installations": len(self.payloads), "roles": roles,
            "uss_mb_per_worker": roles["workers"]["uss_mb"] / workers if workers else None,
            "tree_pss_mb": sum(r["pss_mb"] for r in roles.values()),
            "pool_idle_mb": stats["idle_mb"], "pool_idle_workers": stats["idle"],
            "idle_memory_mb": self.idle_memory_mb,
            "typical_worker_mb": pool.warm.typical / 2**20,
        }

    def close(self) -> None:
        self.engine.close()
