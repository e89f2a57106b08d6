"""The crash matrix: a worker dies, hangs or breaks the protocol at each stage of its life;
the caller always gets exactly one result, and the engine serves the next dispatch."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from handlerbox import Engine
from tests.conftest import APPS, make_payload

DEATHS = ("sigkill", "sigsegv", "exit")
SIGNALLED = {"sigkill": "SIGKILL(-9)", "sigsegv": "SIGSEGV(-11)", "exit": "exit(7)"}

MATRIX = [
    # before the handler starts, a death is not the caller's problem: another worker serves
    *[(stage, action, "ok", "") for stage in ("start", "wait", "read") for action in DEATHS],
    *[(stage, "hang", "timeout", "Timeout error") for stage in ("start", "wait", "read")],
    # while the handler runs: crashed, with the signal or exit status named
    *[("run", action, "crashed", SIGNALLED[action]) for action in DEATHS],
    ("run", "hang", "timeout", "Timeout error"),
    ("run", "flood", "ok", ""),  # stdout/stderr are not the channel
    # writing the result: the protocol is broken, the worker killed
    ("write", "malformed", "crashed", "broke the protocol"),
    ("write", "overcap", "crashed", "broke the protocol"),
    ("write", "garbage", "crashed", "broke the protocol"),
    ("write", "half", "crashed", "died while running the handler"),
    ("write", "sigkill", "crashed", "SIGKILL(-9)"),
    # between invocations: the next dispatch goes to another worker
    *[("between", action, "ok", "") for action in DEATHS],
]


@pytest.mark.parametrize("stage, action, outcome, text", MATRIX,
                         ids=[f"{s}-{a}" for s, a, _, _ in MATRIX])
def test_a_fault_gives_one_clear_result_and_the_engine_recovers(
        stage: str, action: str, outcome: str, text: str) -> None:
    fault = {"stage": stage, "action": action, "count": 1}
    # no spares: the dispatch's own worker is the first one forked, the one with the fault
    with Engine(workers=1, spares=0, inject_fault=fault) as engine:
        app = engine.load_app(APPS / "echo", timeout=0.5)
        first = engine.dispatch(app, make_payload(id=1))
        assert first.outcome == outcome, first.error
        if text:
            assert text in first.error.message
        else:
            assert first.value == {"account_id": "82918", "data": {"id": 1}}
        following = [engine.dispatch(app, make_payload(id=n)) for n in range(2, 5)]
        assert [r.outcome for r in following] == ["ok"] * 3


def test_between_invocations_fault_under_recycling_loses_nothing() -> None:
    fault = {"stage": "between", "action": "sigkill", "count": 3}
    with Engine(workers=1, recycle_after=1, inject_fault=fault) as engine:
        app = engine.load_app(APPS / "echo")
        assert [engine.dispatch(app, make_payload()).outcome for _ in range(6)] == ["ok"] * 6


def test_killing_the_zygote_does_not_lose_dispatches() -> None:
    with Engine(workers=2) as engine:
        app = engine.load_app(APPS / "echo")
        assert engine.dispatch(app, make_payload()).outcome == "ok"
        zygote = engine.zygote_pid
        assert zygote is not None
        os.kill(zygote, signal.SIGKILL)
        time.sleep(0.1)  # its workers die with it (PR_SET_PDEATHSIG)
        outcomes = [engine.dispatch(app, make_payload()).outcome for _ in range(4)]
        assert outcomes == ["ok"] * 4
        assert engine.zygote_pid != zygote


def test_workers_killed_from_outside_under_load_still_give_one_result_each() -> None:
    with Engine(workers=2) as engine:
        app = engine.load_app(APPS / "echo")
        results: list[str] = []
        stop = threading.Event()

        def injector() -> None:
            while not stop.is_set():
                for worker in engine.workers():
                    try:
                        os.kill(worker.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                stop.wait(0.05)

        def client() -> None:
            for n in range(40):
                results.append(engine.dispatch(app, make_payload(id=n)).outcome)

        killer = threading.Thread(target=injector)
        clients = [threading.Thread(target=client) for _ in range(4)]
        killer.start()
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(60)
        stop.set()
        killer.join()
        assert len(results) == 160
        assert set(results) <= {"ok", "crashed"}
        assert results.count("ok") > 0
        assert engine.dispatch(app, make_payload()).outcome == "ok"


def test_a_misspelt_fault_is_a_config_error() -> None:
    from handlerbox.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="stage must be one of"):
        Engine(workers=1, inject_fault={"stage": "runn", "action": "sigkill", "count": 1})
