"""What a host call adds: a store get and a template request made by a handler, against the
same operation performed directly in the host, beside a raw pipe round trip.

    python -m handlerbox.benchmarks.hostcalls [--calls 2000] [--json]

No untrusted input. The handler makes K calls per invocation; the time one call adds is
(dispatch with K calls - dispatch with none) / K, so dispatch overhead cancels out. The goal
(issue 11): a host call adds at most two pipe round trips over the operation itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from handlerbox.benchmarks.stats import median

CALLS_PER_INVOCATION = 20
SERVER = '''from services import db, request


def gets(payload):
    for _ in range(payload["data"]["k"]):
        db.get("k")
    return payload["data"]["k"]


def fetches(payload):
    for _ in range(payload["data"]["k"]):
        request.invoke("ping")
    return payload["data"]["k"]
'''


def pipe_round_trip_us(rounds: int = 2000) -> float:
    """A one-byte ping-pong with a child over two pipes: the physical floor of a call."""
    to_child, from_parent = os.pipe()
    to_parent, from_child = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(from_parent)  # else the child never sees EOF
        os.close(to_parent)
        while os.read(to_child, 1):
            os.write(from_child, b"x")
        os._exit(0)
    os.close(to_child)
    os.close(from_child)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        os.write(from_parent, b"x")
        os.read(to_parent, 1)
        samples.append(time.perf_counter_ns() - start)
    os.close(from_parent)
    os.waitpid(pid, 0)
    os.close(to_parent)
    return median(sorted(samples)) / 1000.0


def write_app(root: Path, port: int) -> Path:
    app = root / "hostcall_bench"
    (app / "server").mkdir(parents=True)
    (app / "config").mkdir()
    (app / "server" / "server.py").write_text(SERVER)
    (app / "manifest.json").write_text(json.dumps({
        "events": {"onTicketCreate": {"handler": "gets"}, "onTicketUpdate":
                   {"handler": "fetches"}}, "requests": {"ping": {}}}))
    (app / "config" / "requests.json").write_text(json.dumps({"ping": {"schema": {
        "protocol": "http", "method": "GET", "host": f"localhost:{port}", "path": "/status/200"}}}))
    return app


def payload(event: str, k: int) -> dict[str, Any]:
    return {"account_id": "bench", "domain": "bench.example.com", "event": event,
            "region": "US", "timestamp": 0, "data": {"k": k}}


def per_call_us(engine: Any, app: Any, event: str, calls: int) -> float:
    """Median added time of one call inside a dispatch (K calls against none)."""
    def run(k: int) -> float:
        start = time.perf_counter_ns()
        result = engine.dispatch(app, payload(event, k))
        assert result.ok, result.error
        return (time.perf_counter_ns() - start) / 1000.0

    rounds = max(calls // CALLS_PER_INVOCATION, 10)
    with_calls, without = [], []
    for _ in range(rounds):  # interleaved, so drift hits both alike
        with_calls.append(run(CALLS_PER_INVOCATION))
        without.append(run(0))
    return (median(sorted(with_calls)) - median(sorted(without))) / CALLS_PER_INVOCATION


def direct_us(operation: Any, calls: int) -> float:
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        operation()
        samples.append(time.perf_counter_ns() - start)
    return median(sorted(samples)) / 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handlerbox.benchmarks.hostcalls")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    # One CPU for every process (the engine's zygote and workers inherit it), as the suite's
    # same placement: a cross-CPU wake-up would swamp the round trips being compared.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import httpx

    from handlerbox import Engine
    from handlerbox.runtime.services.base import Scope
    from handlerbox.runtime.services.kv import KVStore
    from handlerbox.runtime.services.sqlite import Database

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from httpserver import LocalServer  # the tests' loopback server, started here

    root = Path(tempfile.mkdtemp(prefix="hb-hostcalls-"))
    try:
        with LocalServer() as server:
            app_dir = write_app(root, server.port)
            unlimited = 10**9
            with Engine(workers=1, database=str(root / "store.sqlite3"), scheduler=False,
                        allow_networks=["127.0.0.0/8", "::1/128"],
                        allow_http_hosts=["localhost"]) as engine:
                # the quotas (50 calls a minute) would refuse a benchmark: lift them here only
                engine.store._limiter.limit = unlimited
                engine.requests._limiter.limit = unlimited
                app = engine.load_app(app_dir)
                engine.store.call(Scope(app.name, "bench"), "set", {"key": "k", "value": 1},
                                  time.monotonic() + 5)
                hosted_get = per_call_us(engine, app, "onTicketCreate", args.calls)
                hosted_fetch = per_call_us(engine, app, "onTicketUpdate", args.calls // 4)
            database = Database(root / "direct.sqlite3")
            store = KVStore.sqlite(database, rate_limit=unlimited)
            scope = Scope("direct", "bench")
            store.call(scope, "set", {"key": "k", "value": 1}, time.monotonic() + 5)
            direct_get = direct_us(lambda: store.call(scope, "get", {"key": "k"},
                                                      time.monotonic() + 5), args.calls)
            with httpx.Client() as client:
                url = f"http://127.0.0.1:{server.port}/status/200"
                direct_fetch = direct_us(lambda: client.get(url), args.calls // 4)
            database.close()
        floor = pipe_round_trip_us()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows: dict[str, Any] = {"pipe_round_trip_us": floor,
            "store_get": {"direct_us": direct_get, "from_handler_us": hosted_get,
                          "added_round_trips": (hosted_get - direct_get) / floor},
            "template_request": {"direct_httpx_us": direct_fetch,
                                 "from_handler_us": hosted_fetch,
                                 "added_round_trips": (hosted_fetch - direct_fetch) / floor}}
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"pipe round trip: {floor:.1f} us")
        for name in ("store_get", "template_request"):
            row = rows[name]
            values = list(row.values())
            print(f"{name:17s} direct {values[0]:8.1f} us  from a handler {values[1]:8.1f} us  "
                  f"added {values[2]:5.1f} round trips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
