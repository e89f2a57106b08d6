"""The request service against a real local server (tests/httpserver.py, 127.0.0.1 only):
success, retries, the address check (SSRF, DNS rebinding, redirects), deadlines, size caps
and the rate limit; every behaviour through both `call` (sync) and `call_async`.

Network traffic goes only to servers these tests start on 127.0.0.1; other addresses are
only ever seen by a fake resolver, and connections to them are intercepted."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from handlerbox.runtime.services.base import Scope, ServiceError
from handlerbox.runtime.services.http import (
    AppContext,
    NetworkPolicy,
    RequestService,
    upstream_error,
)
from handlerbox.runtime.services.templates import load_templates
from tests.httpserver import LocalServer, make_tls

LOCAL = NetworkPolicy(allow_networks=[ip_network("127.0.0.1/32")],
                      allow_http_hosts={"localhost", "rebind.example"})
NO_ALLOWANCE = NetworkPolicy(allow_http_hosts={"localhost"})
SCOPE = Scope("app", "82918")
MODES = ["sync", "async"]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


Build = Callable[..., RequestService]


@pytest.fixture
def build(tmp_path: Path, server: LocalServer) -> Iterator[Build]:
    """build(templates, policy=LOCAL, timeout=15, iparams=None) -> a service whose every
    installation has those templates (host "localhost:<port>" and http unless given)."""
    made: list[RequestService] = []

    def make(templates: dict[str, dict[str, Any]], policy: NetworkPolicy = LOCAL,
             timeout: float = 15, iparams: dict[str, Any] | None = None,
             declared: list[str] | None = None, **kwargs: Any) -> RequestService:
        spec = {}
        for name, template in templates.items():
            schema = {"protocol": "http", "method": "GET", "host": f"localhost:{server.port}",
                      **template.get("schema", {})}
            spec[name] = {"schema": schema, "options": template.get("options", {})}
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "config" / "requests.json").write_text(json.dumps(spec))
        loaded = load_templates(tmp_path, list(templates) if declared is None else declared,
                                policy.templates)
        context = AppContext(loaded, iparams or {}, timeout)
        service = RequestService(policy, lambda scope: context, **kwargs)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


def invoke(service: RequestService, mode: str, name: str, context: dict[str, Any] | None = None,
           body: Any = None, deadline_s: float = 5.0, scope: Scope = SCOPE, **extra: Any) -> Any:
    """One invoke through `call` or `call_async` (on a fresh loop, pools closed after)."""
    args = {"name": name, **({"context": context} if context is not None else {}),
            **({"body": body} if body is not None else {}), **extra}
    deadline = time.monotonic() + deadline_s
    if mode == "sync":
        return service.call(scope, "invoke", args, deadline)

    async def run() -> Any:
        try:
            return await service.call_async(scope, "invoke", args, deadline)
        finally:
            await service.aclose()

    return asyncio.run(run())


def fails(status: int, call: Callable[[], Any]) -> str:
    with pytest.raises(ServiceError) as info:
        call()
    assert info.value.status == status, info.value.message
    return info.value.message


class Resolver:
    """A fake getaddrinfo for names under .example: answers[i] for the i-th look-up of a
    name (the last answer repeats); other names resolve for real."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, **answers: list[list[str]]) -> None:
        self.answers = {k.replace("_", "."): v for k, v in answers.items()}
        self.asked: list[str] = []
        self._real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in self.answers:
            return self._real(host, port, *args, **kwargs)
        self.asked.append(host)
        batch = self.answers[host][min(len(self.asked) - 1, len(self.answers[host]) - 1)]
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, port, 0, 0) if ":" in ip else (ip, port)) for ip in batch]


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address a connection is attempted to; attempts to anything but 127.0.0.1 are
    refused here, so they never leave the machine."""
    seen: list[str] = []
    real = anyio.connect_tcp

    async def connect(remote_host: Any, remote_port: Any, **kwargs: Any) -> Any:
        seen.append(str(remote_host))
        if str(remote_host) != "127.0.0.1":
            raise OSError(111, "connection refused by the test")
        return await real(remote_host, remote_port, **kwargs)

    monkeypatch.setattr(anyio, "connect_tcp", connect)
    return seen


def seen(server: LocalServer, marker: str) -> list[dict[str, Any]]:
    return [r for r in server.requests if marker in r["path"]]


# -- success --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_get_with_path_query_and_headers(build: Build, mode: str, server: LocalServer) -> None:
    service = build({"get": {"schema": {
        "path": "/echo/<%= context.id %>", "query": {"q": "<%= context.q %>", "lit": "a b"},
        "headers": {"X-Api-Key": "<%= iparam.key %>", "Accept": "application/json"}}}},
        iparams={"key": "k-123"})
    result = invoke(service, mode, "get", {"id": "a/b", "q": "x&y=1"})
    assert result["status"] == 200 and result["body_encoding"] == "text"
    assert result["headers"]["content-type"] == "application/json"
    echo = json.loads(result["body"])
    assert echo["method"] == "GET"
    assert echo["path"] == "/echo/a%2Fb?q=x%26y%3D1&lit=a%20b"
    assert echo["headers"]["Host"] == f"localhost:{server.port}"
    assert echo["headers"]["X-Api-Key"] == "k-123"
    assert echo["headers"]["Accept-Encoding"] == "identity"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("body", "sent", "content_type"), [
    ({"a": 1, "b": "é"}, '{"a":1,"b":"é"}', "application/json"),
    ([1, 2], "[1,2]", "application/json"),
    ("plain text", "plain text", None),
])
def test_post_sends_the_body(build: Build, mode: str, body: Any, sent: str,
                             content_type: str | None) -> None:
    service = build({"post": {"schema": {"method": "POST", "path": "/echo"}}})
    echo = json.loads(invoke(service, mode, "post", body=body)["body"])
    assert echo["method"] == "POST" and echo["body"] == sent
    assert echo["headers"].get("Content-Type") == content_type


def test_a_template_content_type_wins_over_the_json_default(build: Build) -> None:
    service = build({"post": {"schema": {"method": "PUT", "path": "/echo", "headers": {
        "Content-Type": "application/vnd.api+json"}}}})
    echo = json.loads(invoke(service, "sync", "post", body={"a": 1})["body"])
    assert echo["headers"]["Content-Type"] == "application/vnd.api+json"


@pytest.mark.parametrize("mode", MODES)
def test_bodies_that_are_not_utf8_text_come_back_as_base64(build: Build, mode: str) -> None:
    service = build({"bin": {"schema": {"path": "/binary"}}, "l1": {"schema": {"path": "/latin1"}}})
    result = invoke(service, mode, "bin")
    assert result["body_encoding"] == "base64"
    import base64
    assert base64.b64decode(result["body"]) == bytes(range(256))
    assert invoke(service, mode, "l1")["body"] == "café"


# -- retries --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [500, 503, 429])
def test_retries_on_5xx_and_429_then_succeeds(build: Build, server: LocalServer, mode: str,
                                              status: int) -> None:
    key = uuid.uuid4().hex
    service = build({"flaky": {"schema": {"path": f"/flaky/{key}",
                                          "query": {"fail": "2", "status": str(status)}},
                               "options": {"maxAttempts": 3, "retryDelay": 10}}})
    assert invoke(service, mode, "flaky")["body"] == "ok"
    assert len(seen(server, key)) == 3


@pytest.mark.parametrize("mode", MODES)
def test_no_retry_on_404_and_non_2xx_is_an_error_with_an_excerpt(
        build: Build, server: LocalServer, mode: str) -> None:
    marker = uuid.uuid4().hex
    service = build({"nf": {"schema": {"path": "/status/404", "query": {"m": marker}},
                            "options": {"maxAttempts": 5}}})
    message = fails(404, lambda: invoke(service, mode, "nf"))
    assert message == "nf answered 404: status 404"
    assert len(seen(server, marker)) == 1


def test_attempts_run_out_with_the_last_status(build: Build, server: LocalServer) -> None:
    key = uuid.uuid4().hex
    service = build({"f": {"schema": {"path": f"/flaky/{key}", "query": {"fail": "9"}},
                           "options": {"maxAttempts": 2}}})
    assert fails(500, lambda: invoke(service, "sync", "f")) == "f answered 500: try again"
    assert len(seen(server, key)) == 2


def test_network_errors_are_retried_and_end_as_502(build: Build, connects: list[str]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = build({"down": {"schema": {"host": f"localhost:{port}"},
                              "options": {"maxAttempts": 3, "retryDelay": 0}}})
    assert "cannot connect to localhost" in fails(502, lambda: invoke(service, "sync", "down"))
    assert connects == ["127.0.0.1"] * 3


def test_retries_never_wait_past_the_deadline(build: Build, server: LocalServer) -> None:
    key = uuid.uuid4().hex
    service = build({"f": {"schema": {"path": f"/flaky/{key}", "query": {"fail": "9"}},
                           "options": {"maxAttempts": 5, "retryDelay": 1500}}})
    start = time.monotonic()
    fails(500, lambda: invoke(service, "sync", "f", deadline_s=1.0))
    assert time.monotonic() - start < 1.0 and len(seen(server, key)) == 1


# -- the address check ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_localhost_is_refused_without_an_allowance(build: Build, server: LocalServer,
                                                   mode: str) -> None:
    marker = uuid.uuid4().hex
    service = build({"t": {"schema": {"path": "/echo", "query": {"m": marker}}}},
                    policy=NO_ALLOWANCE)
    message = fails(403, lambda: invoke(service, mode, "t"))
    assert message == "localhost resolves to 127.0.0.1, a loopback address: refused"
    assert seen(server, marker) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("address", "kind"), [
    ("::1", "a loopback address"),
    ("0.0.0.0", "an unspecified address"),
    ("::", "an unspecified address"),
    ("169.254.169.254", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("10.1.2.3", "a private address"),
    ("192.168.0.10", "a private address"),
    ("fd00::1", "a private address"),
    ("100.64.0.1", "a shared (carrier-grade NAT) address"),
    ("224.0.0.251", "a multicast address"),
    ("240.0.0.1", "a reserved address"),
    ("::ffff:127.0.0.1", "a loopback address in IPv4-mapped form"),
    ("::ffff:169.254.169.254", "a link-local address in IPv4-mapped form"),
    ("2002:7f00:1::1", "a loopback address in 6to4 form"),
    ("64:ff9b::a9fe:a9fe", "a link-local address in NAT64 form"),
])
def test_names_resolving_to_internal_addresses_are_refused(
        build: Build, monkeypatch: pytest.MonkeyPatch, connects: list[str], mode: str,
        address: str, kind: str) -> None:
    Resolver(monkeypatch, internal_example=[[address]])
    service = build({"t": {"schema": {"protocol": "https", "host": "internal.example"}}},
                    policy=NetworkPolicy())
    message = fails(403, lambda: invoke(service, mode, "t"))
    assert message == f"internal.example resolves to {ip_address(address)}, {kind}: refused"
    assert connects == []


def test_a_name_that_does_not_resolve_is_a_502(build: Build,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    service = build({"t": {"schema": {"protocol": "https", "host": "nowhere.example"}}},
                    policy=NetworkPolicy())
    message = fails(502, lambda: invoke(service, "sync", "t"))
    assert message == "cannot resolve nowhere.example: Name or service not known"


def test_one_internal_address_among_public_ones_refuses_the_request(
        build: Build, monkeypatch: pytest.MonkeyPatch, connects: list[str]) -> None:
    Resolver(monkeypatch, mixed_example=[["93.184.215.14", "10.0.0.7"]])
    service = build({"t": {"schema": {"protocol": "https", "host": "mixed.example"}}},
                    policy=NetworkPolicy())
    assert "10.0.0.7, a private address" in fails(403, lambda: invoke(service, "sync", "t"))
    assert connects == []


@pytest.mark.parametrize("mode", MODES)
def test_dns_rebinding_resolves_once_and_connects_to_the_checked_address(
        build: Build, server: LocalServer, monkeypatch: pytest.MonkeyPatch,
        connects: list[str], mode: str) -> None:
    marker = uuid.uuid4().hex
    resolver = Resolver(monkeypatch, rebind_example=[["93.184.215.14"], ["127.0.0.1"]])
    service = build({"t": {"schema": {"host": f"rebind.example:{server.port}",
                                      "path": "/echo", "query": {"m": marker}},
                           "options": {"maxAttempts": 2}}})
    assert "cannot connect to rebind.example" in fails(502, lambda: invoke(service, mode, "t"))
    assert resolver.asked == ["rebind.example"]
    assert connects == ["93.184.215.14", "93.184.215.14"]
    assert seen(server, marker) == []


@pytest.mark.parametrize("mode", MODES)
def test_the_checked_address_is_used_even_when_the_name_later_points_elsewhere(
        build: Build, server: LocalServer, monkeypatch: pytest.MonkeyPatch,
        connects: list[str], mode: str) -> None:
    resolver = Resolver(monkeypatch, rebind_example=[["127.0.0.1"], ["10.0.0.1"]])
    service = build({"t": {"schema": {"host": f"rebind.example:{server.port}",
                                      "path": "/redirect", "query": {"to": "/echo"}}}})
    echo = json.loads(invoke(service, mode, "t")["body"])
    assert echo["headers"]["Host"] == f"rebind.example:{server.port}"
    assert resolver.asked == ["rebind.example"] and set(connects) == {"127.0.0.1"}


# -- redirects ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_a_same_host_redirect_is_followed(build: Build, mode: str) -> None:
    service = build({"r": {"schema": {"method": "POST", "path": "/redirect",
                                      "query": {"to": "/echo?after=1", "code": "303"}}}})
    echo = json.loads(invoke(service, mode, "r", body={"a": 1})["body"])
    assert echo["path"] == "/echo?after=1" and echo["method"] == "GET" and echo["body"] == ""


def test_a_307_redirect_keeps_the_method_and_body(build: Build) -> None:
    service = build({"r": {"schema": {"method": "POST", "path": "/redirect",
                                      "query": {"to": "/echo", "code": "307"}}}})
    echo = json.loads(invoke(service, "sync", "r", body="payload")["body"])
    assert (echo["method"], echo["body"]) == ("POST", "payload")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", [
    "http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:{port}/echo",
    "http://localhost:1/echo", "https://localhost:{port}/echo", "//evil.example/x",
])
def test_a_redirect_to_another_host_is_not_followed(
        build: Build, server: LocalServer, monkeypatch: pytest.MonkeyPatch,
        connects: list[str], mode: str, target: str) -> None:
    resolver = Resolver(monkeypatch)
    target = target.format(port=server.port)
    service = build({"r": {"schema": {"path": "/redirect", "query": {"to": target}}}})
    message = fails(302, lambda: invoke(service, mode, "r"))
    assert message == f"r answered 302: redirect to {target} not followed (a template reaches " \
        "only its own host)"
    assert connects == ["127.0.0.1"] and resolver.asked == []


def test_more_than_three_redirects_is_a_502(build: Build, server: LocalServer) -> None:
    service = build({"loop": {"schema": {"path": "/redirect", "query": {
        "to": "/redirect?to=/redirect%3Fto%3D/redirect%253Fto%253D/redirect%25253Fto%25253D/echo"
    }}}})
    assert fails(502, lambda: invoke(service, "sync", "loop")) == "loop: more than 3 redirects"


# -- time -----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["/stream-forever", "/never-answer"])
def test_endless_servers_end_by_the_deadline(build: Build, mode: str, path: str) -> None:
    service = build({"slow": {"schema": {"path": path}, "options": {"maxAttempts": 3}}})
    start = time.monotonic()
    message = fails(504, lambda: invoke(service, mode, "slow", deadline_s=1.0))
    assert message == "Timeout error while processing the request."
    assert time.monotonic() - start < 1.0 + 0.5


def test_the_app_request_timeout_ends_an_attempt_before_the_deadline(build: Build) -> None:
    service = build({"slow": {"schema": {"path": "/never-answer"}}}, timeout=0.3)
    start = time.monotonic()
    fails(504, lambda: invoke(service, "sync", "slow", deadline_s=10.0))
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("mode", MODES)
def test_a_deadline_already_past_is_a_504(build: Build, mode: str) -> None:
    service = build({"e": {"schema": {"path": "/echo"}}})
    fails(504, lambda: invoke(service, mode, "e", deadline_s=-1.0))


# -- sizes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["/big", "/big-unsized", "/gzip-bomb"])
def test_responses_over_6_mb_are_cut_with_a_clear_error(build: Build, mode: str,
                                                        path: str) -> None:
    service = build({"big": {"schema": {"path": path}}})
    message = fails(502, lambda: invoke(service, mode, "big"))
    assert message == "localhost: response over 6 MB (the limit is 6291456 bytes)"


def test_a_gzip_body_is_decoded_within_the_cap(build: Build, monkeypatch: pytest.MonkeyPatch,
                                               server: LocalServer) -> None:
    import gzip

    import tests.httpserver as httpserver
    monkeypatch.setattr(httpserver, "_BOMB", gzip.compress(b"small and fine"))
    service = build({"gz": {"schema": {"path": "/gzip-bomb"}}})
    result = invoke(service, "sync", "gz")
    assert result["body"] == "small and fine" and "content-encoding" not in result["headers"]


@pytest.mark.parametrize("mode", MODES)
def test_a_body_over_100_kb_is_refused_before_sending(build: Build, server: LocalServer,
                                                      mode: str) -> None:
    marker = uuid.uuid4().hex
    service = build({"p": {"schema": {"method": "POST", "path": "/echo",
                                      "query": {"m": marker}}}})
    assert invoke(service, mode, "p", body="x" * 102400)["status"] == 200
    message = fails(413, lambda: invoke(service, mode, "p", body="x" * 102401))
    assert message == "request body is 102401 bytes; the limit is 100 KB (102400 bytes)"
    assert len(seen(server, marker)) == 1


# -- arguments, templates, rate -------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_unknown_and_undeclared_templates_are_404_listing_the_declared(build: Build,
                                                                       mode: str) -> None:
    service = build({"a": {}, "b": {}, "hidden": {}}, declared=["b", "a"])
    for name in ("nope", "hidden"):
        message = fails(404, lambda n=name: invoke(service, mode, n))  # type: ignore[misc]
        assert message == f"no request template named {name!r}; this app declares: a, b"


@pytest.mark.parametrize(("args", "needle"), [
    ({"name": "e", "headers": {"X": "1"}}, "takes name, context and body; not headers"),
    ({}, "name must be a template name"),
    ({"name": 3}, "name must be a template name"),
    ({"name": "e", "context": []}, "context must be an object"),
    ({"name": "e", "body": 3}, "body must be a string, an object, an array or null"),
    ({"name": "e", "body": {"x": float("nan")}}, "body cannot be encoded"),
    ({"name": "e", "body": "\ud800"}, "body cannot be encoded"),
    ({"name": "e", "context": {}}, "context.id is missing"),
])
def test_bad_arguments_are_400(build: Build, args: dict[str, Any], needle: str) -> None:
    service = build({"e": {"schema": {"path": "/echo/<%= context.id %>"}}})
    message = fails(400, lambda: service.call(SCOPE, "invoke", args, time.monotonic() + 5))
    assert needle in message


def test_an_unknown_operation_is_400(build: Build) -> None:
    service = build({"e": {}})
    fails(400, lambda: service.call(SCOPE, "send", {"name": "e"}, time.monotonic() + 5))


@pytest.mark.parametrize("mode", MODES)
def test_rate_limit_is_50_per_minute_per_installation(
        build: Build, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    Resolver(monkeypatch, blocked_example=[["10.0.0.9"]])  # every call stops at 403: no traffic
    now = [1000.0]
    service = build({"t": {"schema": {"protocol": "https", "host": "blocked.example"}}},
                    policy=NetworkPolicy(), clock=lambda: now[0])
    for _ in range(50):
        fails(403, lambda: invoke(service, mode, "t"))
    message = fails(429, lambda: invoke(service, mode, "t"))
    assert message == "rate limit: at most 50 requests per minute per app per account; " \
        "try again later"
    fails(403, lambda: invoke(service, mode, "t", scope=Scope("app", "other-account")))
    fails(403, lambda: invoke(service, mode, "t", scope=Scope("other-app", "82918")))
    now[0] += 60.0
    fails(403, lambda: invoke(service, mode, "t"))


def test_http_to_a_host_the_service_policy_does_not_allow_is_refused(
        build: Build, tmp_path: Path) -> None:
    build({"t": {}})  # loaded under LOCAL, which allows http to localhost
    loaded = load_templates(tmp_path, ["t"], LOCAL.templates)
    service = RequestService(NetworkPolicy(allow_networks=["127.0.0.1/32"]),
                             lambda scope: AppContext(loaded, {}))
    try:
        assert "plain http to localhost" in fails(403, lambda: invoke(service, "sync", "t"))
    finally:
        service.close()


# -- TLS: the pinned address with the real name -----------------------------------------------

def test_tls_verifies_the_name_while_connecting_to_the_checked_address(
        build: Build, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cryptography")
    server_tls, client_tls = make_tls("api.handlerbox.example")
    Resolver(monkeypatch, api_handlerbox_example=[["127.0.0.1"]],
             other_handlerbox_example=[["127.0.0.1"]])
    with LocalServer(tls=server_tls) as tls_server:
        service = build({name: {"schema": {"protocol": "https", "path": "/echo",
                                           "host": f"{name}.handlerbox.example:{tls_server.port}"}}
                         for name in ("api", "other")}, verify=client_tls)
        for mode in MODES:
            echo = json.loads(invoke(service, mode, "api")["body"])
            assert echo["headers"]["Host"] == f"api.handlerbox.example:{tls_server.port}"
        # Same address, pooled connection to it open: a name the certificate does not cover
        # must still fail (pools are per name, so no TLS session is reused across names).
        invoke(service, "sync", "api")
        message = fails(502, lambda: invoke(service, "sync", "other"))
        assert "certificate" in message and "other.handlerbox.example" in message


# -- the error map --------------------------------------------------------------------------

def _leaves(cls: type[httpx.HTTPError]) -> list[type[httpx.HTTPError]]:
    subs = cls.__subclasses__()
    return [cls] if not subs else [leaf for sub in subs for leaf in _leaves(sub)]


@pytest.mark.parametrize("error", _leaves(httpx.TransportError), ids=lambda c: c.__name__)
def test_every_transport_error_maps_to_502_or_504(error: type[httpx.HTTPError]) -> None:
    mapped = upstream_error("api.example.com", error("boom"))
    expected = 504 if issubclass(error, httpx.TimeoutException) else 502
    assert mapped.status == expected and mapped.message
