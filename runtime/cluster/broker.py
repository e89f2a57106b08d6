"""The cluster's Dramatiq broker and results backend on Redis, its queue names and the shard
hash; no untrusted input (names come from the host and validated payloads).

    queues (one pair per shard s in 0..shards-1, under the namespace's Redis keys)
        hb-events-<s>      product and scheduled events: at least once, retried when crashed
                           or overloaded, results stored once under an idempotency key
        hb-calls-<s>       server methods and set-up events: no retries, max age = the
                           caller's timeout, the caller blocks on the result
    shard_of(app, account_id) = sha1("<app>/<account_id>") mod shards  (stable everywhere)

Middleware, in order: AgeLimit (calls older than their caller's timeout are dropped),
Retries (only what the actor marks retryable), CurrentMessage (the actor reads its retry
count), Results (sync calls' answers, on Redis). Dramatiq's TimeLimit is left out on purpose:
the Engine owns every deadline and kills the sandbox at it; an exception raised into a busy
dispatch thread would only break the engine's bookkeeping.
"""

from __future__ import annotations

import hashlib

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, CurrentMessage, Retries
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from handlerbox.runtime.cluster.config import ClusterConfig

EVENT_ACTOR = "handlerbox_event"
CALL_ACTOR = "handlerbox_call"
EVENT_PRIORITY = 100
CALL_PRIORITY = 0
"""A host's threads take calls before events it has already fetched (lower runs first)."""


def shard_of(app: str, account_id: str, shards: int) -> int:
    """The shard of an installation: stable across processes, hosts and Python versions."""
    digest = hashlib.sha1(f"{app}/{account_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def event_queue(shard: int) -> str:
    return f"hb-events-{shard}"


def call_queue(shard: int) -> str:
    return f"hb-calls-{shard}"


def consumed_queues(config: ClusterConfig) -> set[str]:
    """The queues a worker host serves: both queues of each of its shards."""
    return {name for shard in config.consumed for name in (event_queue(shard),
                                                             call_queue(shard))}


def redis_client(config: ClusterConfig) -> redis.Redis:
    """A client for the cluster's Redis (a connection pool: share it between threads)."""
    return redis.Redis.from_url(config.redis_url)


def results_backend(config: ClusterConfig, client: redis.Redis) -> RedisBackend:
    return RedisBackend(client=client, namespace=f"{config.namespace}-results")


def make_broker(config: ClusterConfig, client: redis.Redis, *, worker: bool) -> RedisBroker:
    """A broker for a worker host (with the middleware above) or a producer (no middleware:
    it only enqueues, and reads results through `results_backend`)."""
    middleware = [AgeLimit(), Retries(max_retries=config.max_retries,
                                      min_backoff=config.min_backoff_ms,
                                      max_backoff=config.max_backoff_ms),
                  CurrentMessage(),
                  Results(backend=results_backend(config, client)),  # type: ignore[no-untyped-call]
                  ] if worker else []
    return RedisBroker(  # type: ignore[no-untyped-call]
        client=client, namespace=config.namespace, middleware=middleware,
        heartbeat_timeout=config.heartbeat_timeout_ms,
        maintenance_chance=config.maintenance_chance)
