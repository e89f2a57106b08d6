"""Request templates: loading config/requests.json (every bad field is reported with its file
and key path) and rendering (no substituted value can change the scheme, host, port or header
set, or inject CRLF, or step out of its path segment)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlerbox.runtime.errors import AppLoadError
from handlerbox.runtime.services.base import ServiceError
from handlerbox.runtime.services.templates import (
    Template,
    TemplatePolicy,
    domain_problem,
    load_templates,
)

GOOD: dict[str, Any] = {
    "createTicket": {
        "schema": {
            "protocol": "https", "method": "POST", "host": "<%= iparam.domain %>.freshdesk.com",
            "path": "/api/v2/tickets/<%= context.ticket_id %>/notes",
            "headers": {"Authorization": "Basic <%= encode(iparam.api_key) %>",
                        "Content-Type": "application/json", "X-Trace": "<%= context.trace %>"},
            "query": {"include": "requester", "page": "<%= context.page %>"},
        },
        "options": {"maxAttempts": 3, "retryDelay": 500},
    },
    "ping": {"schema": {"method": "GET", "host": "status.example.com"}},
}
IPARAMS = {"domain": "acme", "api_key": "key:x"}
CONTEXT = {"ticket_id": 42, "trace": "abc", "page": 2}


def write(root: Path, requests: Any) -> Path:
    (root / "config").mkdir(exist_ok=True)
    text = requests if isinstance(requests, str) else json.dumps(requests)
    (root / "config" / "requests.json").write_text(text)
    return root


def problems(root: Path, declared: list[str], policy: TemplatePolicy | None = None) -> list[str]:
    with pytest.raises(AppLoadError) as info:
        load_templates(root, declared, policy)
    return list(info.value.problems)


def one(schema: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"schema": {"method": "GET", "host": "api.example.com", **schema}}
    if options is not None:
        spec["options"] = options
    return {"t": spec}


def template(schema: dict[str, Any], tmp_path: Path) -> Template:
    return load_templates(write(tmp_path, one(schema)), ["t"])["t"]


# -- loading -------------------------------------------------------------------------------

def test_a_good_file_loads_the_declared_templates_only(tmp_path: Path) -> None:
    templates = load_templates(write(tmp_path, GOOD), ["createTicket"])
    assert list(templates) == ["createTicket"]
    t = templates["createTicket"]
    assert (t.method, t.scheme, t.port, t.max_attempts, t.retry_delay_ms) == (
        "POST", "https", 443, 3, 500)


def test_a_good_template_renders_every_position(tmp_path: Path) -> None:
    t = load_templates(write(tmp_path, GOOD), ["createTicket"])["createTicket"]
    r = t.render(IPARAMS, CONTEXT)
    assert (r.method, r.scheme, r.host, r.port) == ("POST", "https", "acme.freshdesk.com", 443)
    assert r.path_and_query == "/api/v2/tickets/42/notes?include=requester&page=2"
    assert dict(r.headers) == {"Authorization": "Basic a2V5Ong=",
                               "Content-Type": "application/json", "X-Trace": "abc"}
    assert r.url == "https://acme.freshdesk.com/api/v2/tickets/42/notes?include=requester&page=2"


def test_no_file_and_nothing_declared_is_no_templates(tmp_path: Path) -> None:
    assert load_templates(tmp_path, []) == {}


@pytest.mark.parametrize(("schema", "options", "expected"), [
    ({"host": "127.0.0.1"}, None, "t.schema.host: must be a domain name, not an IP address"),
    ({"host": "2130706433"}, None, "t.schema.host: must be a domain name, not an IP address"),
    ({"host": "0177.0.0.1"}, None, "t.schema.host: must be a domain name, not an IP address"),
    ({"host": "0x7f.1"}, None, "t.schema.host: must be a domain name, not an IP address"),
    ({"host": "0x7f000001"}, None, "t.schema.host: must be a domain name, not an IP address"),
    ({"host": "127.1"}, None, "t.schema.host: must be a domain name, not an IP address"),
    ({"host": "[::1]"}, None, "t.schema.host: must be a domain name, not an IP address"),
    ({"host": "::ffff:127.0.0.1"}, None, "t.schema.host: must be a domain name, not an IP"),
    ({"host": "[::ffff:7f00:1]:443"}, None, "t.schema.host: must be a domain name, not an IP"),
    ({"host": "1.2.3.4:8080"}, None, "t.schema.host: must be a domain name, not an IP address"),
    ({"host": "<%= iparam.a %>.0.0.1"}, None, "t.schema.host: must be a domain name, not an IP"),
    ({"host": "evil.com/"}, None, "t.schema.host: may hold only letters, digits, hyphens"),
    ({"host": "user@evil.com"}, None, "t.schema.host: may hold only letters, digits, hyphens"),
    ({"host": "münchen.de"}, None, "t.schema.host: may hold only letters, digits, hyphens"),
    ({"host": "-bad.example.com"}, None, "t.schema.host: has an invalid label '-bad'"),
    ({"host": "example.com."}, None, "t.schema.host: has an invalid label ''"),
    ({"host": "example.com:0"}, None, "t.schema.host: port '0' must be a number from 1"),
    ({"host": ""}, None, "t.schema.host: must be a domain name"),
    ({"host": "<% iparam.a %>.com"}, None, "t.schema.host: holds an unknown placeholder"),
    ({"host": "<%= secrets.a %>.com"}, None, "t.schema.host: holds an unknown placeholder"),
    ({"protocol": "ftp"}, None, 't.schema.protocol: must be "https"'),
    ({"protocol": "http"}, None, "t.schema.protocol: http is allowed only for the development"),
    ({"method": "TRACE"}, None, "t.schema.method: must be one of GET, POST, PUT, PATCH, DELETE"),
    ({"path": "api"}, None, 't.schema.path: must be a string starting with "/"'),
    ({"path": "/a?b=1"}, None, "t.schema.path: may hold only URL path characters"),
    ({"path": "/a#frag"}, None, "t.schema.path: may hold only URL path characters"),
    ({"path": "/a b"}, None, "t.schema.path: may hold only URL path characters"),
    ({"path": "/a/%zz"}, None, "t.schema.path: may hold only URL path characters"),
    ({"path": "/a/../admin"}, None, 't.schema.path: must not hold "." or ".." segments'),
    ({"headers": {"Bad Name": "x"}}, None, "t.schema.headers.Bad Name: a header name is a token"),
    ({"headers": {"Host": "x"}}, None, "t.schema.headers.Host: is set by the host"),
    ({"headers": {"Transfer-Encoding": "x"}}, None, "t.schema.headers.Transfer-Encoding: is set"),
    ({"headers": {"X": "a\r\nY: b"}}, None, "t.schema.headers.X: a header value is printable"),
    ({"headers": {"X": 1}}, None, "t.schema.headers.X: must be a string"),
    ({"headers": {"X-A": "1", "x-a": "2"}}, None, "t.schema.headers.x-a: is set twice"),
    ({"headers": []}, None, "t.schema.headers: must be an object"),
    ({"query": {"<%= context.k %>": "v"}}, None, "a query key is non-empty literal text"),
    ({"query": {"k": ["v"]}}, None, "t.schema.query.k: must be a string"),
    ({"heders": {}}, None, "t.schema.heders: unknown key"),
    ({}, {"maxAttempts": 0}, "t.options.maxAttempts: must be an integer from 1 to 5"),
    ({}, {"maxAttempts": 6}, "t.options.maxAttempts: must be an integer from 1 to 5"),
    ({}, {"maxAttempts": True}, "t.options.maxAttempts: must be an integer from 1 to 5"),
    ({}, {"retryDelay": 1501}, "t.options.retryDelay: must be an integer from 0 to 1500"),
    ({}, {"retryDelay": 1.5}, "t.options.retryDelay: must be an integer from 0 to 1500"),
    ({}, {"retries": 1}, "t.options.retries: unknown key"),
])
def test_each_bad_field_is_reported_with_its_key_path(
        tmp_path: Path, schema: dict[str, Any], options: dict[str, Any] | None,
        expected: str) -> None:
    found = problems(write(tmp_path, one(schema, options)), ["t"])
    assert any(p.startswith("config/requests.json: ") and expected in p for p in found), found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    bad = one({"host": "10.0.0.1", "method": "GO", "path": "x"}, {"maxAttempts": 9})
    found = problems(write(tmp_path, bad), ["t", "missing"])
    assert len(found) == 5, found
    assert "manifest.json: requests: 'missing' is not defined in config/requests.json" in \
        found[-1]


def test_http_is_allowed_only_for_hosts_the_operator_names(tmp_path: Path) -> None:
    spec = one({"protocol": "http", "host": "localhost:8080"})
    write(tmp_path, spec)
    loaded = load_templates(tmp_path, ["t"], TemplatePolicy(frozenset({"localhost"})))
    assert loaded["t"].render({}, {}).url == "http://localhost:8080/"
    problems(tmp_path, ["t"], TemplatePolicy(frozenset({"dev.example.com"})))
    write(tmp_path, one({"protocol": "http", "host": "<%= iparam.h %>"}))
    found = problems(tmp_path, ["t"], TemplatePolicy(frozenset({"localhost"})))
    assert "http is allowed only" in found[0]


@pytest.mark.parametrize(("requests", "declared", "expected"), [
    ({f"t{i}": {"schema": {"method": "GET", "host": "a.example.com"}} for i in range(101)},
     ["t0"], "config/requests.json: defines 101 templates; at most 100"),
    (one({}), [f"t{i}" for i in range(101)], "manifest.json: requests: declares 101 templates"),
    (one({}), ["t", "t"], "manifest.json: requests: 't' is declared twice"),
    (one({}), ["nope"], "manifest.json: requests: 'nope' is not defined in config/requests.json"
     " (it defines: t)"),
    ('{"t": {}, "t": {}}', ["t"], "config/requests.json: not valid JSON (duplicate key 't')"),
    ("{", ["t"], "config/requests.json: not valid JSON"),
    ("[]", ["t"], "config/requests.json: must be a JSON object"),
    ({"t": []}, ["t"], 'config/requests.json: t: must be an object with "schema"'),
    ({"bad name": {"schema": {"method": "GET", "host": "a.example.com"}}}, [],
     "config/requests.json: bad name: a template name is"),
])
def test_file_and_manifest_level_problems(tmp_path: Path, requests: Any, declared: list[str],
                                          expected: str) -> None:
    found = problems(write(tmp_path, requests), declared)
    assert any(expected in p for p in found), found


def test_a_missing_file_is_an_error_when_templates_are_declared(tmp_path: Path) -> None:
    assert problems(tmp_path, ["t"]) == [
        "config/requests.json: missing (manifest.json declares requests)"]


def test_an_oversized_file_is_refused(tmp_path: Path) -> None:
    found = problems(write(tmp_path, " " * (256 * 1024 + 1)), ["t"])
    assert found == ["config/requests.json: over 262144 bytes"]


@pytest.mark.parametrize("host", ["2130706433", "0177.0.0.1", "0x7f.1", "0x7F.0.0.1", "127.1",
                                  "127.0.0.1", "::1", "[::1]", "1.2.3.4", "017700000001",
                                  "0x7f000001", "a.b.0x", "1e100.0"])
def test_every_ip_spelling_is_refused_as_a_host(host: str) -> None:
    assert domain_problem(host) is not None


@pytest.mark.parametrize("host", ["api.example.com", "localhost", "xn--mnchen-3ya.de",
                                  "a-b.c0m", "1e100.net", "0x.example.com"])
def test_domain_names_are_accepted(host: str) -> None:
    assert domain_problem(host) is None


# -- rendering: escaping per position -------------------------------------------------------

PATH_T = {"path": "/api/<%= context.v %>/notes", "query": {"q": "<%= context.v %>"},
          "headers": {"X-V": "<%= context.v %>"}}


@pytest.mark.parametrize("value", ["../../admin", "..%2F..%2Fadmin", "a/b", "?x=1#", "#frag",
                                   "a b", "%00", "évé", "\x00", "@evil.com", "evil.com/"])
def test_a_path_value_stays_inside_its_segment(tmp_path: Path, value: str) -> None:
    r = template({"path": "/api/<%= context.v %>/notes"}, tmp_path).render({}, {"v": value})
    assert r.path_and_query.startswith("/api/") and r.path_and_query.endswith("/notes")
    segment = r.path_and_query[len("/api/"):-len("/notes")]
    assert not set(segment) & set("/?#") and unquote(segment) == value


@pytest.mark.parametrize("value", [".", "..", ""])
def test_a_path_value_cannot_be_a_dot_segment_or_empty(tmp_path: Path, value: str) -> None:
    with pytest.raises(ServiceError) as info:
        template({"path": "/api/<%= context.v %>/x"}, tmp_path).render({}, {"v": value})
    assert info.value.status == 400 and "context.v" in info.value.message


def test_a_dot_literal_next_to_a_value_cannot_make_a_dot_dot(tmp_path: Path) -> None:
    with pytest.raises(ServiceError):
        template({"path": "/api/.<%= context.v %>"}, tmp_path).render({}, {"v": "."})


@pytest.mark.parametrize("value", ["1&admin=true", "x#y", "a=b", "v\r\nX-Evil: 1", "é"])
def test_a_query_value_is_one_value(tmp_path: Path, value: str) -> None:
    r = template({"query": {"q": "<%= context.v %>", "n": "2"}}, tmp_path).render({}, {"v": value})
    path, _, query = r.path_and_query.partition("?")
    keys = [pair.split("=", 1)[0] for pair in query.split("&")]
    assert path == "/" and keys == ["q", "n"]
    assert unquote(query.split("&")[0].split("=", 1)[1]) == value


@pytest.mark.parametrize("value", ["\r\nX-Evil: 1", "a\rb", "a\nb", "a\x00b", "a\tb", "\x7f",
                                   "\x1b[31m", "café", "\u2028"])
def test_a_header_value_with_a_control_or_non_ascii_character_is_refused(
        tmp_path: Path, value: str) -> None:
    t = template({"headers": {"X-V": "<%= context.v %>"}}, tmp_path)
    with pytest.raises(ServiceError) as info:
        t.render({}, {"v": value})
    assert info.value.status == 400 and "<%= context.v %>" in info.value.message
    assert value not in info.value.message


@pytest.mark.parametrize(("value", "error"), [
    ("evil.com", False), ("a.b", False), ("evil.com/", True), ("@evil.com", True),
    ("evil.com#", True), ("evil.com:444", True), ("a b", True), ("127.0.0.1", False),
    ("é", True), ("", True), ("x" * 64, True),
])
def test_a_host_value_yields_a_domain_name_under_the_literal_suffix(
        tmp_path: Path, value: str, error: bool) -> None:
    t = template({"host": "<%= context.v %>.example.com"}, tmp_path)
    if error:
        with pytest.raises(ServiceError) as info:
            t.render({}, {"v": value})
        assert info.value.status == 400
    else:
        r = t.render({}, {"v": value})
        assert r.host == f"{value}.example.com" and r.port == 443


def test_a_host_that_is_all_placeholder_can_still_not_be_an_ip(tmp_path: Path) -> None:
    t = template({"host": "<%= iparam.domain %>"}, tmp_path)
    assert t.render({"domain": "API.Example.com"}, {}).host == "api.example.com"
    for value in ("127.0.0.1", "2130706433", "0x7f.1", "[::1]", "localhost:80", "a@b"):
        with pytest.raises(ServiceError):
            t.render({"domain": value}, {})


@pytest.mark.parametrize(("iparams", "context", "needle"), [
    ({}, {"ticket_id": 1, "trace": "t", "page": 1}, "iparam.domain is missing"),
    (IPARAMS, {"trace": "t", "page": 1}, "context.ticket_id is missing (the template's path"),
    (IPARAMS, {**CONTEXT, "page": None}, "context.page must be a string, a number or a bool"),
    (IPARAMS, {**CONTEXT, "page": {"a": 1}}, "context.page must be a string"),
    (IPARAMS, {**CONTEXT, "page": float("nan")}, "context.page must be a string"),
    (IPARAMS, {**CONTEXT, "page": 10**5000}, "context.page must be a string"),
    (IPARAMS, {**CONTEXT, "trace": "\ud800"}, "context.trace is not valid Unicode"),
])
def test_missing_or_unusable_values_are_400_naming_the_placeholder(
        tmp_path: Path, iparams: dict[str, Any], context: dict[str, Any], needle: str) -> None:
    t = load_templates(write(tmp_path, GOOD), ["createTicket"])["createTicket"]
    with pytest.raises(ServiceError) as info:
        t.render(iparams, context)
    assert info.value.status == 400 and needle in info.value.message, info.value.message


def test_messages_never_quote_iparam_values(tmp_path: Path) -> None:
    t = template({"headers": {"Authorization": "Bearer <%= iparam.token %>"}}, tmp_path)
    with pytest.raises(ServiceError) as info:
        t.render({"token": "s3cret\r\n"}, {})
    assert "s3cret" not in info.value.message


def test_scalars_render_as_json_text(tmp_path: Path) -> None:
    t = template({"query": {"a": "<%= context.a %>", "b": "<%= context.b %>",
                            "c": "<%= context.c %>"}}, tmp_path)
    assert t.render({}, {"a": True, "b": 1.5, "c": -3}).path_and_query == "/?a=true&b=1.5&c=-3"


# -- the property: no context value changes the request's shape ------------------------------

@given(st.dictionaries(st.sampled_from(["v", "w"]), st.text(max_size=40), min_size=2))
@settings(max_examples=300, deadline=None)
def test_no_context_value_changes_scheme_host_port_or_header_set(values: dict[str, str]) -> None:
    t = Template(
        name="t", method="POST", scheme="https", host=("api.example.com",), port=443,
        path=(("items",), (_ph("v"),), ("x.", _ph("w"))),
        headers=(("X-A", ("a-", _ph("v"))), ("X-B", (_ph("w"),))),
        query=(("q", (_ph("v"),)), ("r", ("lit ", _ph("w")))),
    )
    try:
        r = t.render({}, values)
    except ServiceError as exc:
        assert exc.status == 400
        return
    assert (r.scheme, r.host, r.port, r.method) == ("https", "api.example.com", 443, "POST")
    assert [name for name, _ in r.headers] == ["X-A", "X-B"]
    assert all(" " <= c <= "~" for _, value in r.headers for c in value)
    path, _, query = r.path_and_query.partition("?")
    segments = path.split("/")
    assert segments[:2] == ["", "items"] and len(segments) == 4
    assert unquote(segments[2]) == values["v"] and unquote(segments[3]) == "x." + values["w"]
    assert [pair.split("=")[0] for pair in query.split("&")] == ["q", "r"]
    assert "#" not in r.path_and_query and all(c.isprintable() for c in r.path_and_query)


def _ph(name: str) -> Any:
    from handlerbox.runtime.services.templates import Placeholder
    return Placeholder("context", name)
