"""The Engine, handlerbox's public API: load apps, dispatch events, close; sync and asyncio.

Validates payloads (untrusted) and routes them; the dispatch itself is runtime.dispatch,
the results runtime.outcomes, the workers runtime.pool and runtime.spawner, the services
handlers call runtime.services.

    with Engine(workers=2) as engine:                 # async with Engine() as engine: too
        app = engine.load_app("examples/call_logger")
        result = engine.dispatch(app, payload)              # thread-safe
        result = await engine.dispatch_async(app, payload)  # asyncio, no thread per call
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from handlerbox.runtime import dispatch, faults, hostcalls, protocol
from handlerbox.runtime.app import App, load_app
from handlerbox.runtime.catalogue import EXTERNAL_EVENT, SCHEDULED_EVENT
from handlerbox.runtime.config import EngineConfig
from handlerbox.runtime.dispatch import Dispatcher, Route
from handlerbox.runtime.errors import (
    ConfigError,
    EngineClosed,
    InstallationExists,
    InstallationNotFound,
    IsolationError,
    PayloadError,
    SetupBlocked,
    SetupFailed,
)
from handlerbox.runtime.events import (
    MAX_EXTERNAL_BODY,
    MAX_METHOD_PAYLOAD,
    SetupAnswer,
    envelope,
    setup_answer,
)
from handlerbox.runtime.isolation import ACTIVE, LAYERS
from handlerbox.runtime.outcomes import Ending
from handlerbox.runtime.payloads import EventPayload, payload_json_fast
from handlerbox.runtime.pool import Pool
from handlerbox.runtime.results import InvocationResult, with_status
from handlerbox.runtime.scheduler import Scheduler
from handlerbox.runtime.services.base import Scope
from handlerbox.runtime.services.installations import Installation, SQLiteInstallations
from handlerbox.runtime.services.kv import KVBackend, KVStore
from handlerbox.runtime.services.outbound import request_service, template_policy
from handlerbox.runtime.services.schedules import (
    Occurrence,
    ScheduleBackend,
    ScheduleLimits,
    ScheduleService,
    SQLiteSchedules,
)
from handlerbox.runtime.services.sqlite import Database
from handlerbox.runtime.services.webhooks import SQLiteTokenBackend, WebhookService, WebhookTokens
from handlerbox.runtime.spawner import Spawner, WorkerProcess
from handlerbox.runtime.validation import compact, load_json

Payload = dict[str, Any] | EventPayload | bytes
"""A payload as a dict, a validated EventPayload, or JSON bytes (passed on without
re-encoding work in Python: the cheapest form for large payloads)."""


class Engine:
    """Runs app handlers in pooled, sandboxed worker processes, one installation per worker.

    Settings are EngineConfig's (`Engine(workers=4, memory_limit_mb=512)` or `config=`);
    `spares` is how many unbound workers wait ready. `allow_probes` and `inject_fault` are
    for tests only: they let the host run unrestricted code in, or break, its own workers.

    `kv_backend` and `schedule_backend` replace the SQLite stores of handlers' data and
    schedules (a cluster passes its Redis ones: runtime.services.kv_redis, schedules_redis);
    installations and webhook targets stay in `database`.

    Raises ConfigError for bad settings, IsolationError when a required isolation layer
    cannot be applied, WorkerError when the zygote cannot start.
    """

    def __init__(self, workers: int | None = None, *, config: EngineConfig | None = None,
                 spares: int = 1, allow_probes: bool = False,
                 inject_fault: dict[str, Any] | None = None,
                 kv_backend: KVBackend | None = None,
                 schedule_backend: ScheduleBackend | None = None, **settings: Any) -> None:
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
        # Everything that can fail on settings comes before any process is started.
        self._closed = False  # no new dispatches
        self._stopped = False  # workers and zygote gone
        self._stop_when_idle = False  # close() from an event loop's thread with work in flight
        self._inflight = 0
        self._inflight_done = threading.Condition()
        self._apps: dict[str, App] = {}  # the version of each app that new events go to
        self.on_result: Callable[[InvocationResult], None] | None = None
        """Called with the result of every scheduled event (they have no caller)."""
        self.database = Database(config.database)
        try:
            services = hostcalls.Services(self._services(kv_backend, schedule_backend))
        except BaseException:
            self.database.close()
            raise
        self._fired = ThreadPoolExecutor(max_workers=config.workers,
                                         thread_name_prefix="handlerbox-scheduled")
        self._spawner = Spawner({
            "enabled": config.isolation, "require": list(config.require),
            "probes": allow_probes, "fault": inject_fault, "rlimits": {
                "memory_bytes": config.memory_limit_mb << 20,
                "cpu_seconds": config.worker_cpu_seconds, "core_bytes": 0, "file_bytes": 0,
                "open_files": 32, "processes": 0}})
        try:
            report = self._spawner.start()["layers"]
        except BaseException:
            self._release_services()
            raise
        missing = [f"{name}: {report.get(name, 'unknown')}" for name in config.require
                   if report.get(name) != ACTIVE]
        if missing:
            self._spawner.close()
            self._release_services()
            raise IsolationError("required isolation layers cannot be applied on this "
                                 "machine:\n" + "\n".join(missing))
        # budget, recycling, queues, caps per app and installation, the idle-memory cap
        self._pool = Pool.from_config(self._spawner, config, spares=spares)
        # JSON escaping can make a logged character 6 bytes; errors are clipped in the worker.
        self._dispatcher = Dispatcher(
            pool=self._pool, services=services,
            bind_limits={"max_log_bytes": config.max_log_bytes,
                         "max_result_bytes": config.max_result_bytes},
            max_reply=config.max_result_bytes + 6 * config.max_log_bytes + (256 << 10),
            max_log_bytes=config.max_log_bytes, memory_limit_mb=config.memory_limit_mb,
            max_host_calls=config.max_host_calls, stopped=lambda: self._stopped)
        if config.scheduler:
            self.scheduler.start()

    def _release_services(self) -> None:
        self._fired.shutdown(wait=False)
        self.requests.close()
        self.database.close()

    def _services(self, kv_backend: KVBackend | None,
                  schedule_backend: ScheduleBackend | None) -> dict[str, Any]:
        """The services handlers may call, over the engine's database (or the backends
        given)."""
        config = self.config
        self.store = (KVStore(kv_backend) if kv_backend is not None
                      else KVStore.sqlite(self.database))
        self.webhooks = WebhookTokens(SQLiteTokenBackend(self.database))
        self.schedules: ScheduleBackend = (schedule_backend if schedule_backend is not None
                                           else SQLiteSchedules(self.database))
        # It claims only occurrences of apps loaded here: others stay stored for an engine
        # that runs them (or this one, once they are loaded).
        self.scheduler = Scheduler(self.schedules, fire=self._schedule_due,
                                   apps=lambda: list(self._apps))
        schedule_service = ScheduleService(
            self.schedules, ScheduleLimits(min_lead_seconds=config.schedule_min_lead_seconds,
                                           min_period_seconds=config.schedule_min_period_seconds),
            on_change=self.scheduler.wake)
        self.installs = SQLiteInstallations(self.database)
        services: list[Any] = [self.store, schedule_service,
                               WebhookService(self.webhooks, base_url=config.webhook_base_url)]
        self.requests = request_service(config, self._app_context)
        services.append(self.requests)
        self._schedule_service = schedule_service
        return {service.name: service for service in services}

    def _app_context(self, scope: Scope) -> tuple[App, Installation | None] | None:
        """What the request service needs for a call: the app's loaded version (its templates
        and request timeout) and the installation (its iparams)."""
        app = self._apps.get(scope.app)
        if app is None:
            return None
        return app, self.installs.get(scope.app, scope.account_id)

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def close(self, drain: bool = True) -> None:
        """Stop the engine; new dispatches raise EngineClosed from now on. With `drain`,
        dispatches in flight finish first (each within its own deadline); without, their
        workers are killed and they end as `crashed`. Then every worker and the zygote are
        killed and reaped. Idempotent.

        Called from a running event loop's thread while dispatches are in flight, close()
        cannot wait (they need this very loop to finish): it returns at once and the engine
        stops when the last of them ends. `await engine.aclose()` waits instead."""
        on_loop = _on_event_loop()
        self.scheduler.stop()  # claims nothing more; what it claimed is dispatched below
        if drain and not on_loop:
            self._fired.shutdown(wait=True)
        with self._inflight_done:
            self._closed = True
            if drain and self._inflight and on_loop:
                self._stop_when_idle = True
                return
            while drain and self._inflight:
                self._inflight_done.wait()
        self._stop()

    async def aclose(self, drain: bool = True) -> None:
        """`close` for asyncio: waits for the drain without blocking the event loop."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.scheduler.stop)
        if drain:
            await loop.run_in_executor(None, self._fired.shutdown, True)
        with self._inflight_done:
            self._closed = True
            if not (drain and self._inflight):
                drain = False
        if drain:
            await asyncio.get_running_loop().run_in_executor(None, self._wait_idle)
        self._stop()

    def _wait_idle(self) -> None:
        with self._inflight_done:
            while self._inflight:
                self._inflight_done.wait()

    def _stop(self) -> None:
        with self._inflight_done:
            if self._stopped:
                return
            self._stopped = True
        self.scheduler.stop()
        self._fired.shutdown(wait=False, cancel_futures=True)
        self._pool.close()
        self._spawner.close()
        self._release_services()

    def _enter(self) -> None:
        with self._inflight_done:
            if self._closed:
                raise EngineClosed("the engine is closed (or closing): no new dispatches")
            self._inflight += 1

    def _leave(self) -> None:
        with self._inflight_done:
            self._inflight -= 1
            idle = not self._inflight
            if idle:
                self._inflight_done.notify_all()
            stop = idle and self._stop_when_idle
        if stop:
            self._stop()

    # -- inspection ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once close() or aclose() was called: no new dispatches."""
        return self._closed

    def stats(self) -> dict[str, int]:
        """The pool right now: `budget`, `bound` (workers counted against it), `idle`,
        `busy`, `spares`, `waiting` callers, and `inflight` dispatches."""
        stats = self._pool.stats()
        stats.update(budget=self._pool.budget, inflight=self._inflight)
        return stats

    def workers(self) -> list[WorkerProcess]:
        """The live worker handles (for inspection and tests)."""
        return self._pool.workers()

    def worker_states(self) -> list[dict[str, Any]]:
        """Each live worker: `pid`, `state` (idle, busy or spare) and the `installation` it
        serves (`<app key>/<account_id>`, None for a spare)."""
        return [{"pid": w.pid, "state": state, "installation": w.app_key}
                for w, state in self._pool.states()]

    def isolation(self) -> dict[str, str]:
        """Each isolation layer: "active", or "unavailable: <why>", as a worker gets them."""
        return dict(self._spawner.isolation["layers"])

    def worker_start_ms(self) -> dict[str, float]:
        """Measured at start (median of 5): `start_ms`, a fork from the zygote until the
        isolation layers are applied and reported; `layers_ms`, the layers alone."""
        return {key: float(self._spawner.isolation[key]) for key in ("start_ms", "layers_ms")}

    @property
    def zygote_pid(self) -> int | None:
        """The template process's pid (None before it starts or after close)."""
        return self._spawner.zygote_pid

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
        """Load an app directory (see runtime.app.load_app for the errors it raises) and make
        it the version of its name that installations, schedules and webhooks run. A
        version it replaces finishes what it is running; its idle workers are retired."""
        if self._closed:
            raise EngineClosed("the engine is closed")
        app = load_app(path, request_timeout=request_timeout, timeout=timeout,
                       templates=template_policy(self.config))
        with self._inflight_done:
            old, self._apps[app.name] = self._apps.get(app.name), app
        if old is not None:
            self._pool.retire(f"{old.key}/")
        return app

    def app(self, name: str) -> App | None:
        """The loaded version of the app called `name`, if any."""
        return self._apps.get(name)

    def unload_app(self, name: str) -> None:
        """Stop serving the app called `name`: its idle workers are freed now, busy ones when
        their dispatch ends; its installations stay in the store."""
        with self._inflight_done:
            app = self._apps.pop(name, None)
        if app is not None:
            self._pool.retire(f"{app.key}/")

    # -- dispatch --------------------------------------------------------------------------

    def dispatch(self, app: App, payload: Payload) -> InvocationResult:
        """Run the handler subscribed to the payload's event; always one InvocationResult.
        Raises EngineClosed only, and only once close() was called."""
        self._enter()
        try:
            start = time.monotonic()
            routed = self._route(app, payload, start)
            if isinstance(routed, InvocationResult):
                return routed
            return dispatch.drive(self._dispatcher.steps(app, routed, start))
        finally:
            self._leave()

    async def dispatch_async(self, app: App, payload: Payload) -> InvocationResult:
        """`dispatch` for asyncio: waits on the worker's pipe in the event loop, no thread."""
        self._enter()
        try:
            start = time.monotonic()
            routed = self._route(app, payload, start)
            if isinstance(routed, InvocationResult):
                return routed
            return await dispatch.drive_async(self._dispatcher.steps(app, routed, start))
        finally:
            self._leave()

    # -- installations and set-up events --------------------------------------------------

    def install(self, app: App, account_id: str, *, domain: str, region: str = "US",
                iparams: dict[str, Any] | None = None) -> Installation:
        """Install `app` in an account: iparams checked against config/iparams.json, then
        onAppInstall (when subscribed) allows or blocks, then the installation is stored.
        Raises IparamsError, InstallationExists, SetupBlocked (the app's message) or
        SetupFailed (its handler failed: the installation is refused)."""
        if self.installs.get(app.name, account_id) is not None:
            raise InstallationExists(f"{app.name} is already installed in {account_id}")
        self._check_open()
        checked = app.check_iparams(iparams or {})
        now = time.time()
        candidate = Installation.build(app=app.name, account_id=account_id, version=app.version,
                                       domain=domain, region=region, iparams=checked,
                                       created_at=now, updated_at=now)
        answer, result = self._setup_event(app, candidate, "onAppInstall")
        if not answer.allow:
            self._purge(candidate.scope)  # what the refused handler stored goes with it
            if answer.malformed or (result is not None and not result.ok):
                raise SetupFailed(_setup_failure(app, "onAppInstall", answer, result))
            raise SetupBlocked(answer.message)
        return self.installs.add(app.name, account_id, version=app.version, domain=domain,
                                 region=region, iparams=checked)

    def update_installation(self, app: App, account_id: str, *,
                            iparams: dict[str, Any] | None = None
                            ) -> tuple[Installation, InvocationResult | None]:
        """Update an installation's iparams and move it to `app`'s version, then run
        afterAppUpdate (its result is returned; it cannot undo the update)."""
        self._check_open()
        current = self._installed(app.name, account_id)
        checked = app.check_iparams(iparams if iparams is not None else current.iparams)
        updated = self.installs.update(app.name, account_id, iparams=checked,
                                       version=app.version)
        _, result = self._setup_event(app, updated, "afterAppUpdate")
        return updated, result

    def uninstall(self, app: App, account_id: str) -> InvocationResult | None:
        """Run onAppUninstall (when subscribed): a well-formed block keeps the installation
        (SetupBlocked); otherwise, even when the handler fails, the installation goes, with
        its stored data, schedules and webhook targets. Returns the handler's result."""
        self._check_open()
        installation = self._installed(app.name, account_id)
        answer, result = self._setup_event(app, installation, "onAppUninstall")
        if not answer.allow and not answer.malformed and (result is None or result.ok):
            raise SetupBlocked(answer.message)
        self._purge(installation.scope)
        self.installs.remove(app.name, account_id)
        self._pool.drop(f"{app.key}/{account_id}")
        return result

    def _purge(self, scope: Scope) -> None:
        """An installation's stored data, schedules and webhook targets, gone."""
        self.store.purge(scope)
        self._schedule_service.purge(scope)
        self.webhooks.revoke_all(scope)

    def installation(self, app_name: str, account_id: str) -> Installation | None:
        self._check_open()
        return self.installs.get(app_name, account_id)

    def installations(self, app_name: str | None = None) -> list[Installation]:
        self._check_open()
        return self.installs.list(app_name)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosed("the engine is closed (or closing)")

    def _installed(self, app_name: str, account_id: str) -> Installation:
        found = self.installs.get(app_name, account_id)
        if found is None:
            raise InstallationNotFound(f"{app_name} is not installed in {account_id}")
        return found

    def _setup_event(self, app: App, installation: Installation, event: str
                     ) -> tuple[SetupAnswer, InvocationResult | None]:
        handler = app.handler_for(event)
        if handler is None:
            return SetupAnswer(True), None
        payload = envelope(installation, event, {"app": app.name, "version": app.version})
        result = self.dispatch(app, payload)
        if not result.ok:
            return SetupAnswer(False), result
        return setup_answer(result.value), result

    # -- server methods, external events, scheduled events ---------------------------------

    def invoke_method(self, app: App, account_id: str, method: str,
                      data: dict[str, Any]) -> InvocationResult:
        """Call server method `method` (SMI) of an installation with `data` (at most 100 KB).
        The result's `status` is 200 with the response in `value`, the status a handler's
        MethodError carried, 404 for an unknown method, or the status of the failure."""
        self._enter()
        try:
            start = time.monotonic()
            return with_status(self._run(app, self._method_route(app, account_id, method,
                                                                  data, start), start))
        finally:
            self._leave()

    async def invoke_method_async(self, app: App, account_id: str, method: str,
                                  data: dict[str, Any]) -> InvocationResult:
        self._enter()
        try:
            start = time.monotonic()
            return with_status(await self._run_async(
                app, self._method_route(app, account_id, method, data, start), start))
        finally:
            self._leave()

    def _method_route(self, app: App, account_id: str, method: str, data: Any,
                      start: float) -> InvocationResult | Route:
        handler = app.handler_for_method(method)
        if handler is None:
            offered = ", ".join(sorted(app.manifest.functions)) or "none"
            return Ending(app, method, None, account_id, start).failed(
                "not_subscribed", "NotSubscribed",
                f"{app.name} has no server method {method} (it offers {offered})")
        installation = self.installs.get(app.name, account_id)
        if installation is None:
            return Ending(app, method, handler, account_id, start).failed(
                "invalid_payload", "NotInstalled", f"{app.name} is not installed in "
                                                    f"{account_id}")
        return self._route_to(app, handler, method, envelope(installation, method, data),
                              start, MAX_METHOD_PAYLOAD)

    def external_event(self, token: str, body: bytes,
                       headers: dict[str, str] | None = None) -> InvocationResult | None:
        """Run onExternalEvent for the installation a webhook token belongs to, with the
        request's body (at most 100 KB; JSON is decoded, other text passed as a string) and
        headers. None when the token is unknown or revoked."""
        self._check_open()
        found = self._external_route(token, body, headers or {}, time.monotonic())
        if found is None:
            return None
        app, routed, start = found
        self._enter()
        try:
            return self._run(app, routed, start)
        finally:
            self._leave()

    async def external_event_async(self, token: str, body: bytes,
                                   headers: dict[str, str] | None = None
                                   ) -> InvocationResult | None:
        self._check_open()
        found = self._external_route(token, body, headers or {}, time.monotonic())
        if found is None:
            return None
        app, routed, start = found
        self._enter()
        try:
            return await self._run_async(app, routed, start)
        finally:
            self._leave()

    def _external_route(self, token: str, body: bytes, headers: dict[str, str], start: float
                        ) -> tuple[App, InvocationResult | Route, float] | None:
        scope = self.webhooks.lookup(token)
        if scope is None:
            return None
        app = self._apps.get(scope.app)
        installation = self.installs.get(scope.app, scope.account_id)
        if app is None or installation is None:
            return None
        handler = app.handler_for(EXTERNAL_EVENT)
        if handler is None:
            return app, Ending(app, EXTERNAL_EVENT, None, scope.account_id, start).failed(
                "not_subscribed", "NotSubscribed",
                f"{app.name} does not subscribe to {EXTERNAL_EVENT}"), start
        if len(body) > MAX_EXTERNAL_BODY:
            return app, Ending(app, EXTERNAL_EVENT, handler, scope.account_id, start).failed(
                "invalid_payload", "PayloadError", f"the body is {len(body)} bytes, over the "
                                                   f"limit of {MAX_EXTERNAL_BODY}"), start
        data = {"body": _body_value(body),
                "headers": {str(k).lower(): str(v) for k, v in headers.items()}}
        return app, self._route_to(app, handler, EXTERNAL_EVENT,
                                   envelope(installation, EXTERNAL_EVENT, data), start), start

    def fire_schedule(self, app: App, account_id: str, name: str) -> InvocationResult:
        """Run onScheduledEvent now with a stored schedule's data (the CLI's simulation);
        the schedule itself is left as it is."""
        self._check_open()
        stored = self._schedule_service.call(Scope(app.name, account_id), "fetch",
                                             {"name": name}, time.monotonic() + 5)
        occurrence = Occurrence(app.name, account_id, name, stored["data"], int(time.time()))
        return self._scheduled(app, occurrence)

    def _schedule_due(self, occurrence: Occurrence) -> None:
        """The scheduler's hand-off: dispatch on a pool thread, never in its loop."""
        app = self._apps.get(occurrence.app)
        if app is None or self._closed:
            return  # an app that is not loaded here: its occurrence is dropped, not retried
        try:
            self._fired.submit(self._report, app, occurrence)
        except RuntimeError:  # shut down meanwhile
            pass

    def _report(self, app: App, occurrence: Occurrence) -> None:
        try:
            result = self._scheduled(app, occurrence)
        except EngineClosed:
            return
        if self.on_result is not None:
            self.on_result(result)

    def _scheduled(self, app: App, occurrence: Occurrence) -> InvocationResult:
        installation = self._installed(app.name, occurrence.account_id)
        payload = envelope(installation, SCHEDULED_EVENT, occurrence.data,
                           timestamp=occurrence.due,
                           schedule={"name": occurrence.name, "due": occurrence.due,
                                     "idempotency_key": occurrence.key})
        return self.dispatch(app, payload)

    def _run(self, app: App, routed: InvocationResult | Route, start: float
             ) -> InvocationResult:
        if isinstance(routed, InvocationResult):
            return routed
        return dispatch.drive(self._dispatcher.steps(app, routed, start))

    async def _run_async(self, app: App, routed: InvocationResult | Route, start: float
                         ) -> InvocationResult:
        if isinstance(routed, InvocationResult):
            return routed
        return await dispatch.drive_async(self._dispatcher.steps(app, routed, start))

    def _route_to(self, app: App, handler: str, event: str, payload: dict[str, Any],
                  start: float, max_bytes: int | None = None) -> InvocationResult | Route:
        """A payload the engine built (set-up, SMI, external, scheduled) routed to `handler`."""
        try:
            checked = EventPayload.parse(payload)
            encoded = checked.json_bytes()
            if max_bytes is not None and len(encoded) - _envelope_bytes(checked) > max_bytes:
                raise PayloadError(f"payload.data: is over the limit of {max_bytes} bytes")
        except PayloadError as exc:
            return Ending(app, event, handler, None, start).failed(
                "invalid_payload", "PayloadError", str(exc))
        return Route(event, handler, checked.account_id,
                     app.invoke_prefixes[handler] + encoded + b"}",
                     tuple(app.iparams.secure_values(checked.iparams)))

    def _route(self, app: App, payload: Payload, start: float) -> InvocationResult | Route:
        """Validate the payload and find its handler; a result when it cannot go further."""
        fast = payload_json_fast(payload)
        if fast is not None:
            event, account_id, encoded = fast
        else:
            try:
                checked = (EventPayload.parse_json(payload) if isinstance(
                    payload, (bytes, bytearray)) else EventPayload.parse(payload))
            except PayloadError as exc:
                return Ending(app, _event_name(payload), None, None, start).failed(
                    "invalid_payload", "PayloadError", str(exc))
            event, account_id, encoded = checked.event, checked.account_id, checked.json_bytes()
        handler = app.handler_for(event)
        if handler is None:
            subscribed = ", ".join(sorted(app.manifest.events))
            return Ending(app, event, None, account_id, start).failed(
                "not_subscribed", "NotSubscribed",
                f"{app.name} does not subscribe to {event} (it subscribes to {subscribed})")
        return Route(event, handler, account_id, app.invoke_prefixes[handler] + encoded + b"}",
                     self._secrets(app, account_id, payload))

    def _secrets(self, app: App, account_id: str, payload: Payload) -> tuple[str, ...]:
        """The secure iparam values a product event's result must not show: the payload's
        and the stored installation's (templates are filled from the latter). None to look
        for unless the app declares secure iparams: the hot path stays free of this."""
        if not app.iparams.secure_names:
            return ()
        found = set(_payload_secrets(app, payload))
        installation = self.installs.get(app.name, account_id)
        if installation is not None:
            found.update(app.iparams.secure_values(installation.iparams))
        return tuple(sorted(found, key=len, reverse=True))


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


def _payload_secrets(app: App, payload: Payload) -> tuple[str, ...]:
    """The secure iparam values in a product event's payload."""
    if isinstance(payload, EventPayload):
        iparams = payload.iparams
    else:
        try:
            raw = orjson.loads(payload) if isinstance(payload, (bytes, bytearray)) else payload
            iparams = raw.get("iparams") or {}
        except (orjson.JSONDecodeError, AttributeError):
            return ()
    return tuple(app.iparams.secure_values(iparams)) if isinstance(iparams, dict) else ()


def _envelope_bytes(payload: EventPayload) -> int:
    """The size of a payload without its data (SMI and external bodies are capped alone)."""
    return len(payload.json_bytes()) - len(compact(payload.data))


def _body_value(body: bytes) -> Any:
    """A webhook body as the handler sees it: decoded JSON, else text."""
    try:
        return load_json(body, "body")
    except ValueError:
        return body.decode("utf-8", "replace")


def _setup_failure(app: App, event: str, answer: SetupAnswer,
                   result: InvocationResult | None) -> str:
    if answer.malformed:
        return f"{app.name}'s {event} gave a malformed answer: {answer.malformed}"
    assert result is not None and result.error is not None
    return (f"{app.name}'s {event} failed ({result.outcome}: {result.error.type}: "
            f"{result.error.message[:200]}); the action was refused")


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
