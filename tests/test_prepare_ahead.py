"""Prepare-ahead (runtime.worker, with sandbox.runner.prepare): a worker may run the next
invocation's module body right after its reply, but nothing may show it: every invocation sees
a fresh module, its own logs, a clock read after its request came (give or take
worker.PREPARED_MAX_AGE), and service calls made by the module body itself."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import APPS, make_payload

from handlerbox import Engine
from handlerbox.runtime import worker

pytestmark = pytest.mark.skipif(
    worker.prepare_module is None,
    reason="sandbox.runner has no prepare() yet: workers run every module body on the "
           "request path (nothing to test)")


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine(workers=1, spares=0) as shared:
        yield shared


def test_every_invocation_sees_a_fresh_module_and_its_own_logs(engine: Engine) -> None:
    app = engine.load_app(APPS / "prepare_probe")
    results = [engine.dispatch(app, make_payload(n=i)) for i in range(5)]
    assert [r.outcome for r in results] == ["ok"] * 5
    assert [r.value["seen"] for r in results] == [[0], [1], [2], [3], [4]]
    assert all(r.logs == "module body ran\n" for r in results)
    assert len({r.worker_pid for r in results}) == 1  # one worker, prepared between calls


def test_a_module_body_that_calls_a_service_still_calls_it(engine: Engine) -> None:
    app = engine.load_app(APPS / "prepare_calls")
    results = [engine.dispatch(app, make_payload(n=i)) for i in range(3)]
    assert [r.value["stored"] for r in results] == ["ok"] * 3
    assert all(r.host_calls and r.host_calls[0].service == "db" for r in results)


def test_a_module_prepared_long_ago_reads_the_clock_again(engine: Engine) -> None:
    app = engine.load_app(APPS / "prepare_probe")
    assert engine.dispatch(app, make_payload()).outcome == "ok"
    time.sleep(worker.PREPARED_MAX_AGE + 0.5)
    asked = time.time()
    result = engine.dispatch(app, make_payload())
    assert result.value["loaded_at"] >= asked - 0.25  # not the time of the last reply
