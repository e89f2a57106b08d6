"""Scale-out on Dramatiq with Redis: producers enqueue, worker hosts run one Engine each.

    from handlerbox.runtime.cluster import ClusterConfig, Producer
    producer = Producer(ClusterConfig(redis_url="redis://10.0.0.5:6379/0", shards=64))
    producer.send_event("call_logger", payload, event_id="evt-123")

Modules, one job each: config (ClusterConfig), broker (queues, shard hash, Dramatiq broker
and results backend), actors (what a worker host runs), results (event results stored once),
producer (the enqueue API), worker (`handlerbox worker`), errors. Nothing is imported here
until used: dramatiq and redis are the `cluster` extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from handlerbox.runtime.cluster.config import ClusterConfig
    from handlerbox.runtime.cluster.errors import AppNotLoaded, CallTimeout, ClusterError
    from handlerbox.runtime.cluster.producer import Producer, SetupReply

__all__ = ["AppNotLoaded", "CallTimeout", "ClusterConfig", "ClusterError", "Producer",
           "SetupReply"]

_HOMES = {"ClusterConfig": "config", "Producer": "producer", "SetupReply": "producer",
          "ClusterError": "errors", "CallTimeout": "errors", "AppNotLoaded": "errors"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"handlerbox.runtime.cluster.{_HOMES[name]}"),
                       name)
    raise AttributeError(f"module 'handlerbox.runtime.cluster' has no attribute {name!r}")
