"""The runtime's edge models: the deadline rule, manifest and payload validation messages,
engine configuration and the invocation result."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from handlerbox.runtime.config import EngineConfig
from handlerbox.runtime.deadline import execution_timeout
from handlerbox.runtime.errors import (
    AppLoadError,
    ConfigError,
    EngineClosed,
    IsolationError,
    ManifestError,
    PayloadError,
    WorkerError,
)
from handlerbox.runtime.manifest import Manifest
from handlerbox.runtime.payloads import MAX_PAYLOAD_BYTES, EventPayload
from handlerbox.runtime.results import ErrorInfo, InvocationResult
from handlerbox.sandbox.errors import HandlerboxError

VALID_VALUES = "request timeout must be 15 (default), 20, 25 or 30 seconds"


# -- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize(("cls", "code"), [
    (AppLoadError, "app_load_error"),
    (ManifestError, "manifest_error"),
    (PayloadError, "invalid_payload"),
    (ConfigError, "config_error"),
    (EngineClosed, "engine_closed"),
    (IsolationError, "isolation_unavailable"),
    (WorkerError, "worker_error"),
])
def test_runtime_errors_join_the_one_tree_with_stable_codes(cls: type, code: str) -> None:
    assert issubclass(cls, HandlerboxError)
    assert cls.code == code
    assert cls.__doc__ and "Raised when" in cls.__doc__


def test_every_internal_fault_joins_the_tree_and_maps_to_an_outcome() -> None:
    """Faults inside a dispatch never reach a caller: each one has an outcome in the one
    table, including any subclass added later."""
    from handlerbox.runtime import errors, protocol
    from handlerbox.runtime.outcomes import FAULT_OUTCOMES
    from handlerbox.runtime.results import OUTCOMES

    def subclasses(cls: type) -> set[type]:
        found = set(cls.__subclasses__())
        return found.union(*(subclasses(c) for c in found)) if found else found

    faults = subclasses(errors.DispatchFault)
    assert {errors.ProtocolError, errors.PeerClosed, errors.DeadlineReached,
            errors.NotStarted, errors.Overloaded} <= faults
    assert faults <= set(FAULT_OUTCOMES) and set(FAULT_OUTCOMES.values()) <= set(OUTCOMES)
    assert protocol.ProtocolError is errors.ProtocolError
    for name in dir(errors):
        value = getattr(errors, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, HandlerboxError), name


def test_manifest_error_is_a_load_error() -> None:
    assert issubclass(ManifestError, AppLoadError)


# -- the deadline rule ---------------------------------------------------------------------

@pytest.mark.parametrize(("request_timeout", "expected"), [
    (None, 20.0), (15, 20.0), (20, 40.0), (25, 40.0), (30, 40.0),
])
def test_execution_timeout_follows_the_rule(request_timeout: int | None,
                                            expected: float) -> None:
    assert execution_timeout(request_timeout) == expected
    assert type(execution_timeout(request_timeout)) is float


@pytest.mark.parametrize("request_timeout", [0, 10, 16, 31, 60, -5])
def test_other_request_timeouts_are_errors_listing_the_valid_values(
        request_timeout: int) -> None:
    with pytest.raises(ConfigError) as caught:
        execution_timeout(request_timeout)
    assert str(caught.value) == f"{VALID_VALUES}; got {request_timeout}"
    assert caught.value.code == "config_error"


@pytest.mark.parametrize("request_timeout", ["15", True, 15.5])
def test_request_timeout_of_the_wrong_kind_is_an_error(request_timeout: Any) -> None:
    with pytest.raises(ConfigError, match=re.escape(VALID_VALUES)):
        execution_timeout(request_timeout)


@pytest.mark.parametrize(("request_timeout", "override", "expected"), [
    (None, 0.5, 0.5), (15, 2.0, 2.0), (30, 0.25, 0.25), (20, 100, 100.0),
])
def test_override_wins(request_timeout: int | None, override: float,
                       expected: float) -> None:
    assert execution_timeout(request_timeout, override) == expected


@pytest.mark.parametrize("override", [0, 0.0, -1, -0.5, float("nan"), float("inf"), True])
def test_override_must_be_positive(override: float) -> None:
    with pytest.raises(ConfigError) as caught:
        execution_timeout(None, override)
    assert str(caught.value).startswith("timeout override must be a positive number of "
                                        "seconds; got ")


def test_override_does_not_hide_an_invalid_request_timeout() -> None:
    with pytest.raises(ConfigError, match="got 17"):
        execution_timeout(17, 1.0)


# -- the manifest --------------------------------------------------------------------------

def manifest_problems(obj: Any) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        Manifest.parse(obj)
    assert caught.value.code == "manifest_error"
    assert str(caught.value) == "\n".join(caught.value.problems)
    return list(caught.value.problems)


def test_manifest_parses() -> None:
    manifest = Manifest.parse({"events": {"onCallCreate": {"handler": "onCallCreateHandler"},
                                          "onCallUpdate": {"handler": "onCallCreateHandler"}},
                               "request_timeout": 25})
    assert manifest.events["onCallCreate"].handler == "onCallCreateHandler"
    assert manifest.events["onCallUpdate"].handler == "onCallCreateHandler"
    assert manifest.request_timeout == 25
    assert Manifest.parse({"events": {"onCallCreate": {"handler": "x"}}}).request_timeout is None


def test_manifest_unknown_keys_are_named() -> None:
    assert manifest_problems({"events": {"onCallCreate": {"handler": "h", "hanlder": "h"}},
                              "timeout": 20}) == [
        "manifest.json: events.onCallCreate: unknown key 'hanlder' (allowed: handler, custom)",
        "manifest.json: unknown key 'timeout' (allowed: events, functions, requests, request_timeout)",
    ]


@pytest.mark.parametrize("name", ["_private", "1st", "on-call", "", "my handler", "__init__"])
def test_manifest_handler_names_must_be_public_identifiers(name: str) -> None:
    assert manifest_problems({"events": {"onCallCreate": {"handler": name}}}) == [
        "manifest.json: events.onCallCreate.handler: must be a Python identifier that does "
        f"not start with '_' (got {name!r})",
    ]


def test_manifest_handler_must_be_a_string_and_present() -> None:
    events = {"onTicketCreate": {"handler": 3}, "onTicketUpdate": {}}
    assert manifest_problems({"events": events}) == [
        "manifest.json: events.onTicketCreate.handler: must be a string (got integer)",
        "manifest.json: events.onTicketUpdate.handler: is required",
    ]


def test_manifest_needs_an_event_or_a_function() -> None:
    expected = ["manifest.json: an app must subscribe to at least one event or offer a function"]
    assert manifest_problems({"events": {}}) == expected
    assert manifest_problems({}) == expected


@pytest.mark.parametrize("event", ["callCreate", "on", "oncallCreate", "onCall-Create",
                                   "OnCallCreate", "on_call"])
def test_manifest_event_names_must_look_like_events(event: str) -> None:
    assert manifest_problems({"events": {event: {"handler": "h"}}}) == [
        f"manifest.json: events: key {event!r} is not an event name: it must be 'on' (or "
        "'after'), a capital letter, then letters, digits or '_' (like onCallCreate)",
    ]


def test_manifest_request_timeout_follows_the_rule() -> None:
    events = {"onTicketCreate": {"handler": "h"}}
    assert manifest_problems({"events": events, "request_timeout": 17}) == [
        f"manifest.json: request_timeout: {VALID_VALUES}; got 17"]
    assert manifest_problems({"events": events, "request_timeout": "20"}) == [
        "manifest.json: request_timeout: must be an integer (got string)"]
    assert manifest_problems({"events": events, "request_timeout": 20.0}) == [
        "manifest.json: request_timeout: must be an integer (got number)"]


def test_manifest_must_be_an_object() -> None:
    assert manifest_problems([]) == ["manifest.json: must be an object (got array)"]
    assert manifest_problems({"events": []}) == [
        "manifest.json: events: must be an object (got array)"]


def test_manifest_json_errors_name_the_file_and_position() -> None:
    with pytest.raises(ManifestError) as caught:
        Manifest.parse_json('{"events": {"onTicketCreate": {"handler": "a"},}}',
                            "apps/x/manifest.json")
    assert str(caught.value) == ("apps/x/manifest.json:1:48: not valid JSON: Expecting "
                                 "property name enclosed in double quotes")
    with pytest.raises(ManifestError) as caught:
        Manifest.parse_json('{"events": {"onTicketCreate": {"handler": "a"}, "onTicketCreate": {"handler": "b"}}}')
    assert str(caught.value) == "manifest.json: duplicate key 'onTicketCreate'"
    with pytest.raises(ManifestError) as caught:
        Manifest.parse_json('{"events": {"onTicketCreate": {"handler": "a"}}, "request_timeout": NaN}')
    assert str(caught.value) == "manifest.json: NaN is not valid JSON"
    manifest = Manifest.parse_json(b'{"events": {"onTicketCreate": {"handler": "a"}}}')
    assert manifest.events["onTicketCreate"].handler == "a"


def test_manifest_is_immutable() -> None:
    manifest = Manifest.parse({"events": {"onTicketCreate": {"handler": "a"}}})
    with pytest.raises(ValidationError):
        manifest.request_timeout = 20


# -- the event payload ---------------------------------------------------------------------

def good_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "account_id": "82918", "domain": "sample.freshcaller.com", "event": "onCallUpdate",
        "region": "US", "timestamp": 1583839672,
        "data": {"call": {"id": 1}, "associations": {}, "actor": {"type": "system"},
                 "changes": {}},
        "iparams": {"queue": "support"},
    }
    payload.update(changes)
    return payload


def payload_problems(obj: Any) -> list[str]:
    with pytest.raises(PayloadError) as caught:
        EventPayload.parse(obj)
    assert caught.value.code == "invalid_payload"
    assert str(caught.value) == "\n".join(caught.value.problems)
    return list(caught.value.problems)


def test_payload_parses_and_encodes_compactly() -> None:
    payload = EventPayload.parse(good_payload())
    assert payload.region == "US"
    assert payload.timestamp == 1583839672
    assert payload.json_bytes() == json.dumps(good_payload(), separators=(",", ":")).encode()
    assert EventPayload.parse(payload) is payload


def test_payload_iparams_default_to_empty() -> None:
    raw = good_payload()
    del raw["iparams"]
    payload = EventPayload.parse(raw)
    assert payload.iparams == {}
    assert json.loads(payload.json_bytes())["iparams"] == {}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("account_id", 82918, "payload.account_id: must be a string (got integer)"),
    ("account_id", "", "payload.account_id: must not be empty"),
    ("domain", None, "payload.domain: must be a string (got null)"),
    ("domain", "", "payload.domain: must not be empty"),
    ("event", ["onCallUpdate"], "payload.event: must be a string (got array)"),
    ("region", "XX", "payload.region: must be one of US, EU, EUC, AUS, IND (got 'XX')"),
    ("region", "us", "payload.region: must be one of US, EU, EUC, AUS, IND (got 'us')"),
    ("timestamp", True, "payload.timestamp: must be an integer (got boolean)"),
    ("timestamp", 1583839672.0, "payload.timestamp: must be an integer (got number)"),
    ("timestamp", "1583839672", "payload.timestamp: must be an integer (got string)"),
    ("data", [], "payload.data: must be an object (got array)"),
    ("data", "{}", "payload.data: must be an object (got string)"),
    ("iparams", None, "payload.iparams: must be an object (got null)"),
    ("data", {"x": {1, 2}},
     "payload.data: is not plain JSON (Object of type set is not JSON serializable)"),
    ("iparams", {"x": float("nan")},
     "payload.iparams: is not plain JSON (Out of range float values are not JSON compliant)"),
])
def test_each_bad_field_is_named(field: str, value: Any, message: str) -> None:
    assert payload_problems(good_payload(**{field: value})) == [message]


def test_missing_fields_are_named() -> None:
    raw = good_payload()
    del raw["data"], raw["region"]
    assert payload_problems(raw) == ["payload.region: is required", "payload.data: is required"]


def test_unknown_top_level_keys_pass_through_to_the_handler() -> None:
    """Platforms add fields over time: a payload with a new key stays valid, and the key
    reaches the handler unchanged, by the checked path and by the fast path alike."""
    from handlerbox.runtime.payloads import payload_json_fast

    raw = good_payload(added_later={"version": 2})
    assert json.loads(EventPayload.parse(raw).json_bytes())["added_later"] == {"version": 2}
    fast = payload_json_fast(raw)
    assert fast is not None and json.loads(fast[2])["added_later"] == {"version": 2}


def test_unknown_top_level_keys_must_still_be_plain_json() -> None:
    assert payload_problems(good_payload(added_later=float("nan"))) == [
        "payload.added_later: is not plain JSON (Out of range float values are not JSON "
        "compliant)"]


def test_every_bad_field_is_reported_at_once() -> None:
    problems = payload_problems(good_payload(region="XX", timestamp=False, data=None))
    assert problems == [
        "payload.region: must be one of US, EU, EUC, AUS, IND (got 'XX')",
        "payload.timestamp: must be an integer (got boolean)",
        "payload.data: must be an object (got null)",
    ]


def test_payload_must_be_an_object() -> None:
    assert payload_problems("[]") == ["payload: must be an object (got string)"]
    assert payload_problems(None) == ["payload: must be an object (got null)"]


def test_data_keys_must_be_strings() -> None:
    assert payload_problems(good_payload(data={1: "a"})) == [
        "payload.data: key 1 must be a string (got integer)"]


def test_quoted_input_is_cut_short() -> None:
    [problem] = payload_problems(good_payload(region="X" * 10_000))
    assert len(problem) < 140
    assert problem.endswith("...)")


def sized_payload(size: int) -> dict[str, Any]:
    """A payload whose compact JSON is exactly `size` bytes."""
    raw = good_payload(data={"blob": ""})
    base = len(EventPayload.parse(raw).json_bytes())
    raw["data"]["blob"] = "x" * (size - base)
    return raw


def test_payload_of_exactly_256_kb_is_accepted() -> None:
    payload = EventPayload.parse(sized_payload(MAX_PAYLOAD_BYTES))
    assert len(payload.json_bytes()) == MAX_PAYLOAD_BYTES == 262144


def test_payload_over_256_kb_is_rejected() -> None:
    assert payload_problems(sized_payload(MAX_PAYLOAD_BYTES + 1)) == [
        "payload: is 262145 bytes as compact JSON, over the limit of 262144 bytes (256 KB)"]


def test_payload_size_counts_utf8_bytes() -> None:
    raw = sized_payload(MAX_PAYLOAD_BYTES)
    raw["data"]["blob"] = raw["data"]["blob"][:-1] + "é"  # one character, two bytes
    assert payload_problems(raw) == [
        "payload: is 262145 bytes as compact JSON, over the limit of 262144 bytes (256 KB)"]


def test_payload_from_json_text() -> None:
    text = json.dumps(good_payload(), indent=2)
    assert EventPayload.parse_json(text).json_bytes() == EventPayload.parse(
        good_payload()).json_bytes()
    with pytest.raises(PayloadError) as caught:
        EventPayload.parse_json('{"account_id": ', "onCallCreate.json")
    assert str(caught.value) == "onCallCreate.json:1:16: not valid JSON: Expecting value"
    with pytest.raises(PayloadError, match=r"payload: is \d+ bytes, over the limit"):
        EventPayload.parse_json(" " * (4 * MAX_PAYLOAD_BYTES + 1))


# -- engine configuration ------------------------------------------------------------------

def test_engine_config_defaults() -> None:
    config = EngineConfig()
    assert (config.workers, config.memory_limit_mb, config.max_log_bytes,
            config.max_result_bytes, config.recycle_after, config.max_queue,
            config.require) == (2, 256, 64 * 1024, 1024 * 1024, 1000, 1000, [])


def test_engine_config_is_frozen_and_strict() -> None:
    config = EngineConfig(workers=4, require=["seccomp"])
    with pytest.raises(ValidationError):
        config.workers = 8
    with pytest.raises(ConfigError) as caught:
        EngineConfig.parse({"workers": 0, "memory_limit_mb": "512", "worker": 2})
    assert str(caught.value).splitlines() == [
        "config.workers: must be at least 1 (got 0)",
        "config.memory_limit_mb: must be an integer (got string)",
        "config: unknown key 'worker' (allowed: workers, memory_limit_mb, max_log_bytes, "
        "max_result_bytes, recycle_after, max_queue, max_queue_per_app, require, isolation, "
        "worker_cpu_seconds, recycle_rss_mb, database, max_host_calls, scheduler, "
        "schedule_min_lead_seconds, schedule_min_period_seconds, webhook_base_url, "
        "allow_networks, allow_http_hosts, max_concurrency_per_app, "
        "max_concurrency_per_installation, idle_memory_mb)",
    ]


# -- the invocation result -----------------------------------------------------------------

def test_ok_result_round_trips_through_json() -> None:
    result = InvocationResult(outcome="ok", app="call_logger", event="onCallCreate",
                              handler="onCallCreateHandler",
                              value={"queue": "support", "scores": [1, 2.5, None, True]},
                              logs="routed\n", duration_ms=1.25, cpu_ms=0.9,
                              max_rss_kb=18_432, timeout_s=20.0)
    text = result.model_dump_json()
    assert json.loads(text)["value"] == {"queue": "support", "scores": [1, 2.5, None, True]}
    assert InvocationResult.model_validate_json(text) == result
    assert result.ok


def test_error_result_round_trips_through_json() -> None:
    result = InvocationResult(
        outcome="handler_error", app="a", event="onTicketCreate", handler="h",
        error=ErrorInfo(type="KeyError", message="'ticket'",
                        traceback='  File "server.py", line 3, in h\n'))
    again = InvocationResult.model_validate_json(result.model_dump_json())
    assert again == result
    assert again.error is not None and again.error.type == "KeyError"
    assert not again.ok
    assert again.value is None and again.cpu_ms is None and again.max_rss_kb is None


def test_timeout_result_carries_the_limit() -> None:
    result = InvocationResult(outcome="timeout", app="a", event="onX", handler="h",
                              duration_ms=503.2, timeout_s=0.5)
    assert json.loads(result.model_dump_json())["timeout_s"] == 0.5


def test_result_outcome_and_value_are_checked() -> None:
    with pytest.raises(ValidationError):
        InvocationResult(outcome="done", app="a", event="e")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="a timeout result carries no value"):
        InvocationResult(outcome="timeout", app="a", event="e", value=1)
    with pytest.raises(ValidationError, match="an ok result carries no error"):
        InvocationResult(outcome="ok", app="a", event="e",
                         error=ErrorInfo(type="X", message="y"))


# -- the event catalogue -------------------------------------------------------------------

@pytest.mark.parametrize(("event", "expected"), [
    ("onTicketCreat", "did you mean onTicketCreate?"),
    ("onCallCreated", "did you mean onCallCreate?"),
    ("onSomethingElse", 'Declare an event of your own with "custom": true'),
])
def test_unknown_events_are_refused_with_the_nearest_known_one(event: str,
                                                               expected: str) -> None:
    (problem,) = manifest_problems({"events": {event: {"handler": "h"}}})
    assert f"events.{event}: is not a known event" in problem and expected in problem


def test_custom_events_and_every_platform_event_kind_are_accepted() -> None:
    events = {name: {"handler": "h"} for name in (
        "onCallCreate", "onTicketDelete", "onAppInstall", "afterAppUpdate", "onAppUninstall",
        "onScheduledEvent", "onExternalEvent")}
    events["onMyOwnThing"] = {"handler": "h", "custom": True}
    manifest = Manifest.parse({"events": events, "functions": {"lookup": {}},
                               "requests": {"postToChat": {}}})
    assert manifest.function_handler("lookup") == "lookup"
    assert manifest.function_handler("missing") is None
