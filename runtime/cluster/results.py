"""Event results stored once in Redis under their idempotency key; no untrusted input (the
results are the engine's own, the keys are event ids the producer checked).

    {namespace}:result:<app>:<event id>   the InvocationResult as JSON, SET NX, with a TTL

The first result stored for an event is its result: a redelivered or duplicated message
finds it and is acknowledged without running again, and a second run that raced the first
(a host declared dead while still working) cannot overwrite it. The key carries the app, so
one product event delivered to two apps under the same id keeps two results.
"""

from __future__ import annotations

import redis

from handlerbox.runtime.results import InvocationResult


class ResultStore:
    """Idempotent results of events for one cluster namespace."""

    def __init__(self, client: redis.Redis, namespace: str, ttl_s: int) -> None:
        self.client, self.namespace, self.ttl_s = client, namespace, ttl_s

    def key(self, app: str, event_id: str) -> str:
        return f"{self.namespace}:result:{app}:{event_id}"

    def exists(self, app: str, event_id: str) -> bool:
        return bool(self.client.exists(self.key(app, event_id)))

    def put(self, app: str, event_id: str, result: InvocationResult) -> bool:
        """Store `result` unless one is stored already; True when this one was stored."""
        return bool(self.client.set(self.key(app, event_id), result.model_dump_json(),
                                    nx=True, ex=self.ttl_s))

    def get(self, app: str, event_id: str) -> InvocationResult | None:
        """The stored result of an event, or None while it has none (queued, running or
        waiting for a retry, or unknown)."""
        raw = self.client.get(self.key(app, event_id))
        return None if raw is None else InvocationResult.model_validate_json(raw)
