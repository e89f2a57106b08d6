"""Many installations: 100 apps (one installation each) in one engine under a worker budget of 4,
dispatched round-robin.

No untrusted input. The apps are copies of tests/apps/bench_call_create in a temporary
directory (each copy is a separate app with its own key). Every call goes to the next app.
The budget counts dispatches running, not workers, so after its first call every app keeps a
warm worker (they fit the default idle-memory cap) and a call is a round trip, not a fork.
Ops:

    latency(calls, warmup)   nanoseconds per dispatch, round-robin over the apps, plus how many
                             distinct worker pids served them
    memory()                 RSS, USS and PSS of the whole tree: host + zygote + workers
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from handlerbox.benchmarks import payloads


class ManyApps:
    def __init__(self, config: dict[str, Any]) -> None:
        from handlerbox import Engine

        self.directory = tempfile.TemporaryDirectory(prefix="handlerbox-bench-apps-")
        count = int(config["apps"])
        for i in range(count):
            shutil.copytree(payloads.CALL_APP, Path(self.directory.name) / f"app{i:03d}")
        self.engine = Engine(workers=int(config["budget"]), spares=1)
        self.apps = [self.engine.load_app(Path(self.directory.name) / f"app{i:03d}")
                     for i in range(count)]
        self.payload = payloads.payload("350")
        self.next = 0
        self.latency(len(self.apps), 0)

    def latency(self, calls: int, warmup: int) -> dict[str, Any]:
        engine, apps, payload = self.engine, self.apps, self.payload
        clock = time.perf_counter_ns
        samples, pids, errors = [], set(), 0
        for i in range(warmup + calls):
            app = apps[self.next % len(apps)]
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
        """RSS, USS and PSS summed over the tree, and USS per role (host, zygote, workers)."""
        import psutil

        me = psutil.Process()
        totals = {"rss": 0, "uss": 0, "pss": 0}
        processes = {"host": 0, "zygote": 0, "workers": 0}
        uss_by_role = {"host": 0, "zygote": 0, "workers": 0}
        for process in [me, *me.children(recursive=True)]:
            try:
                info = process.memory_full_info()
                role = ("host" if process.pid == me.pid else "zygote"
                        if process.ppid() == me.pid
                        and "handlerbox zygote" in process.cmdline()
                        else "workers")
            except psutil.Error:
                continue  # it exited meanwhile
            for key in totals:
                totals[key] += getattr(info, key, 0)
            processes[role] += 1
            uss_by_role[role] += info.uss
        return {"rss_mb": totals["rss"] / 2**20, "uss_mb": totals["uss"] / 2**20,
                "pss_mb": totals["pss"] / 2**20, "processes": processes,
                "uss_mb_by_role": {k: v / 2**20 for k, v in uss_by_role.items()},
                "apps": len(self.apps)}

    def close(self) -> None:
        self.engine.close()
        self.directory.cleanup()
