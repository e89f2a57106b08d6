"""ClusterConfig: where the cluster's Redis is and how its queues are cut; no untrusted input
(operator settings, validated once at the edge).

    config = ClusterConfig(redis_url="redis://10.0.0.5:6379/0", shards=64, consume=[3, 17])
    ClusterConfig.parse({"shards": 0})   # ConfigError: cluster.shards: must be at least 1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError, model_validator

from handlerbox.runtime.errors import ConfigError
from handlerbox.runtime.validation import EdgeModel, problems

DEFAULT_URL = "redis://127.0.0.1:6379/0"


class ClusterConfig(EdgeModel):
    """Settings shared by the producers and workers of one cluster (they must agree on
    `redis_url`, `namespace` and `shards`) plus what one worker host does.

    `shards` is how many event queues (and as many call queues) installations hash to;
    `consume` lists the shards this host serves (None: all; give each shard to two hosts).
    `threads` is the host's Dramatiq worker threads (at most that many dispatches at once:
    match the Engine's `workers`); `prefetch` is how many messages each queue's consumer
    holds, running ones included (None: `threads`, so one hot shard can fill the host; less
    leaves more of a shard's backlog to its other host).
    Redelivery: a host whose heartbeat is older than `heartbeat_timeout_ms` is dead, and the
    next queue maintenance (`maintenance_chance` in a million broker calls) puts its unacked
    messages back. A live host heartbeats on every poll (an idle queue is polled at least
    every `worker_timeout_ms`, also the idle latency floor), so 15 s is far above its
    silence; an idle queue polled 10 times a second runs maintenance about every 10 s at 1 %
    (Dramatiq's own 0.1 % would take minutes). Redelivery after a host dies: ~15-25 s.
    Events whose dispatch ended `crashed` or `overloaded` are retried up to
    `max_retries` times, backing off from `min_backoff_ms` to `max_backoff_ms`; their
    results are kept `result_ttl_s` (the window in which a redelivery is recognised).
    """

    redis_url: str = DEFAULT_URL
    namespace: str = Field(default="handlerbox", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    shards: int = Field(default=16, ge=1, le=4096)
    consume: list[int] | None = None
    threads: int = Field(default=8, ge=1, le=1024)
    prefetch: int | None = Field(default=None, ge=1, le=65535)
    worker_timeout_ms: int = Field(default=100, ge=10)
    heartbeat_timeout_ms: int = Field(default=15_000, ge=100)
    maintenance_chance: int = Field(default=10_000, ge=0, le=1_000_000)
    max_retries: int = Field(default=5, ge=0)
    min_backoff_ms: int = Field(default=1000, ge=1)
    max_backoff_ms: int = Field(default=60_000, ge=1)
    result_ttl_s: int = Field(default=7 * 86400, ge=1)

    @model_validator(mode="after")
    def _consumed_shards_exist(self) -> ClusterConfig:
        for shard in self.consume or ():
            if not 0 <= shard < self.shards:
                raise ValueError(f"consume: shard {shard} is not in 0..{self.shards - 1}")
        return self

    @property
    def consumed(self) -> list[int]:
        """The shards this host serves."""
        return sorted(set(self.consume)) if self.consume is not None else list(
            range(self.shards))

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> ClusterConfig:
        """Validate settings, or raise ConfigError naming each bad one."""
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise ConfigError("\n".join(problems(exc, "cluster", {0: cls.model_fields}))
                              ) from None
