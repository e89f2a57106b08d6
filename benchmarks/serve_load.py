"""Load on `handlerbox serve`: what does the HTTP front door cost over in-process dispatch?

    python -m handlerbox.benchmarks.serve_load [--requests 20000] [--concurrency 32]
                                               [--workers 2] [--mode wait|accept] [--json]

No untrusted input. The server runs in a subprocess (`python -m handlerbox serve`, the
typical handler tests/apps/bench_call_create, a 350-byte onCallCreate payload, its JSON log
lines to /dev/null); `--concurrency` async httpx clients in this process send `--requests`
product events with ?wait=true (each answer is the handler's result, so its latency is the
whole round trip) or, with --mode accept, as 202s (intake throughput only), each sender
with its own client and connection. Then the same
events go through Engine.dispatch_async in this process at the same concurrency: the
baseline. Every request must answer 200 (202); any other answer is an error and the exit
status is 1.

Client, server and workers share this machine's cores: the numbers are for comparing runs
on one machine, side by side, not absolute capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from handlerbox.benchmarks import payloads
from handlerbox.benchmarks.stats import percentile

TOKEN = "serve-load-token"
READY_TIMEOUT_S = 30.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m handlerbox.benchmarks.serve_load",
                                     description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mode", choices=["wait", "accept"], default="wait")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.workers < 1:
        parser.error("--requests, --concurrency and --workers must be at least 1")
    return args


def summary(samples_ns: list[int], wall_s: float, errors: int,
            host_cpu_s: float) -> dict[str, Any]:
    """Percentiles, throughput, and the host process's CPU per request (the server process
    for HTTP, this process for the baseline; workers not included)."""
    ordered = sorted(samples_ns)
    return {"requests": len(ordered), "errors": errors, "wall_s": round(wall_s, 3),
            "host_cpu_us_per_request": round(host_cpu_s / len(ordered) * 1e6, 1),
            "throughput_per_s": round(len(ordered) / wall_s, 1) if wall_s else 0.0,
            "p50_us": round(percentile(ordered, 50) / 1000, 1),
            "p99_us": round(percentile(ordered, 99) / 1000, 1),
            "max_us": round(ordered[-1] / 1000, 1) if ordered else 0.0}


async def drive(count: int, concurrency: int, send: Any) -> tuple[list[int], int, float]:
    """Call `send()` `count` times from `concurrency` tasks; (latencies, errors, wall s)."""
    samples: list[int] = []
    errors = 0
    remaining = count
    clock = time.perf_counter_ns

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            start = clock()
            ok = await send()
            samples.append(clock() - start)
            errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return samples, errors, time.perf_counter() - started


def start_server(workers: int, concurrency: int, folder: Path) -> tuple[subprocess.Popen[bytes],
                                                                        str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {"tokens": [TOKEN], "port": port, "apps": [str(payloads.CALL_APP)],
              "engine": {"workers": workers}, "queue_size": max(1000, 4 * concurrency)}
    (folder / "serve.json").write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "handlerbox", "serve", "--config",
                             str(folder / "serve.json")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the server was not ready in time")
        time.sleep(0.05)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def http_case(url: str, args: argparse.Namespace, body: bytes,
                    server: psutil.Process) -> dict[str, Any]:
    """One httpx.AsyncClient (one keep-alive connection) per concurrent sender: a single
    client's pool costs the sender far more CPU per request as its connections grow."""
    path = "/apps/bench_call_create/events" + ("?wait=true" if args.mode == "wait" else "")
    expected = 200 if args.mode == "wait" else 202
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    clients = [httpx.AsyncClient(base_url=url, headers=headers, timeout=60,
                                 limits=httpx.Limits(max_connections=1))
               for _ in range(args.concurrency)]
    free: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
    for client in clients:
        free.put_nowait(client)

    async def send() -> bool:
        client = await free.get()
        try:
            response = await client.post(path, content=body)
        except httpx.HTTPError:
            return False
        finally:
            free.put_nowait(client)
        return response.status_code == expected

    try:
        await drive(args.warmup, args.concurrency, send)
        cpu = cpu_seconds(server)
        samples, errors, wall = await drive(args.requests, args.concurrency, send)
        cpu = cpu_seconds(server) - cpu
    finally:
        for client in clients:
            await client.aclose()
    return summary(samples, wall, errors, cpu)


async def engine_case(args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    from handlerbox import Engine

    async with Engine(workers=args.workers) as engine:
        app = engine.load_app(payloads.CALL_APP)

        async def send() -> bool:
            result = await engine.dispatch_async(app, body)
            return result.outcome == "ok"

        me = psutil.Process()
        await drive(args.warmup, args.concurrency, send)
        cpu = cpu_seconds(me)
        samples, errors, wall = await drive(args.requests, args.concurrency, send)
        cpu = cpu_seconds(me) - cpu
    return summary(samples, wall, errors, cpu)


def run(args: argparse.Namespace) -> dict[str, Any]:
    body = payloads.payload_bytes("350")
    with tempfile.TemporaryDirectory(prefix="handlerbox-serve-load-") as folder:
        proc, url = start_server(args.workers, args.concurrency, Path(folder))
        try:
            served = asyncio.run(http_case(url, args, body, psutil.Process(proc.pid)))
        finally:
            proc.terminate()
            exit_code = proc.wait(60)
    in_process = asyncio.run(engine_case(args, body))
    return {"mode": args.mode, "concurrency": args.concurrency, "workers": args.workers,
            "http": served, "in_process": in_process, "server_exit_code": exit_code,
            "overhead_p50_us": round(served["p50_us"] - in_process["p50_us"], 1),
            "overhead_p99_us": round(served["p99_us"] - in_process["p99_us"], 1),
            "throughput_ratio": round(served["throughput_per_s"] /
                                      in_process["throughput_per_s"], 3),
            "host_cpu_overhead_us": round(served["host_cpu_us_per_request"] -
                                          in_process["host_cpu_us_per_request"], 1)}


def table(report: dict[str, Any]) -> str:
    rows = [f"serve_load: mode={report['mode']} concurrency={report['concurrency']} "
            f"workers={report['workers']}",
            f"{'path':12s} {'requests':>9s} {'errors':>7s} {'req/s':>9s} {'p50 us':>9s} "
            f"{'p99 us':>9s} {'max us':>9s} {'host cpu us/req':>16s}"]
    for name in ("http", "in_process"):
        r = report[name]
        rows.append(f"{name:12s} {r['requests']:9d} {r['errors']:7d} "
                    f"{r['throughput_per_s']:9.1f} {r['p50_us']:9.1f} {r['p99_us']:9.1f} "
                    f"{r['max_us']:9.1f} {r['host_cpu_us_per_request']:16.1f}")
    rows.append(f"HTTP overhead: p50 +{report['overhead_p50_us']} us, p99 "
                f"+{report['overhead_p99_us']} us, throughput x{report['throughput_ratio']}, "
                f"host CPU +{report['host_cpu_overhead_us']} us/request; server exit code "
                f"{report['server_exit_code']}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    report = run(args)
    print(json.dumps(report) if args.json else table(report))
    failed = report["http"]["errors"] or report["in_process"]["errors"] or \
        report["server_exit_code"] != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
