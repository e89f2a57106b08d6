"""Fairness: caps per app and per installation, and waiting dispatches served across apps, so one
app's flood of slow handlers cannot hold back another app's dispatches."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from conftest import APPS, make_payload

from handlerbox import Engine, EngineConfig
from handlerbox.runtime.errors import Overloaded
from handlerbox.runtime.fairness import Admission, Waiter

SLOW_LOOPS = 4 * 10**7
"""echo's onAgentUpdate with this many loops runs for about a second."""


# -- admission, alone ------------------------------------------------------------------------

def test_caps_per_app_and_per_installation_bound_running_dispatches() -> None:
    admission = Admission(budget=4, per_app=2, per_installation=1)
    assert admission.admit("a/1") and not admission.admit("a/1")  # the installation's cap
    assert admission.admit("a/2") and not admission.admit("a/3")  # the app's cap
    assert admission.admit("b/1") and admission.admit("c/1")
    assert not admission.admit("d/1")  # the budget
    assert (admission.running, admission.by_app) == (4, {"a": 2, "b": 1, "c": 1})


def test_none_caps_mean_the_budget() -> None:
    admission = Admission(budget=3)
    assert [admission.admit("a/1") for _ in range(4)] == [True, True, True, False]


def test_a_freed_slot_goes_to_the_app_running_fewest_then_apps_take_turns() -> None:
    admission = Admission(budget=2)
    assert admission.admit("a/1") and admission.admit("a/1")
    flood = [Waiter("a/1") for _ in range(5)]
    for waiter in flood:
        admission.enqueue(waiter)
    others = [Waiter("b/1"), Waiter("c/1")]
    for waiter in others:
        admission.enqueue(waiter)
    # a runs two, b and c none: b goes first (it queued before c), ahead of a's backlog
    assert admission.free("a/1") == [others[0]]
    # a, b and c run none, one and none: of a and c, a's waiter has waited longest
    assert admission.free("a/1") == [flood[0]]
    # a and b run one each, c none: c, though a's waiters came first
    assert admission.free("b/1") == [others[1]]
    assert admission.free("c/1") == [flood[1]]
    assert all(w.granted for w in [*others, *flood[:2]])
    assert admission.waiting == 3


def test_a_waiter_whose_installation_is_at_its_cap_keeps_its_place() -> None:
    admission = Admission(budget=2, per_installation=1)
    assert admission.admit("a/1") and admission.admit("b/1")
    same, other = Waiter("a/1"), Waiter("a/2")
    admission.enqueue(same)
    admission.enqueue(other)
    assert admission.free("b/1") == [other]  # a/1 still runs: its waiter is passed over
    assert admission.free("a/1") == [same]


def test_a_freed_slot_is_handed_over_never_left_for_a_newcomer() -> None:
    admission = Admission(budget=1)
    assert admission.admit("a/1")
    waiter = Waiter("b/1")
    admission.enqueue(waiter)
    assert admission.free("a/1") == [waiter]
    assert not admission.admit("c/1")  # the slot is the waiter's


def test_a_granted_waiter_that_gives_up_hands_its_slot_on() -> None:
    admission = Admission(budget=1)
    assert admission.admit("a/1")
    first, second = Waiter("a/1"), Waiter("b/1")
    admission.enqueue(first)
    admission.enqueue(second)
    assert admission.free("a/1") == [first]
    assert not admission.withdraw(first)  # granted: no longer queued
    assert admission.free(first.key) == [second]  # what a cancelled or timed-out one does
    assert admission.withdraw(Waiter("z/1")) is False


@pytest.mark.parametrize("max_queue, per_installation, message", [
    (1, 5, "the wait queue is full"),
    (5, 1, "this installation's wait queue is full"),
])
def test_full_queues_refuse_at_once(max_queue: int, per_installation: int,
                                    message: str) -> None:
    admission = Admission(budget=1, max_queue=max_queue,
                          max_queue_per_installation=per_installation)
    assert admission.admit("a/1")
    admission.enqueue(Waiter("a/1"))
    with pytest.raises(Overloaded, match=message):
        admission.enqueue(Waiter("a/1"))
    if per_installation == 1:  # another installation still queues
        admission.enqueue(Waiter("b/1"))
        assert admission.waiting == 2


def test_drain_returns_every_waiter_ungranted() -> None:
    admission = Admission(budget=1)
    admission.admit("a/1")
    waiters = [Waiter("a/1"), Waiter("b/1"), Waiter("a/2")]
    for waiter in waiters:
        admission.enqueue(waiter)
    assert sorted(admission.drain(), key=waiters.index) == waiters
    assert admission.waiting == 0 and not any(w.granted for w in waiters)


# -- through an engine -----------------------------------------------------------------------

class Flood:
    """`count` slow dispatches of `app` from threads; counts those finished."""

    def __init__(self, engine: Engine, app: Any, count: int) -> None:
        self.done = 0
        self.outcomes: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.one, args=(engine, app)) for _ in
                        range(count)]
        for thread in self.threads:
            thread.start()

    def one(self, engine: Engine, app: Any) -> None:
        result = engine.dispatch(app, make_payload("onAgentUpdate", loops=SLOW_LOOPS))
        with self.lock:
            self.done += 1
            self.outcomes.append(result.outcome)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(120)


def wait_until(condition: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.005)


@pytest.mark.timeout(120)
def test_another_apps_dispatch_waits_for_one_slot_not_for_the_flood() -> None:
    """workers=2, no caps: A floods with 8 slow handlers (2 run, 6 wait). B's dispatch gets
    the first slot that comes free, ahead of A's backlog: when B is done, at most one of A's
    handlers has finished (two when both running ones end together), and A still runs."""
    with Engine(workers=2, spares=0) as engine:
        flooder = engine.load_app(APPS / "echo", timeout=60)
        other = engine.load_app(APPS / "echo", timeout=60)
        flood = Flood(engine, flooder, 8)
        wait_until(lambda: engine.stats()["busy"] == 2 and engine.stats()["waiting"] == 6)
        result = engine.dispatch(other, make_payload())
        finished_before_b = flood.done
        assert result.outcome == "ok" and result.value["account_id"] == "82918"
        assert finished_before_b <= 2
        assert engine.stats()["busy"] >= 1  # A's handlers still run
        flood.join()
        assert flood.outcomes == ["ok"] * 8


@pytest.mark.timeout(120)
def test_with_a_cap_per_app_another_app_never_waits_for_the_flood() -> None:
    """workers=2, max_concurrency_per_app=1: A holds one slot and queues the rest; B's
    dispatches find the other slot free, and all finish before A's first handler does."""
    config = EngineConfig(workers=2, max_concurrency_per_app=1)
    with Engine(config=config, spares=0) as engine:
        if engine._pool.admission.per_app != 1:
            pytest.skip("runtime/engine.py does not pass the caps to the pool yet "
                        "(Pool.from_config)")
        flooder = engine.load_app(APPS / "echo", timeout=60)
        other = engine.load_app(APPS / "echo", timeout=60)
        flood = Flood(engine, flooder, 4)
        wait_until(lambda: engine.stats()["busy"] == 1 and engine.stats()["waiting"] == 3)
        results = [engine.dispatch(other, make_payload(account_id=f"acct-{i}"))
                   for i in range(5)]
        assert flood.done == 0  # A's first handler still runs
        assert [r.outcome for r in results] == ["ok"] * 5
        flood.join()
        assert flood.outcomes == ["ok"] * 4


@pytest.mark.timeout(120)
def test_a_cap_per_installation_queues_its_own_dispatches_only() -> None:
    config = EngineConfig(workers=3, max_concurrency_per_installation=1)
    with Engine(config=config, spares=0) as engine:
        if engine._pool.admission.per_installation != 1:
            pytest.skip("runtime/engine.py does not pass the caps to the pool yet "
                        "(Pool.from_config)")
        app = engine.load_app(APPS / "echo", timeout=60)
        flood = Flood(engine, app, 2)  # one installation (account 82918): one runs, one waits
        wait_until(lambda: engine.stats()["busy"] == 1 and engine.stats()["waiting"] == 1)
        result = engine.dispatch(app, make_payload(account_id="another-account"))
        assert result.outcome == "ok" and flood.done == 0
        flood.join()
        assert flood.outcomes == ["ok"] * 2


@pytest.mark.timeout(120)
def test_a_long_running_handler_is_demoted_on_the_cpu_until_its_worker_runs_a_short_one(
        ) -> None:
    """Over fairness.DEMOTE_AFTER_SECONDS a handler runs at nice 19 (process and autogroup);
    its worker stays demoted after it (its app's next dispatch is likely long too) until it
    serves a short dispatch."""
    import os

    with Engine(workers=1, spares=0) as engine:
        app = engine.load_app(APPS / "echo", timeout=60)
        flood = Flood(engine, app, 1)
        wait_until(lambda: engine.stats()["busy"] == 1)
        pid = next(s["pid"] for s in engine.worker_states() if s["state"] == "busy")
        wait_until(lambda: os.getpriority(os.PRIO_PROCESS, pid) == 19)
        flood.join()
        assert flood.outcomes == ["ok"]
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19  # idle, still demoted
        result = engine.dispatch(app, make_payload())
        assert result.outcome == "ok" and result.worker_pid == pid
        if os.geteuid() == 0:
            assert os.getpriority(os.PRIO_PROCESS, pid) == 0
        else:  # raising a priority needs CAP_SYS_NICE: the worker is not kept at nice 19
            wait_until(lambda: pid not in [s["pid"] for s in engine.worker_states()])
