"""The enqueue side of the cluster, for a platform or `handlerbox serve`: product events in,
sync calls answered. Touches untrusted input: payloads are validated here before they are
enqueued (a bad one raises PayloadError at once instead of failing on a worker).

    producer = Producer(ClusterConfig(redis_url="redis://10.0.0.5:6379/0", shards=64))
    event_id = producer.send_event("call_logger", payload, event_id="evt-123")  # at least once
    producer.event_result("call_logger", "evt-123")        # InvocationResult, or None yet
    result = producer.call_method("call_logger", "82918", "lookupCaller", {"n": 1},
                                  timeout=15)             # InvocationResult with .status
    reply = producer.call_setup("call_logger", "82918", "onAppInstall",
                                domain="acme.freshcaller.com", iparams={...})
    await producer.call_method_async(...)                  # each has an *_async twin

The event id is the Dramatiq message id and the handler's `idempotency_key`: send the same
event again under the same id (a retry after a lost reply) and it still ends in one result.
Sync calls wait on Dramatiq's Results backend (a blocking pop on Redis, whole seconds), are
never retried, and are dropped unstarted once older than their timeout.
"""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from dramatiq import Message
from dramatiq.results import ResultFailure, ResultTimeout

from handlerbox.runtime import errors
from handlerbox.runtime.catalogue import SCHEDULED_EVENT
from handlerbox.runtime.cluster.broker import (
    CALL_ACTOR,
    EVENT_ACTOR,
    call_queue,
    event_queue,
    make_broker,
    redis_client,
    results_backend,
    shard_of,
)
from handlerbox.runtime.cluster.config import ClusterConfig
from handlerbox.runtime.cluster.errors import AppNotLoaded, CallTimeout, ClusterError
from handlerbox.runtime.cluster.results import ResultStore
from handlerbox.runtime.events import envelope
from handlerbox.runtime.payloads import EventPayload, payload_json_fast
from handlerbox.runtime.results import InvocationResult
from handlerbox.runtime.services.installations import Installation
from handlerbox.runtime.services.schedules import Occurrence
from handlerbox.sandbox.errors import HandlerboxError

EVENT_ID = re.compile(r"[A-Za-z0-9_.:/@+=-]{1,200}", re.ASCII)
"""Event ids appear in Redis keys, logs and the handler's payload: nothing to escape."""
SETUP_CALLS = {"onAppInstall": "install", "afterAppUpdate": "update",
               "onAppUninstall": "uninstall"}
_ERRORS: dict[str, type[HandlerboxError]] = {
    cls.code: cls for cls in (
        errors.PayloadError, errors.IparamsError, errors.InstallationError,
        errors.InstallationExists, errors.InstallationNotFound, errors.SetupBlocked,
        errors.SetupFailed, errors.EngineClosed, errors.ConfigError, AppNotLoaded,
        ClusterError)}
T = TypeVar("T")


@dataclass(frozen=True)
class SetupReply:
    """What a set-up call did: the installation as stored (install, update) and the
    handler's result (update, uninstall; None when the app does not subscribe)."""

    installation: Installation | None
    result: InvocationResult | None


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise ClusterError(f"the cluster's Redis did not answer: {type(exc).__name__}: "
                           f"{str(exc)[:200]}") from None


class Producer:
    """Enqueues events and calls for a cluster; thread-safe (one Redis connection pool)."""

    def __init__(self, config: ClusterConfig, client: redis.Redis | None = None) -> None:
        self.config = config
        self.client = client or redis_client(config)
        self.broker = make_broker(config, self.client, worker=False)
        self.backend = results_backend(config, self.client)
        self.results = ResultStore(self.client, config.namespace, config.result_ttl_s)

    def close(self) -> None:
        self.client.close()

    def shard(self, app: str, account_id: str) -> int:
        return shard_of(app, account_id, self.config.shards)

    # -- product events (at least once; one result each) ------------------------------------

    def send_event(self, app: str, payload: dict[str, Any] | bytes | EventPayload,
                   event_id: str | None = None) -> str:
        """Enqueue a product event for `app` on its installation's shard; returns the event
        id (a new one when none is given). Raises PayloadError for an invalid payload,
        ValueError for a bad event id, ClusterError when Redis does not answer."""
        event_id = uuid.uuid4().hex if event_id is None else event_id
        if type(event_id) is not str or not EVENT_ID.fullmatch(event_id):
            raise ValueError("event_id must be 1-200 letters, digits or _.:/@+=- "
                             f"(got {str(event_id)[:40]!r})")
        account_id, encoded = _checked(payload)
        message: Message[Any] = Message(queue_name=event_queue(self.shard(app, account_id)),
                          actor_name=EVENT_ACTOR, args=(app, event_id, encoded.decode()),
                          kwargs={}, options={}, message_id=event_id)
        with _redis_errors():
            self.broker.enqueue(message)
        return event_id

    def send_scheduled(self, installation: Installation, occurrence: Occurrence) -> str:
        """Enqueue a schedule's occurrence as onScheduledEvent; its key is the event id, so
        a duplicate fire of the same occurrence still runs once."""
        payload = envelope(installation, SCHEDULED_EVENT, occurrence.data,
                           timestamp=occurrence.due,
                           schedule={"name": occurrence.name, "due": occurrence.due,
                                     "idempotency_key": occurrence.key})
        return self.send_event(occurrence.app, payload, event_id=occurrence.key)

    def event_result(self, app: str, event_id: str) -> InvocationResult | None:
        """The event's one result, or None while it has none (queued, running, retrying)."""
        with _redis_errors():
            return self.results.get(app, event_id)

    # -- sync calls (no retries; max age = timeout) -----------------------------------------

    def call_method(self, app: str, account_id: str, method: str, data: dict[str, Any],
                    timeout: float = 15.0) -> InvocationResult:
        """Invoke server method `method` of an installation and wait for its result (with
        its SMI `status`). Raises CallTimeout after `timeout` seconds (whole seconds, at
        least 1), AppNotLoaded, ClusterError."""
        answer = self._call("method", app, account_id, {"method": method, "data": data},
                            timeout)
        return InvocationResult.model_validate(answer["result"])

    def call_setup(self, app: str, account_id: str, event: str, *, domain: str | None = None,
                   region: str = "US", iparams: dict[str, Any] | None = None,
                   timeout: float = 15.0) -> SetupReply:
        """Run a set-up event on a worker host: onAppInstall (needs `domain`), afterAppUpdate
        or onAppUninstall, as Engine.install / update_installation / uninstall do. Raises
        what they raise (SetupBlocked, SetupFailed, InstallationExists, IparamsError, ...),
        and CallTimeout, AppNotLoaded, ClusterError."""
        kind = SETUP_CALLS.get(event)
        if kind is None:
            raise ValueError(f"event must be one of {', '.join(SETUP_CALLS)} (got {event!r})")
        if kind == "install" and not domain:
            raise ValueError("onAppInstall needs the account's domain")
        args = {"domain": domain, "region": region, "iparams": iparams or {}} \
            if kind == "install" else {"iparams": iparams} if kind == "update" else {}
        answer = self._call(kind, app, account_id, args, timeout)
        found, result = answer.get("installation"), answer.get("result")
        return SetupReply(None if found is None else Installation.model_validate(found),
                          None if result is None else InvocationResult.model_validate(result))

    def _call(self, kind: str, app: str, account_id: str, args: dict[str, Any],
              timeout: float) -> dict[str, Any]:
        wait_ms = max(1, math.ceil(timeout)) * 1000
        message: Message[Any] = Message(queue_name=call_queue(self.shard(app, account_id)),
                          actor_name=CALL_ACTOR, args=(kind, app, account_id, args), kwargs={},
                          options={"max_age": wait_ms, "result_ttl": wait_ms + 60_000})
        with _redis_errors():
            self.broker.enqueue(message)
            try:
                answer = self.backend.get_result(message, block=True, timeout=wait_ms)
            except ResultTimeout:
                raise CallTimeout(f"{app} {kind} for {account_id}: no answer within "
                                  f"{wait_ms // 1000} s") from None
            except ResultFailure as exc:
                raise ClusterError(f"{app} {kind} failed on its worker host: {exc}") from None
        if type(answer) is not dict:
            raise ClusterError(f"{app} {kind}: the worker host's answer is not an object")
        failure = answer.get("error")
        if failure is not None:
            cls = _ERRORS.get(str(failure.get("code")), ClusterError)
            message_text = str(failure.get("message", ""))
            if issubclass(cls, (errors.PayloadError, errors.InstallationError)):
                raise cls(message_text, failure.get("problems") or ())
            raise cls(message_text)
        return answer

    # -- asyncio: the same calls on a thread, so an event loop never blocks -----------------

    async def send_event_async(self, app: str, payload: dict[str, Any] | bytes | EventPayload,
                               event_id: str | None = None) -> str:
        return await _off_loop(self.send_event, app, payload, event_id)

    async def event_result_async(self, app: str, event_id: str) -> InvocationResult | None:
        return await _off_loop(self.event_result, app, event_id)

    async def call_method_async(self, app: str, account_id: str, method: str,
                                data: dict[str, Any], timeout: float = 15.0
                                ) -> InvocationResult:
        return await _off_loop(self.call_method, app, account_id, method, data, timeout)

    async def call_setup_async(self, app: str, account_id: str, event: str,
                               **options: Any) -> SetupReply:
        return await _off_loop(lambda: self.call_setup(app, account_id, event, **options))


async def _off_loop(function: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def _checked(payload: dict[str, Any] | bytes | EventPayload) -> tuple[str, bytes]:
    """(account_id, compact JSON) of a valid payload; PayloadError names what is wrong."""
    fast = payload_json_fast(payload)
    if fast is not None:
        return fast[1], fast[2]
    checked = (EventPayload.parse_json(payload) if isinstance(payload, (bytes, bytearray))
               else EventPayload.parse(payload))
    return checked.account_id, checked.json_bytes()


__all__ = ["Producer", "SetupReply"]
