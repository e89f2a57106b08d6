"""Scale-out on Dramatiq: events/s and end-to-end latency of 1, 2 and 4 worker hosts against
in-process dispatch, and how throughput grows with hosts.

    python -m handlerbox.benchmarks.cluster [--events 3000] [--window 64] [--hosts 1,2,4]
                                            [--threads 2] [--poll-ms 100] [--json] [--quick]

No untrusted input. A redis-server child process (loopback, no persistence, with keyspace
notifications on) is the broker and result store. Each host is `python -m handlerbox worker`
with its own Engine (--threads sandbox workers), pinned to one core when the machine lets
it (os.sched_setaffinity: host i on core i mod cores). This process is the producer: it
keeps `--window` events in flight (tests/apps/bench_call_create, the 350-byte onCallCreate
payload, 16 installations over 16 shards) and times each from send_event to the moment
Redis announces its stored result (a keyspace notification on the result key: pushed, not
polled). The baseline runs the same events through Engine.dispatch in this process from
`--window` threads over one Engine of `--threads` x hosts workers.

Hosts, producer and Redis share this machine's cores: compare rows of one run; a host count
beyond the core count shows contention, not capacity.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from handlerbox.benchmarks import machine, payloads, stats

SHARDS = 16
ACCOUNTS = 16


class Redis:
    """redis-server on a free loopback port, killed by pid."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="handlerbox-bench-redis-")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--notify-keyspace-events", "K$"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_hosts(count: int, url: str, namespace: str, threads: int, log: Path,
                poll_ms: int) -> list[subprocess.Popen[str]]:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    hosts = []
    for index in range(count):
        process = subprocess.Popen(
            [sys.executable, "-m", "handlerbox", "worker", str(payloads.CALL_APP),
             "--redis", url, "--namespace", namespace, "--shards", str(SHARDS),
             "--threads", str(threads), "--store", "local", "--worker-timeout-ms",
             str(poll_ms)],
            stdout=subprocess.PIPE, stderr=log.open("a"), text=True)
        if cores:
            os.sched_setaffinity(process.pid, {cores[index % len(cores)]})
        hosts.append(process)
    for process in hosts:
        line = process.stdout.readline() if process.stdout else ""
        if "ready" not in line:
            raise SystemExit(f"a worker host did not start; see {log}")
    return hosts


def stop_hosts(hosts: list[subprocess.Popen[str]]) -> None:
    for process in hosts:
        process.send_signal(signal.SIGTERM)
    for process in hosts:
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)


def cluster_case(url: str, hosts: int, events: int, window: int, threads: int,
                 log: Path, poll_ms: int) -> dict[str, Any]:
    """`events` through `hosts` worker hosts; latency from send to stored result."""
    import redis

    from handlerbox.runtime.cluster import ClusterConfig, Producer

    namespace = f"bench{hosts}"
    processes = start_hosts(hosts, url, namespace, threads, log, poll_ms)
    producer = Producer(ClusterConfig(redis_url=url, namespace=namespace, shards=SHARDS))
    listener = redis.Redis.from_url(url).pubsub(  # type: ignore[no-untyped-call]
        ignore_subscribe_messages=True)
    prefix = f"__keyspace@0__:{namespace}:result:bench_call_create:"
    pending: dict[str, tuple[int, Any]] = {}
    latencies: list[int] = []
    lock = threading.Lock()

    def announced(message: dict[str, Any]) -> None:
        event_id = message["channel"].decode()[len(prefix):]
        with lock:
            sent, done = pending.pop(event_id, (0, None))
        if done is not None:
            latencies.append(time.perf_counter_ns() - sent)
            done(None)

    listener.psubscribe(**{prefix + "*": announced})
    thread = listener.run_in_thread(sleep_time=0.01, daemon=True)
    body = payloads.payload()
    counter = iter(range(10**9))

    def submit(done: Any) -> None:
        n = next(counter)
        event_id = f"e{n}"
        with lock:
            pending[event_id] = (time.perf_counter_ns(), done)
        producer.send_event("bench_call_create", {**body, "account_id": f"a{n % ACCOUNTS}"},
                            event_id=event_id)

    stats.windowed(submit, min(200, events), window)  # warm: every host binds its workers
    latencies.clear()
    timing = stats.windowed(submit, events, window)
    thread.stop()
    producer.close()
    stop_hosts(processes)
    return {"hosts": hosts, "events_per_s": events / timing["seconds"],
            "latency": stats.summarise_ns(latencies)}


def in_process_case(events: int, window: int, workers: int) -> dict[str, Any]:
    from handlerbox import Engine

    body = payloads.payload()
    latencies: list[int] = []
    counter = iter(range(10**9))
    with Engine(workers=workers) as engine, ThreadPoolExecutor(window) as pool:
        app = engine.load_app(payloads.CALL_APP)

        def submit(done: Any) -> None:
            n = next(counter)
            payload = {**body, "account_id": f"a{n % ACCOUNTS}"}

            def run() -> None:
                start = time.perf_counter_ns()
                result = engine.dispatch(app, payload)
                latencies.append(time.perf_counter_ns() - start)
                done(None if result.ok else result.outcome)

            pool.submit(run)

        stats.windowed(submit, min(200, events), window)
        latencies.clear()
        timing = stats.windowed(submit, events, window)
    return {"hosts": 0, "events_per_s": events / timing["seconds"],
            "latency": stats.summarise_ns(latencies), "errors": timing["errors"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handlerbox.benchmarks.cluster",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--window", type=int, default=64, help="events in flight")
    parser.add_argument("--hosts", default="1,2,4", help="host counts to run")
    parser.add_argument("--threads", type=int, default=2, help="threads (= sandbox "
                        "workers) per host")
    parser.add_argument("--poll-ms", type=int, default=100, help="the hosts' longest idle "
                        "poll of a queue (--worker-timeout-ms): the latency floor when idle")
    parser.add_argument("--quick", action="store_true", help="500 events per case")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    events = 500 if args.quick else args.events
    host_counts = [int(n) for n in args.hosts.split(",")]
    redis_server = Redis()
    log = Path(tempfile.mkdtemp(prefix="handlerbox-bench-cluster-")) / "hosts.log"
    load_before = machine.load_average()
    try:
        rows = [in_process_case(events, args.window, args.threads * max(host_counts))]
        rows += [cluster_case(redis_server.url, hosts, events, args.window, args.threads, log,
                              args.poll_ms) for hosts in host_counts]
    finally:
        redis_server.kill()
    report = {"machine": machine.describe(), "events": events, "window": args.window,
              "poll_ms": args.poll_ms,
              "threads_per_host": args.threads, "shards": SHARDS, "rows": rows,
              "busy": machine.busy_note(load_before, machine.load_average())}
    out = Path(__file__).parent / "results" / "cluster.json"
    out.write_text(json.dumps(report, indent=1))
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{events} events, {args.window} in flight, {args.threads} threads per host, "
          f"idle poll {args.poll_ms} ms, {os.cpu_count()} cores; "
          f"{machine.one_line(report['machine'])}")
    base = rows[1]["events_per_s"] if len(rows) > 1 else 1.0
    print(f"{'case':<22}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'x 1 host':>10}")
    for row in rows:
        name = "in-process dispatch" if row["hosts"] == 0 else f"{row['hosts']} host(s)"
        lat = row["latency"]
        print(f"{name:<22}{row['events_per_s']:>10.0f}{lat['p50_us'] / 1000:>9.2f}"
              f"{lat['p99_us'] / 1000:>9.2f}{row['events_per_s'] / base:>10.2f}")
    if report["busy"]:
        print(report["busy"])
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
