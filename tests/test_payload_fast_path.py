"""The dispatch fast path accepts only payloads the full EventPayload model accepts."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from handlerbox.runtime.errors import PayloadError
from handlerbox.runtime.payloads import EventPayload, payload_json_fast

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=3) | st.integers(), inner, max_size=3), max_leaves=8)

field_values = {
    "account_id": st.sampled_from(["82918", "", 82918, None]),
    "domain": st.sampled_from(["a.freshcaller.com", "", b"x"]),
    "event": st.sampled_from(["onCallCreate", "", 1]),
    "region": st.sampled_from(["US", "EU", "EUC", "AUS", "IND", "us", "XX", None]),
    "timestamp": st.sampled_from([1583839672, True, 1.5, "1583839672", -1]),
    "data": json_values,
    "iparams": json_values,
    "extra": st.just(1),
}


VALID = {"account_id": "82918", "domain": "a.freshcaller.com", "event": "onCallCreate",
         "region": "US", "timestamp": 1583839672, "data": {}}


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A valid payload with a few fields replaced, added or removed."""
    payload: dict[str, Any] = dict(VALID)
    for key in draw(st.lists(st.sampled_from(sorted(field_values)), max_size=3)):
        if draw(st.booleans()):
            payload[key] = draw(field_values[key])
        else:
            payload.pop(key, None)
    return payload


@settings(max_examples=400, deadline=None)
@given(payloads())
def test_fast_path_never_accepts_what_the_model_refuses(payload: dict[str, Any]) -> None:
    fast = payload_json_fast(payload)
    if fast is None:
        return  # the full model decides, and explains
    try:
        model = EventPayload.parse(payload)
    except PayloadError as exc:
        raise AssertionError(f"fast path accepted an invalid payload: {exc}") from exc
    event, _, encoded = fast
    assert event == model.event
    assert json.loads(encoded) == json.loads(model.json_bytes())


def test_fast_path_takes_a_typical_payload() -> None:
    payload = {"account_id": "1", "domain": "d.example.com", "event": "onCallCreate",
               "region": "US", "timestamp": 1, "data": {"call": {"id": 1}}}
    fast = payload_json_fast(payload)
    assert fast is not None and json.loads(fast[2])["iparams"] == {}


@settings(max_examples=300, deadline=None)
@given(payloads())
def test_fast_path_on_json_bytes_never_accepts_what_the_model_refuses(
        payload: dict[str, Any]) -> None:
    try:
        raw = json.dumps(payload).encode()  # NaN and Infinity become tokens JSON forbids
    except (TypeError, ValueError):
        return
    fast = payload_json_fast(raw)
    if fast is None:
        return
    model = EventPayload.parse_json(raw)
    assert fast[0] == model.event
    assert json.loads(fast[2]) == json.loads(model.json_bytes())


def test_fast_path_refuses_nan_in_json_bytes() -> None:
    raw = json.dumps({**VALID, "data": {"x": float("nan")}}).encode()
    assert payload_json_fast(raw) is None
