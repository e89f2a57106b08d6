"""Host services end to end through the public Engine API: the key-value store (`db`) on a real
SQLite file, request templates against a real HTTP server on 127.0.0.1 (tests/httpserver.py),
the invocation's deadline during a host call, the cap on calls per invocation, and async
dispatch with host calls.

The app is tests/apps/platform_http, copied per module with its templates pointed at the
local server's port. Installations are written with `engine.installs.add` (as `handlerbox
run` does) because Engine.install is broken (see test_platform_events.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handlerbox import Engine
from handlerbox.runtime.app import App
from handlerbox.runtime.results import InvocationResult
from tests.conftest import APPS, make_payload
from tests.httpserver import LocalServer

MAX_HOST_CALLS = 20
LOCAL = {"allow_networks": ["127.0.0.0/8", "::1/128"], "allow_http_hosts": ["localhost"]}
_accounts = itertools.count(1)


def account() -> str:
    """A fresh account per test: the store's rate limit (50 ops/min) is per installation."""
    return f"svc-{next(_accounts)}"


def copy_app(source: Path, target: Path, port: int) -> Path:
    """The app copied to `target`, its templates aimed at the local server's port."""
    shutil.copytree(source, target)
    requests = target / "config" / "requests.json"
    requests.write_text(requests.read_text().replace('"localhost:9"', f'"localhost:{port}"'))
    return target


def install(engine: Engine, app: App, account_id: str, **iparams: Any) -> None:
    engine.installs.add(app.name, account_id, version=app.version, domain="acme.freshdesk.com",
                        region="US", iparams=app.check_iparams(iparams))


def run(engine: Engine, app: App, account_id: str, *ops: list[Any]) -> InvocationResult:
    """One onTicketCreate that performs `ops` ([service, operation, kwargs] each)."""
    return engine.dispatch(app, make_payload("onTicketCreate", account_id, ops=list(ops)))


def answers(result: InvocationResult) -> list[dict[str, Any]]:
    assert result.outcome == "ok", result.error
    assert isinstance(result.value, list)
    return result.value


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory, server: LocalServer) -> Path:
    return copy_app(APPS / "platform_http", tmp_path_factory.mktemp("apps") / "platform_http",
                    server.port)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("db") / "store.sqlite3")


@pytest.fixture(scope="module")
def engine(database: str) -> Iterator[Engine]:
    with Engine(workers=2, database=database, max_host_calls=MAX_HOST_CALLS,
                scheduler=False, **LOCAL) as shared:
        yield shared


@pytest.fixture(scope="module")
def app(engine: Engine, app_dir: Path) -> App:
    return engine.load_app(app_dir)


# -- the key-value store ---------------------------------------------------------------------

VALUES: dict[str, Any] = {
    "object": {"a": [1, 2.5, None, True, False], "nested": {"deep": {"er": "x"}}},
    "unicode": "grüße, 世界, 🎉, \u0000 and \\ and \"quotes\"",
    "empty string": "",
    "int64 edges": [-(2**63), 2**63 - 1, 2**64 - 1],
    "float": 1e-300,
    "list": [[], {}, "", 0, None],
    "false": False,
}


def test_values_round_trip_exactly_and_each_call_is_recorded(engine: Engine, app: App) -> None:
    acc = account()
    install(engine, app, acc)
    ops = [["db", "set", {"key": f"k:{name}", "value": value}] for name, value in VALUES.items()]
    ops += [["db", "get", {"key": f"k:{name}"}] for name in VALUES]
    ops.append(["db", "get", {"key": "never-set"}])
    result = run(engine, app, acc, *ops)
    got = answers(result)
    assert got[:len(VALUES)] == [{"value": {"created": True}}] * len(VALUES)
    assert [g["value"] for g in got[len(VALUES):-1]] == list(VALUES.values())
    assert got[-1]["status"] == 404 and "never-set" in got[-1]["message"]
    records = [(c.service, c.operation, c.status) for c in result.host_calls]
    assert records == ([("db", "set", 200)] * len(VALUES) + [("db", "get", 200)] * len(VALUES)
                       + [("db", "get", 404)])
    assert all(c.duration_ms >= 0 for c in result.host_calls)


def test_null_is_a_value_the_store_keeps(engine: Engine, app: App) -> None:
    got = answers(run(engine, app, account(), ["db", "set", {"key": "nothing", "value": None}],
                      ["db", "get", {"key": "nothing"}]))
    assert got == [{"value": {"created": True}}, {"value": None}]


def test_update_actions_change_the_stored_object(engine: Engine, app: App) -> None:
    acc = account()
    got = answers(run(engine, app, acc,
                      ["db", "set", {"key": "counter", "value": {"n": 1, "tags": ["a"]}}],
                      ["db", "update", {"key": "counter", "action": "increment",
                                        "attributes": {"n": 41}}],
                      ["db", "update", {"key": "counter", "action": "append",
                                        "attributes": {"tags": ["b"]}}],
                      ["db", "update", {"key": "counter", "action": "set",
                                        "attributes": {"meta.by": "me"}}],
                      ["db", "update", {"key": "counter", "action": "remove",
                                        "attributes": ["tags"]}],
                      ["db", "set", {"key": "counter", "value": 0, "if_not_exists": True}],
                      ["db", "delete", {"key": "counter"}],
                      ["db", "delete", {"key": "counter"}]))
    assert got[1]["value"] == {"n": 42, "tags": ["a"]}
    assert got[2]["value"] == {"n": 42, "tags": ["a", "b"]}
    assert got[4]["value"] == {"n": 42, "meta": {"by": "me"}}
    assert got[5]["status"] == 409
    assert got[6] == {"value": {"deleted": True}} and got[7]["status"] == 404


def test_two_accounts_of_one_app_do_not_see_each_others_keys(engine: Engine, app: App) -> None:
    first, second = account(), account()
    install(engine, app, first)
    install(engine, app, second)
    answers(run(engine, app, first, ["db", "set", {"key": "shared-name", "value": "first's"}]))
    answers(run(engine, app, second, ["db", "set", {"key": "other", "value": "second's"}]))
    got = answers(run(engine, app, second, ["db", "get", {"key": "shared-name"}],
                      ["db", "delete", {"key": "shared-name"}],
                      ["db", "update", {"key": "shared-name", "action": "set",
                                        "attributes": {"x": 1}}]))
    assert [g["status"] for g in got] == [404, 404, 404]
    got = answers(run(engine, app, first, ["db", "get", {"key": "shared-name"}],
                      ["db", "get", {"key": "other"}]))
    assert got[0] == {"value": "first's"} and got[1]["status"] == 404


def test_stored_data_survives_an_engine_restart(tmp_path: Path, app_dir: Path) -> None:
    database = str(tmp_path / "restart.sqlite3")
    acc = account()
    with Engine(workers=1, database=database, scheduler=False, **LOCAL) as first:
        app = first.load_app(app_dir)
        install(first, app, acc)
        answers(run(first, app, acc, ["db", "set", {"key": "kept", "value": {"v": [1, "2"]}}],
                    ["db", "set", {"key": "short-lived", "value": 1, "ttl": 3600}]))
    with Engine(workers=1, database=database, scheduler=False, **LOCAL) as second:
        app = second.load_app(app_dir)
        assert second.installation(app.name, acc) is not None
        got = answers(run(second, app, acc, ["db", "get", {"key": "kept"}],
                          ["db", "get", {"key": "short-lived"}]))
        assert got == [{"value": {"v": [1, "2"]}}, {"value": 1}]


# -- request templates --------------------------------------------------------------------------

def test_template_get_fills_path_query_and_headers(engine: Engine, app: App,
                                                   server: LocalServer) -> None:
    acc = account()
    install(engine, app, acc, api_key="key-for-the-echo")
    got = answers(run(engine, app, acc, ["request", "invoke", {
        "name": "echo_get", "context": {"item": "a b/c", "q": "x&y=z", "h": "header value"}}]))
    reply = got[0]["value"]
    assert reply["status"] == 200 and reply["body_encoding"] == "text"
    assert reply["headers"]["content-type"] == "application/json"
    echoed = json.loads(reply["body"])
    assert echoed["method"] == "GET"
    assert echoed["path"] == "/echo/a%20b%2Fc?q=x%26y%3Dz&fixed=yes"
    assert echoed["headers"]["X-Ctx"] == "header value"
    # the result is scrubbed of the secure api_key; the server got the real one
    assert echoed["headers"]["Authorization"] == "Bearer ********"
    assert echoed["headers"]["Host"] == f"localhost:{server.port}"
    sent = [r for r in server.requests if r["path"] == echoed["path"]]
    assert sent and sent[-1]["headers"]["Authorization"] == "Bearer key-for-the-echo"


@pytest.mark.parametrize("body, sent, content_type", [
    ({"n": 1, "s": "é"}, '{"n":1,"s":"é"}', "application/json"),
    ([1, "two"], '[1,"two"]', "application/json"),
    ("plain text", "plain text", None),
])
def test_template_post_sends_the_body(engine: Engine, app: App, body: Any, sent: str,
                                      content_type: str | None) -> None:
    acc = account()
    got = answers(run(engine, app, acc, ["request", "invoke", {"name": "echo_post",
                                                               "body": body}]))
    echoed = json.loads(got[0]["value"]["body"])
    assert echoed["method"] == "POST" and echoed["path"] == "/echo"
    assert echoed["body"] == sent
    assert echoed["headers"].get("Content-Type") == content_type


@pytest.mark.parametrize("code", [400, 404, 418, 500, 503])
def test_a_non_2xx_reply_is_a_service_error_with_its_status(engine: Engine, app: App,
                                                            code: int) -> None:
    result = run(engine, app, account(), ["request", "invoke", {
        "name": "status", "context": {"code": code}}])
    got = answers(result)
    assert got[0]["status"] == code
    assert f"answered {code}" in got[0]["message"] and f"status {code}" in got[0]["message"]
    assert [(c.service, c.operation, c.status) for c in result.host_calls] == [
        ("request", "invoke", code)]


def test_unknown_template_and_bad_arguments_are_service_errors(engine: Engine,
                                                               app: App) -> None:
    got = answers(run(engine, app, account(),
                      ["request", "invoke", {"name": "not_declared"}],
                      ["request", "invoke", {"name": "echo_get", "context": {"item": "x"}}],
                      ["request", "invoke", {"name": "echo_post", "body": "x" * (101 * 1024)}]))
    assert got[0]["status"] == 404 and "echo_get" in got[0]["message"]
    assert got[1]["status"] == 400 and "context.q is missing" in got[1]["message"]
    assert got[2]["status"] == 413


def test_a_secure_iparam_echoed_by_a_server_is_scrubbed_from_product_event_results(
        engine: Engine, app: App) -> None:
    acc = account()
    secret = "sekrit-key-that-the-server-echoes"
    install(engine, app, acc, api_key=secret)
    result = run(engine, app, acc, ["request", "invoke", {
        "name": "echo_get", "context": {"item": "i", "q": "q", "h": "h"}}])
    assert result.outcome == "ok"
    assert secret not in result.model_dump_json()


# -- the deadline and the cap on calls ----------------------------------------------------

@pytest.fixture(scope="module")
def slow_app(engine: Engine, app_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> App:
    """The same app under another name, with a 1.5 s execution timeout (below the request
    timeout of 15 s, so the deadline must cut the request short)."""
    target = tmp_path_factory.mktemp("slow") / "platform_http_slow"
    shutil.copytree(app_dir, target)
    return engine.load_app(target, timeout=1.5)


@pytest.mark.parametrize("template, mode", [("never", "sync"), ("stream", "async")])
def test_the_deadline_holds_during_a_host_call(engine: Engine, slow_app: App, app: App,
                                               template: str, mode: str) -> None:
    acc = account()
    payload = make_payload("onTicketCreate", acc, ops=[["request", "invoke",
                                                        {"name": template}]])
    start = time.monotonic()
    if mode == "sync":
        result = engine.dispatch(slow_app, payload)
    else:
        result = asyncio.run(engine.dispatch_async(slow_app, payload))
    elapsed = time.monotonic() - start
    assert elapsed < 1.5 + 3.0
    assert [(c.service, c.operation, c.status) for c in result.host_calls] == [
        ("request", "invoke", 504)]
    if result.outcome == "ok":
        # The call was cut a hair before the deadline and the handler returned the 504 it
        # caught in the time that was left: the deadline held all the same.
        assert result.value[0]["status"] == 504
    else:
        assert result.outcome == "timeout", result
        assert result.error is not None and "Timeout error" in result.error.message
    # The engine keeps serving, the app that timed out included.
    again = run(engine, slow_app, acc, ["db", "set", {"key": "after-timeout", "value": 1}])
    assert again.outcome == "ok"
    assert run(engine, app, account()).outcome == "ok"


def test_calls_past_the_cap_get_429_and_the_invocation_ends(engine: Engine, app: App) -> None:
    result = engine.dispatch(app, make_payload("onTicketUpdate", account()))
    assert result.outcome == "ok", result.error
    assert result.value["made"] == MAX_HOST_CALLS + 1
    assert result.value["status"] == 429
    assert f"more than {MAX_HOST_CALLS} service calls" in result.value["message"]
    assert [c.status for c in result.host_calls] == [404] * MAX_HOST_CALLS + [429]


def test_a_handler_ignoring_429_cannot_grow_the_record_without_bound(engine: Engine,
                                                                     slow_app: App) -> None:
    """Past the cap, calls are answered 429 for a short grace, then the worker is killed."""
    result = engine.dispatch(slow_app, make_payload("onTicketUpdate", account(), ignore=True,
                                                    limit=10**9))
    assert result.outcome == "crashed" and "past the cap" in result.error.message
    assert len(result.host_calls) == MAX_HOST_CALLS + 1
    assert result.host_calls[-1].status == 429


def test_a_locked_store_cannot_hold_an_invocation_past_its_deadline(
        tmp_path: Path, app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from handlerbox.runtime.services import sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_S", 3.0)  # shortens the failure only
    database = str(tmp_path / "locked.sqlite3")
    with Engine(workers=2, database=database, scheduler=False, **LOCAL) as locked:
        target = tmp_path / "platform_http_locked"
        shutil.copytree(app_dir, target)
        app = locked.load_app(target, timeout=1)
        acc = account()
        assert run(locked, app, acc).outcome == "ok"
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the file
        try:
            async def main() -> tuple[InvocationResult, float, float]:
                start = time.monotonic()
                stuck = asyncio.ensure_future(locked.dispatch_async(app, make_payload(
                    "onTicketCreate", acc, ops=[["db", "set", {"key": "k", "value": 1}]])))
                tick = time.monotonic()
                await asyncio.sleep(0.2)
                loop_delay = time.monotonic() - tick
                result = await stuck
                return result, time.monotonic() - start, loop_delay

            result, elapsed, loop_delay = asyncio.run(main())
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert loop_delay < 1.0  # the event loop kept running
    assert elapsed < 1.0 + 1.5, elapsed
    # the deadline ends it: as a timeout, or the call answered 503/504 just before it
    assert result.outcome == "timeout" or (
        result.host_calls and result.host_calls[0].status in (503, 504)), result


# -- asyncio ---------------------------------------------------------------------------------

def test_async_dispatch_performs_host_calls(engine: Engine, app: App) -> None:
    acc = account()
    install(engine, app, acc, api_key="async-key")

    async def main() -> list[InvocationResult]:
        payloads = [make_payload("onTicketCreate", acc, ops=[
            ["db", "set", {"key": f"async-{i}", "value": i}],
            ["db", "get", {"key": f"async-{i}"}],
            ["request", "invoke", {"name": "echo_get",
                                   "context": {"item": str(i), "q": "a", "h": "b"}}]])
            for i in range(3)]
        return list(await asyncio.gather(*(engine.dispatch_async(app, p) for p in payloads)))

    results = asyncio.run(main())
    for i, result in enumerate(results):
        got = answers(result)
        assert got[0] == {"value": {"created": True}} and got[1] == {"value": i}
        echoed = json.loads(got[2]["value"]["body"])
        assert echoed["path"] == f"/echo/{i}?q=a&fixed=yes"
        assert echoed["headers"]["Authorization"] == "Bearer ********"  # scrubbed
        assert [c.status for c in result.host_calls] == [200, 200, 200]
    # and the sync side still sees what the async side stored
    assert answers(run(engine, app, acc, ["db", "get", {"key": "async-2"}])) == [{"value": 2}]


# -- configuration ---------------------------------------------------------------------------

def test_a_bad_allow_networks_entry_is_a_config_error_that_starts_nothing() -> None:
    import psutil

    from handlerbox.runtime.errors import ConfigError

    me = psutil.Process()
    before = {child.pid for child in me.children()}
    try:
        with pytest.raises(ConfigError, match="allow_networks"):
            Engine(workers=1, allow_networks=["not-a-cidr"])
    finally:
        # A new direct child can only be the zygote of the Engine above (other engines' workers
        # are their zygotes' children): end it, and its workers go with it.
        left = [c for c in me.children() if c.pid not in before]
        for child in left:
            child.kill()
            child.wait(5)
    assert left == []
