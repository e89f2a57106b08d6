"""The Engine's contract: one result per dispatch, host-owned deadlines, isolation per app."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from handlerbox import Engine
from handlerbox.runtime.errors import AppLoadError, ConfigError, ManifestError
from handlerbox.sandbox import CompileError
from tests.conftest import APPS, EXAMPLES, make_payload


def test_dispatch_returns_the_handler_value_and_logs(engine: Engine) -> None:
    app = engine.load_app(APPS / "echo")
    result = engine.dispatch(app, make_payload(id=7))
    assert result.outcome == "ok"
    assert result.value == {"account_id": "82918", "data": {"id": 7}}
    assert result.logs == "echo 82918\n"
    assert (result.app, result.event, result.handler) == ("echo", "onCallCreate", "echo")
    assert result.timeout_s == 20.0 and result.cpu_ms is not None and result.max_rss_kb
    assert '"outcome":"ok"' in result.model_dump_json()


def test_handler_error_carries_type_message_and_handler_frames(engine: Engine) -> None:
    app = engine.load_app(APPS / "echo")
    result = engine.dispatch(app, make_payload("onCallUpdate", id=3))
    assert result.outcome == "handler_error" and result.value is None
    assert (result.error.type, result.error.message) == ("ValueError", "bad call 3")
    assert 'File "server/server.py", line 10, in fail' in result.error.traceback
    assert "runtime" not in result.error.traceback and "sandbox" not in result.error.traceback


@pytest.mark.parametrize("request_timeout, override, expected", [
    (None, None, 20.0), (15, None, 20.0), (20, None, 40.0), (25, None, 40.0),
    (30, None, 40.0), (None, 0.5, 0.5), (30, 2.0, 2.0),
])
def test_app_execution_timeout_follows_the_rule(engine: Engine, request_timeout: int | None,
                                                override: float | None,
                                                expected: float) -> None:
    app = engine.load_app(APPS / "echo", request_timeout=request_timeout, timeout=override)
    assert app.execution_timeout == expected


def test_invalid_request_timeout_lists_the_valid_values(engine: Engine) -> None:
    with pytest.raises(ConfigError, match=r"15 .*20, 25 or 30"):
        engine.load_app(APPS / "echo", request_timeout=17)


@pytest.mark.parametrize("app_name", ["forever", "c_burn", "catch_all"])
def test_runaway_handlers_time_out_and_the_app_recovers(engine: Engine, app_name: str) -> None:
    app = engine.load_app(APPS / app_name, timeout=0.5)
    result = engine.dispatch(app, make_payload("onCallCreate"))
    assert result.outcome == "timeout"
    assert result.error.message.startswith("Timeout error while processing the request.")
    assert "0.5 s" in result.error.message
    assert 500 <= result.duration_ms
    assert _dead(result.worker_pid)
    after = engine.dispatch(app, make_payload("onCallUpdate"))
    assert after.outcome == "ok" and after.value == {"ok": True}


def test_memory_bomb_ends_as_memory_limit_and_the_app_recovers(engine: Engine) -> None:
    app = engine.load_app(APPS / "memory_bomb", timeout=10)
    result = engine.dispatch(app, make_payload("onCallCreate"))
    assert result.outcome == "memory_limit"
    assert "256 MiB" in result.error.message
    assert engine.dispatch(app, make_payload("onCallUpdate")).outcome == "ok"


def test_worker_killed_mid_dispatch_is_crashed_with_the_signal(engine: Engine) -> None:
    app = engine.load_app(APPS / "forever", timeout=30)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(
        engine.dispatch(app, make_payload("onCallCreate"))))
    thread.start()
    pid = _wait_for_busy_worker(engine, app.key)
    os.kill(pid, signal.SIGKILL)
    thread.join(10)
    (result,) = results
    assert result.outcome == "crashed"
    assert "SIGKILL(-9)" in result.error.message
    assert engine.dispatch(app, make_payload("onCallUpdate")).outcome == "ok"


def test_no_state_survives_between_invocations(engine: Engine) -> None:
    app = engine.load_app(APPS / "state_leak")
    seen = [engine.dispatch(app, make_payload(account_id=f"acct-{i}")).value["seen"]
            for i in range(4)]
    assert seen == [["acct-0"], ["acct-1"], ["acct-2"], ["acct-3"]]


def test_two_apps_never_share_a_worker(engine: Engine) -> None:
    first = engine.load_app(APPS / "echo")
    second = engine.load_app(APPS / "state_leak")
    pids: dict[str, set[int]] = {first.key: set(), second.key: set()}
    for _ in range(6):
        for app in (first, second):
            result = engine.dispatch(app, make_payload())
            assert result.outcome == "ok"
            pids[app.key].add(result.worker_pid)
    assert not pids[first.key] & pids[second.key]


def test_idle_apps_give_their_workers_back_under_a_budget_of_one() -> None:
    with Engine(workers=1) as engine:
        apps = [engine.load_app(APPS / "echo"), engine.load_app(APPS / "state_leak")]
        outcomes = [engine.dispatch(app, make_payload()).outcome for app in apps * 3]
        assert outcomes == ["ok"] * 6
        assert engine.stats()["bound"] <= 1


def test_full_queue_answers_overloaded_at_once() -> None:
    with Engine(workers=1, max_queue=0) as engine:
        slow = engine.load_app(APPS / "forever", timeout=3)
        busy = threading.Thread(target=engine.dispatch, args=(slow, make_payload()))
        busy.start()
        _wait_for_busy_worker(engine, slow.key)
        result = engine.dispatch(engine.load_app(APPS / "echo"), make_payload())
        assert result.outcome == "overloaded"
        busy.join(10)


def test_invalid_payload_and_unsubscribed_event_are_results_not_exceptions(
        engine: Engine) -> None:
    app = engine.load_app(APPS / "echo")
    bad = engine.dispatch(app, {**make_payload(), "region": "XX"})
    assert bad.outcome == "invalid_payload" and "payload.region" in bad.error.message
    other = engine.dispatch(app, make_payload("onTicketCreate"))
    assert other.outcome == "not_subscribed" and "onTicketCreate" in other.error.message


def test_async_dispatch_serves_100_concurrent_calls(engine: Engine) -> None:
    app = engine.load_app(APPS / "echo")

    async def burst() -> list[Any]:
        return await asyncio.gather(*[
            engine.dispatch_async(app, make_payload(account_id=str(i))) for i in range(100)])

    results = asyncio.run(burst())
    assert [r.value["account_id"] for r in results] == [str(i) for i in range(100)]


def test_async_dispatch_times_out_too(engine: Engine) -> None:
    app = engine.load_app(APPS / "forever", timeout=0.3)
    result = asyncio.run(engine.dispatch_async(app, make_payload()))
    assert result.outcome == "timeout"
    assert asyncio.run(engine.dispatch_async(app, make_payload("onCallUpdate"))).outcome == "ok"


def test_threads_dispatch_concurrently(engine: Engine) -> None:
    app = engine.load_app(APPS / "echo")
    results: list[Any] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        engine.dispatch(app, make_payload(account_id=str(i))))) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(int(r.value["account_id"]) for r in results) == list(range(16))


def test_workers_never_import_pydantic_and_run_in_their_own_group(engine: Engine) -> None:
    app = engine.load_app(APPS / "echo")
    pid = engine.dispatch(app, make_payload()).worker_pid
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "pydantic" not in maps
    assert os.getpgid(pid) == pid
    assert Path(f"/proc/{pid}/status").read_text().count("PPid:\t" + str(os.getpid())) == 0
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert all(not v.startswith(b"HOME=") for v in environ)


@pytest.mark.parametrize("app_dir, error, text", [
    (APPS / "missing", AppLoadError, "not an app directory"),
    (EXAMPLES, ManifestError, "manifest.json: missing"),
])
def test_bad_app_directories_name_what_is_wrong(engine: Engine, app_dir: Path,
                                                error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        engine.load_app(app_dir)


def test_missing_handler_and_compile_errors_fail_the_load(tmp_path: Path,
                                                          engine: Engine) -> None:
    (tmp_path / "server").mkdir()
    (tmp_path / "manifest.json").write_text('{"events": {"onCallCreate": {"handler": "gone"}}}')
    (tmp_path / "server" / "server.py").write_text("def here(payload):\n    return 1\n")
    with pytest.raises(AppLoadError, match="handler 'gone' for onCallCreate is not defined"):
        engine.load_app(tmp_path)
    (tmp_path / "server" / "server.py").write_text("import socket\ndef gone(p):\n    pass\n")
    with pytest.raises(CompileError, match="socket is not available in handlers"):
        engine.load_app(tmp_path)


def test_closed_engine_refuses_work() -> None:
    engine = Engine(workers=1)
    app = engine.load_app(APPS / "echo")
    engine.close()
    from handlerbox.runtime.errors import EngineClosed

    with pytest.raises(EngineClosed):
        engine.dispatch(app, make_payload())


def _dead(pid: int | None) -> bool:
    assert pid is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.01)
    return False


def _wait_for_busy_worker(engine: Engine, app_key: str) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        busy = [w["pid"] for w in engine.worker_states()
                if w["state"] == "busy" and w["installation"].startswith(app_key + "/")]
        if busy:
            time.sleep(0.2)  # let it receive the request and start the handler
            return int(busy[0])
        time.sleep(0.01)
    raise AssertionError("no worker became busy")


def test_close_leaves_no_process_behind() -> None:
    import psutil

    engine = Engine(workers=2)
    app = engine.load_app(APPS / "echo")
    pids = {engine.dispatch(app, make_payload()).worker_pid for _ in range(3)}
    zygote = engine.zygote_pid
    assert zygote is not None
    tree = {zygote, *pids, *(c.pid for c in psutil.Process(zygote).children(recursive=True))}
    engine.close()
    assert all(_dead(pid) for pid in tree)


def test_workers_are_recycled_after_n_invocations_without_failing_any() -> None:
    with Engine(workers=1, recycle_after=2) as engine:
        app = engine.load_app(APPS / "echo")
        results = [engine.dispatch(app, make_payload()) for _ in range(6)]
    assert [r.outcome for r in results] == ["ok"] * 6
    pids = [r.worker_pid for r in results]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
    assert len(set(pids)) == 3


def test_a_worker_whose_memory_grew_is_replaced_between_invocations() -> None:
    with Engine(workers=1, recycle_rss_mb=64) as engine:
        app = engine.load_app(APPS / "hungry")
        small = [engine.dispatch(app, make_payload(mb=1)) for _ in range(2)]
        big = engine.dispatch(app, make_payload(mb=100))
        after = engine.dispatch(app, make_payload(mb=1))
    assert [r.outcome for r in (*small, big, after)] == ["ok"] * 4
    assert small[0].worker_pid == small[1].worker_pid == big.worker_pid
    assert after.worker_pid != big.worker_pid


def test_lone_surrogates_in_logs_and_errors_travel_as_replacement_characters(
        engine: Engine) -> None:
    app = engine.load_app(APPS / "surrogates")
    printed = engine.dispatch(app, make_payload())
    assert printed.outcome == "ok" and printed.logs == "half a pair: ?\n"
    raised = engine.dispatch(app, make_payload("onCallUpdate"))
    assert raised.outcome == "handler_error" and raised.error.message == "bad ? text"


def test_json_bytes_payloads_dispatch_like_dicts(engine: Engine) -> None:
    import json

    app = engine.load_app(APPS / "echo")
    result = engine.dispatch(app, json.dumps(make_payload(id=9)).encode())
    assert result.outcome == "ok" and result.value["data"] == {"id": 9}
    nan = json.dumps(make_payload(x=float("nan"))).encode()
    refused = engine.dispatch(app, nan)
    assert refused.outcome == "invalid_payload" and refused.event == "onCallCreate"
    broken = engine.dispatch(app, b'{"account_id": ')
    assert broken.outcome == "invalid_payload" and "payload" in broken.error.message


def test_a_cancelled_async_dispatch_gives_its_worker_back(engine: Engine) -> None:
    app = engine.load_app(APPS / "forever", timeout=30)

    async def cancel_midway() -> None:
        call = asyncio.ensure_future(engine.dispatch_async(app, make_payload()))
        while not busy():
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    def busy() -> bool:
        return any(w["state"] == "busy" and w["installation"].startswith(app.key + "/")
                   for w in engine.worker_states())

    asyncio.run(cancel_midway())
    assert not busy()
    assert engine.dispatch(app, make_payload("onCallUpdate")).outcome == "ok"


def test_huge_errors_and_escaped_log_floods_stay_within_the_protocol(engine: Engine) -> None:
    app = engine.load_app(APPS / "loud")
    long = engine.dispatch(app, make_payload())
    assert long.outcome == "handler_error" and long.error.type == "ValueError"
    assert long.error.message.endswith("... [991808 more characters]")
    deep = engine.dispatch(app, make_payload("onCallUpdate"))
    assert deep.outcome == "handler_error" and deep.error.type == "RecursionError"
    assert "[Previous line repeated" in deep.error.traceback
    assert "return recurse(n + 1)" in deep.error.traceback
    flood = engine.dispatch(app, make_payload("onAgentUpdate"))
    assert flood.outcome == "ok" and flood.value == "done"
    assert flood.logs.endswith("more bytes dropped]\n") and "\x00" * 1000 in flood.logs


def test_secure_iparams_never_reach_logs_errors_or_values(engine: Engine) -> None:
    app = engine.load_app(APPS / "secure_iparams")
    payload = {**make_payload("onTicketCreate"), "iparams": {"token": "s3cr3t-value",
                                                             "name": "bob"}}
    printed = engine.dispatch(app, payload)
    assert printed.value == {"t": "********", "n": "bob"}
    assert printed.logs == "token is ********\n"
    failed = engine.dispatch(app, {**payload, "data": {"fail": True}})
    assert failed.outcome == "handler_error" and "s3cr3t-value" not in failed.model_dump_json()
    assert failed.error.message == "bad ********"


def test_logging_records_travel_in_the_result_with_their_level(engine: Engine) -> None:
    app = engine.load_app(APPS / "logging_app")
    result = engine.dispatch(app, make_payload(id=7))
    assert result.outcome == "ok" and result.value == "done"
    assert [(r.level, r.logger, r.message) for r in result.log_records] == [
        ("WARNING", "calls", "call 7 is long"), ("ERROR", "calls.audit", "audit")]
    assert "WARNING:calls:call 7 is long" in result.logs
    failed = engine.dispatch(app, make_payload("onCallUpdate"))
    assert failed.outcome == "handler_error"
    assert [(r.level, r.message) for r in failed.log_records] == [("ERROR", "about to fail")]
