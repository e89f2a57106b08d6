"""A handler's return value becomes plain, bounded JSON, or a ResultError that says where and why.

Also: print output is captured as the invocation's logs and capped, with a truncation marker;
and whatever the module exports, resolving the handler ends in a handlerbox error.
"""

from __future__ import annotations

import pytest

from handlerbox.sandbox import (
    HandlerError,
    HandlerNotFound,
    Limits,
    ResultError,
    compile_handler,
    run_source,
    runner,
    to_json_bytes,
)
from handlerbox.sandbox.guards import handler_metaclass
from handlerbox.sandbox.runner import MAX_ERROR_TEXT, MAX_NAME_TEXT, handler_error


def body(lines: str, prelude: str = "") -> str:
    """A module: `prelude` at top level, then `def h(payload):` running `lines`."""
    indented = "".join(f"    {line}\n" for line in lines.splitlines())
    return f"{prelude}def h(payload):\n{indented}"


NOT_A_CLASS = "class A:\n    pass\n"

# (source, the exact ResultError message)
REFUSED_EXACT = [
    pytest.param(body("return {'items': [1, 2, 3, {1}]}"),
                 "value['items'][3]: set is not JSON", id="set-in-list-in-dict"),
    pytest.param(body("return {1, 2}"), "value: set is not JSON", id="set-at-top"),
    pytest.param(body("return float('nan')"),
                 "value: nan is not JSON (NaN and Infinity are not)", id="nan"),
    pytest.param(body("return float('inf')"),
                 "value: inf is not JSON (NaN and Infinity are not)", id="infinity"),
    pytest.param(body("return {'a': [1, -math.inf]}", "import math\n"),
                 "value['a'][1]: -inf is not JSON (NaN and Infinity are not)",
                 id="negative-infinity-nested"),
    pytest.param(body("return [math.nan]", "import math\n"),
                 "value[0]: nan is not JSON (NaN and Infinity are not)", id="math-nan-in-list"),
    pytest.param(body("return 1e308 * 10"),
                 "value: inf is not JSON (NaN and Infinity are not)", id="overflowed-float"),
    pytest.param(body("d = {}\nd['self'] = d\nreturn d"),
                 "value['self']: contains itself (a cycle)", id="dict-cycle"),
    pytest.param(body("items = [1]\nitems.append([items])\nreturn items"),
                 "value[1][0]: contains itself (a cycle)", id="list-cycle-two-deep"),
    pytest.param(body("a = {}\nb = {'a': a}\na['b'] = b\nreturn [a]"),
                 "value[0]['b']['a']: contains itself (a cycle)", id="mutual-cycle"),
    pytest.param(body("return {'a': A()}", NOT_A_CLASS), "value['a']: A is not JSON",
                 id="handler-class-instance"),
    pytest.param(body("return A", NOT_A_CLASS), "value: type is not JSON",
                 id="handler-class-itself"),
    pytest.param(body("return h"), "value: function is not JSON", id="function"),
    pytest.param(body("return (i for i in range(3))"), "value: generator is not JSON",
                 id="generator"),
    pytest.param(body("return b'bytes'"), "value: bytes is not JSON", id="bytes"),
    pytest.param(body("return [bytearray(2)]"), "value[0]: bytearray is not JSON",
                 id="bytearray"),
    pytest.param(body("return 1j"), "value: complex is not JSON", id="complex"),
    pytest.param(body("return frozenset()"), "value: frozenset is not JSON", id="frozenset"),
    pytest.param(body("return decimal.Decimal('1.5')", "import decimal\n"),
                 "value: Decimal is not JSON", id="decimal"),
    pytest.param(body("return {'at': datetime.date(2024, 1, 2)}", "import datetime\n"),
                 "value['at']: date is not JSON", id="date"),
    pytest.param(body("return range(3)"), "value: range is not JSON", id="range"),
    pytest.param(body("return S('x')", "class S(str):\n    pass\n"), "value: S is not JSON",
                 id="str-subclass"),
    pytest.param(body("return D(a=1)", "class D(dict):\n    pass\n"), "value: D is not JSON",
                 id="dict-subclass"),
]

# (source, fragments the ResultError message must contain)
BIG_INT = "integer outside the range JSON results carry exactly (-2**63 to 2**64-1)"
REFUSED_CONTAINS = [
    pytest.param(body("return {'a': {1: 'x'}}"),
                 ["value['a']:", "key 1", "JSON object keys must be strings"], id="int-key"),
    pytest.param(body("return {(1, 2): 'x'}"),
                 ["value:", "key of type tuple", "JSON object keys must be strings"],
                 id="tuple-key"),
    pytest.param(body("return {None: 'x'}"),
                 ["key None", "JSON object keys must be strings"], id="none-key"),
    pytest.param(body("return {True: 'x'}"),
                 ["key True", "JSON object keys must be strings"], id="bool-key"),
    pytest.param(body("return 10 ** 5000"), ["value:", BIG_INT, "str(n)"],
                 id="int-beyond-4300-digits"),
    pytest.param(body("return [-(10 ** 5000)]"), ["value[0]:", BIG_INT],
                 id="negative-huge-int-in-list"),
    pytest.param(body("return {'n': 2 ** 64}"), ["value['n']:", BIG_INT], id="two-to-the-64"),
    pytest.param(body("return [2 ** 64 + 1]"), ["value[0]:", BIG_INT],
                 id="read-as-a-float-by-the-host"),
    pytest.param(body("return 10 ** 400"), ["value:", BIG_INT], id="ten-to-the-400"),
    pytest.param(body("return {'a': [1, -(2 ** 63) - 1]}"), ["value['a'][1]:", BIG_INT],
                 id="below-int64"),
    pytest.param(body("return {'a': {'b': 2 ** 70}}"), ["value['a']['b']:", BIG_INT],
                 id="nested-in-dicts"),
    pytest.param(body("return {'m': json}", "import json\n"), ["value['m']:", "is not JSON"],
                 id="module-facade"),
    pytest.param(body("return ['\\ud800']"), ["value:", "cannot be encoded as JSON"],
                 id="lone-surrogate"),
]

def refused(source: str, limits: Limits | None = None) -> ResultError:
    with pytest.raises(ResultError) as info:
        run_source(source, "h", {}, limits or Limits())
    error = info.value
    assert isinstance(error, HandlerError)
    assert error.type_name == "ResultError"
    assert error.code == "handler_error"
    return error


@pytest.mark.parametrize(("source", "message"), REFUSED_EXACT)
def test_non_json_results_are_refused_with_exact_message(source: str, message: str) -> None:
    assert refused(source).message == message


@pytest.mark.parametrize(("source", "fragments"), REFUSED_CONTAINS)
def test_non_json_results_are_refused(source: str, fragments: list[str]) -> None:
    message = refused(source).message
    for fragment in fragments:
        assert fragment in message


def nested(levels: int) -> str:
    return body(f"v = 1\nfor _ in range({levels}):\n    v = [v]\nreturn v")


def test_depth_of_100_containers_is_accepted() -> None:
    value, _ = run_source(nested(100), "h", {})
    for _ in range(100):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value == 1


@pytest.mark.parametrize("levels", [101, 102, 5000])
def test_depth_over_100_is_refused(levels: int) -> None:
    message = refused(nested(levels)).message
    assert message.endswith(": nested deeper than 100 levels")


def test_deep_dicts_are_refused_too() -> None:
    message = refused(body("v = {}\nfor _ in range(150):\n    v = {'k': v}\nreturn v")).message
    assert message.startswith("value['k']['k']")
    assert message.endswith("nested deeper than 100 levels")


def test_shared_but_acyclic_values_are_not_cycles() -> None:
    source = body("x = [1]\nreturn [x, x, {'a': x, 'b': (x, x)}]")
    assert run_source(source, "h", {})[0] == [[1], [1], {"a": [1], "b": [[1], [1]]}]


SIZE_CASES = [
    pytest.param("'x' * 98", 100, "x" * 98, None, id="string-exactly-at-limit"),
    pytest.param("'x' * 99", 100, None, "value: result is 101 bytes, over the limit of 100",
                 id="string-one-byte-over"),
    pytest.param("'x' * 200", 100, None, "over the limit of 100", id="string-far-over"),
    pytest.param("['ab'] * 30", 100, None, "over the limit of 100",
                 id="list-of-short-strings"),
    pytest.param("{str(i): i for i in range(50)}", 100, None, "over the limit of 100",
                 id="wide-dict"),
    pytest.param("'é' * 60", 100, None, "over the limit of 100", id="limit-counts-utf8-bytes"),
    pytest.param("['x'] * 1000", 4096, ["x"] * 1000, None, id="under-a-larger-limit"),
    pytest.param("['x' * 1000] * 5000", 1024 * 1024, None, "over the limit of 1048576",
                 id="default-sized-limit"),
]


@pytest.mark.parametrize(("expr", "limit", "expected", "message"), SIZE_CASES)
def test_result_size_is_capped(expr: str, limit: int, expected: object,
                               message: str | None) -> None:
    source = body(f"return {expr}")
    limits = Limits(max_result_bytes=limit)
    if message is None:
        assert run_source(source, "h", {}, limits) == (expected, "")
    elif message.startswith("value:"):
        assert refused(source, limits).message == message
    else:
        assert message in refused(source, limits).message


ACCEPTED = [
    pytest.param((1, (2, 3)), b"[1,[2,3]]", id="tuples-become-lists"),
    pytest.param({"a": None, "b": True, "c": 1.5, "d": "é"},
                 '{"a":null,"b":true,"c":1.5,"d":"é"}'.encode(), id="scalars-compact-utf8"),
    pytest.param([], b"[]", id="empty-list"),
    pytest.param("", b'""', id="empty-string"),
    pytest.param(2**63, b"9223372036854775808", id="int-beyond-signed-64-bits"),
    pytest.param([2**64 - 1, -(2**63)], b"[18446744073709551615,-9223372036854775808]",
                 id="the-64-bit-edges"),
]


@pytest.mark.parametrize(("value", "encoded"), ACCEPTED)
def test_to_json_bytes_encodes_plain_json_compactly(value: object, encoded: bytes) -> None:
    assert to_json_bytes(value, 1024) == encoded


LOG_CASES = [
    pytest.param("print('a' * 25)", 10,
                 "aaaaaaaaaa\n[logs truncated: 16 more bytes dropped]\n", id="one-long-line"),
    pytest.param("for i in range(5):\n    print(i, 'abc')", 10,
                 "0 abc\n1 ab\n[logs truncated: 20 more bytes dropped]\n",
                 id="many-lines-crossing-the-cap"),
    pytest.param("print('abc')\nprint('def')", 8, "abc\ndef\n", id="exactly-at-the-cap"),
    pytest.param("print('abc')\nprint('defg')", 8,
                 "abc\ndefg\n[logs truncated: 1 more bytes dropped]\n",
                 id="one-character-over"),
    pytest.param("print('x', end='')", 0, "\n[logs truncated: 1 more bytes dropped]\n",
                 id="zero-cap"),
    pytest.param("for i in range(10000):\n    print('flood')", 12,
                 "flood\nflood\n\n[logs truncated: 59988 more bytes dropped]\n",
                 id="flood"),
    pytest.param("print('a', 'b', sep='-', end='!')\nprint()", 100, "a-b!\n", id="under-the-cap"),
]


@pytest.mark.parametrize(("lines", "cap", "logs"), LOG_CASES)
def test_logs_are_captured_and_capped_with_a_marker(lines: str, cap: int, logs: str) -> None:
    value, captured = run_source(body(lines + "\nreturn 'done'"), "h", {},
                                 Limits(max_log_bytes=cap))
    assert (value, captured) == ("done", logs)


def test_logs_are_kept_and_capped_when_the_handler_fails() -> None:
    source = body("print('abcdefghijk' * 3)\nraise ValueError('boom')")
    with pytest.raises(HandlerError) as info:
        run_source(source, "h", {}, Limits(max_log_bytes=10))
    assert (info.value.type_name, info.value.message) == ("ValueError", "boom")
    assert info.value.logs == "abcdefghij\n[logs truncated: 24 more bytes dropped]\n"


def test_logs_are_kept_when_the_result_is_refused() -> None:
    with pytest.raises(ResultError) as info:
        run_source(body("print('before')\nreturn {1}"), "h", {})
    assert info.value.logs == "before\n"


def test_printed_does_not_exceed_the_cap() -> None:
    source = body("for i in range(100):\n    print(i)\nreturn printed")
    value, logs = run_source(source, "h", {}, Limits(max_log_bytes=6))
    assert value == "0\n1\n2\n"
    assert logs.startswith("0\n1\n2\n\n[logs truncated: ")


EXPORTS_THAT_LIE = [
    pytest.param("class E(dict):\n    def __contains__(self, key):\n        return True\n"
                 "exports = E()\ndef h(payload):\n    return 1\n",
                 id="dict-subclass-contains-lies"),
    pytest.param("exports = {'h': 1}\n", id="exported-value-not-callable"),
    pytest.param("exports = {}\ndef h(payload):\n    return 1\n", id="empty-exports-hides-def"),
]


@pytest.mark.parametrize("source", EXPORTS_THAT_LIE)
def test_handler_controlled_exports_end_in_a_handlerbox_error(source: str) -> None:
    """Resolving the handler looks into objects the handler built; whatever they do, the
    outcome is a handlerbox error (not found, or a handler error), never a host exception."""
    with pytest.raises((HandlerNotFound, HandlerError)):
        run_source(source, "h", {})


def test_the_log_cap_counts_utf8_bytes_and_never_splits_a_character() -> None:
    _, logs = run_source("def h(p):\n    print('ééé')\n    return 1\n", "h", {},
                         Limits(max_log_bytes=5))
    assert logs == "éé\n[logs truncated: 3 more bytes dropped]\n"


# -- the error and result paths run no handler code, and stay small ------------------------

LONG_NAME = "E" * 70_000
BOX = "class Box:\n    pass\n"

ERROR_MESSAGES = [
    pytest.param(body("raise KeyError('missing')"), "KeyError", "'missing'", id="builtin-str"),
    pytest.param(body("b'\\xff'.decode()"), "UnicodeDecodeError",
                 "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
                 id="builtin-str-over-bytes"),
    pytest.param(body("raise AppError('negative', 400)",
                      "class AppError(ValueError):\n    pass\n"),
                 "AppError", "('negative', 400)", id="handler-class-with-plain-args"),
    pytest.param(body("raise Lying('real')", "class Lying(Exception):\n    args = ('lie',)\n"),
                 "Lying", "real", id="args-shadowed-by-a-class-attribute"),
    pytest.param(body("raise ValueError(Box())", BOX), "ValueError",
                 "(message not shown: its arguments include a Box)", id="object-argument"),
    pytest.param(body("raise ValueError(10 ** 5000)"), "ValueError",
                 "(message not shown: an argument is too long to print)", id="huge-int-argument"),
    pytest.param(body("raise ValueError('a', [1])"), "ValueError",
                 "(message not shown: its arguments include a list)", id="list-argument"),
]


@pytest.mark.parametrize(("source", "type_name", "message"), ERROR_MESSAGES)
def test_error_messages_are_built_without_running_handler_code(
        source: str, type_name: str, message: str) -> None:
    with pytest.raises(HandlerError) as info:
        run_source(source, "h", {})
    assert (info.value.type_name, info.value.message) == (type_name, message)


def test_a_70000_character_exception_class_name_is_clipped() -> None:
    source = body("raise E()", f"class {LONG_NAME}(Exception):\n    pass\nE = {LONG_NAME}\n")
    with pytest.raises(HandlerError) as info:
        run_source(source, "h", {})
    assert info.value.type_name.startswith("E" * MAX_NAME_TEXT + "... [")
    assert len(info.value.type_name) < MAX_NAME_TEXT + 40


def test_huge_function_names_and_source_lines_are_clipped_in_tracebacks() -> None:
    name = "f" * 30_000
    padding = "; ".join(["x = 1"] * 20_000)
    source = (f"def {name}(n):\n    {padding}; return {name}(n + 1)\n"
              f"def h(p):\n    return {name}(0)\n")
    with pytest.raises(HandlerError) as info:
        run_source(source, "h", {})
    error = info.value
    assert error.type_name == "RecursionError"
    assert len(error.traceback) < MAX_ERROR_TEXT + 100
    assert all(len(line) < MAX_NAME_TEXT + 60 for line in error.traceback.splitlines())


def test_a_handler_class_str_is_never_called() -> None:
    """A handler exception class's own __str__ (set here behind the policy; handler source
    defines one with `def __str__`, see tests/test_language.py) is never called: the message
    comes from its plain args."""
    calls = []

    def spy(self: object) -> str:
        calls.append("str")
        return "ran handler code"

    own = handler_metaclass("Own", (Exception,), {})
    own.__str__ = spy  # type: ignore[method-assign]
    error = handler_error(own("plain"), compile_handler("def h(p):\n    pass\n"))
    assert (error.type_name, error.message, calls) == ("Own", "plain", [])


def test_the_error_path_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> str:
        raise RuntimeError("inside the error path")

    monkeypatch.setattr(runner, "_traceback", broken)
    error = handler_error(ValueError("x"), compile_handler("def h(p):\n    pass\n"))
    assert (error.type_name, error.message) == ("ValueError", "(the error could not be described)")


RESULT_PATHS = [
    pytest.param(body("k = 1\nfor _ in range(50_000):\n    k = (k,)\nreturn {k: 1}"),
                 "value: key of type tuple, JSON object keys must be strings",
                 id="key-50000-deep"),
    pytest.param(body("return {K(): 1}", "class K:\n    pass\n"),
                 "value: key of type K, JSON object keys must be strings",
                 id="key-of-a-handler-class"),
    pytest.param(body("return {'k' * 500_000: {1}}"),
                 "value['" + "k" * 80 + "'...]: set is not JSON", id="500-kb-key-in-the-path"),
    pytest.param(body("return [E()]", f"class {LONG_NAME}:\n    pass\nE = {LONG_NAME}\n"),
                 "value[0]: " + "E" * 80 + "... is not JSON", id="70000-character-type-name"),
    pytest.param(body("return {10 ** 5000: 1}"),
                 "value: key of type int, JSON object keys must be strings",
                 id="huge-int-key-is-not-printed"),
]


@pytest.mark.parametrize(("source", "message"), RESULT_PATHS)
def test_result_errors_name_types_and_stay_small(source: str, message: str) -> None:
    assert refused(source, Limits(max_result_bytes=2 << 20)).message == message


def test_any_failure_of_the_result_check_is_a_result_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(value: object, max_bytes: int) -> bytes:
        raise RecursionError("deep")

    monkeypatch.setattr(runner, "to_json_bytes", broken)
    assert refused(body("return 1")).message == "value: could not be checked as JSON " \
                                                 "(RecursionError)"
