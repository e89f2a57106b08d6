"""The worker pool: the budget counts running dispatches, idle workers stay warm within a memory
cap (least recently used evicted first), a spare is bound at a timeout, and idle workers that
burn CPU are evicted."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import APPS, make_payload

from handlerbox import Engine
from handlerbox.runtime import density
from handlerbox.runtime.errors import Overloaded
from handlerbox.runtime.pool import Pool

CALL = {"id": 7, "participants": [{"name": "Dana"}]}
"""What bench_forever's normal handler (onCallUpdate) reads."""


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine(workers=1, spares=1) as shared:
        yield shared


@pytest.fixture
def pool(engine: Engine) -> Iterator[Pool]:
    """A pool of its own over the engine's zygote: budget 1, one spare."""
    own = Pool(engine._spawner, budget=1, spares=1, recycle_after=1000, max_queue=10)
    try:
        yield own
    finally:
        own.close()


def serve(pool: Pool, key: str) -> int:
    """One pretend dispatch for installation `key`: acquire, release; the worker's pid."""
    lease = pool.acquire(key, 5.0)
    pool.release(lease.worker, healthy=True)
    return lease.worker.pid


def wait_until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def leads_its_group(worker: Any) -> bool:
    """A new worker leads a process group of its own only once it has started (a kill of its
    group before that misses it: WorkerProcess.stop signals the group)."""
    try:
        return os.getpgid(worker.pid) == worker.pid
    except ProcessLookupError:
        return True


def test_idle_warm_workers_do_not_count_against_the_budget(pool: Pool) -> None:
    first = [serve(pool, f"app-x/{i}") for i in range(4)]  # budget 1, four installations
    assert pool.stats()["idle"] == 4 and pool.stats()["bound"] == 0
    assert [serve(pool, f"app-x/{i}") for i in range(4)] == first  # each kept its worker


def test_idle_workers_beyond_the_memory_cap_go_least_recently_used_first(pool: Pool) -> None:
    pool.configure(idle_memory_mb=(2 * pool.warm.typical + (1 << 20)) >> 20)  # room for two
    pids = [serve(pool, f"app-x/{i}") for i in range(4)]
    assert pool.stats()["idle"] == 2
    assert serve(pool, "app-x/3") == pids[3]  # most recently used: still warm
    assert serve(pool, "app-x/0") != pids[0]  # least recently used: evicted, a new one
    assert pool.warm.idle_bytes <= pool.warm.cap


def test_a_new_installation_evicts_an_idle_one_at_the_cap_instead_of_waiting(
        pool: Pool) -> None:
    pool.configure(idle_memory_mb=0)
    pids = [serve(pool, f"app-x/{i}") for i in range(3)]
    assert len(set(pids)) == 3 and pool.stats()["idle"] == 0


def test_idle_workers_are_measured_in_the_background(pool: Pool) -> None:
    serve(pool, "app-x/1")
    worker = next(iter(pool.warm))
    wait_until(lambda: worker in pool.warm._measured)
    measured = pool.warm._measured[worker]
    assert 256 << 10 < measured.uss < 64 << 20  # a worker's private pages: a few MiB
    assert pool.warm.idle_bytes == measured.uss


def test_an_idle_worker_burning_cpu_is_evicted_by_the_sweep(pool: Pool,
                                                            monkeypatch: Any) -> None:
    serve(pool, "app-x/1")
    serve(pool, "app-x/2")
    burning = next(w for w in pool.warm if w.app_key == "app-x/1")
    wait_until(lambda: leads_its_group(burning))
    # As if its invocations had reported far less CPU than the process has used: the rest
    # was spent between invocations.
    burning.cpu_ms = -1000.0 * (density.IDLE_CPU_SECONDS + 1)
    pool._sweep()
    assert [w.app_key for w in pool.warm] == ["app-x/2"]
    wait_until(lambda: burning.exit_status.done())


def test_dead_idle_workers_are_never_handed_out(pool: Pool) -> None:
    pid = serve(pool, "app-x/1")
    victim = next(iter(pool.warm))
    wait_until(lambda: leads_its_group(victim))
    victim.stop()
    wait_until(lambda: victim.exit_status.done())
    assert serve(pool, "app-x/1") != pid


def test_waiters_are_told_when_the_pool_closes(engine: Engine) -> None:
    own = Pool(engine._spawner, budget=1, spares=0, recycle_after=1000, max_queue=10)
    lease = own.acquire("app-x/1", 5.0)
    failures: list[BaseException] = []

    def wait() -> None:
        try:
            own.acquire("app-y/1", 10.0)
        except Overloaded as exc:
            failures.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until(lambda: own.stats()["waiting"] == 1)
    own.close()
    waiter.join(5)
    assert [str(f) for f in failures] == ["the engine is closing"]
    own.release(lease.worker, healthy=True)
    assert own.stats()["bound"] == 0


def test_a_timed_out_waiter_passes_a_late_slot_on(pool: Pool) -> None:
    lease = pool.acquire("app-x/1", 5.0)
    with pytest.raises(Overloaded, match=r"no worker came free within 0\.05 s"):
        pool.acquire("app-y/1", 0.05)
    assert pool.stats()["waiting"] == 0
    pool.release(lease.worker, healthy=True)
    assert pool.stats()["bound"] == 0
    serve(pool, "app-y/1")


def test_dropping_an_installation_kills_its_idle_workers_only(pool: Pool) -> None:
    kept = serve(pool, "app-x/10")  # "app-x/1" is a prefix of its key
    dropped = serve(pool, "app-x/1")
    assert pool.drop("app-x/1") == 1
    assert [w.pid for w in pool.warm] == [kept]
    assert serve(pool, "app-x/10") == kept
    again = serve(pool, "app-x/1")  # the key may be bound again, and kept
    assert again != dropped and serve(pool, "app-x/1") == again


def test_stats_name_slots_idle_memory_and_waiters(pool: Pool) -> None:
    serve(pool, "app-x/1")
    assert set(pool.stats()) == {"bound", "idle", "busy", "spares", "waiting", "idle_mb"}


# -- through an engine -----------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_after_a_timeout_a_spare_bound_at_once_serves_the_installation() -> None:
    with Engine(workers=1, spares=1) as engine:
        app = engine.load_app(APPS / "bench_forever", timeout=0.3)
        spin, normal = make_payload("onCallCreate"), make_payload("onCallUpdate", call=CALL)
        assert engine.dispatch(app, normal).outcome == "ok"
        wait_until(lambda: engine.stats()["spares"] == 1)
        spare = next(s["pid"] for s in engine.worker_states() if s["state"] == "spare")
        assert engine.dispatch(app, spin).outcome == "timeout"
        installation = f"{app.key}/82918"
        assert {"pid": spare, "state": "idle", "installation": installation} in (
            engine.worker_states())
        result = engine.dispatch(app, normal)
        assert result.outcome == "ok" and result.worker_pid == spare


@pytest.mark.timeout(60)
def test_the_spare_used_at_a_timeout_is_replaced() -> None:
    with Engine(workers=1, spares=1) as engine:
        app = engine.load_app(APPS / "bench_forever", timeout=0.3)
        assert engine.dispatch(app, make_payload("onCallCreate")).outcome == "timeout"
        wait_until(lambda: engine.stats()["spares"] == 1)
        assert engine.dispatch(app, make_payload("onCallUpdate", call=CALL)).outcome == "ok"


def test_a_retired_installation_gets_no_spare_at_its_timeout() -> None:
    with Engine(workers=1, spares=1) as engine:
        app = engine.load_app(APPS / "bench_forever", timeout=0.3)
        wait_until(lambda: engine.stats()["spares"] == 1)
        result: list[Any] = []
        call = threading.Thread(target=lambda: result.append(
            engine.dispatch(app, make_payload("onCallCreate"))))
        call.start()
        wait_until(lambda: engine.stats()["busy"] == 1)
        engine.load_app(APPS / "bench_forever", timeout=0.3)  # replaces the version running
        call.join(10)
        assert result[0].outcome == "timeout"
        assert not [s for s in engine.worker_states() if s["state"] == "idle"]
