"""Prometheus metrics of the front door and its engine, in a registry of its own (never the
process-wide default, so two servers in one process, or a host app, do not collide); no
untrusted input (label values come from loaded manifests, not from requests).

    handlerbox_dispatches_total{kind,app,event,outcome}     counter
    handlerbox_dispatch_duration_seconds{kind,app}           histogram (engine time)
    handlerbox_queue_wait_seconds                            histogram (accepted -> started)
    handlerbox_events_accepted_total                         counter (202 and ?wait=true)
    handlerbox_events_rejected_total{reason}                 counter (queue_full, draining,
                                                                      invalid_payload, ...)
    handlerbox_events_retried_total                          counter (engine overloaded)
    handlerbox_host_calls_total{service,status}              counter
    handlerbox_host_call_duration_seconds{service}           histogram
    handlerbox_schedule_lag_seconds                          histogram (fired - due)
    handlerbox_worker_starts_total                           counter (new worker pids seen)
    handlerbox_http_requests_total{route,method,status}      counter
    handlerbox_http_request_duration_seconds{route}          histogram
    read at scrape time:
    handlerbox_queue_depth, handlerbox_queue_capacity, handlerbox_invocations_running,
    handlerbox_workers{state}, handlerbox_pool{stat}, handlerbox_schedule_last_lag_seconds,
    handlerbox_up (1 while ready, 0 while starting or draining)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handlerbox.runtime.results import InvocationResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 20.0, 40.0)
WORKER_STATES = ("idle", "busy", "spare")
OTHER = "other"
"""The event label of a dispatch that found no handler: request input never becomes a label."""


@dataclass
class Gauges:
    """What the scrape-time collector reads: callables, so it holds no engine reference."""

    queue_depth: Callable[[], int]
    queue_capacity: int
    running: Callable[[], int]
    ready: Callable[[], bool]
    workers: Callable[[], list[dict[str, Any]]]
    pool: Callable[[], dict[str, int]]
    last_lag: Callable[[], float | None]


class ServeMetrics:
    """The collectors; `observe(kind, result)` records one invocation."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.dispatches = Counter("handlerbox_dispatches", "Invocations by kind, app, event "
                                  "and outcome", ["kind", "app", "event", "outcome"], registry=r)
        self.dispatch_seconds = Histogram("handlerbox_dispatch_duration_seconds", "Engine time "
                                          "of an invocation (dispatch to result)",
                                          ["kind", "app"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("handlerbox_queue_wait_seconds", "Time a product event "
                                    "waited in the queue", buckets=LATENCY_BUCKETS, registry=r)
        self.accepted = Counter("handlerbox_events_accepted", "Product events taken into the "
                                "queue", registry=r)
        self.retried = Counter("handlerbox_events_retried", "Accepted events queued again "
                               "because the engine answered overloaded", registry=r)
        self.rejected = Counter("handlerbox_events_rejected", "Product events refused at the "
                                "door", ["reason"], registry=r)
        self.host_calls = Counter("handlerbox_host_calls", "Service calls handlers made, by "
                                  "service and status", ["service", "status"], registry=r)
        self.host_call_seconds = Histogram("handlerbox_host_call_duration_seconds", "Time of a "
                                           "service call", ["service"],
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.schedule_lag = Histogram("handlerbox_schedule_lag_seconds", "How late a scheduled "
                                      "occurrence fired", buckets=LATENCY_BUCKETS, registry=r)
        self.worker_starts = Counter("handlerbox_worker_starts", "Worker processes seen for the "
                                     "first time (new pids)", registry=r)
        self.http_requests = Counter("handlerbox_http_requests", "HTTP requests by route, method "
                                     "and status", ["route", "method", "status"], registry=r)
        self.http_seconds = Histogram("handlerbox_http_request_duration_seconds", "HTTP request "
                                      "time by route", ["route"], buckets=LATENCY_BUCKETS,
                                      registry=r)
        self._pids: set[int] = set()

    def watch(self, gauges: Gauges) -> None:
        """Add the scrape-time gauges (once the engine is up)."""
        self.registry.register(_GaugeCollector(gauges, self))

    def observe(self, kind: str, result: InvocationResult) -> None:
        event = result.event if result.handler is not None else OTHER
        self.dispatches.labels(kind, result.app, event, result.outcome).inc()
        self.dispatch_seconds.labels(kind, result.app).observe(result.duration_ms / 1000.0)
        for call in result.host_calls:
            self.host_calls.labels(call.service, str(call.status)).inc()
            self.host_call_seconds.labels(call.service).observe(call.duration_ms / 1000.0)
        if result.worker_pid is not None:
            self.saw_workers((result.worker_pid,))

    def saw_workers(self, pids: Iterable[int]) -> None:
        for pid in pids:
            if pid not in self._pids:
                self._pids.add(pid)
                self.worker_starts.inc()

    def forget_workers_except(self, live: set[int]) -> None:
        """Keep only live pids (a reused pid then counts as a new start)."""
        self._pids &= live

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _GaugeCollector(Collector):
    def __init__(self, gauges: Gauges, metrics: ServeMetrics) -> None:
        self.gauges, self.metrics = gauges, metrics

    def describe(self) -> Iterable[Any]:
        return []  # collected at scrape time only

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = self.gauges
        yield GaugeMetricFamily("handlerbox_up", "1 while the server takes requests",
                                value=1 if g.ready() else 0)
        yield GaugeMetricFamily("handlerbox_queue_depth", "Product events waiting",
                                value=g.queue_depth())
        yield GaugeMetricFamily("handlerbox_queue_capacity", "Queue size",
                                value=g.queue_capacity)
        yield GaugeMetricFamily("handlerbox_invocations_running", "Invocations in the engine",
                                value=g.running())
        try:
            workers, pool = g.workers(), g.pool()
        except Exception:  # the engine is stopping: report no workers
            workers, pool = [], {}
        live = {w["pid"] for w in workers}
        self.metrics.saw_workers(live)
        self.metrics.forget_workers_except(live)
        by_state = GaugeMetricFamily("handlerbox_workers", "Live workers by state",
                                     labels=["state"])
        counts = dict.fromkeys(WORKER_STATES, 0)
        for worker in workers:
            counts[str(worker["state"])] = counts.get(str(worker["state"]), 0) + 1
        for state, count in counts.items():
            by_state.add_metric([state], count)
        yield by_state
        stats = GaugeMetricFamily("handlerbox_pool", "The engine's pool (Engine.stats())",
                                  labels=["stat"])
        for name, value in sorted(pool.items()):
            stats.add_metric([name], value)
        yield stats
        lag = g.last_lag()
        if lag is not None:
            yield GaugeMetricFamily("handlerbox_schedule_last_lag_seconds", "Lag of the last "
                                    "scheduled occurrence", value=lag)


class RequestMetrics:
    """ASGI middleware: counts each request by route (the endpoint's name, never the raw
    path), method and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", "unmatched") if endpoint else "unmatched"
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.http_requests.labels(route, method, str(status)).inc()
            self.metrics.http_seconds.labels(route).observe(time.monotonic() - started)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
