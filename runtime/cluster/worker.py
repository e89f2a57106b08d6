"""`handlerbox worker`: one worker host of the cluster, a Dramatiq Worker (one process, many
threads) over one Engine. Touches untrusted input only through the actors (runtime.cluster.
actors) and the apps it loads (runtime.app checks them).

    handlerbox worker APP [APP ...] --redis redis://10.0.0.5:6379/0 --shards 64 \\
        --consume 3,17 --threads 8 [--store redis|local] [--database FILE] [--scheduler]

Start: the broker and actors are declared, then Dramatiq's Worker starts; its boot builds
the Engine (budget = --engine-workers, default --threads, so every thread can have a
sandbox and the whole budget is one pool) and loads the apps; then "ready" is printed.
SIGTERM or SIGINT: Dramatiq stops taking messages and lets each thread finish its current
one (each within its engine deadline), puts prefetched ones back, and the Engine closes
with drain. SIGKILL: nothing is acknowledged, and the host's unacked messages go back to
their queues once its heartbeat is older than --heartbeat-timeout-ms.

Stores: with `--store redis` (the default) handlers' key-value data and schedules live in the
cluster's Redis, shared by every host. Installations and webhook tokens stay in the Engine's
SQLite file (`--database`): share one file between the hosts of one machine; across machines
they need Redis backends of their own, which do not exist yet.
`--scheduler` runs a scheduler that claims due occurrences from that store and enqueues each
as an event whose id is the occurrence key (run it on any number of hosts: the claim and
the id make each occurrence run once).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handlerbox.runtime.cluster.config import ClusterConfig
from handlerbox.runtime.config import EngineConfig
from handlerbox.sandbox.errors import HandlerboxError

if TYPE_CHECKING:  # run() imports them: `handlerbox --help` needs neither dramatiq nor redis
    from handlerbox.runtime.cluster.producer import Producer
    from handlerbox.runtime.engine import Engine
    from handlerbox.runtime.services.schedules import Occurrence

log = logging.getLogger("handlerbox.cluster")
EXIT_OK, EXIT_BAD_INPUT = 0, 2
STOP_TIMEOUT_MS = 120_000
"""How long a stop waits for running dispatches (longer than any engine deadline)."""


def run(cluster: ClusterConfig, engine_config: EngineConfig, apps: list[Path], *,
        store: str = "redis", scheduler: bool = False, stop: threading.Event,
        on_ready: Callable[[Engine, str], None] | None = None) -> None:
    """Serve the cluster until `stop` is set, then stop with drain. `on_ready(engine,
    broker_id)` is called once the host takes messages (the broker id names it in Redis)."""
    import redis
    from dramatiq import Worker

    from handlerbox.runtime.cluster.actors import EngineHost, declare_actors
    from handlerbox.runtime.cluster.broker import consumed_queues, make_broker, redis_client
    from handlerbox.runtime.cluster.errors import ClusterError
    from handlerbox.runtime.cluster.producer import Producer
    from handlerbox.runtime.engine import Engine
    from handlerbox.runtime.scheduler import Scheduler
    from handlerbox.runtime.services.kv_redis import RedisKV
    from handlerbox.runtime.services.schedules_redis import RedisSchedules

    client = redis_client(cluster)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ClusterError(f"cannot reach the cluster's Redis at {cluster.redis_url}: "
                           f"{str(exc)[:200]}") from None
    broker = make_broker(cluster, client, worker=True)
    engine_config = engine_config.model_copy(update={"scheduler": False})

    def build() -> Engine:
        shared = store == "redis"  # handlers' data and schedules in the cluster's Redis
        engine = Engine(config=engine_config,
                        kv_backend=RedisKV(client, prefix=f"{cluster.namespace}:")
                        if shared else None,
                        schedule_backend=RedisSchedules(client, prefix=f"{cluster.namespace}:")
                        if shared else None)
        try:
            for path in apps:
                engine.load_app(path)
        except BaseException:
            engine.close(drain=False)
            raise
        return engine

    host = EngineHost(build)
    broker.add_middleware(host)
    declare_actors(broker, host, cluster, client)
    queues = consumed_queues(cluster)
    for name in sorted(queues):
        broker.declare_queue(name)
    worker = Worker(broker, queues=queues, worker_threads=cluster.threads,
                    worker_timeout=cluster.worker_timeout_ms)
    worker.queue_prefetch = cluster.prefetch or cluster.threads
    worker.start()
    producer: Producer | None = None
    firing: Scheduler | None = None
    try:
        if host.failure is not None:
            raise host.failure
        engine = host.current()
        if scheduler:
            producer = Producer(cluster, client)
            firing = Scheduler(engine.schedules, fire=_fire_into(engine, producer))
            firing.start()
        if on_ready is not None:
            on_ready(engine, broker.broker_id)
        stop.wait()
    finally:
        if firing is not None:
            firing.stop()
        worker.stop(timeout=STOP_TIMEOUT_MS)  # the Engine closes with drain after this
        broker.close()
        client.close()


def _fire_into(engine: Engine, producer: Producer) -> Callable[[Occurrence], None]:
    def fire(occurrence: Occurrence) -> None:
        installation = engine.installation(occurrence.app, occurrence.account_id)
        if installation is None:
            log.warning("schedule %s: the installation is gone; not fired", occurrence.key)
            return
        producer.send_scheduled(installation, occurrence)

    return fire


# -- the command ------------------------------------------------------------------------------

def add_parser(commands: Any) -> None:
    worker = commands.add_parser("worker", help="serve a cluster's queues: a Dramatiq worker "
                                 "host over one Engine (scale-out on Redis)")
    worker.add_argument("apps", type=Path, nargs="*", help="app directories to load")
    worker.add_argument("--redis", default=ClusterConfig.model_fields["redis_url"].default,
                        help="the cluster's Redis URL")
    worker.add_argument("--namespace", default="handlerbox", help="prefix of every Redis key")
    worker.add_argument("--shards", type=int, default=16, help="shards installations hash to "
                        "(the same number on every producer and host)")
    worker.add_argument("--consume", default="all",
                        help="shards this host serves, e.g. 0,1,5-7 (default: all)")
    worker.add_argument("--threads", type=int, default=8, help="Dramatiq worker threads")
    worker.add_argument("--engine-workers", type=int, default=None,
                        help="the Engine's worker budget (default: --threads)")
    worker.add_argument("--prefetch", type=int, default=None,
                        help="messages each queue's consumer holds (default: --threads)")
    worker.add_argument("--database", default=None, help="the Engine's SQLite file "
                        "(installations, schedules, webhook tokens)")
    worker.add_argument("--store", choices=("redis", "local"), default="redis",
                        help="where handlers' key-value data lives (default: redis)")
    worker.add_argument("--scheduler", action="store_true",
                        help="also fire due schedules into the cluster")
    for name, help_text in (("heartbeat-timeout-ms", "a host silent this long is dead and "
                             "its unacked messages are redelivered"),
                            ("maintenance-chance", "broker calls per million that run queue "
                             "maintenance (redelivery)"),
                            ("worker-timeout-ms", "longest idle poll of a queue"),
                            ("max-retries", "retries of a crashed or overloaded event"),
                            ("min-backoff-ms", "first retry's delay"),
                            ("max-backoff-ms", "longest retry delay"),
                            ("result-ttl-s", "how long event results (and so duplicate "
                             "detection) are kept")):
        worker.add_argument(f"--{name}", type=int, default=None, help=help_text)
    worker.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    worker.set_defaults(func=main)


def parse_shards(text: str) -> list[int] | None:
    """"all" -> None; "0,2,5-7" -> [0, 2, 5, 6, 7]."""
    if text.strip() == "all":
        return None
    shards: list[int] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        shards.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    return shards


def main(args: argparse.Namespace) -> int:
    from handlerbox.runtime.cli import report_problems

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings: dict[str, Any] = {
            "redis_url": args.redis, "namespace": args.namespace, "shards": args.shards,
            "consume": parse_shards(args.consume), "threads": args.threads,
            "prefetch": args.prefetch}
        for name in ("heartbeat_timeout_ms", "maintenance_chance", "worker_timeout_ms",
                     "max_retries", "min_backoff_ms", "max_backoff_ms", "result_ttl_s"):
            if getattr(args, name) is not None:
                settings[name] = getattr(args, name)
        cluster = ClusterConfig.parse(settings)
        engine_config = EngineConfig.parse({"workers": args.engine_workers or args.threads,
                                            "database": args.database})
    except (ValueError, HandlerboxError) as exc:
        return report_problems([str(exc)], False, code="bad_input")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def ready(engine: Engine, broker_id: str) -> None:
        loaded = ", ".join(path.name for path in args.apps) or "none"
        print(f"handlerbox worker ready: pid {os.getpid()} broker {broker_id} shards "
              f"{','.join(map(str, cluster.consumed))} apps {loaded}", flush=True)

    try:
        run(cluster, engine_config, args.apps, store=args.store, scheduler=args.scheduler,
            stop=stop, on_ready=ready)
    except HandlerboxError as exc:
        return report_problems(list(getattr(exc, "problems", None) or [str(exc)]), False,
                               code=exc.code)
    print("handlerbox worker stopped", file=sys.stderr, flush=True)
    return EXIT_OK
