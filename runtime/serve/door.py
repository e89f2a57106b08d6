"""FrontDoor: the running server behind the routes (engine, queue, journal, apps, metrics,
logs) and its lifecycle: start, drain, close. No untrusted input is parsed here: the routes
validate requests before they call in.

    starting --start()--> ready --begin_drain()--> draining --aclose()--> stopped

aclose() stops intake, lets queued product events run (for `shutdown_grace_seconds` when the
database outlives the process, else until the queue is empty), waits for those running, then
closes the engine (it drains its own in-flight work, scheduled events included), then writes
the last results. Accepted events that never started stay `queued` in the journal and run at
the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from handlerbox.runtime.app import App
from handlerbox.runtime.cluster.errors import ClusterError
from handlerbox.runtime.engine import Engine
from handlerbox.runtime.errors import EngineClosed
from handlerbox.runtime.payloads import payload_json_fast
from handlerbox.runtime.results import ErrorInfo, InvocationResult
from handlerbox.runtime.serve import logs
from handlerbox.runtime.serve.appstore import AppStore
from handlerbox.runtime.serve.archive import Caps
from handlerbox.runtime.serve.config import ServeConfig
from handlerbox.runtime.serve.metrics import Gauges, ServeMetrics
from handlerbox.runtime.serve.queue import EventQueue, Job
from handlerbox.runtime.serve.responses import ApiError, outcome_status
from handlerbox.runtime.serve.results_store import Accepted, Finished, Journal, ResultsStore
from handlerbox.runtime.services.sqlite import Database

DB_NAME = "handlerbox.sqlite3"
MAX_ATTEMPTS = 5
"""How often an accepted (202) event is tried while the engine answers `overloaded` (its own
queues are full, e.g. of server methods); the last answer is its result."""
RETRY_MIN_S = 0.1


CLUSTER_SLACK_S = 30.0
"""How long past its execution timeout a cluster event may take to come back (queueing,
redelivery after a host dies) before the job is retried."""


def new_id() -> str:
    return uuid.uuid4().hex


class FrontDoor:
    """Everything the routes share. `engine` may be the host's own (it is then neither
    created nor closed here; its database holds the results)."""

    def __init__(self, config: ServeConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.state = "starting"
        self.metrics = ServeMetrics()
        self.log = logs.InvocationLog(config.handler_logs)
        self.queue = EventQueue(self._run_job, config.queue_size, config.consumer_count)
        self.running: set[str] = set()
        self._engine, self._own_engine = engine, engine is None
        self._workdir: Path | None = None
        self._database: Database | None = None
        self._journal: Journal | None = None
        self._store: ResultsStore | None = None
        self._apps: AppStore | None = None
        self._purger: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: Any = None  # runtime.cluster.Producer, when events go to a cluster

    # -- parts, once started ---------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise ApiError(503, "not_ready", "the server is starting")
        return self._engine

    @property
    def journal(self) -> Journal:
        assert self._journal is not None, "FrontDoor.start() first"
        return self._journal

    @property
    def store(self) -> ResultsStore:
        assert self._store is not None, "FrontDoor.start() first"
        return self._store

    @property
    def apps(self) -> AppStore:
        if self._apps is None:
            raise ApiError(503, "not_ready", "the server is starting")
        return self._apps

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def check_open(self) -> None:
        """503 with Retry-After unless new work is taken (starting, draining, stopped)."""
        if self.state != "ready":
            code = "draining" if self.state in ("draining", "stopped") else "not_ready"
            raise ApiError(503, code, f"the server is {self.state}: it takes no new work",
                           headers={"Retry-After": str(self.config.retry_after_seconds)})

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        self._loop = asyncio.get_running_loop()
        if not config.database:
            self._workdir = Path(tempfile.mkdtemp(prefix="handlerbox-serve-"))
        try:
            if self._engine is None:
                database = config.database or str(self._require_workdir() / DB_NAME)
                self._engine = Engine(config=config.engine_config().model_copy(
                    update={"database": database}))
            engine = self._engine
            # Our own connections to the engine's file: results can still be written while
            # the engine closes (and closes its connections).
            self._database = Database(engine.database.path)
            self._store = ResultsStore(self._database, config.results_ttl_seconds)
            self._journal = Journal(self._store)
            self._journal.start()
            data_dir = Path(config.data_dir) if config.data_dir else (
                self._workdir / "apps" if self._workdir else Path(f"{engine.database.path}.apps"))
            self._apps = AppStore(engine, self._database, data_dir, config.app_roots,
                                  Caps(config.max_app_files, config.max_app_bytes))
            for problem in await asyncio.to_thread(self._apps.restore):
                logs.event("app_restore_failed", logging.WARNING, problem=problem)
            for path in config.apps:
                app = await asyncio.to_thread(self._apps.load_configured, path)
                logs.event("app_loaded", app=app.name, version=app.version, path=path)
            self._hook_engine(engine)
            if config.cluster is not None:
                from handlerbox.runtime.cluster.producer import Producer

                self._producer = Producer(config.cluster)
            self.queue.start()
            recovered = await self.journal.read(self.store.queued)
            for accepted in recovered:
                self.queue.offer(_recovered_job(accepted), force=True)
            self._purger = asyncio.create_task(self._purge_loop(), name="handlerbox-purge")
        except BaseException:
            await self._release()
            raise
        self.state = "ready"
        logs.event("ready", recovered=len(recovered), durable=config.durable,
                   workers=engine.config.workers, consumers=config.consumer_count)

    def begin_drain(self) -> None:
        """Take no new work from now on (SIGTERM calls this at once; aclose() finishes)."""
        if self.state in ("starting", "ready"):
            self.state = "draining"
            self.queue.close_intake()
            logs.event("draining", queued=self.queue.depth, running=len(self.running))

    def begin_drain_soon(self) -> None:
        """begin_drain() from a signal handler: run on the event loop, not in the handler."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.begin_drain)

    async def aclose(self) -> None:
        """Drain and stop; see the module docstring for what is guaranteed."""
        if self.state == "stopped":
            return
        self.begin_drain()
        grace = self.config.shutdown_grace_seconds if self.config.durable else None
        left = await self.queue.drain(grace)
        for job in left:
            if job.waiter is not None and not job.waiter.done():
                job.waiter.cancel()
        if left:
            logs.event("left_for_next_start", logging.WARNING, events=len(left),
                       ids=[job.id for job in left[:20]])
        await self._release()
        self.state = "stopped"
        logs.event("stopped", left_queued=len(left))

    async def _release(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        if self._engine is not None and self._own_engine:
            await self._engine.aclose()
        if self._producer is not None:
            self._producer.close()
        if self._journal is not None:
            await self._journal.close()
        if self._database is not None:
            self._database.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _require_workdir(self) -> Path:
        assert self._workdir is not None
        return self._workdir

    def _hook_engine(self, engine: Engine) -> None:
        loop = self._loop
        assert loop is not None

        def scheduled(result: InvocationResult) -> None:  # on an engine thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to record
                loop.call_soon_threadsafe(self._scheduled_result, result, time.time())

        def lag(_occurrence: Any, seconds: float) -> None:  # on the scheduler's thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.metrics.schedule_lag.observe, max(0.0, seconds))

        engine.on_result = scheduled
        engine.scheduler.on_lag = lag
        self.metrics.watch(Gauges(
            queue_depth=lambda: self.queue.depth, queue_capacity=self.config.queue_size,
            running=lambda: len(self.running), ready=lambda: self.ready,
            workers=engine.worker_states, pool=engine.stats,
            last_lag=lambda: engine.scheduler.last_lag_seconds))

    async def _purge_loop(self) -> None:
        period = min(60.0, self.config.results_ttl_seconds / 2)
        while True:
            await asyncio.sleep(period)
            try:
                await self.journal.read(self.store.purge)
            except Exception as exc:  # the store is busy or failing: try again next period
                logs.event("purge_failed", logging.WARNING, error=str(exc))

    # -- invocations ---------------------------------------------------------------------

    async def accept(self, job: Job) -> None:
        """A 202: the job's row is committed to the journal, then it is queued."""
        if not self.queue.reserve():
            raise self.refused("queue_full")
        try:
            await self.journal.accept(Accepted(job.id, job.app, job.payload, job.accepted_at))
        except BaseException as exc:
            self.queue.release()
            if isinstance(exc, Exception):
                raise ApiError(503, "store_unavailable", "the event could not be journalled; "
                               "it was not accepted",
                               headers={"Retry-After": str(self.config.retry_after_seconds)}
                               ) from exc
            raise
        self.queue.put_reserved(job)
        self.metrics.accepted.inc()

    def enqueue(self, job: Job) -> None:
        """A caller that waits: queued without a journal row (it hears the result itself)."""
        if not self.queue.offer(job):
            raise self.refused("queue_full")
        self.metrics.accepted.inc()

    def refused(self, reason: str) -> ApiError:
        self.metrics.rejected.labels(reason).inc()
        if self.state != "ready":
            reason = "draining"
        return ApiError(503, reason, "the event queue is full: try again later" if reason ==
                        "queue_full" else f"the server is {self.state}: it takes no new work",
                        headers={"Retry-After": str(self.config.retry_after_seconds)})

    async def invoke(self, kind: str, call: Callable[[], Awaitable[InvocationResult | None]]
                     ) -> tuple[str, InvocationResult, int] | None:
        """Run one synchronous invocation (server method, webhook) and record it; None when
        the engine found nothing to run (an unknown webhook token)."""
        self.check_open()
        invocation_id, accepted_at, started = new_id(), time.time(), time.monotonic()
        self.running.add(invocation_id)
        try:
            result = await call()
        except EngineClosed:
            raise ApiError(503, "draining", "the server is shutting down",
                           headers={"Retry-After": str(self.config.retry_after_seconds)}
                           ) from None
        finally:
            self.running.discard(invocation_id)
        if result is None:
            return None
        status = outcome_status(result)
        self.finish(invocation_id, kind, result, status, accepted_at, 0.0, started)
        return invocation_id, result, status

    def finish(self, invocation_id: str, kind: str, result: InvocationResult, status: int,
               accepted_at: float, queue_ms: float, started: float) -> None:
        """Record a result: metrics, the log line, the store. (The engine has already cut
        secure iparam values out of its logs, error and value.)"""
        self.metrics.observe(kind, result)
        self.log.invocation(invocation_id, kind, result, status, queue_ms, started)
        finished_at = time.time()
        record = {"id": invocation_id, "kind": kind, "state": "done", "status": status,
                  "accepted_at": accepted_at, "finished_at": finished_at,
                  "queue_ms": round(queue_ms, 3),
                  "result": orjson.Fragment(result.model_dump_json())}  # pydantic's encoder
        if self._journal is not None:
            self._journal.finish(Finished(invocation_id, kind, result.app, accepted_at,
                                          finished_at, orjson.dumps(record)))

    def _scheduled_result(self, result: InvocationResult, finished: float) -> None:
        self.finish(new_id(), "scheduled", result, outcome_status(result), finished, 0.0,
                    time.monotonic())

    async def _run_job(self, job: Job) -> None:
        """A consumer runs one product event (never raises: every path ends in a result)."""
        started = time.monotonic()
        queue_s = started - job.accepted
        self.metrics.queue_wait.observe(queue_s)
        self.running.add(job.id)
        try:
            result = await self._dispatch(job)
            if result.outcome == "overloaded" and job.waiter is None and \
                    job.attempts < MAX_ATTEMPTS:
                job.attempts += 1  # an accepted event: the engine's queue was full; later
                self.metrics.retried.inc()
                self.queue.later(job, max(self.config.retry_after_seconds, RETRY_MIN_S))
                return
            status = outcome_status(result)
            self.finish(job.id, "product", result, status, job.accepted_at, queue_s * 1000.0,
                        started)
        except Exception as exc:  # a bug here must not kill the consumer or lose the waiter
            logs.event("consumer_error", logging.ERROR, id=job.id, error=repr(exc)[:500])
            if job.waiter is not None and not job.waiter.done():
                job.waiter.set_exception(exc)
            return
        finally:
            self.running.discard(job.id)
        if job.waiter is not None and not job.waiter.done():
            job.waiter.set_result((result, status))

    async def _dispatch(self, job: Job) -> InvocationResult:
        app = self.engine.app(job.app)
        if app is None:
            return _failed(job, "not_subscribed", "AppNotLoaded",
                           f"{job.app} is not loaded (it was unloaded after the event was "
                           "accepted)")
        if self._producer is not None:
            return await self._through_cluster(app, job)
        try:
            return await self.engine.dispatch_async(app, job.payload)
        except EngineClosed:
            return _failed(job, "crashed", "EngineClosed", "the engine closed before the event "
                           "ran")


    async def _through_cluster(self, app: App, job: Job) -> InvocationResult:
        """Enqueue the event to the cluster and wait for its one result. The job id is the
        event id, so a retry here or a replay after a restart enqueues the same event, which
        the cluster runs once. A host that does not finish in time leaves it queued there:
        the job ends `overloaded` and is retried like any overloaded event."""
        producer = self._producer
        try:
            await producer.send_event_async(app.name, job.payload, event_id=job.id)
        except ClusterError as exc:
            return _failed(job, "overloaded", "ClusterUnavailable", str(exc)[:500])
        give_up = time.monotonic() + app.execution_timeout + CLUSTER_SLACK_S
        pause = 0.005
        while True:
            try:
                result: InvocationResult | None = await producer.event_result_async(
                    app.name, job.id)
            except ClusterError as exc:
                return _failed(job, "overloaded", "ClusterUnavailable", str(exc)[:500])
            if result is not None:
                return result
            if time.monotonic() > give_up:
                return _failed(job, "overloaded", "ClusterBusy", "no cluster host finished "
                               f"the event within {app.execution_timeout + CLUSTER_SLACK_S:g} "
                               "s; it stays queued in the cluster")
            await asyncio.sleep(pause)  # results land in Redis: read again, backing off
            pause = min(pause * 2, 0.2)


def _failed(job: Job, outcome: str, kind: str, message: str) -> InvocationResult:
    return InvocationResult.model_validate({
        "outcome": outcome, "app": job.app, "event": job.event, "account_id": job.account_id,
        "error": ErrorInfo(type=kind, message=message)})


def _recovered_job(accepted: Accepted) -> Job:
    found = payload_json_fast(accepted.request)
    event, account_id = (found[0], found[1]) if found else ("", "")
    return Job(id=accepted.id, app=accepted.app, payload=accepted.request,
               account_id=account_id, event=event, durable=True,
               accepted_at=accepted.accepted_at)
