"""Every event kind end to end through the public Engine API, on a real SQLite file: set-up
events (install, update, uninstall), iparams (secure ones included), server methods (SMI),
external events through webhook tokens, scheduled events in real time (restarts, two engines
on one file), and the `handlerbox run` CLI as a subprocess.

The app is tests/apps/platform_hub; its set-up answers follow the `mode` iparam. Where a test
needs an installation but is not about installing, it is written with `engine.installs.add`
(as `handlerbox run` does)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from handlerbox import Engine
from handlerbox.runtime.app import App
from handlerbox.runtime.errors import (
    InstallationExists,
    IparamsError,
    SetupBlocked,
    SetupFailed,
)
from handlerbox.runtime.results import InvocationResult
from tests.conftest import APPS, EXAMPLES, make_payload

HUB = APPS / "platform_hub"
REPO = Path(__file__).parent.parent
SECRET = "sekrit-api-key-7f3a9c"
_accounts = itertools.count(1)



def account() -> str:
    return f"evt-{next(_accounts)}"


def install(engine: Engine, app: App, account_id: str, **iparams: Any) -> None:
    """An installation written to the store directly (no set-up event)."""
    engine.installs.add(app.name, account_id, version=app.version, domain="acme.freshdesk.com",
                        region="US", iparams=app.check_iparams(iparams))


def run(engine: Engine, app: App, account_id: str, *ops: list[Any]) -> list[dict[str, Any]]:
    result = engine.dispatch(app, make_payload("onTicketCreate", account_id, ops=list(ops)))
    assert result.outcome == "ok", result.error
    assert isinstance(result.value, list)
    return result.value


def token_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("db") / "events.sqlite3")


@pytest.fixture(scope="module")
def engine(database: str) -> Iterator[Engine]:
    with Engine(workers=2, database=database, schedule_min_lead_seconds=0) as shared:
        yield shared


@pytest.fixture(scope="module")
def app(engine: Engine) -> App:
    return engine.load_app(HUB)


# -- install, iparams and onAppInstall ----------------------------------------------------------

def test_install_stores_the_checked_iparams(engine: Engine, app: App) -> None:
    acc = account()
    installed = engine.install(app, acc, domain="acme.freshdesk.com", region="EU",
                               iparams={"channel": "ops", "api_key": SECRET})
    assert (installed.app, installed.account_id, installed.region) == (app.name, acc, "EU")
    assert installed.version == app.version
    stored = engine.installation(app.name, acc)
    assert stored is not None and stored.iparams == {"channel": "ops", "api_key": SECRET}
    # onAppInstall ran for this account before the installation was stored
    assert run(engine, app, acc, ["db", "get", {"key": "setup:onAppInstall"}])[0]["value"][
        "event"] == "onAppInstall"
    with pytest.raises(InstallationExists):
        engine.install(app, acc, domain="acme.freshdesk.com")


def test_install_refuses_iparams_that_do_not_fit_without_quoting_secure_values(
        engine: Engine, app: App) -> None:
    with pytest.raises(IparamsError) as caught:
        engine.install(app, account(), domain="acme.freshdesk.com",
                       iparams={"api_key": SECRET + "\nsecond line", "unknown": "x",
                                "channel": 5})
    text = str(caught.value)
    assert "iparams.api_key" in text and "iparams.unknown" in text and "iparams.channel" in text
    assert SECRET not in text


def test_onappinstall_can_block_with_its_message(engine: Engine, app: App) -> None:
    acc = account()
    with pytest.raises(SetupBlocked) as caught:
        engine.install(app, acc, domain="acme.freshdesk.com", iparams={"mode": "block"})
    assert str(caught.value) == "Blocked: pick a channel first"
    assert engine.installation(app.name, acc) is None


@pytest.mark.parametrize("mode, says", [
    ("fail", "ValueError: set-up exploded on purpose"),
    ("malformed", "malformed answer"),
    ("long", "61 characters, over the limit of 60"),
])
def test_a_failed_or_malformed_onappinstall_refuses_the_install(engine: Engine, app: App,
                                                                mode: str, says: str) -> None:
    acc = account()
    with pytest.raises(SetupFailed, match=says):
        engine.install(app, acc, domain="acme.freshdesk.com", iparams={"mode": mode})
    assert engine.installation(app.name, acc) is None


@pytest.mark.parametrize("mode", ["allow", "none"])
def test_onappinstall_allows_with_none_or_allow(engine: Engine, app: App, mode: str) -> None:
    acc = account()
    engine.install(app, acc, domain="acme.freshdesk.com", iparams={"mode": mode})
    assert engine.installation(app.name, acc) is not None


def test_a_refused_install_leaves_nothing_behind(engine: Engine, app: App) -> None:
    acc = account()
    with pytest.raises(SetupBlocked):
        engine.install(app, acc, domain="acme.freshdesk.com", iparams={"mode":
                                                                        "data-then-block"})
    install(engine, app, acc)  # a later, successful installation of the same account
    got = run(engine, app, acc, ["db", "get", {"key": "hook"}],
              ["db", "get", {"key": "setup:onAppInstall"}],
              ["schedule", "fetch", {"name": "later"}])
    assert [g.get("status") for g in got] == [404, 404, 404]


def test_set_up_handlers_act_for_the_account_before_it_is_installed(engine: Engine,
                                                                    app: App) -> None:
    """onAppInstall runs before the installation is stored, and its host calls already act for
    the account: so a refused install must clean up after it (see the xfail above)."""
    acc = account()
    payload = {**make_payload("onAppInstall", acc, app=app.name, version=app.version),
               "iparams": {"mode": "data-then-block"}}
    result = engine.dispatch(app, payload)
    assert result.value == {"allow": False, "message": "Blocked after writing data"}
    assert engine.installation(app.name, acc) is None
    got = run(engine, app, acc, ["db", "get", {"key": "hook"}])
    assert got[0]["value"].startswith(engine.config.webhook_base_url)


# -- secure iparams -----------------------------------------------------------------------------

@pytest.mark.parametrize("raises", [False, True])
def test_secure_iparams_never_appear_in_results(engine: Engine, app: App,
                                                raises: bool) -> None:
    acc = account()
    install(engine, app, acc, channel="public-channel", api_key=SECRET)
    result = engine.invoke_method(app, acc, "show_iparams", {"raise": raises})
    assert "public-channel" in result.logs  # not secure: shown
    dumped = result.model_dump_json()
    assert SECRET not in result.logs and SECRET not in dumped


def test_secure_iparams_stay_out_of_installation_reprs(engine: Engine, app: App) -> None:
    acc = account()
    install(engine, app, acc, channel="public-channel", api_key=SECRET)
    stored = engine.installation(app.name, acc)
    assert stored is not None and stored.iparams["api_key"] == SECRET  # the handler's to use
    assert SECRET not in repr(stored) and SECRET not in str(engine.installations(app.name))
    assert stored.redacted(app.iparams).iparams == {"channel": "public-channel",
                                                    "api_key": "********"}


def test_a_failed_onappinstall_does_not_leak_secure_iparams(engine: Engine, app: App) -> None:
    with pytest.raises(SetupFailed) as caught:
        engine.install(app, account(), domain="acme.freshdesk.com",
                       iparams={"mode": "fail-leak", "api_key": SECRET})
    assert SECRET not in str(caught.value)


# -- afterAppUpdate and onAppUninstall -----------------------------------------------------------

def test_afterappupdate_runs_on_update_installation(engine: Engine, app: App) -> None:
    acc = account()
    install(engine, app, acc, channel="old")
    updated, result = engine.update_installation(app, acc, iparams={"channel": "new"})
    assert updated.iparams == {"channel": "new"} and updated.version == app.version
    assert result is not None and result.outcome == "ok", result
    assert result.event == "afterAppUpdate"
    assert result.value == {"updated_to": app.version, "channel": "new"}
    stored = run(engine, app, acc, ["db", "get", {"key": "setup:afterAppUpdate"}])
    assert stored[0]["value"] == {"event": "afterAppUpdate", "version": app.version}
    # iparams left out keep the current ones
    kept, _ = engine.update_installation(app, acc)
    assert kept.iparams == {"channel": "new"}


def test_uninstall_deletes_data_schedules_and_webhook_targets(engine: Engine,
                                                              app: App) -> None:
    acc = account()
    install(engine, app, acc)
    got = run(engine, app, acc, ["db", "set", {"key": "kept", "value": 1}],
              ["schedule", "create", {"name": "later", "data": {"x": 1},
                                      "schedule_at": "2099-01-01T00:00:00Z"}],
              ["webhook", "generate_target_url", {}])
    token = token_of(got[2]["value"]["url"])
    assert engine.external_event(token, b"{}") is not None
    result = engine.uninstall(app, acc)
    assert result is not None and result.outcome == "ok" and result.value == {"allow": True}
    assert engine.installation(app.name, acc) is None
    assert engine.external_event(token, b"{}") is None
    install(engine, app, acc)  # installed again: nothing of the old installation is left
    got = run(engine, app, acc, ["db", "get", {"key": "kept"}],
              ["schedule", "fetch", {"name": "later"}])
    assert [g.get("status") for g in got] == [404, 404]
    assert engine.external_event(token, b"{}") is None


def test_onappuninstall_can_block_and_keeps_everything(engine: Engine, app: App) -> None:
    acc = account()
    install(engine, app, acc, mode="keep")
    run(engine, app, acc, ["db", "set", {"key": "kept", "value": 1}])
    with pytest.raises(SetupBlocked, match="Still in use"):
        engine.uninstall(app, acc)
    assert engine.installation(app.name, acc) is not None
    assert run(engine, app, acc, ["db", "get", {"key": "kept"}]) == [{"value": 1}]


@pytest.mark.parametrize("mode, outcome", [("fail", "handler_error"), ("malformed", "ok")])
def test_a_failing_onappuninstall_cannot_keep_the_installation(engine: Engine, app: App,
                                                               mode: str, outcome: str) -> None:
    acc = account()
    install(engine, app, acc, mode=mode)
    run(engine, app, acc, ["db", "set", {"key": "gone-soon", "value": 1}])
    result = engine.uninstall(app, acc)
    assert result is not None and result.outcome == outcome
    assert engine.installation(app.name, acc) is None
    assert run(engine, app, acc, ["db", "get", {"key": "gone-soon"}])[0]["status"] == 404


def test_uninstall_does_not_retire_other_installations_workers(engine: Engine,
                                                               app: App) -> None:
    short = account()
    longer = short + "0"  # its worker key starts with the shorter one's
    install(engine, app, short)
    install(engine, app, longer)

    def pid() -> int | None:
        return engine.dispatch(app, make_payload("onTicketCreate", longer, ops=[])).worker_pid

    first = pid()
    assert pid() == first  # a warm worker is reused
    engine.uninstall(app, short)
    after = pid()
    assert pid() == after


# -- server methods (SMI) -------------------------------------------------------------------

def test_a_server_method_answers_with_its_value_and_status_200(engine: Engine,
                                                               app: App) -> None:
    acc = account()
    install(engine, app, acc)
    run(engine, app, acc, ["db", "set", {"key": "ticket:1", "value": {"state": "open"}}])
    result = engine.invoke_method(app, acc, "lookup", {"key": "ticket:1"})
    assert (result.outcome, result.status) == ("ok", 200)
    assert result.value == {"key": "ticket:1", "value": {"state": "open"}}
    assert result.event == "lookup" and result.handler == "lookup"
    assert [(c.service, c.operation, c.status) for c in result.host_calls] == [
        ("db", "get", 200)]


@pytest.mark.parametrize("data, status, message", [
    ({"key": "missing"}, 404, "no such key: missing"),
    ({}, 400, "key is required"),
])
def test_a_method_error_sets_the_status_and_message(engine: Engine, app: App,
                                                    data: dict[str, Any], status: int,
                                                    message: str) -> None:
    acc = account()
    install(engine, app, acc)
    result = engine.invoke_method(app, acc, "lookup", data)
    assert result.outcome == "handler_error" and result.status == status
    assert result.error is not None
    assert (result.error.type, result.error.message) == ("MethodError", message)


def test_an_unknown_method_is_not_subscribed_404(engine: Engine, app: App) -> None:
    acc = account()
    install(engine, app, acc)
    result = engine.invoke_method(app, acc, "noSuchMethod", {})
    assert (result.outcome, result.status) == ("not_subscribed", 404)
    assert result.error is not None and "lookup" in result.error.message
    # an event's handler is not a method either
    assert engine.invoke_method(app, acc, "onTicketCreate", {}).status == 404


def test_a_method_of_an_account_that_is_not_installed_is_refused(engine: Engine,
                                                                 app: App) -> None:
    result = engine.invoke_method(app, account(), "lookup", {"key": "k"})
    assert result.outcome == "invalid_payload" and result.status == 400
    assert result.error is not None and "not installed" in result.error.message


def test_a_method_payload_over_100_kb_is_refused(engine: Engine, app: App) -> None:
    acc = account()
    install(engine, app, acc)
    at_limit = engine.invoke_method(app, acc, "echo", {"blob": "x" * (100 * 1024 - 12)})
    assert (at_limit.outcome, at_limit.status) == ("ok", 200)
    over = engine.invoke_method(app, acc, "echo", {"blob": "x" * (100 * 1024)})
    assert (over.outcome, over.status) == ("invalid_payload", 400)
    assert over.error is not None and "102400" in over.error.message


def test_invoke_method_async(engine: Engine, app: App) -> None:
    acc = account()
    install(engine, app, acc)
    run(engine, app, acc, ["db", "set", {"key": "a", "value": "A"}])

    async def main() -> list[InvocationResult]:
        return list(await asyncio.gather(
            engine.invoke_method_async(app, acc, "lookup", {"key": "a"}),
            engine.invoke_method_async(app, acc, "lookup", {"key": "b"}),
            engine.invoke_method_async(app, acc, "nope", {})))

    found, missing, unknown = asyncio.run(main())
    assert (found.status, found.value) == (200, {"key": "a", "value": "A"})
    assert missing.status == 404 and missing.error is not None
    assert missing.error.message == "no such key: b"
    assert unknown.status == 404 and unknown.outcome == "not_subscribed"


@pytest.mark.parametrize("number", [2**64, 2**70, -(2**63) - 1])
def test_payload_integers_beyond_64_bits_are_not_silently_changed(engine: Engine, app: App,
                                                                   number: int) -> None:
    acc = account()
    install(engine, app, acc)
    result = engine.invoke_method(app, acc, "echo", {"n": number})
    assert result.outcome == "invalid_payload"
    assert "beyond 64 bits" in result.error.message


# -- external events -----------------------------------------------------------------------------

@pytest.fixture
def hooked(engine: Engine, app: App) -> tuple[str, str]:
    """(account, token) of a fresh installation with a target URL its handler asked for."""
    acc = account()
    install(engine, app, acc)
    got = run(engine, app, acc, ["webhook", "generate_target_url", {}])
    url = got[0]["value"]["url"]
    assert url.startswith(engine.config.webhook_base_url + "/webhooks/")
    return acc, token_of(url)


def test_an_external_event_gets_the_body_and_headers(engine: Engine,
                                                     hooked: tuple[str, str]) -> None:
    acc, token = hooked
    result = engine.external_event(token, b'{"ack_ticket": 42, "by": "bot"}',
                                   {"X-Signature": "abc123", "Content-Type":
                                    "application/json"})
    assert result is not None and result.outcome == "ok", result
    assert result.event == "onExternalEvent" and result.account_id == acc
    assert result.value == {"body": {"ack_ticket": 42, "by": "bot"},
                            "headers": {"x-signature": "abc123",
                                        "content-type": "application/json"},
                            "account_id": acc}
    text = engine.external_event(token, b"plain, not JSON")
    assert text is not None and text.value is not None
    assert text.value["body"] == "plain, not JSON" and text.value["headers"] == {}


def test_an_external_body_over_100_kb_is_refused(engine: Engine,
                                                 hooked: tuple[str, str]) -> None:
    _, token = hooked
    result = engine.external_event(token, b'"' + b"a" * (100 * 1024) + b'"')
    assert result is not None and result.outcome == "invalid_payload"


def test_unknown_and_revoked_tokens_run_nothing(engine: Engine, app: App,
                                                hooked: tuple[str, str]) -> None:
    acc, token = hooked
    for bad in ["", "A" * 43, token[:-1], token + "x", token.upper() if token.upper() != token
                else token.lower(), "../" + token, f"http://x/webhooks/{token}"]:
        assert engine.external_event(bad, b"{}") is None, bad
    got = run(engine, app, acc, ["webhook", "revoke", {"url": token}],
              ["webhook", "revoke", {"url": token}])
    assert got[0] == {"value": {"revoked": True}} and got[1]["status"] == 404
    assert engine.external_event(token, b"{}") is None


def test_external_event_async(engine: Engine, hooked: tuple[str, str]) -> None:
    acc, token = hooked

    async def main() -> InvocationResult | None:
        return await engine.external_event_async(token, b"[1, 2]", {"X-A": "b"})

    result = asyncio.run(main())
    assert result is not None and result.value == {"body": [1, 2], "headers": {"x-a": "b"},
                                                   "account_id": acc}
    assert asyncio.run(engine.external_event_async("B" * 43, b"{}")) is None


# -- scheduled events in real time -------------------------------------------------------------

class Collector:
    """Gathers onScheduledEvent results (engine.on_result) from any number of engines."""

    def __init__(self) -> None:
        self.results: list[tuple[float, InvocationResult]] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def __call__(self, result: InvocationResult) -> None:
        with self._changed:
            self.results.append((time.time(), result))
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> list[tuple[float, InvocationResult]]:
        end = time.monotonic() + timeout
        with self._changed:
            while len(self.results) < count and time.monotonic() < end:
                self._changed.wait(end - time.monotonic())
            return list(self.results)


def schedule_soon(engine: Engine, app: App, acc: str, name: str, seconds: int = 2
                  ) -> int:
    """The app creates schedule `name` due `seconds` after the payload's timestamp (ISO 8601
    with Z, computed in the handler); returns the due time in epoch seconds."""
    now = int(time.time())
    payload = {**make_payload("onTicketDelete", acc, name=name, seconds=seconds,
                              token=name), "timestamp": now}
    result = engine.dispatch(app, payload)
    assert result.outcome == "ok", result.error
    assert result.value["schedule_at"].endswith("Z")
    assert [(c.service, c.operation, c.status) for c in result.host_calls] == [
        ("schedule", "create", 200)]
    return now + seconds


def scheduled_names(results: list[tuple[float, InvocationResult]]) -> list[str]:
    return sorted(r.value["schedule"]["name"] for _, r in results if r.value)


def test_a_schedule_fires_on_time_with_its_data(engine: Engine, app: App) -> None:
    acc = account()
    install(engine, app, acc)
    collected = Collector()
    engine.on_result = collected
    try:
        due = schedule_soon(engine, app, acc, "on-time")
        got = collected.wait_for(1, 8)
    finally:
        engine.on_result = None
    assert len(got) == 1
    fired_at, result = got[0]
    assert result.outcome == "ok" and result.event == "onScheduledEvent"
    assert result.value == {"schedule": {"name": "on-time", "due": due,
                                         "idempotency_key": f"{app.name}/{acc}/on-time/{due}"},
                            "data": {"token": "on-time"}, "account_id": acc, "timestamp": due}
    assert due <= fired_at < due + 2.5  # never early, and about on time
    # a one-time schedule is gone once it fired
    assert run(engine, app, acc, ["schedule", "fetch", {"name": "on-time"}])[0]["status"] == 404


def new_engine(database: str) -> Engine:
    return Engine(workers=1, spares=0, database=database, schedule_min_lead_seconds=0)


def test_a_schedule_fires_once_across_a_restart_before_it_is_due(tmp_path: Path) -> None:
    database = str(tmp_path / "restart.sqlite3")
    acc = account()
    with new_engine(database) as first:
        app = first.load_app(HUB)
        install(first, app, acc)
        due = schedule_soon(first, app, acc, "across-restart")
    collected = Collector()
    with new_engine(database) as second:
        second.on_result = collected
        second.load_app(HUB)
        got = collected.wait_for(1, 8)
        time.sleep(max(0.0, due + 1.0 - time.time()))  # room for a duplicate to show up
        got = collected.wait_for(2, 0)
    assert scheduled_names(got) == ["across-restart"]
    assert got[0][1].value["schedule"]["due"] == due


def test_a_schedule_due_while_the_engine_was_down_fires_after_restart(tmp_path: Path) -> None:
    database = str(tmp_path / "down.sqlite3")
    acc = account()
    with new_engine(database) as first:
        app = first.load_app(HUB)
        install(first, app, acc)
        due = schedule_soon(first, app, acc, "while-down", seconds=1)
    time.sleep(max(0.0, due + 0.3 - time.time()))
    collected = Collector()
    with new_engine(database) as second:
        second.on_result = collected
        # An engine can only load apps once it runs; a start-up loads several, which takes
        # a moment (here: another app, and 0.2 s for the rest).
        second.load_app(APPS / "echo")
        time.sleep(0.2)
        second.load_app(HUB)
        got = collected.wait_for(1, 1.5)  # it was due already: it fires at once, or never
    assert scheduled_names(got) == ["while-down"]


def test_two_engines_on_one_database_fire_each_occurrence_once(tmp_path: Path) -> None:
    database = str(tmp_path / "race.sqlite3")
    acc = account()
    collected = Collector()
    with new_engine(database) as first, new_engine(database) as second:
        apps = [first.load_app(HUB), second.load_app(HUB)]
        first.on_result = second.on_result = collected
        install(first, apps[0], acc)
        names = [f"race-{i}" for i in range(8)]
        due = max(schedule_soon((first, second)[i % 2], apps[i % 2], acc, name)
                  for i, name in enumerate(names))
        got = collected.wait_for(len(names), 10)
        time.sleep(max(0.0, due + 1.0 - time.time()))  # room for duplicates
        got = collected.wait_for(len(names) + 1, 0)
    assert scheduled_names(got) == sorted(names)
    assert all(r.outcome == "ok" for _, r in got)


def test_fire_schedule_runs_a_stored_schedule_now_and_keeps_it(engine: Engine,
                                                              app: App) -> None:
    acc = account()
    install(engine, app, acc)
    run(engine, app, acc, ["schedule", "create", {"name": "manual", "data": {"k": "v"},
                                                  "schedule_at": "2099-01-01T00:00:00Z"}])
    result = engine.fire_schedule(app, acc, "manual")
    assert result.outcome == "ok" and result.value is not None
    assert result.value["data"] == {"k": "v"} and result.value["schedule"]["name"] == "manual"
    fetched = run(engine, app, acc, ["schedule", "fetch", {"name": "manual"}])
    assert fetched[0]["value"]["next_run"] == "2099-01-01T00:00:00Z"


# -- after close ---------------------------------------------------------------------------

@pytest.mark.parametrize("call", ["external_event", "uninstall", "fire_schedule"])
def test_calls_after_close_raise_engine_closed(tmp_path: Path, call: str) -> None:
    from handlerbox.runtime.errors import EngineClosed

    engine = new_engine(str(tmp_path / "closed.sqlite3"))
    app = engine.load_app(HUB)
    acc = account()
    install(engine, app, acc)
    got = run(engine, app, acc, ["webhook", "generate_target_url", {}])
    token = token_of(got[0]["value"]["url"])
    engine.close()
    calls: dict[str, Callable[[], Any]] = {
        "external_event": lambda: engine.external_event(token, b"{}"),
        "uninstall": lambda: engine.uninstall(app, acc),
        "fire_schedule": lambda: engine.fire_schedule(app, acc, "x"),
    }
    with pytest.raises(EngineClosed):
        calls[call]()


# -- the CLI -------------------------------------------------------------------------------

def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "handlerbox", "run", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_cli_set_up_event_prints_allow_and_the_store_is_kept(tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    app = EXAMPLES / "ticket_notifier"
    first = cli(app, "--event", "onAppInstall", "--store", store)
    assert first.returncode == 0, first.stderr
    assert "ALLOW" in first.stderr and '"allow": true' in first.stdout
    assert "CALL schedule.create status=200" in first.stderr
    # kept between runs: the schedule the first run created is still there
    second = cli(app, "--event", "onAppInstall", "--store", store)
    assert second.returncode == 1
    assert "409" in second.stderr and "already exists" in second.stderr
    # the other event kinds run against the installation the store keeps
    body = tmp_path / "body.json"
    body.write_text('{"ack_ticket": 101, "by": "bob"}')
    external = cli(app, "--event", "onExternalEvent", "--body", body, "--header", "X-Sig: 1",
                   "--store", store)
    assert external.returncode == 0, external.stderr
    assert "that ticket was never posted" in external.stdout
    fired = cli(app, "--event", "onScheduledEvent", "--schedule", "daily-summary", "--store",
                store)
    assert fired.returncode == 0, fired.stderr
    assert "schedule daily-summary fired" in fired.stdout and '"summary"' in fired.stdout
    # --reset-store empties it
    third = cli(app, "--event", "onAppInstall", "--store", store, "--reset-store")
    assert third.returncode == 0, third.stderr
    assert "ALLOW" in third.stderr


def test_cli_server_method_before_any_post_exits_1_with_404(tmp_path: Path) -> None:
    done = cli(EXAMPLES / "ticket_notifier", "--method", "notificationStatus", "--store",
               tmp_path / "store.sqlite3")
    assert done.returncode == 1
    assert "status 404" in done.stderr and "was never posted" in done.stderr
    assert "CALL db.get status=404" in done.stderr
