"""A hostile tenant against the host services: other installations' keys, schedules and
webhook targets; forged call frames; arguments that are not JSON; call floods; the services
module's internals; SSRF, header injection and path tricks through request templates; huge
responses; secure iparams in template errors.

Hostile handlers are tests/apps/platform_hostile (copied per module with its templates aimed
at a real local server); victims are tests/apps/platform_hub installations. Two engines:
`engine` allows loopback for the local server (as a developer's would), `strict` allows no
private address at all (as production does)."""

from __future__ import annotations

import itertools
import shutil
import socket
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from handlerbox import Engine
from handlerbox.runtime import hostcalls, protocol
from handlerbox.runtime.app import App
from handlerbox.runtime.errors import ProtocolError
from handlerbox.runtime.results import InvocationResult
from handlerbox.runtime.services.base import Scope
from handlerbox.runtime.services.kv import KVStore, MemoryKV
from handlerbox.sandbox import CompileError
from tests.conftest import APPS, make_payload
from tests.httpserver import LocalServer

LOCAL = {"allow_networks": ["127.0.0.0/8", "::1/128"], "allow_http_hosts": ["localhost"]}
SECRET = "sekrit-host-9f3a"
_accounts = itertools.count(1)


def account() -> str:
    return f"atk-{next(_accounts)}"


def install(engine: Engine, app: App, account_id: str, **iparams: Any) -> None:
    engine.installs.add(app.name, account_id, version=app.version, domain="acme.freshdesk.com",
                        region="US", iparams=app.check_iparams(iparams))


def dispatch(engine: Engine, app: App, event: str, account_id: str,
             **data: Any) -> InvocationResult:
    return engine.dispatch(app, make_payload(event, account_id, **data))


def run(engine: Engine, app: App, account_id: str, *ops: list[Any]) -> list[dict[str, Any]]:
    result = dispatch(engine, app, "onTicketCreate", account_id, ops=list(ops))
    assert result.outcome == "ok", result.error
    assert isinstance(result.value, list)
    return result.value


def statuses(answers: list[dict[str, Any]]) -> list[int | None]:
    return [a.get("status") for a in answers]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory, server: LocalServer) -> Path:
    target = tmp_path_factory.mktemp("apps") / "platform_hostile"
    shutil.copytree(APPS / "platform_hostile", target)
    requests = target / "config" / "requests.json"
    requests.write_text(requests.read_text().replace(':9"', f':{server.port}"'))
    return target


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    database = str(tmp_path_factory.mktemp("db") / "attacks.sqlite3")
    with Engine(workers=2, database=database, scheduler=False, **LOCAL) as shared:
        yield shared


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """No private address allowed (production); http only for the literal name localhost,
    so the local templates load (and are then refused at the address check)."""
    database = str(tmp_path_factory.mktemp("strict") / "strict.sqlite3")
    with Engine(workers=1, spares=0, database=database, scheduler=False,
                allow_http_hosts=["localhost"]) as production:
        yield production


@pytest.fixture(scope="module")
def hostile(engine: Engine, hostile_dir: Path) -> App:
    return engine.load_app(hostile_dir)


@pytest.fixture(scope="module")
def hub(engine: Engine) -> App:
    return engine.load_app(APPS / "platform_hub")


@pytest.fixture(scope="module")
def strict_hostile(strict: Engine, hostile_dir: Path) -> App:
    app = strict.load_app(hostile_dir)
    install(strict, app, "prod", api_key=SECRET)
    return app


# -- other installations' data ----------------------------------------------------------------

VICTIM_KEY = "secret"
KEY_TRICKS = [
    "secret", "../victim/secret", "victim/secret", "/secret", "platform_hub/victim/secret",
    "platform_hub/victim", "..", ".", "%", "*", "_", "secre_", "secre%", "secret%", "SECRET",
    " secret", "secret ", "secret\x00", "secret\x00x", "\x00", "secret/", "secret\\",
    "secret' OR '1'='1", "secret\"; DROP TABLE kv; --",
]


@pytest.fixture(scope="module")
def victim(engine: Engine, hub: App) -> dict[str, str]:
    """A platform_hub installation holding a key, a schedule and a webhook target."""
    acc = "victim"
    install(engine, hub, acc)
    got = run(engine, hub, acc, ["db", "set", {"key": VICTIM_KEY, "value": "the victim's"}],
              ["schedule", "create", {"name": "job", "data": {"v": 1},
                                      "schedule_at": "2099-01-01T00:00:00Z"}],
              ["webhook", "generate_target_url", {}])
    return {"account": acc, "url": got[2]["value"]["url"]}


def victim_intact(engine: Engine, hub: App, victim: dict[str, str]) -> None:
    got = run(engine, hub, victim["account"], ["db", "get", {"key": VICTIM_KEY}],
              ["schedule", "fetch", {"name": "job"}])
    assert got[0] == {"value": "the victim's"}
    assert got[1]["value"]["paused"] is False and got[1]["value"]["data"] == {"v": 1}
    token = victim["url"].rsplit("/", 1)[-1]
    result = engine.external_event(token, b'{"still": "works"}')
    assert result is not None and result.account_id == victim["account"]


@pytest.mark.parametrize("attacker_app", ["hub", "hostile"])
def test_keys_of_another_installation_are_out_of_reach(engine: Engine, hub: App, hostile: App,
                                                       victim: dict[str, str],
                                                       attacker_app: str) -> None:
    """Another account of the same app, and another app in the victim's own account."""
    app, acc = (hub, account()) if attacker_app == "hub" else (hostile, victim["account"])
    ops = [["db", "get", {"key": key}] for key in KEY_TRICKS]
    got = run(engine, app, acc, *ops)
    assert statuses(got) == [404] * len(KEY_TRICKS), got
    got = run(engine, app, acc, ["db", "delete", {"key": VICTIM_KEY}],
              ["db", "update", {"key": VICTIM_KEY, "action": "set", "attributes": {"x": 1}}],
              ["db", "set", {"key": VICTIM_KEY, "value": "x", "if_exists": True}])
    assert statuses(got) == [404, 404, 404]
    # the attacker's own writes under the same names land in its own store only
    got = run(engine, app, acc, ["db", "set", {"key": VICTIM_KEY, "value": "attacker's"}],
              ["db", "set", {"key": "secret\x00x", "value": "nul"}],
              ["db", "get", {"key": "secret\x00x"}], ["db", "get", {"key": VICTIM_KEY}])
    assert [g.get("value") for g in got[2:]] == ["nul", "attacker's"]
    victim_intact(engine, hub, victim)


def test_schedules_of_another_installation_are_out_of_reach(engine: Engine, hub: App,
                                                            victim: dict[str, str]) -> None:
    acc = account()
    ops = [["schedule", op, {"name": "job"}] for op in ("fetch", "pause", "resume", "delete")]
    ops.append(["schedule", "update", {"name": "job", "schedule_at": "2098-01-01T00:00:00Z"}])
    assert statuses(run(engine, hub, acc, *ops)) == [404] * 5
    tricks = ["../victim/job", "victim/job", "platform_hub/victim/job", "%", "*", "job\x00",
              "job/..", ""]
    got = run(engine, hub, acc, *[["schedule", "fetch", {"name": n}] for n in tricks])
    assert statuses(got) == [400] * len(tricks)
    # creating one of the same name makes the attacker's own, and leaves the victim's alone
    got = run(engine, hub, acc, ["schedule", "create", {"name": "job", "data": {"v": 666},
                                                        "schedule_at": "2099-01-01T00:00:00Z"}],
              ["schedule", "delete", {"name": "job"}])
    assert statuses(got) == [None, None]
    victim_intact(engine, hub, victim)


def test_webhook_targets_of_another_installation_cannot_be_revoked(engine: Engine, hub: App,
                                                                   hostile: App,
                                                                   victim: dict[str, str]
                                                                   ) -> None:
    url = victim["url"]
    token = url.rsplit("/", 1)[-1]
    forms = [url, token, f"https://elsewhere.example/webhooks/{token}", url + "/",
             url.replace("/webhooks/", "/webhooks//"), token + "\x00", f"{url}?x=1"]
    for app, acc in ((hub, account()), (hostile, victim["account"])):
        got = run(engine, app, acc, *[["webhook", "revoke", {"url": u}] for u in forms])
        assert all(g.get("status") in (400, 404) for g in got), got
    victim_intact(engine, hub, victim)


# -- forged call frames -------------------------------------------------------------------

GOOD = {"op": "call", "service": "db", "operation": "get", "args": {"key": "k"}}


@pytest.mark.parametrize("change", [
    {"service": 1}, {"service": None}, {"service": ["db"]}, {"operation": True},
    {"operation": {"get": 1}}, {"args": []}, {"args": "key=k"}, {"args": None},
    {"service": "d" * 65}, {"operation": "g" * 65}, {"extra": 1}, {"scope": "victim"},
    {"account_id": "victim"},
])
def test_call_frames_with_wrong_types_or_fields_are_protocol_errors(change: dict[str, Any]
                                                                    ) -> None:
    message = {**GOOD, **change}
    with pytest.raises(ProtocolError):
        hostcalls.check(message, 100)


@pytest.mark.parametrize("missing", ["op", "service", "operation", "args"])
def test_call_frames_missing_a_field_are_protocol_errors(missing: str) -> None:
    message = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ProtocolError):
        protocol.check_call(message, 100)


def test_call_frames_over_the_size_cap_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="over the cap"):
        protocol.check_call(dict(GOOD), protocol.MAX_CALL_BYTES + 1)
    assert protocol.check_call(dict(GOOD), protocol.MAX_CALL_BYTES) == ("db", "get",
                                                                        {"key": "k"})


@pytest.mark.parametrize("body", [b"", b"[]", b'"call"', b"{", b'{"op": NaN}',
                                  b'{"a": Infinity}', b"[" * 2000 + b"]" * 2000, b"\xff\xfe"])
def test_frames_that_are_not_json_objects_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode(body)


def test_a_frame_reader_refuses_a_length_over_its_cap_before_reading() -> None:
    reader = protocol.FrameReader(max_bytes=1024)
    with pytest.raises(ProtocolError, match="over the cap"):
        reader.feed(protocol.HEADER.pack(1025))
    assert protocol.FrameReader(8).feed(protocol.frame(b"{}")) == b"{}"


def test_unknown_services_operations_and_the_cap_are_answered_not_raised() -> None:
    services = hostcalls.Services({"db": KVStore(MemoryKV())})
    calls = hostcalls.Calls(limit=3)
    scope = Scope("platform_hostile", "forger")
    deadline = float("inf")

    def perform(service: str, operation: str, args: dict[str, Any]) -> dict[str, Any]:
        call = hostcalls.check({"op": "call", "service": service, "operation": operation,
                                "args": args}, 100)
        return protocol.decode(services.perform(scope, call, deadline, calls))

    unknown = perform("shell", "exec", {"cmd": "id"})
    assert unknown["error"]["status"] == 400 and "unknown service" in unknown["error"]["message"]
    no_op = perform("db", "purge", {})
    assert no_op["error"]["status"] == 400 and "no operation" in no_op["error"]["message"]
    bad_args = perform("db", "get", {"key": "k", "installation": "platform_hub/victim"})
    assert bad_args["error"]["status"] == 400
    capped = perform("db", "get", {"key": "k"})
    assert capped["error"]["status"] == 429
    assert [(r.service, r.operation, r.status) for r in calls.records] == [
        ("shell", "exec", 400), ("db", "purge", 400), ("db", "get", 400), ("db", "get", 429)]


# -- hostile handlers -------------------------------------------------------------------------

def test_arguments_that_are_not_json_are_clear_service_errors(engine: Engine,
                                                              hostile: App) -> None:
    acc = account()
    result = dispatch(engine, hostile, "onTicketDelete", acc)
    assert result.outcome == "ok", result.error
    out = result.value
    not_json = ["set", "big int", "negative big int", "nan", "inf", "cyclic dict",
                "ten MB string", "bytes", "lone surrogate", "object", "function", "deep",
                "non-string key", "context set", "schedule data nan", "revoke url int"]
    for case in not_json:
        assert out[case]["status"] == 400, (case, out[case])
        assert out[case]["message"].startswith("arguments must be plain JSON"), out[case]
    assert "cycle" in out["cyclic dict"]["message"]
    assert "over the limit" in out["ten MB string"]["message"]
    assert out["key as int"]["status"] == 400 and "key must be" in out["key as int"]["message"]
    assert "at most 1 arguments" in out["too many args"]["type_error"]
    assert out["still works"] == {"created": True}
    # nothing malformed was ever sent: the host saw only the calls that were JSON
    assert [c.service for c in result.host_calls] == ["db", "db"]
    # the worker lives on
    again = dispatch(engine, hostile, "onTicketCreate", acc)
    assert again.outcome == "ok" and again.worker_pid == result.worker_pid


def test_the_services_module_internals_are_out_of_reach_at_run_time(engine: Engine,
                                                                    hostile: App) -> None:
    acc = account()
    result = dispatch(engine, hostile, "onTicketUpdate", acc)
    assert result.outcome == "ok", result.error
    attempts = result.value["results"]
    # .mro() of an exported class may be refused, or give the class itself and builtin
    # classes only (Exception, BaseException, object)
    mro = attempts.pop("ServiceError mro")
    assert mro.startswith("refused") or ("ServiceError" in mro and "Exception" in mro), mro
    leaked = {name: what for name, what in attempts.items() if not what.startswith("refused")}
    assert not leaked
    assert len(attempts) >= 20
    assert result.value["after"] == {"ok": True}
    # the worker's transport is intact, and still answers for this installation only
    got = run(engine, hostile, acc, ["db", "get", {"key": "after-internals"}])
    assert got == [{"value": {"ok": True}}]
    again = dispatch(engine, hostile, "onTicketCreate", account(),
                     ops=[["db", "get", {"key": "after-internals"}]])
    assert again.value is not None and again.value[0]["status"] == 404


COMPILE_TIME = {
    "underscore import": "from services import _transport",
    "underscore attribute": "import services\nx = services._transport",
    "closure": "from services import db\nx = db.get.__closure__",
    "globals": "from services import db\nx = db.get.__globals__",
    "connect": "from services import connect",
    "signatures": "from services import SIGNATURES",
    "operation factory": "from services import _operation",
    "the sandbox package": "from handlerbox.sandbox import services",
    "services submodule internals": "from services.db import __dict__",
    "two-argument super": (
        "from services import ServiceError, db\n"
        "def h(payload):\n"
        "    try:\n        db.get('k')\n"
        "    except ServiceError as e:\n        super(ServiceError, e).__init__(200, 'x')\n"),
    "classmethod super init": (
        "from services import ServiceError\n"
        "class E(ServiceError):\n    @classmethod\n"
        "    def again(cls, target):\n        super().__init__(target, 200, 'x')\n"),
}


@pytest.mark.parametrize("source", COMPILE_TIME.values(), ids=COMPILE_TIME.keys())
def test_the_services_module_internals_are_refused_at_compile_time(engine: Engine,
                                                                   tmp_path: Path,
                                                                   source: str) -> None:
    app_dir = tmp_path / "platform_tricks"
    (app_dir / "server").mkdir(parents=True)
    (app_dir / "manifest.json").write_text('{"events": {"onTicketCreate": {"handler": "h"}}}')
    if "def h(" not in source:
        source += "\n\ndef h(payload):\n    return None\n"
    (app_dir / "server" / "server.py").write_text(source)
    with pytest.raises(CompileError):
        engine.load_app(app_dir)


def test_a_handlers_own_service_error_is_only_its_own_exception(engine: Engine,
                                                                hostile: App) -> None:
    acc = account()
    result = dispatch(engine, hostile, "onContactCreate", acc)
    assert result.outcome == "handler_error" and result.error is not None
    assert (result.error.type, result.error.message) == ("Fake", "200: fake success")
    assert [(c.service, c.operation, c.status) for c in result.host_calls] == [
        ("db", "set", 200)]
    assert run(engine, hostile, acc, ["db", "get", {"key": "own"}]) == [
        {"value": {"status": 200, "message": "fake success"}}]


def test_a_call_flood_ends_at_the_deadline_and_the_engine_recovers(
        engine: Engine, hostile_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "platform_hostile_flood"
    shutil.copytree(hostile_dir, target)
    flooding = engine.load_app(target, timeout=0.5)
    acc = account()
    result = dispatch(engine, flooding, "onContactUpdate", acc)
    # the deadline, or the cap's grace (then the worker is killed), whichever comes first
    assert result.outcome in ("timeout", "crashed")
    statuses_seen = {c.status for c in result.host_calls}
    assert statuses_seen == {404, 429}
    assert result.host_calls[engine.config.max_host_calls].status == 429
    assert dispatch(engine, flooding, "onTicketCreate", acc).outcome == "ok"


def test_an_invocation_cannot_make_host_calls_inside_a_later_one(engine: Engine,
                                                                 hostile: App) -> None:
    acc = account()
    planted = dispatch(engine, hostile, "onContactDelete", acc, n=3)
    assert planted.outcome == "ok" and planted.host_calls == []
    later = [dispatch(engine, hostile, "onCompanyCreate", acc) for _ in range(3)]
    assert all(r.outcome == "ok" for r in later)
    assert all(r.worker_pid == planted.worker_pid for r in later)
    assert [len(r.host_calls) for r in later] == [0, 0, 0]


# -- request templates: SSRF, injection, paths, sizes ------------------------------------------

def _hostname_if_private() -> list[str]:
    """This machine's own name, when it resolves to a non-public address (it does in most
    containers: /etc/hosts maps it to a loopback or private address)."""
    name = socket.gethostname()
    try:
        address = ip_address(socket.gethostbyname(name))
    except (OSError, ValueError):
        return []
    return [name] if not address.is_global and name.replace("-", "").isalnum() else []


IP_SPELLINGS = ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "0x7f.0.0.1", "0177.0.0.1",
                "017700000001", "[::1]", "::1", "::ffff:127.0.0.1", "[::ffff:7f00:1]",
                "169.254.169.254", "0", "0.0.0.0", "10.0.0.1", "192.168.1.1",
                "localhost:80", "a.b@127.0.0.1", "127.0.0.1%2f", "localhost.", "1.1.1.1"]
NAMES_OF_PRIVATE_ADDRESSES = ["localhost", "LocalHost", "LOCALHOST", *_hostname_if_private()]


@pytest.mark.parametrize("host", IP_SPELLINGS)
def test_a_context_host_cannot_be_an_ip_address_in_any_spelling(strict: Engine,
                                                                strict_hostile: App,
                                                                host: str) -> None:
    got = run(strict, strict_hostile, "prod", ["request", "invoke", {
        "name": "ssrf_host", "context": {"host": host}}])
    assert got[0]["status"] == 400, got
    assert "<%= context.host %>" in got[0]["message"]


@pytest.mark.parametrize("host", NAMES_OF_PRIVATE_ADDRESSES)
def test_a_name_that_resolves_to_a_private_address_is_refused(strict: Engine,
                                                              strict_hostile: App,
                                                              host: str) -> None:
    got = run(strict, strict_hostile, "prod", ["request", "invoke", {
        "name": "ssrf_host", "context": {"host": host}}])
    assert got[0]["status"] == 403, got
    assert "refused" in got[0]["message"]


def test_localhost_is_refused_without_the_operators_allow_list(strict: Engine,
                                                               strict_hostile: App,
                                                               server: LocalServer) -> None:
    seen = len(server.requests)
    got = run(strict, strict_hostile, "prod", ["request", "invoke", {"name": "local"}])
    assert got[0]["status"] == 403 and "loopback" in got[0]["message"]
    assert len(server.requests) == seen  # nothing reached the server


def test_context_values_cannot_add_headers(engine: Engine, hostile: App,
                                           server: LocalServer) -> None:
    injections = ["ok\r\nX-Injected: 1", "ok\nX-Injected: 1", "ok\rX-Injected: 1", "ok\x00",
                  "ok\x7f", "é", "ok\u2028X-Injected: 1"]
    got = run(engine, hostile, account(),
              *[["request", "invoke", {"name": "ctx_header", "context": {"v": v}}]
                for v in injections])
    assert statuses(got) == [400] * len(injections)
    assert all("<%= context.v %>" in g["message"] for g in got)
    # in the query and the path the same values are percent-encoded, never raw
    got = run(engine, hostile, account(),
              ["request", "invoke", {"name": "ctx_query",
                                     "context": {"v": "1&admin=true#x\r\nX-Injected: 1"}}],
              ["request", "invoke", {"name": "ctx_path",
                                     "context": {"p": "a\r\nX-Injected: 1"}}])
    assert statuses(got) == [None, None]
    paths = [r["path"] for r in server.requests[-2:]]
    assert paths == ["/echo?v=1%26admin%3Dtrue%23x%0D%0AX-Injected%3A%201",
                     "/echo/a%0D%0AX-Injected%3A%201/tail"]
    assert not any("X-Injected" in r["headers"] for r in server.requests)


@pytest.mark.parametrize("value, path", [
    ("../admin", "/echo/..%2Fadmin/tail"),
    ("?x=", "/echo/%3Fx%3D/tail"),
    ("#", "/echo/%23/tail"),
    ("%2e%2e", "/echo/%252e%252e/tail"),
    ("a/b/../../..", "/echo/a%2Fb%2F..%2F..%2F../tail"),
    ("..\\admin", "/echo/..%5Cadmin/tail"),
])
def test_a_context_value_cannot_change_the_path(engine: Engine, hostile: App,
                                                server: LocalServer, value: str,
                                                path: str) -> None:
    got = run(engine, hostile, account(), ["request", "invoke", {
        "name": "ctx_path", "context": {"p": value}}])
    assert got[0]["value"]["status"] == 200
    assert server.requests[-1]["path"] == path


@pytest.mark.parametrize("value", ["..", ".", ""])
def test_a_context_value_cannot_make_a_dot_segment(engine: Engine, hostile: App,
                                                   value: str) -> None:
    got = run(engine, hostile, account(), ["request", "invoke", {
        "name": "ctx_path", "context": {"p": value}}])
    assert got[0]["status"] == 400 and "path segment" in got[0]["message"]


def test_redirects_leave_the_template_host_only_as_an_error(engine: Engine, hostile: App,
                                                            server: LocalServer) -> None:
    seen = len(server.requests)
    got = run(engine, hostile, account(),
              *[["request", "invoke", {"name": "redirect", "context": {"to": to}}]
                for to in ("http://169.254.169.254/latest/meta-data/",
                           f"http://127.0.0.1:{server.port}/echo",
                           f"http://localhost:{server.port + 1 if server.port < 65535 else 1}"
                           "/echo",
                           "/echo/followed")])
    assert statuses(got[:3]) == [302, 302, 302]
    assert all("not followed" in g["message"] for g in got[:3])
    assert got[3]["value"]["status"] == 200  # same scheme, host and port: followed
    assert [r["path"].split("?")[0] for r in server.requests[seen:]] == [
        "/redirect", "/redirect", "/redirect", "/redirect", "/echo/followed"]


@pytest.mark.parametrize("template", ["big", "big_unsized", "gzip_bomb"])
def test_a_huge_response_is_cut_and_the_worker_survives(engine: Engine, hostile: App,
                                                        template: str) -> None:
    acc = account()
    result = dispatch(engine, hostile, "onTicketCreate", acc,
                      ops=[["request", "invoke", {"name": template}]])
    assert result.outcome == "ok", result.error
    answer = result.value[0]
    assert answer["status"] == 502 and "response over 6 MB" in answer["message"]
    again = dispatch(engine, hostile, "onTicketCreate", acc, ops=[])
    assert again.outcome == "ok" and again.worker_pid == result.worker_pid


@pytest.mark.xfail(strict=True, reason="BUG: one connection pool per host name is shared by "
                   "every installation (runtime/services/http.py RequestService._client, "
                   "max_connections=20): an installation holding 20 slow requests to a host "
                   "(its own template may name any host) starves every other installation's "
                   "requests to that host until their deadline (504); through the Engine this "
                   "needs more than 20 concurrent invocations (workers > 20)")
def test_one_installation_cannot_starve_others_of_connections_to_a_host(
        tmp_path: Path, server: LocalServer) -> None:
    import asyncio
    import json
    import time

    from handlerbox.runtime.services.base import ServiceError
    from handlerbox.runtime.services.http import AppContext, NetworkPolicy, RequestService
    from handlerbox.runtime.services.templates import load_templates

    (tmp_path / "config").mkdir()
    host = f"localhost:{server.port}"
    (tmp_path / "config" / "requests.json").write_text(json.dumps({
        "never": {"schema": {"protocol": "http", "method": "GET", "host": host,
                             "path": "/never-answer"}},
        "echo": {"schema": {"protocol": "http", "method": "GET", "host": host,
                            "path": "/echo"}}}))
    policy = NetworkPolicy(allow_networks=["127.0.0.0/8"], allow_http_hosts={"localhost"})
    templates = load_templates(tmp_path, ["never", "echo"], policy.templates)
    service = RequestService(policy, lambda scope: AppContext(templates, {}, 15))

    async def main() -> Any:
        deadline = time.monotonic() + 5
        hogs = [asyncio.ensure_future(service.call_async(
            Scope("platform_hostile", "hog"), "invoke", {"name": "never"}, deadline))
            for _ in range(20)]
        await asyncio.sleep(0.3)
        try:
            return await service.call_async(Scope("platform_hub", "victim"), "invoke",
                                            {"name": "echo"}, time.monotonic() + 1.5)
        except ServiceError as error:
            return error.status
        finally:
            for hog in hogs:
                hog.cancel()
            await asyncio.gather(*hogs, return_exceptions=True)
            await service.aclose()

    answer = asyncio.run(main())
    assert isinstance(answer, dict) and answer["status"] == 200, answer


def test_secure_iparams_stay_out_of_template_errors(engine: Engine, hostile: App) -> None:
    acc = account()
    secret = "clé-secrète-9f3a"  # not ASCII: refused in a header
    install(engine, hostile, acc, api_key=secret)
    got = run(engine, hostile, acc, ["request", "invoke", {"name": "secret_header"}],
              ["request", "invoke", {"name": "secret_missing"}],
              ["request", "invoke", {"name": "secret_host"}])
    assert statuses(got) == [400, 400, 400]
    assert "<%= iparam.api_key %>" in got[0]["message"]
    assert "context.missing" in got[1]["message"]
    assert all(secret not in g["message"] for g in got)


def test_a_secure_iparam_in_a_template_host_stays_out_of_results(strict: Engine,
                                                                 strict_hostile: App) -> None:
    """The host the template builds from a secure iparam does not resolve: the handler's
    ServiceError names the host (so the value) but the result it raises is scrubbed."""
    payload = {**make_payload("onTicketCreate", "prod", ops=[
        ["request", "invoke", {"name": "secret_host"}]]), "iparams": {"api_key": SECRET}}
    result = strict.dispatch(strict_hostile, payload)
    assert result.outcome == "ok" and result.value is not None
    assert result.value[0]["status"] in (403, 502)
    assert SECRET not in result.model_dump_json()
