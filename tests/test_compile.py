"""The compiler is total, reports every violation with a location, and refuses unsafe syntax."""

from __future__ import annotations

import subprocess
import sys

import pytest
from handlerbox.sandbox import CompileError, compile_handler
from handlerbox.sandbox.policy import MAX_SOURCE_BYTES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def compiles_or_reports(source: str | bytes) -> None:
    """The totality contract: code, or a CompileError with at least one located violation."""
    try:
        compiled = compile_handler(source, "server.py")
    except CompileError as exc:
        assert exc.violations, "a CompileError must carry violations"
        for v in exc.violations:
            assert v.filename == "server.py" and v.line >= 1 and v.col >= 0 and v.message
    else:
        assert compiled.code is not None


HOSTILE_INPUTS = {
    "empty": "",
    "only-comment": "# nothing\n",
    "binary-junk": bytes(range(256)) * 4,
    "invalid-utf8": b"x = '\xff\xfe'\n",
    "null-bytes": "x = 1\x00\n",
    "deep-parens": "x = " + "(" * 3000 + "1" + ")" * 3000,
    "deep-lists": "x = " + "[" * 3000 + "]" * 3000,
    "deep-binop": "x = " + "1 + " * 100_000 + "1",
    "deep-unary": "x = " + "-" * 100_000 + "1",
    "deep-blocks": "".join("    " * i + "if x:\n" for i in range(100)) + "    " * 100 + "pass\n",
    "deep-calls": "x = " + "f(" * 3000 + ")" * 3000,
    "ten-megabytes": "x = 1\n" * (10 * 1024 * 1024 // 6),
    "syntax-error": "def f(:\n",
    "bad-indent": "def f():\nreturn 1\n",
    "unterminated": "x = '''",
    "huge-literal": "x = " + "9" * 100_000,
    "lone-surrogate": "x = '\udcff'\n",
}


@pytest.mark.parametrize("source", HOSTILE_INPUTS.values(), ids=HOSTILE_INPUTS.keys())
def test_compiler_never_raises_anything_but_compile_error(source: str | bytes) -> None:
    compiles_or_reports(source)


def test_oversized_source_is_refused_with_its_size() -> None:
    with pytest.raises(CompileError) as info:
        compile_handler("x = 1\n" * (MAX_SOURCE_BYTES // 6 + 10))
    assert "over the limit" in info.value.violations[0].message


def test_syntax_error_reports_line_and_column() -> None:
    with pytest.raises(CompileError) as info:
        compile_handler("x = 1\ny = (2 +\n", "server.py")
    (v,) = info.value.violations
    assert v.line == 2 and v.message.startswith("syntax error")


def test_every_violation_is_reported_at_once_in_order() -> None:
    source = "import os\nx = y._z\nimport threading\ndef _f():\n    pass\n"
    with pytest.raises(CompileError) as info:
        compile_handler(source, "server.py")
    lines = [v.line for v in info.value.violations]
    assert lines == sorted(lines) and {1, 2, 3, 4} <= set(lines)
    assert all(v.hint for v in info.value.violations)


def test_compile_error_text_lists_file_line_and_col() -> None:
    with pytest.raises(CompileError) as info:
        compile_handler("x = 1\nimport os\n", "server.py")
    assert str(info.value).startswith("server.py:2:0: import of os is not allowed in handlers")


def test_deep_nesting_does_not_take_the_interpreter_down() -> None:
    # A crash in the C parser would kill the process: run it in a child to see the exit code.
    code = ("from sandbox import compile_handler, CompileError\n"
            "for depth in (1000, 5000, 50000):\n"
            "    for src in ('x = ' + '(' * depth + ')' * depth,"
            " 'x = ' + '[' * depth + ']' * depth,"
            " 'x = ' + 'not ' * depth + '1', 'x = ' + 'a.' * depth + 'b'):\n"
            "        try:\n"
            "            compile_handler(src)\n"
            "        except CompileError:\n"
            "            pass\n"
            "print('survived')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "survived"


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=400))
def test_compiler_is_total_on_arbitrary_text(source: str) -> None:
    compiles_or_reports(source)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=400))
def test_compiler_is_total_on_arbitrary_bytes(source: bytes) -> None:
    compiles_or_reports(source)


FRAGMENTS = [
    "x = 1", "import json", "import os", "from json import dumps", "from . import x",
    "def f(a, /, b=2, *c, **d):", "    return a", "class A(B):", "    pass", "lambda: 0",
    "x.y", "x._y", "x.format", "x[1:2]", "x += 1", "x.y += 1", "x[0] -= 1", "del x[0]",
    "try:", "except* E:", "except E as _e:", "finally:", "match x:", "    case 1:",
    "async def g():", "await x", "yield x", "nonlocal x", "global x", "with a as (b, c):",
    "for a, (b, c) in x:", "print(x, file=y)", "printed", "f'{x!r:>{w}}'", "exec('1')",
    "(", ")", "[", "]", "{", "}", ":", "\\", "'", '"', "#", "@dec", "*", "**", "=", ":=",
    "__import__('os')", "_getattr_ = 1", "if x:", "else:", "while 1:", "    ", "\t",
]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30), st.sampled_from(["\n", " ", ""]))
def test_compiler_is_total_on_programs_built_from_fragments(parts: list[str], sep: str) -> None:
    compiles_or_reports(sep.join(parts))
