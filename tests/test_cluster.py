"""Scale-out on Dramatiq and Redis: shard hash, retries and idempotent results (StubBroker,
fast), then real `handlerbox worker` processes on a real redis-server: a host SIGKILLed in
the middle of a handler, shard failover, sync calls and their timeouts, a drained stop.

Hosts here use a 1.5 s heartbeat timeout and run queue maintenance on 1 broker call in 10,
so a dead host's unacked messages come back within a few seconds (production: 60 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest
import redis
from dramatiq import Message, Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, CurrentMessage, Retries
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

from handlerbox.runtime.cluster import CallTimeout, ClusterConfig, Producer
from handlerbox.runtime.cluster.actors import EngineHost, declare_actors
from handlerbox.runtime.cluster.broker import (
    EVENT_ACTOR,
    call_queue,
    consumed_queues,
    event_queue,
    shard_of,
)
from handlerbox.runtime.cluster.results import ResultStore
from handlerbox.runtime.errors import (
    ConfigError,
    InstallationExists,
    InstallationNotFound,
    PayloadError,
    SetupBlocked,
)
from handlerbox.runtime.results import ErrorInfo, InvocationResult
from handlerbox.runtime.services.installations import SQLiteInstallations
from handlerbox.runtime.services.kv_redis import RedisKV
from handlerbox.runtime.services.sqlite import Database
from tests.conftest import APPS, make_payload
from tests.redis_server import RedisServer, redis_server_fixture, unique_prefix  # noqa: F401

APP = APPS / "cluster_slow"
SHARDS = 4
HOST_OPTIONS = ["--shards", str(SHARDS), "--threads", "2", "--heartbeat-timeout-ms", "1500",
                "--maintenance-chance", "100000", "--worker-timeout-ms", "100",
                "--min-backoff-ms", "50", "--max-backoff-ms", "200"]
LOOPS_PER_SECOND = 25_000_000  # the handler's spin loop, roughly, on these machines


def until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> Any:
    """Poll `check` until it returns something truthy (the tests watch other processes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- the shard hash and the config ------------------------------------------------------------

def test_shard_of_is_stable_and_spreads_installations() -> None:
    assert shard_of("call_logger", "82918", 16) == shard_of("call_logger", "82918", 16)
    assert shard_of("app", "1", 1) == 0
    counts = [0] * 16
    for account in range(1600):
        counts[shard_of("call_logger", str(account), 16)] += 1
    assert min(counts) > 60 and max(counts) < 140  # about 100 each


def test_consumed_shards_must_exist_and_name_both_queues() -> None:
    with pytest.raises(ConfigError, match=r"consume: shard 4 is not in 0\.\.3"):
        ClusterConfig.parse({"shards": 4, "consume": [1, 4]})
    assert consumed_queues(ClusterConfig(shards=4, consume=[2])) == {"hb-events-2",
                                                                     "hb-calls-2"}


def test_the_producer_refuses_bad_payloads_and_event_ids_before_enqueueing() -> None:
    producer = Producer(ClusterConfig(redis_url="redis://127.0.0.1:9/0"))  # never reached
    with pytest.raises(PayloadError, match="region"):
        producer.send_event("app", {**make_payload(), "region": "XX"})
    with pytest.raises(ValueError, match="event_id"):
        producer.send_event("app", make_payload(), event_id="has space")
    producer.close()


# -- the event actor on Dramatiq's StubBroker (results in a real Redis) -----------------------

class FakeEngine:
    """Answers each dispatch with the next scripted outcome; records the payloads."""

    def __init__(self, outcomes: list[str]) -> None:
        self.outcomes, self.payloads = outcomes, list[dict[str, Any]]()

    def app(self, name: str) -> object:
        return object()

    def dispatch(self, app: object, payload: dict[str, Any]) -> InvocationResult:
        self.payloads.append(payload)
        outcome = self.outcomes[min(len(self.payloads), len(self.outcomes)) - 1]
        if outcome == "ok":
            return InvocationResult(outcome="ok", app="a", event="e", value=len(self.payloads))
        return InvocationResult(outcome=outcome, app="a", event="e",  # type: ignore[arg-type]
                                error=ErrorInfo(type="X", message=outcome))


@pytest.fixture
def stub_cluster(redis_server: RedisServer) -> Iterator[Callable[..., tuple[FakeEngine,
                                                                         ResultStore]]]:
    """Runs events through the real actors on a StubBroker with a fake engine."""
    started: list[tuple[Worker, redis.Redis]] = []
    broker: StubBroker | None = None

    def run(outcomes: list[str], *events: str, stored: str | None = None
            ) -> tuple[FakeEngine, ResultStore]:
        nonlocal broker
        config = ClusterConfig(namespace=unique_prefix().rstrip(":"), shards=1, max_retries=2,
                               min_backoff_ms=5, max_backoff_ms=20)
        client = redis.Redis.from_url(redis_server.url)
        broker = StubBroker(middleware=[AgeLimit(), Retries(max_retries=2), CurrentMessage(),
                                        Results(backend=StubBackend())])
        engine = FakeEngine(outcomes)
        host = EngineHost(lambda: engine)  # type: ignore[arg-type,return-value]
        broker.add_middleware(host)
        store = declare_actors(broker, host, config, client)
        if stored is not None:
            store.put("app", stored, InvocationResult(outcome="ok", app="app", event="e"))
        worker = Worker(broker, worker_timeout=20, worker_threads=1)
        worker.start()
        started.append((worker, client))
        for event_id in events:
            broker.enqueue(Message(queue_name=event_queue(0), actor_name=EVENT_ACTOR,
                                   args=("app", event_id, '{"event": "onCallCreate"}'),
                                   kwargs={}, options={}, message_id=event_id))
        broker.join(event_queue(0), timeout=10_000)
        worker.join()
        return engine, store

    yield run
    for worker, client in started:
        worker.stop()
        client.close()


@pytest.mark.parametrize(("outcomes", "runs", "final"), [
    (["crashed", "overloaded", "ok"], 3, "ok"),        # retried with backoff, then stored
    (["crashed", "crashed", "crashed", "ok"], 3, "crashed"),  # retries spent: the last stands
    (["handler_error", "ok"], 1, "handler_error"),    # the handler's own failure: never again
    (["timeout", "ok"], 1, "timeout"),                # may have had side effects: never again
    (["memory_limit", "ok"], 1, "memory_limit"),
])
def test_only_crashed_and_overloaded_events_are_retried(
        stub_cluster: Callable[..., tuple[FakeEngine, ResultStore]], outcomes: list[str],
        runs: int, final: str) -> None:
    engine, store = stub_cluster(outcomes, "evt-1")
    assert len(engine.payloads) == runs
    result = store.get("app", "evt-1")
    assert result is not None and result.outcome == final
    # every run saw the same idempotency key: the event id
    assert {p["idempotency_key"] for p in engine.payloads} == {"evt-1"}


def test_an_event_whose_result_exists_is_acknowledged_without_running(
        stub_cluster: Callable[..., tuple[FakeEngine, ResultStore]]) -> None:
    engine, store = stub_cluster(["ok"], "evt-done", "evt-new", stored="evt-done")
    assert [p["idempotency_key"] for p in engine.payloads] == ["evt-new"]
    done = store.get("app", "evt-done")
    assert done is not None and done.value is None  # the stored one, untouched


def test_a_duplicate_message_keeps_the_first_result(
        stub_cluster: Callable[..., tuple[FakeEngine, ResultStore]]) -> None:
    engine, store = stub_cluster(["ok"], "evt-1", "evt-1")
    assert len(engine.payloads) == 1  # the second found the first's result
    result = store.get("app", "evt-1")
    assert result is not None and result.value == 1


# -- real worker processes on a real redis-server ---------------------------------------------

class Host:
    """One `handlerbox worker` process: its pid, broker id (its name in Redis), shards."""

    def __init__(self, process: subprocess.Popen[str], line: str) -> None:
        self.process, self.pid = process, process.pid
        words = line.split()
        self.broker_id = words[words.index("broker") + 1]
        self.sandboxes: set[int] = set()

    def descendants(self) -> set[int]:
        try:
            found = {p.pid for p in psutil.Process(self.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            found = set()
        self.sandboxes |= found
        return found


@pytest.fixture
def cluster(redis_server: RedisServer, tmp_path: Path) -> Iterator[Any]:
    """Starts hosts on demand (`cluster.start("0,1")`); kills what is left at the end, by pid.
    Hosts share one SQLite file for installations (they run on one machine)."""

    class Cluster:
        namespace = unique_prefix().rstrip(":")
        database = str(tmp_path / "installations.sqlite3")
        hosts: ClassVar[list[Host]] = []
        config = ClusterConfig(redis_url=redis_server.url, namespace=namespace, shards=SHARDS)

        def start(self, consume: str = "all") -> Host:
            log = (tmp_path / f"host-{len(self.hosts)}.log").open("w")
            process = subprocess.Popen(
                [sys.executable, "-m", "handlerbox", "worker", str(APP), "--redis",
                 redis_server.url, "--namespace", self.namespace, "--database",
                 self.database, "--consume", consume, *HOST_OPTIONS],
                stdout=subprocess.PIPE, stderr=log, text=True)
            line = process.stdout.readline() if process.stdout else ""
            assert "ready" in line, f"the host did not start: {line!r}; see {log.name}"
            host = Host(process, line)
            host.descendants()
            self.hosts.append(host)
            return host

    made = Cluster()
    Database(made.database).close()
    yield made
    for host in made.hosts:
        host.descendants()
        for pid in (host.pid, *host.sandboxes):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        host.process.wait(10)


def install(cluster: Any, *accounts: str) -> None:
    """Installations straight into the hosts' shared store (as `handlerbox run` does)."""
    database = Database(cluster.database)
    store = SQLiteInstallations(database)
    for account in accounts:
        store.add("cluster_slow", account, version="1", domain="acme.example.com",
                  region="US", iparams={})
    database.close()


def account_in(shard: int, start: int = 0) -> str:
    """An account whose cluster_slow installation hashes to `shard`."""
    return next(f"acct{n}" for n in range(start, start + 10_000)
                if shard_of("cluster_slow", f"acct{n}", SHARDS) == shard)


def runs_of(cluster: Any, account: str, counter: str = "runs") -> int:
    """How many times a handler ran for `account` (it counts in the shared Redis store)."""
    kv = RedisKV(redis.Redis.from_url(cluster.config.redis_url), prefix=f"{cluster.namespace}:")
    found = kv.get(f"cluster_slow/{account}", counter, time.time())
    kv.client.close()
    return 0 if found is None else int(json.loads(found)["n"])


def unacked(cluster: Any, host: Host) -> int:
    """Messages `host` has fetched and not acknowledged (Dramatiq's ack sets in Redis)."""
    client = redis.Redis.from_url(cluster.config.redis_url)
    total = sum(client.scard(f"{cluster.namespace}:__acks__.{host.broker_id}.{event_queue(s)}")
                for s in range(SHARDS))
    client.close()
    return int(total)


def all_results(producer: Producer, events: dict[str, str], timeout: float
                ) -> dict[str, InvocationResult]:
    def collect() -> dict[str, InvocationResult] | None:
        found = {e: producer.event_result("cluster_slow", e) for e in events}
        return None if None in found.values() else found  # type: ignore[return-value]

    return until(collect, timeout, "every event's result", every=0.1)  # type: ignore[no-any-return]


@pytest.mark.timeout(60)
def test_every_event_has_one_result_when_a_host_is_killed_mid_handler(cluster: Any) -> None:
    victim, survivor = cluster.start(), cluster.start()
    producer = Producer(cluster.config)
    loops = LOOPS_PER_SECOND // 2
    events = {producer.send_event("cluster_slow", make_payload(
        "onCallCreate", account_id=f"k{i}", loops=loops, n=i), event_id=f"evt-{i}"): f"k{i}"
        for i in range(8)}
    until(lambda: unacked(cluster, victim), 10, "the victim to hold unacked events")
    os.kill(victim.pid, signal.SIGKILL)  # in the middle of its handlers
    victim.process.wait(5)
    results = all_results(producer, events, 40)
    for event_id, result in results.items():
        assert result.outcome == "ok", result.error
        assert result.value["key"] == event_id  # the handler got the event id as its key
    assert unacked(cluster, victim) == 0  # its messages went back to the queues
    assert all(runs_of(cluster, account) >= 1 for account in events.values())
    # a redelivery of a finished event is acknowledged without running again
    before = runs_of(cluster, "k0")
    producer.send_event("cluster_slow", make_payload("onCallCreate", account_id="k0"),
                        event_id="evt-0")
    client = redis.Redis.from_url(cluster.config.redis_url)
    queue = f"{cluster.namespace}:{event_queue(shard_of('cluster_slow', 'k0', SHARDS))}.msgs"
    until(lambda: client.hlen(queue) == 0, 10, "the duplicate to be acknowledged")
    client.close()
    assert runs_of(cluster, "k0") == before
    assert producer.event_result("cluster_slow", "evt-0") == results["evt-0"]
    # a stop drains: SIGTERM while a handler runs, its result is still stored
    producer.send_event("cluster_slow", make_payload("onCallCreate", account_id="k9",
                                                     loops=loops), event_id="evt-last")
    until(lambda: unacked(cluster, survivor), 10, "the survivor to take the last event")
    time.sleep(0.2)  # fetched, and now started on an idle thread
    survivor.process.send_signal(signal.SIGTERM)
    assert survivor.process.wait(30) == 0
    last = producer.event_result("cluster_slow", "evt-last")
    assert last is not None and last.outcome == "ok"
    producer.close()


@pytest.mark.timeout(60)
def test_shards_run_on_their_hosts_and_fail_over(cluster: Any) -> None:
    first = cluster.start("0,1")
    second = cluster.start("1,2,3")
    producer = Producer(cluster.config)
    only_first, shared, only_second = account_in(0), account_in(1), account_in(2)
    events = {producer.send_event("cluster_slow", make_payload(
        "onCallCreate", account_id=account, n=i)): account
        for i, account in enumerate([only_first, shared, only_second] * 2)}
    results = all_results(producer, events, 20)
    by_account: dict[str, set[int]] = {}
    for event_id, account in events.items():
        by_account.setdefault(account, set()).add(results[event_id].worker_pid or 0)
    assert by_account[only_first] <= first.descendants()  # affinity: shard 0 is first's
    assert by_account[only_second] <= second.descendants()
    # the first host dies: its shared shard drains on the second; shard 0 waits for a host
    os.kill(first.pid, signal.SIGKILL)
    first.process.wait(5)
    waiting = producer.send_event("cluster_slow", make_payload("onCallCreate",
                                                               account_id=only_first))
    drained = producer.send_event("cluster_slow", make_payload("onCallCreate",
                                                               account_id=shared))
    shared_result = all_results(producer, {drained: shared}, 20)[drained]
    assert shared_result.worker_pid in second.descendants()
    assert producer.event_result("cluster_slow", waiting) is None  # nobody serves shard 0
    replacement = cluster.start("0")
    late = all_results(producer, {waiting: only_first}, 20)[waiting]
    assert late.outcome == "ok" and late.worker_pid in replacement.descendants()
    producer.close()


@pytest.mark.timeout(60)
def test_sync_calls_answer_ahead_of_an_event_backlog_and_time_out(cluster: Any) -> None:
    install(cluster, "m1")
    producer = Producer(cluster.config)
    # no host yet: the caller times out, and the call is dropped unstarted (max age)
    with pytest.raises(CallTimeout):
        producer.call_method("cluster_slow", "m1", "countMethod", {}, timeout=1)
    cluster.start()
    answer = producer.call_method("cluster_slow", "m1", "quickMethod", {"x": 1}, timeout=10)
    assert (answer.status, answer.value) == (200, {"echo": {"x": 1}, "account": "m1"})
    client = redis.Redis.from_url(cluster.config.redis_url)
    calls = f"{cluster.namespace}:{call_queue(shard_of('cluster_slow', 'm1', SHARDS))}.msgs"
    until(lambda: client.hlen(calls) == 0, 10, "the stale call to be dropped")
    client.close()
    assert runs_of(cluster, "m1", "calls") == 0  # it never ran
    counted = producer.call_method("cluster_slow", "m1", "countMethod", {}, timeout=10)
    assert counted.value == {"calls": 1}  # a call in time runs, and counts
    missing = producer.call_method("cluster_slow", "nobody", "quickMethod", {}, timeout=10)
    assert missing.status == 400 and missing.error is not None
    with pytest.raises(InstallationNotFound):
        producer.call_setup("cluster_slow", "nobody", "onAppUninstall", timeout=10)
    # set-up events: the answer, or the engine's own error, reaches the caller
    reply = producer.call_setup("cluster_slow", "s1", "onAppInstall",
                                domain="acme.example.com", iparams={"mode": "ok"}, timeout=10)
    assert reply.installation is not None and reply.installation.account_id == "s1"
    with pytest.raises(SetupBlocked, match="blocked by the test"):
        producer.call_setup("cluster_slow", "s2", "onAppInstall", domain="acme.example.com",
                            iparams={"mode": "block"}, timeout=10)
    with pytest.raises(InstallationExists):
        producer.call_setup("cluster_slow", "s1", "onAppInstall", domain="acme.example.com",
                            timeout=10)
    # a backlog of slow events on the same shards does not hold a call back
    backlog = [producer.send_event("cluster_slow", make_payload(
        "onCallCreate", account_id=f"b{i}", loops=LOOPS_PER_SECOND // 4)) for i in range(16)]
    time.sleep(0.3)
    assert producer.call_method("cluster_slow", "m1", "quickMethod", {}, timeout=10).ok
    pending = [e for e in backlog if producer.event_result("cluster_slow", e) is None]
    assert len(pending) >= 4  # the call was answered while the backlog was still queued
    # a call that cannot finish within its timeout raises CallTimeout at the timeout
    started = time.monotonic()
    with pytest.raises(CallTimeout):
        producer.call_method("cluster_slow", "m1", "slowMethod",
                             {"loops": LOOPS_PER_SECOND * 8}, timeout=1)
    assert 0.9 <= time.monotonic() - started < 5
    producer.close()
