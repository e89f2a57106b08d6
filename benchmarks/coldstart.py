"""Cold start: how long until a new worker can serve its first call?

No untrusted input. One trial starts one worker and times, from the start request to the first
result back in the host:

    handlerbox_cold     Spawner.spawn() (a fork of the warm zygote, which is started once
                        before the trials), then the bind and the first invocation over the
                        pipes, as the engine sends them; `spawn_ms` and `ready_ms` on the way;
                        and `engine_ms`, the same seen through Engine.dispatch (spares=0)
    mp_spawn            multiprocessing "spawn": Process(target=serve_connection) + Pipe,
                        then one payload and its result
    mp_forkserver       the same with "forkserver" (its server started once before the trials,
                        preloading benchmarks.work, the way the zygote preloads the sandbox)
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

from handlerbox.benchmarks import payloads, work


class HandlerboxCold:
    """Two views of one question. `total_ms`: Spawner.spawn() plus the bind and the first
    invocation, written by the engine's own _send and read back over the pipes, the worker
    start the issue asks about. `engine_ms`: the public API's view, the first dispatch
    of a newly loaded app when no spare is waiting (spares=0): spawn, bind, invoke and the
    engine's own bookkeeping. If the engine's internals change shape, the first view is
    reported missing (with the reason) and `total_ms` falls back to the second."""

    def __init__(self, config: dict[str, Any]) -> None:
        from handlerbox import Engine

        self.engine = Engine(workers=64, spares=0)
        self.app = self.engine.load_app(payloads.CALL_APP)
        self.payload = payloads.payload("350")
        self.spawner_error: str | None = None
        self.engine_trial()  # starts nothing new: the zygote is already up, this warms up
        self.trial()

    def describe(self) -> dict[str, Any]:
        return {"isolation": self.engine.isolation(),
                "engine_worker_start_ms": self.engine.worker_start_ms()}

    def engine_trial(self) -> float:
        app = self.engine.load_app(payloads.CALL_APP)  # a new app: no worker of its own yet
        start = time.perf_counter()
        result = self.engine.dispatch(app, self.payload)
        end = time.perf_counter()
        if result.outcome != "ok":
            raise RuntimeError(f"the first dispatch ended {result.outcome}: {result.error}")
        return (end - start) * 1e3

    def spawner_trial(self) -> dict[str, float]:
        from handlerbox.runtime import protocol
        from handlerbox.runtime.pool import Lease
        from handlerbox.runtime.results import InvocationResult

        engine, clock = self.engine, time.perf_counter
        routed = engine._route(self.app, self.payload, time.monotonic())
        assert not isinstance(routed, InvocationResult), routed
        start = clock()
        worker = engine._spawner.spawn()
        spawned = clock()
        try:
            deadline = time.monotonic() + 10.0
            engine._dispatcher._send(self.app, routed, Lease(worker, fresh=True))
            hello = protocol.decode(protocol.read_frame(worker.reply_fd, worker.reader,
                                                        deadline))
            if hello.get("op") != "ready":
                raise RuntimeError(f"the new worker did not say ready: {hello}")
            ready = clock()
            reply = protocol.decode(protocol.read_frame(worker.reply_fd, worker.reader,
                                                        deadline))
            end = clock()
        finally:
            worker.kill()
        if reply.get("status") != "ok":
            raise RuntimeError(f"the new worker did not serve: {reply}")
        return {"spawn_ms": (spawned - start) * 1e3, "ready_ms": (ready - start) * 1e3,
                "spawner_ms": (end - start) * 1e3}

    def trial(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        if self.spawner_error is None:
            try:
                found.update(self.spawner_trial())
            except (AttributeError, TypeError, ImportError) as exc:
                self.spawner_error = f"engine internals changed: {exc!r}"
        found["engine_ms"] = self.engine_trial()
        found["total_ms"] = found.get("spawner_ms", found["engine_ms"])
        if self.spawner_error:
            found["spawner_error"] = self.spawner_error
        return found

    def close(self) -> None:
        self.engine.close()


class MultiprocessingCold:
    def __init__(self, config: dict[str, Any]) -> None:
        self.context = multiprocessing.get_context(config["method"])
        if config["method"] == "forkserver":
            self.context.set_forkserver_preload(["handlerbox.benchmarks.work"])
        self.payload = payloads.payload("350")
        self.expected = work.handle(self.payload)
        self.trial()  # the forkserver's own start is not part of a worker's start

    def trial(self) -> dict[str, Any]:
        clock = time.perf_counter
        start = clock()
        here, there = self.context.Pipe()
        process = self.context.Process(target=work.serve_connection, args=(there,),
                                       daemon=True)
        process.start()
        there.close()
        here.send(self.payload)
        result = here.recv()
        end = clock()
        here.send(None)
        process.join(5)
        here.close()
        if result != self.expected:
            raise RuntimeError(f"the new worker answered {result!r}")
        return {"total_ms": (end - start) * 1e3}

    def close(self) -> None:
        pass
