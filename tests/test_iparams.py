"""config/iparams.json declarations, the check of an installation's values, redact and scrub.

The secret used throughout is distinctive, so any message that leaks it is caught."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from handlerbox.runtime.errors import AppLoadError, PayloadError
from handlerbox.runtime.iparams import (
    REDACTED,
    IparamsError,
    IparamsSpec,
    load_iparams_spec,
    scrub,
    scrub_value,
)

SECRET = "sk_live_Zq8-UNMISTAKABLE-7f3c"

DECLARED: dict[str, Any] = {
    "subdomain": {"display_name": "Subdomain", "type": "text", "required": True},
    "api_key": {"display_name": "API key", "type": "api_key", "required": True},
    "password": {"type": "text", "secure": True},
    "notes": {"type": "paragraph"},
    "retries": {"type": "number", "default_value": 3},
    "verbose": {"type": "checkbox", "default_value": False},
    "region": {"type": "dropdown", "options": ["US", "EU"], "default_value": "US"},
    "mode": {"type": "radio", "options": ["fast", "safe"]},
    "channels": {"type": "multiselect", "options": ["email", "sms", "push"]},
    "contact": {"type": "email"},
    "callback": {"type": "url"},
    "phone": {"type": "phone_number"},
    "start": {"type": "date"},
}


def write_spec(root: Path, spec: Any) -> Path:
    (root / "config").mkdir(parents=True, exist_ok=True)
    text = spec if isinstance(spec, str) else json.dumps(spec)
    (root / "config" / "iparams.json").write_text(text)
    return root


@pytest.fixture
def spec(tmp_path: Path) -> IparamsSpec:
    return load_iparams_spec(write_spec(tmp_path, DECLARED))


# -- loading -------------------------------------------------------------------------------

def test_a_good_file_loads_in_file_order_with_secure_names(spec: IparamsSpec) -> None:
    assert list(spec.declarations) == list(DECLARED)
    assert spec.secure_names == {"api_key", "password"}
    assert spec.declarations["subdomain"].display_name == "Subdomain"


def test_no_file_is_an_empty_spec_that_takes_only_no_iparams(tmp_path: Path) -> None:
    spec = load_iparams_spec(tmp_path)
    assert spec.declarations == {}
    assert spec.check({}) == {}
    with pytest.raises(IparamsError, match="the app declares no iparams"):
        spec.check({"x": "1"})


@pytest.mark.parametrize("declared, fragment", [
    ([], "must be an object that maps each iparam name"),
    ({"k": {"type": "colour"}}, "k.type: must be one of text, paragraph"),
    ({"k": {}}, "k.type: is required"),
    ({"k": {"type": "text", "secret": True}}, "k: unknown key 'secret' (allowed: type,"),
    ({"k": {"type": "text", "required": "yes"}}, "k.required: must be a boolean (got string)"),
    ({"k": {"type": "text", "display_name": ""}}, "k.display_name: must not be empty"),
    ({"k": "text"}, "k: must be an object"),
    ({"bad-name": {"type": "text"}}, "key 'bad-name' is not an iparam name"),
    ({"k": {"type": "dropdown"}}, "k.options: is required for a dropdown"),
    ({"k": {"type": "multiselect", "options": []}}, "k.options: is required for a multiselect"),
    ({"k": {"type": "radio", "options": ["a", "a"]}}, "k.options: must not repeat a value"),
    ({"k": {"type": "dropdown", "options": [1, 2]}}, "k.options[0]: must be a string"),
    ({"k": {"type": "text", "options": ["a"]}}, "k.options: is only for dropdown"),
    ({"k": {"type": "number", "secure": True}}, "k.secure: a number cannot be secure"),
    ({"k": {"type": "dropdown", "options": ["a"], "secure": True}},
     "k.secure: a dropdown cannot be secure"),
    ({"k": {"type": "text", "secure": True, "default_value": "x"}},
     "k.default_value: a secure iparam takes no default"),
    ({"k": {"type": "api_key", "default_value": "x"}},
     "k.default_value: a secure iparam takes no default"),
    ({"k": {"type": "number", "default_value": "3"}},
     "k.default_value: must be a number (got string)"),
    ({"k": {"type": "checkbox", "default_value": 1}},
     "k.default_value: must be a boolean (got integer)"),
    ({"k": {"type": "dropdown", "options": ["a"], "default_value": "b"}},
     "k.default_value: must be one of 'a' (got 'b')"),
    ({"k": {"type": "text", "default_value": None}},
     "k.default_value: must be a string (got null)"),
])
def test_each_bad_declaration_is_named_with_the_file_and_key_path(
        tmp_path: Path, declared: Any, fragment: str) -> None:
    with pytest.raises(AppLoadError) as info:
        load_iparams_spec(write_spec(tmp_path, declared))
    message = str(info.value)
    assert fragment in message
    assert message.startswith(str(tmp_path / "config" / "iparams.json") + ": ")
    assert all(p.startswith(str(tmp_path)) for p in info.value.problems)


def test_every_bad_declaration_is_reported_at_once(tmp_path: Path) -> None:
    declared = {"a": {"type": "dropdown"}, "b": {"type": "number", "secure": True}}
    with pytest.raises(AppLoadError) as info:
        load_iparams_spec(write_spec(tmp_path, declared))
    assert len(info.value.problems) == 2


@pytest.mark.parametrize("text, fragment", [
    ("{", "not valid JSON"),
    ('{"a": {"type": "text"}, "a": {"type": "text"}}', "duplicate key 'a'"),
    ('{"a": {"type": "number", "default_value": NaN}}', "NaN is not valid JSON"),
])
def test_a_file_that_is_not_strict_json_is_refused(tmp_path: Path, text: str,
                                                   fragment: str) -> None:
    with pytest.raises(AppLoadError, match=fragment):
        load_iparams_spec(write_spec(tmp_path, text))


def test_an_oversized_file_is_refused_unread(tmp_path: Path) -> None:
    with pytest.raises(AppLoadError, match="over 262144 bytes"):
        load_iparams_spec(write_spec(tmp_path, " " * (256 * 1024 + 1)))


def test_too_many_iparams_are_refused() -> None:
    with pytest.raises(AppLoadError, match="declares 101 iparams; at most 100"):
        IparamsSpec.parse({f"p{i}": {"type": "text"} for i in range(101)})


def test_api_key_is_secure_by_default_but_may_opt_out() -> None:
    spec = IparamsSpec.parse({"a": {"type": "api_key"}, "b": {"type": "api_key",
                                                              "secure": False}})
    assert spec.secure_names == {"a"}


# -- checking values -----------------------------------------------------------------------

GOOD = {"subdomain": "acme", "api_key": SECRET}


def test_good_values_pass_with_defaults_applied_in_declaration_order(
        spec: IparamsSpec) -> None:
    checked = spec.check({"api_key": SECRET, "subdomain": "acme", "channels": ["sms"],
                          "retries": 5.5, "contact": "ops@acme.io",
                          "callback": "https://acme.io/hook", "phone": "+1 (555) 010-2000",
                          "start": "2024-02-29", "notes": "line one\nline two"})
    assert checked == {"subdomain": "acme", "api_key": SECRET, "notes": "line one\nline two",
                       "retries": 5.5, "verbose": False, "region": "US",
                       "channels": ["sms"], "contact": "ops@acme.io",
                       "callback": "https://acme.io/hook", "phone": "+1 (555) 010-2000",
                       "start": "2024-02-29"}
    assert list(checked)[:2] == ["subdomain", "api_key"]


def test_check_copies_lists_so_later_edits_do_not_reach_the_result(
        spec: IparamsSpec) -> None:
    channels = ["sms"]
    checked = spec.check({**GOOD, "channels": channels})
    channels.append("push")
    assert checked["channels"] == ["sms"]


@pytest.mark.parametrize("values, fragment", [
    ({"api_key": SECRET}, "iparams.subdomain: is required"),
    ({**GOOD, "subdomain": ""}, "iparams.subdomain: is required (got an empty string)"),
    ({**GOOD, "subdomain": 5}, "iparams.subdomain: must be a string (got integer)"),
    ({**GOOD, "subdomain": "a\nb"}, "iparams.subdomain: must be one line"),
    ({**GOOD, "retries": "3"}, "iparams.retries: must be a number (got string)"),
    ({**GOOD, "retries": True}, "iparams.retries: must be a number (got boolean)"),
    ({**GOOD, "retries": float("nan")}, "iparams.retries: must be a finite number"),
    ({**GOOD, "verbose": 1}, "iparams.verbose: must be a boolean (got integer)"),
    ({**GOOD, "verbose": "true"}, "iparams.verbose: must be a boolean (got string)"),
    ({**GOOD, "region": "XX"}, "iparams.region: must be one of 'US', 'EU' (got 'XX')"),
    ({**GOOD, "mode": "slow"}, "iparams.mode: must be one of 'fast', 'safe' (got 'slow')"),
    ({**GOOD, "channels": "sms"}, "iparams.channels: must be an array of options"),
    ({**GOOD, "channels": ["fax"]}, "iparams.channels: must hold only options"),
    ({**GOOD, "channels": ["sms", "sms"]}, "iparams.channels: must not repeat an option"),
    ({**GOOD, "contact": "nobody"}, "iparams.contact: must be an email address"),
    ({**GOOD, "callback": "ftp://acme.io"}, "iparams.callback: must be an http or https"),
    ({**GOOD, "callback": "https://"}, "iparams.callback: must be an http or https"),
    ({**GOOD, "phone": "call me"}, "iparams.phone: must be a phone number"),
    ({**GOOD, "start": "2023-02-29"}, "iparams.start: must be a date as YYYY-MM-DD"),
    ({**GOOD, "start": "29/02/2024"}, "iparams.start: must be a date as YYYY-MM-DD"),
    ({**GOOD, "notes": "x" * 8193}, "iparams.notes: is 8193 characters, over the limit"),
    ({**GOOD, "notes": "\ud800"}, "iparams.notes: must be valid Unicode text"),
    ({**GOOD, "colour": "red"}, "iparams.colour: unknown iparam (declared: subdomain, "
                                "api_key, password,"),
    ({**GOOD, "not a name": "x"}, "iparams['not a name']: unknown iparam"),
])
def test_each_bad_value_is_named(spec: IparamsSpec, values: dict[str, Any],
                                 fragment: str) -> None:
    with pytest.raises(IparamsError) as info:
        spec.check(values)
    assert fragment in str(info.value)
    assert isinstance(info.value, PayloadError)
    assert info.value.code == "invalid_iparams"


def test_not_an_object_is_refused(spec: IparamsSpec) -> None:
    with pytest.raises(IparamsError, match=r"^iparams: must be an object \(got array\)$"):
        spec.check([])


def test_every_problem_is_listed_once_by_name(spec: IparamsSpec) -> None:
    with pytest.raises(IparamsError) as info:
        spec.check({"retries": "x", "colour": "red", "verbose": None})
    assert sorted(p.split(":")[0] for p in info.value.problems) == [
        "iparams.api_key", "iparams.colour", "iparams.retries", "iparams.subdomain",
        "iparams.verbose"]


def test_the_values_are_capped_in_total_size() -> None:
    spec = IparamsSpec.parse({f"p{i}": {"type": "paragraph"} for i in range(10)})
    with pytest.raises(IparamsError, match=r"iparams: are \d+ bytes as compact JSON, over the"):
        spec.check({f"p{i}": "x" * 8000 for i in range(10)})


@pytest.mark.parametrize("bad", [
    5, True, None, "", "x\ny", "\ud800", "x" * 9000, [SECRET],
])
@pytest.mark.parametrize("kind", ["text", "api_key", "email", "url", "phone_number", "date",
                                  "paragraph"])
def test_no_message_ever_quotes_a_secure_value(kind: str, bad: Any) -> None:
    spec = IparamsSpec.parse({"token": {"type": kind, "secure": True, "required": True}})
    for value in (SECRET, f"{SECRET}\n", f"not an {SECRET} value", bad):
        try:
            spec.check({"token": value})
        except IparamsError as exc:
            text = str(exc) + "".join(exc.problems) + repr(exc)
            assert SECRET not in text and "UNMISTAKABLE" not in text
            assert "iparams.token" in text


def test_an_unknown_name_holding_a_secret_is_named_but_its_value_is_not_shown(
        spec: IparamsSpec) -> None:
    with pytest.raises(IparamsError) as info:
        spec.check({**GOOD, "api_kye": SECRET})
    assert "iparams.api_kye: unknown iparam" in str(info.value)
    assert SECRET not in str(info.value)


# -- redact and scrub ----------------------------------------------------------------------

def test_redact_hides_secure_and_undeclared_values_only(spec: IparamsSpec) -> None:
    values = spec.check({**GOOD, "password": "hunter22"})
    shown = spec.redact({**values, "typo": "x"})
    assert shown["api_key"] == shown["password"] == shown["typo"] == REDACTED
    assert shown["subdomain"] == "acme" and shown["region"] == "US"
    assert values["api_key"] == SECRET  # a copy: the values are untouched


def test_secure_values_lists_the_present_non_empty_ones(spec: IparamsSpec) -> None:
    values = spec.check({**GOOD, "password": ""})
    assert spec.secure_values(values) == [SECRET]


def test_scrub_replaces_each_secure_value_in_text(spec: IparamsSpec) -> None:
    values = spec.check({**GOOD, "password": "hunter22"})
    text = f"calling with {SECRET} and hunter22; subdomain acme"
    assert spec.scrub(text, values) == "calling with ******** and ********; subdomain acme"


@pytest.mark.parametrize("secrets, text, expected", [
    (["abc"], "abc abc", "abc abc"),                       # under 4 characters: left alone
    (["abcd"], "xabcdx abcd", "x********x ********"),
    (["abcd", "abcdefgh"], "abcdefgh", "********"),         # the longest first
    (['pa"ss\\wd'], json.dumps({"k": 'pa"ss\\wd'}), '{"k": "********"}'),  # JSON-escaped too
    (["pässwört"], json.dumps("pässwört"), '"********"'),  # \\u escapes too
    (["a.c*d"], "abcdd a.c*d", "abcdd ********"),           # regex characters are literal
    ([], "nothing", "nothing"),
])
def test_scrub_cases(secrets: list[str], text: str, expected: str) -> None:
    assert scrub(text, secrets) == expected


def test_scrub_value_walks_json_keys_included() -> None:
    value = {"ok": [f"key={SECRET}", 3, None, {SECRET: True}], "n": 1.5}
    assert scrub_value(value, [SECRET]) == {
        "ok": ["key=********", 3, None, {REDACTED: True}], "n": 1.5}
    assert scrub_value(value, ["ab"]) is value
