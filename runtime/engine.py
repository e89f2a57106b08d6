"""The Engine: load apps, validate payloads, route events to handlers in workers, one result each.

Worker replies are untrusted: runtime.replies reads each as a size-capped JSON frame and
checks it field by field before it becomes an InvocationResult. Data flow of one dispatch:

    caller --payload--> exact-type check (EventPayload when unusual) --> event -> handler
           --> Pool.acquire (idle worker of the app | spare bound now | wait | overloaded)
           --> bind frame (fresh worker) + invoke frame --> worker pipe
           <-- result frame, read by the caller itself until the app's deadline
           at the deadline: SIGKILL the worker's process group, answer `timeout`,
           the pool's spare takes its place
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Generator
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from handlerbox.runtime import faults, protocol, replies
from handlerbox.runtime.app import App, load_app
from handlerbox.runtime.config import EngineConfig
from handlerbox.runtime.errors import (
    ConfigError,
    EngineClosed,
    IsolationError,
    PayloadError,
    WorkerError,
)
from handlerbox.runtime.isolation import ACTIVE, LAYERS
from handlerbox.runtime.payloads import EventPayload, payload_json_fast
from handlerbox.runtime.pool import Lease, Overloaded, Pool
from handlerbox.runtime.results import ErrorInfo, InvocationResult
from handlerbox.runtime.spawner import Spawner, WorkerProcess, describe_status

Payload = dict[str, Any] | EventPayload | bytes
"""A payload as a dict, a validated EventPayload, or JSON bytes (passed on without
re-encoding work in Python: the cheapest form for large payloads)."""

TIMEOUT_MESSAGE = "Timeout error while processing the request."
_ATTEMPTS = 4
"""Workers that die before taking a request are replaced; a dispatch tries this many."""


def _event_name(payload: Any) -> str:
    """The event a payload claims, for naming it in an invalid_payload result."""
    if isinstance(payload, EventPayload):
        return payload.event
    if isinstance(payload, (bytes, bytearray)):
        try:
            payload = json.loads(payload)  # lenient on purpose: only to name the event
        except (ValueError, RecursionError):
            return ""
    event = payload.get("event", "") if isinstance(payload, dict) else ""
    return event if isinstance(event, str) else ""


class _Step:
    """One wait of a dispatch, performed by the sync or the async driver."""

    def run(self) -> Any:
        raise NotImplementedError

    async def run_async(self) -> Any:
        raise NotImplementedError


class _Acquire(_Step):
    def __init__(self, pool: Pool, app: App) -> None:
        self.pool, self.app = pool, app

    def run(self) -> Lease:
        return self.pool.acquire(self.app.key, self.app.execution_timeout)

    async def run_async(self) -> Lease:
        return await self.pool.acquire_async(self.app.key, self.app.execution_timeout)


class _Read(_Step):
    """The ready reply of a fresh worker, or the result frame."""

    def __init__(self, worker: WorkerProcess, deadline: float, ready: bool) -> None:
        self.worker, self.deadline, self.ready = worker, deadline, ready

    def run(self) -> bytes | None:
        if self.ready:
            replies.read_ready(self.worker, self.deadline)
            return None
        return replies.read_result(self.worker, self.deadline)

    async def run_async(self) -> bytes | None:
        if self.ready:
            await replies.read_ready_async(self.worker, self.deadline)
            return None
        return await replies.read_result_async(self.worker, self.deadline)


class _ExitStatus(_Step):
    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker

    def run(self) -> int | None:
        return replies.exit_status(self.worker)

    async def run_async(self) -> int | None:
        return await replies.exit_status_async(self.worker)


class Engine:
    """Runs app handlers in pooled, sandboxed worker processes.

        with Engine(workers=2) as engine:
            app = engine.load_app("examples/call_logger")
            result = engine.dispatch(app, payload)              # thread-safe
            result = await engine.dispatch_async(app, payload)  # asyncio

    Settings are EngineConfig's (`Engine(workers=4, memory_limit_mb=512)` or `config=`);
    `spares` is how many unbound workers wait ready. `allow_probes` and `inject_fault` are
    for tests only: they let the host run unrestricted code in, or break, its own workers.
    """

    def __init__(self, workers: int | None = None, *, config: EngineConfig | None = None,
                 spares: int = 1, allow_probes: bool = False,
                 inject_fault: dict[str, Any] | None = None, **settings: Any) -> None:
        if config is None:
            if workers is not None:
                settings["workers"] = workers
            config = EngineConfig.parse(settings)
        elif workers is not None or settings:
            config = EngineConfig.parse({**config.model_dump(), **settings,
                                         **({"workers": workers} if workers else {})})
        self.config = config
        if inject_fault is not None and (inject_fault.get("stage") not in faults.STAGES
                                         or inject_fault.get("action") not in faults.ACTIONS):
            raise ConfigError(f"inject_fault: stage must be one of {faults.STAGES} and action "
                              f"one of {faults.ACTIONS}; got {inject_fault}")
        unknown = sorted(set(config.require) - set(LAYERS))
        if unknown:
            raise ConfigError(f"config.require: unknown isolation layers {unknown}; "
                              f"known: {', '.join(LAYERS)}")
        self._spawner = Spawner({
            "enabled": config.isolation, "require": list(config.require),
            "probes": allow_probes, "fault": inject_fault, "rlimits": {
                "memory_bytes": config.memory_limit_mb << 20,
                "cpu_seconds": config.worker_cpu_seconds, "core_bytes": 0, "file_bytes": 0,
                "open_files": 32, "processes": 0}})
        report = self._spawner.start()["layers"]
        missing = [f"{name}: {report.get(name, 'unknown')}" for name in config.require
                   if report.get(name) != ACTIVE]
        if missing:
            self._spawner.close()
            raise IsolationError("required isolation layers cannot be applied on this "
                                 "machine:\n" + "\n".join(missing))
        self._pool = Pool(self._spawner, budget=config.workers, spares=spares,
                          recycle_after=config.recycle_after, max_queue=config.max_queue,
                          max_queue_per_app=config.max_queue_per_app,
                          # half the CPU rlimit: a worker is replaced long before it bites
                          recycle_cpu_ms=config.worker_cpu_seconds * 500.0,
                          recycle_rss_kb=config.recycle_rss_mb << 10)
        self._closed = False  # no new dispatches
        self._stopped = False  # workers and zygote gone
        self._inflight = 0
        self._inflight_done = threading.Condition()
        self._sandbox_limits = {"max_log_bytes": config.max_log_bytes,
                                "max_result_bytes": config.max_result_bytes}
        # JSON escaping can make a logged character 6 bytes; errors are clipped in the worker.
        self._max_reply = config.max_result_bytes + 6 * config.max_log_bytes + (256 << 10)

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self, drain: bool = True) -> None:
        """Stop the engine; new dispatches raise EngineClosed from now on. With `drain`,
        dispatches in flight finish first (each within its own deadline); without, their
        workers are killed and they end as `crashed`. Then every worker and the zygote are
        killed and reaped. Idempotent."""
        with self._inflight_done:
            self._closed = True
            while drain and self._inflight:
                self._inflight_done.wait()
            if self._stopped:
                return
            self._stopped = True
        self._pool.close()
        self._spawner.close()

    def _enter(self) -> None:
        with self._inflight_done:
            if self._closed:
                raise EngineClosed("the engine is closed (or closing): no new dispatches")
            self._inflight += 1

    def _leave(self) -> None:
        with self._inflight_done:
            self._inflight -= 1
            if not self._inflight:
                self._inflight_done.notify_all()

    def workers(self) -> list[WorkerProcess]:
        """The live worker handles (for inspection and tests)."""
        return self._pool.workers()

    def isolation(self) -> dict[str, str]:
        """Each isolation layer: "active", or "unavailable: <why>", as a worker gets them."""
        return dict(self._spawner.isolation["layers"])

    def worker_start_ms(self) -> dict[str, float]:
        """Measured at start (median of 5): `start_ms`, a fork from the zygote until the
        isolation layers are applied and reported; `layers_ms`, the layers alone."""
        return {key: float(self._spawner.isolation[key]) for key in ("start_ms", "layers_ms")}

    def probe(self, source: str, timeout: float = 10.0) -> Any:
        """TEST ONLY (needs allow_probes=True): run unrestricted `source` in a new worker
        after its isolation layers and return its `result` variable; the worker is then
        killed. Handlers can never reach this."""
        worker = self._spawner.spawn()
        try:
            protocol.write_frame(worker.request_fd, json.dumps(
                {"op": "probe", "source": source}).encode())
            reply = protocol.decode(protocol.read_frame(
                worker.reply_fd, worker.reader, time.monotonic() + timeout))
            return reply.get("result")
        finally:
            worker.kill()

    # -- apps ------------------------------------------------------------------------------

    def load_app(self, path: str | Path, request_timeout: int | None = None,
                 timeout: float | None = None) -> App:
        """Load an app directory; see runtime.app.load_app for the errors it raises."""
        if self._closed:
            raise EngineClosed("the engine is closed")
        return load_app(path, request_timeout=request_timeout, timeout=timeout)

    # -- dispatch --------------------------------------------------------------------------

    def dispatch(self, app: App, payload: Payload) -> InvocationResult:
        """Run the handler subscribed to the payload's event; always one InvocationResult.
        Raises EngineClosed only, and only once close() was called."""
        self._enter()
        try:
            return self._dispatch(app, payload)
        finally:
            self._leave()

    async def dispatch_async(self, app: App,
                             payload: Payload) -> InvocationResult:
        """`dispatch` for asyncio: waits on the worker's pipe in the event loop, no thread."""
        self._enter()
        try:
            return await self._dispatch_async(app, payload)
        finally:
            self._leave()

    def _dispatch(self, app: App, payload: Payload) -> InvocationResult:
        steps = self._steps(app, payload)
        answer: Any = None
        failed: BaseException | None = None
        while True:
            try:
                step = steps.throw(failed) if failed else steps.send(answer)
            except StopIteration as done:
                return cast(InvocationResult, done.value)
            try:
                answer, failed = step.run(), None
            except Exception as exc:
                answer, failed = None, exc
            except BaseException:  # KeyboardInterrupt and kin: give the worker back first
                steps.close()
                raise

    async def _dispatch_async(self, app: App,
                              payload: Payload) -> InvocationResult:
        steps = self._steps(app, payload)
        answer: Any = None
        failed: BaseException | None = None
        while True:
            try:
                step = steps.throw(failed) if failed else steps.send(answer)
            except StopIteration as done:
                return cast(InvocationResult, done.value)
            try:
                answer, failed = await step.run_async(), None
            except asyncio.CancelledError:
                steps.close()
                raise
            except Exception as exc:
                answer, failed = None, exc

    def _steps(self, app: App, payload: Payload
               ) -> Generator[_Step, Any, InvocationResult]:
        """One dispatch's policy, written once for both APIs: it yields each wait (for a
        worker, a reply, an exit status) and the sync or async driver performs it."""
        start = time.monotonic()
        routed = self._route(app, payload, start)
        if isinstance(routed, InvocationResult):
            return routed
        event, handler, request = routed
        failure = "the workers died before they received the request"
        for _ in range(_ATTEMPTS):
            try:
                lease: Lease = yield _Acquire(self._pool, app)
            except Overloaded:
                return self._overloaded(app, event, handler, start)
            except WorkerError as exc:  # the zygote could not fork one: try again
                failure = str(exc)
                continue
            worker = lease.worker
            deadline = time.monotonic() + app.execution_timeout
            try:
                self._send(app, lease, request)
                if lease.fresh:
                    yield _Read(worker, deadline, ready=True)
                body = yield _Read(worker, deadline, ready=False)
                return self._finish(app, event, handler, worker, body, start)
            except replies.NotStarted:
                self._pool.release(worker, healthy=False)
                continue
            except protocol.DeadlineReached:
                return self._timed_out(app, event, handler, worker, start)
            except (protocol.ProtocolError, OSError) as exc:
                worker.kill()
                status = yield _ExitStatus(worker)
                return self._lost(app, event, handler, worker, exc, start, status)
            except GeneratorExit:  # the async caller was cancelled: nobody wants the reply
                worker.kill()
                self._pool.release(worker, healthy=False)
                raise
        return self._crashed_before_start(app, event, handler, start, failure)

    # -- steps -----------------------------------------------------------------------------

    def _route(self, app: App, payload: Payload,
               start: float) -> InvocationResult | tuple[str, str, bytes]:
        """Validate the payload and find its handler; a result when it cannot go further."""
        fast = payload_json_fast(payload)
        if fast is not None:
            event, encoded = fast
        else:
            event = _event_name(payload)
            try:
                checked = (EventPayload.parse_json(payload) if isinstance(
                    payload, (bytes, bytearray)) else EventPayload.parse(payload))
            except PayloadError as exc:
                return self._result(app, event, None, "invalid_payload", start,
                                    error=ErrorInfo(type="PayloadError", message=str(exc)))
            event, encoded = checked.event, checked.json_bytes()
        handler = app.handler_for(event)
        if handler is None:
            subscribed = ", ".join(sorted(app.manifest.events))
            return self._result(app, event, None, "not_subscribed", start,
                                error=ErrorInfo(type="NotSubscribed", message=(
                                    f"{app.name} does not subscribe to {event} "
                                    f"(it subscribes to {subscribed})")))
        return event, handler, app.invoke_prefixes[event] + encoded + b"}"

    def _send(self, app: App, lease: Lease, request: bytes) -> None:
        worker = lease.worker
        try:
            if lease.fresh:
                worker.reader.max_bytes = self._max_reply
                protocol.write_frame(worker.request_fd, app.bind_request(self._sandbox_limits))
            protocol.write_frame(worker.request_fd, request)
        except OSError as exc:  # EPIPE: the worker died before it got the request
            raise replies.NotStarted() from exc

    def _finish(self, app: App, event: str, handler: str, worker: WorkerProcess,
                body: bytes, start: float) -> InvocationResult:
        try:
            reply = replies.check_result(protocol.decode(body), self.config.max_log_bytes)
            if worker.reader.buffer:
                raise protocol.ProtocolError("unexpected bytes after the reply")
        except protocol.ProtocolError as exc:
            worker.kill()
            self._pool.release(worker, healthy=False)
            return self._result(app, event, handler, "crashed", start, error=ErrorInfo(
                type="WorkerError", message=f"the worker broke the protocol: {exc}"))
        status = reply["status"]
        self._pool.release(worker, healthy=status == "ok" or status == "error",
                           cpu_ms=reply["cpu_ms"], rss_kb=reply["max_rss_kb"])
        common = {"logs": reply["logs"], "cpu_ms": reply["cpu_ms"],
                  "max_rss_kb": reply["max_rss_kb"], "worker_pid": worker.pid}
        if status == "ok":
            return self._result(app, event, handler, "ok", start, value=reply["value"],
                                **common)
        if status == "memory_limit":
            return self._result(app, event, handler, "memory_limit", start, error=ErrorInfo(
                type="MemoryError", message=(f"the handler went over the memory limit of "
                                             f"{self.config.memory_limit_mb} MiB")), **common)
        return self._result(app, event, handler, "handler_error", start,
                            error=ErrorInfo(**reply["error"]), **common)

    def _timed_out(self, app: App, event: str, handler: str, worker: WorkerProcess,
                   start: float) -> InvocationResult:
        worker.kill()
        self._pool.release(worker, healthy=False)
        elapsed = time.monotonic() - start
        return self._result(app, event, handler, "timeout", start, worker_pid=worker.pid,
                            error=ErrorInfo(
            type="Timeout", message=f"{TIMEOUT_MESSAGE} The handler ran past its limit of "
                                    f"{app.execution_timeout:g} s (elapsed {elapsed:.3f} s)."))

    def _lost(self, app: App, event: str, handler: str, worker: WorkerProcess,
              exc: BaseException, start: float, status: int | None) -> InvocationResult:
        self._pool.release(worker, healthy=False)
        how = describe_status(status) if status is not None else "exit status unknown"
        if self._stopped:
            message = "the engine was closed without draining while the handler ran"
        elif isinstance(exc, protocol.PeerClosed):
            message = f"the worker died while running the handler: {how}"
        else:
            message = f"the worker broke the protocol ({exc}); it was killed"
        return self._result(app, event, handler, "crashed", start, worker_pid=worker.pid,
                            error=ErrorInfo(type="WorkerCrashed", message=message))

    def _overloaded(self, app: App, event: str, handler: str, start: float
                    ) -> InvocationResult:
        if self._stopped:
            return self._result(app, event, handler, "crashed", start, error=ErrorInfo(
                type="EngineClosed", message="the engine was closed without draining before "
                                             "a worker took the dispatch"))
        return self._result(app, event, handler, "overloaded", start, error=ErrorInfo(
            type="Overloaded", message=f"no worker came free within {app.execution_timeout:g}"
                                       " s, or the wait queue is full"))

    def _crashed_before_start(self, app: App, event: str, handler: str, start: float,
                              failure: str) -> InvocationResult:
        return self._result(app, event, handler, "crashed", start, error=ErrorInfo(
            type="WorkerCrashed", message=f"{_ATTEMPTS} attempts to start the handler failed:"
                                          f" {failure}"))

    def _result(self, app: App, event: str, handler: str | None, outcome: str, start: float,
                **fields: Any) -> InvocationResult:
        return InvocationResult.model_construct(
            outcome=outcome, app=app.name, event=event, handler=handler,
            value=fields.pop("value", None), error=fields.pop("error", None),
            logs=fields.pop("logs", ""), duration_ms=(time.monotonic() - start) * 1000.0,
            cpu_ms=fields.pop("cpu_ms", None), max_rss_kb=fields.pop("max_rss_kb", None),
            timeout_s=app.execution_timeout, worker_pid=fields.pop("worker_pid", None))
