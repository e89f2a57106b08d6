"""The Dramatiq actors of a worker host and the middleware that owns its one Engine. Touches
untrusted input: event payloads and call arguments arrive from the queue and go to the
Engine, which validates them; results and answers go back as the engine's own JSON.

    hb-events-<s> --> event(app, event_id, payload)
        result stored for (app, event_id)?  yes: ack, do not run again
        engine.dispatch(app, payload + {"idempotency_key": event_id})
        crashed / overloaded / app not loaded, retries left?  raise Retryable: Dramatiq
            re-enqueues the same message (same id) after a backoff, then acks this one
        otherwise: SET NX the result, then return (Dramatiq acks)
    hb-calls-<s>  --> call(kind, app, account_id, args) -> answer dict (Results middleware)
        method: engine.invoke_method; install / update / uninstall: the set-up events

The EngineHost middleware builds the Engine in `before_worker_boot` (in the worker process,
before any thread takes a message) and closes it with drain in `after_worker_shutdown`
(after Dramatiq has stopped its threads, so nothing is in flight but what drains).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq
import orjson
import redis
from dramatiq.middleware import CurrentMessage, Middleware

from handlerbox.runtime.cluster.broker import (
    CALL_ACTOR,
    CALL_PRIORITY,
    EVENT_ACTOR,
    EVENT_PRIORITY,
    call_queue,
    event_queue,
)
from handlerbox.runtime.cluster.config import ClusterConfig
from handlerbox.runtime.cluster.results import ResultStore
from handlerbox.runtime.engine import Engine
from handlerbox.runtime.errors import EngineClosed
from handlerbox.runtime.results import ErrorInfo, InvocationResult
from handlerbox.sandbox.errors import HandlerboxError

log = logging.getLogger("handlerbox.cluster")

RETRYABLE_OUTCOMES = frozenset({"crashed", "overloaded"})
"""Worth another try on a fresh worker: the handler's own errors and timeouts are not (they
would fail again, and a timeout may have had its side effects)."""
CALL_KINDS = frozenset({"method", "install", "update", "uninstall"})


class Retryable(dramatiq.Retry):
    """Raised by the event actor to have Dramatiq retry the message with backoff (a Retry:
    Dramatiq logs it as a retry, not as an error)."""


class EngineHost(Middleware):
    """Owns the worker host's Engine: built once Dramatiq boots, closed with drain when it
    has stopped. `build` makes the Engine and loads the host's apps."""

    def __init__(self, build: Callable[[], Engine]) -> None:
        self.build = build
        self.engine: Engine | None = None
        self.failure: BaseException | None = None
        """Why the Engine could not be built (Dramatiq logs and swallows a middleware's
        exception, so the host process checks this after boot and stops)."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        try:
            self.engine = self.build()
        except BaseException as exc:
            self.failure = exc
            raise

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close(drain=True)

    def current(self) -> Engine:
        if self.engine is None:
            raise EngineClosed("the worker host's engine is not running")
        return self.engine


def _retries() -> int:
    message = CurrentMessage.get_current_message()
    return 0 if message is None else int(message.options.get("retries", 0))


def _not_loaded(app: str, event: str) -> InvocationResult:
    return InvocationResult(outcome="not_subscribed", app=app, event=event, error=ErrorInfo(
        type="AppNotLoaded", message=f"no worker host serving this shard has loaded {app}"))


def _dump(result: InvocationResult | None) -> dict[str, Any] | None:
    return None if result is None else result.model_dump(mode="json")


def declare_actors(broker: dramatiq.Broker, host: EngineHost, config: ClusterConfig,
                   client: redis.Redis) -> ResultStore:
    """Declare the event and call actors on `broker`; returns the result store they use."""
    store = ResultStore(client, config.namespace, config.result_ttl_s)
    max_retries = config.max_retries

    def retry_when(retries: int, exc: BaseException) -> bool:
        transient = (Retryable, EngineClosed, redis.ConnectionError, redis.TimeoutError)
        return isinstance(exc, transient) and retries < max_retries

    def event(app_name: str, event_id: str, payload: str) -> None:
        if store.exists(app_name, event_id):
            log.info("event %s for %s has its result already: acknowledged", event_id,
                     app_name)
            return
        engine = host.current()
        app = engine.app(app_name)
        decoded = orjson.loads(payload)
        if app is None:
            named = decoded.get("event") if type(decoded) is dict else None
            result = _not_loaded(app_name, named if type(named) is str else "")
        else:
            if type(decoded) is dict:
                decoded["idempotency_key"] = event_id
            result = engine.dispatch(app, decoded)
        retries = _retries()
        if (result.outcome in RETRYABLE_OUTCOMES or app is None) and retries < max_retries:
            raise Retryable(f"{result.outcome}: retry {retries + 1} of {max_retries}")
        if not store.put(app_name, event_id, result):
            log.info("event %s for %s ran twice; the first result stands", event_id,
                     app_name)

    def call(kind: str, app_name: str, account_id: str, args: dict[str, Any]
             ) -> dict[str, Any]:
        engine = host.current()
        app = engine.app(app_name)
        if app is None:
            return {"error": {"code": "app_not_loaded", "problems": [],
                              "message": f"this worker host has not loaded {app_name}"}}
        try:
            if kind == "method":
                return {"result": _dump(engine.invoke_method(app, account_id, args["method"],
                                                             args["data"]))}
            if kind == "install":
                installed = engine.install(app, account_id, domain=args["domain"],
                                           region=args["region"], iparams=args["iparams"])
                return {"installation": installed.model_dump(mode="json")}
            if kind == "update":
                updated, result = engine.update_installation(app, account_id,
                                                             iparams=args.get("iparams"))
                return {"installation": updated.model_dump(mode="json"),
                        "result": _dump(result)}
            if kind == "uninstall":
                return {"result": _dump(engine.uninstall(app, account_id))}
        except HandlerboxError as exc:
            return {"error": {"code": exc.code, "message": str(exc),
                              "problems": list(getattr(exc, "problems", ()))}}
        return {"error": {"code": "cluster_error", "problems": [],
                          "message": f"unknown call kind {kind[:40]!r}"}}

    dramatiq.actor(broker=broker, actor_name=EVENT_ACTOR, queue_name=event_queue(0),
                   priority=EVENT_PRIORITY, retry_when=retry_when,
                   min_backoff=config.min_backoff_ms, max_backoff=config.max_backoff_ms)(event)
    dramatiq.actor(broker=broker, actor_name=CALL_ACTOR, queue_name=call_queue(0),
                   priority=CALL_PRIORITY, max_retries=0, retry_when=lambda *_: False,
                   store_results=True)(call)
    return store
