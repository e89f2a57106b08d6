"""Backpressure and shutdown: bounded queues answer `overloaded` at once; close(drain=True)
lets in-flight dispatches finish; nothing is left running after close, SIGTERM or SIGKILL."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from handlerbox import Engine
from handlerbox.runtime.errors import EngineClosed
from tests.conftest import APPS, make_payload


def _busy(engine: Engine, app: Any, results: list[Any], data: dict[str, Any]) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(
        engine.dispatch(app, make_payload("onAgentUpdate", **data))))
    thread.start()
    return thread


def _wait_until(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


def test_per_app_queue_bound_answers_overloaded_while_other_apps_still_queue() -> None:
    with Engine(workers=1, max_queue=10, max_queue_per_app=1) as engine:
        app = engine.load_app(APPS / "echo", timeout=5)
        results: list[Any] = []
        first = _busy(engine, app, results, {"loops": 3 * 10**7})
        _wait_until(lambda: engine.stats()["busy"] == 1)
        second = _busy(engine, app, results, {"loops": 10})
        _wait_until(lambda: engine.stats()["waiting"] == 1)
        third = engine.dispatch(app, make_payload("onAgentUpdate", loops=10))
        assert third.outcome == "overloaded"
        first.join(30)
        second.join(30)
        assert sorted(r.outcome for r in results) == ["ok", "ok"]


def test_close_with_drain_lets_in_flight_dispatches_finish_and_refuses_new_ones() -> None:
    engine = Engine(workers=2)
    app = engine.load_app(APPS / "echo", timeout=10)
    results: list[Any] = []
    busy = _busy(engine, app, results, {"loops": 3 * 10**7})
    _wait_until(lambda: engine.stats()["busy"] == 1)
    closer = threading.Thread(target=engine.close, kwargs={"drain": True})
    closer.start()
    _wait_until(lambda: engine.closed)
    with pytest.raises(EngineClosed, match="closed"):
        engine.dispatch(app, make_payload())
    busy.join(30)
    closer.join(30)
    assert [r.outcome for r in results] == ["ok"]
    assert results[0].value == sum(range(3 * 10**7))


def test_close_without_drain_kills_in_flight_work_which_still_gets_a_result() -> None:
    engine = Engine(workers=1)
    app = engine.load_app(APPS / "forever", timeout=30)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(
        engine.dispatch(app, make_payload())))
    thread.start()
    _wait_until(lambda: engine.stats()["busy"] == 1)
    engine.close(drain=False)
    thread.join(10)
    assert [r.outcome for r in results] == ["crashed"]


def test_async_dispatches_drain_too() -> None:
    engine = Engine(workers=2)
    app = engine.load_app(APPS / "echo")

    async def run() -> list[Any]:
        calls = [asyncio.ensure_future(engine.dispatch_async(app, make_payload(id=n)))
                 for n in range(20)]
        await asyncio.sleep(0)
        closing = asyncio.get_running_loop().run_in_executor(None, engine.close)
        done = await asyncio.gather(*calls)
        await closing
        return done

    assert [r.outcome for r in asyncio.run(run())] == ["ok"] * 20


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_no_process_outlives_a_host_that_is_terminated(tmp_path: Path, how: int) -> None:
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from handlerbox import Engine
        from tests.conftest import APPS, make_payload
        engine = Engine(workers=2)
        for name in ("echo", "state_leak"):
            engine.dispatch(engine.load_app(APPS / name), make_payload())
        print(engine.zygote_pid, flush=True)
        sys.stdin.read()
    """))
    host = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert host.stdout is not None
    zygote = psutil.Process(int(host.stdout.readline()))
    tree = [zygote, *zygote.children(recursive=True)]
    assert len(tree) >= 3  # the zygote, two bound workers, a spare
    host.send_signal(how)
    host.wait(10)
    _, alive = psutil.wait_procs(tree, timeout=2)
    assert not alive, f"left behind: {[p.pid for p in alive]}"
