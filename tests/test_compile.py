"""The compiler is total, reports every violation with a location, and refuses unsafe syntax."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlerbox.sandbox import CompileError, compile_handler
from handlerbox.sandbox.policy import MAX_NODES, MAX_SOURCE_BYTES, MAX_VIOLATIONS
from tests.conftest import EXAMPLES


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
    "    case C(a, b=c):", "    case {'k': v, **rest}:", "    case [x, *ys] if x:",
    "    case A.B | None:", "def __eq__(self, other):", "def __getattr__(self, n):",
    "@dataclass", "x: int = 1", "y: 'T'", "from __future__ import annotations",
    "logging.getLogger(__name__)", "__name__ = 'x'", "class E(Enum, boundary=1):",
]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30), st.sampled_from(["\n", " ", ""]))
def test_compiler_is_total_on_programs_built_from_fragments(parts: list[str], sep: str) -> None:
    compiles_or_reports(sep.join(parts))


# -- bounded work for hostile sources ------------------------------------------------------

def fill(line: str) -> str:
    """`line` repeated to just under MAX_SOURCE_BYTES."""
    return "\n".join([line] * (MAX_SOURCE_BYTES // (len(line) + 1)))


FLOODS = {
    "import-os-per-line": fill("import os"),
    "private-assignment-per-line": fill("_x = 1"),
    "private-name-per-line": fill("_=_x"),
    "private-attribute-per-line": fill("a._b"),
    "one-line-of-private-names": "x = [" + ",".join(["_a"] * (MAX_SOURCE_BYTES // 3 - 10)) + "]",
    "module-reads-per-line": "import urllib\n" + fill("urllib.request").partition("\n")[2],
}


@pytest.mark.parametrize("source", FLOODS.values(), ids=FLOODS.keys())
def test_a_flood_of_violations_reports_the_first_hundred_and_stops(source: str) -> None:
    with pytest.raises(CompileError) as info:
        compile_handler(source)
    violations = info.value.violations
    assert len(violations) == MAX_VIOLATIONS + 1
    assert violations[-1].message.startswith("more violations follow; compiling stopped")
    assert len(str(info.value)) < 100 * 400


DENSE = {
    "assignment-per-line": fill("x = 1"),
    "call-per-line": fill("f(x.y)"),
    "one-long-list": "x = [" + ",".join(["a"] * (MAX_SOURCE_BYTES // 2 - 10)) + "]",
}


@pytest.mark.parametrize("source", DENSE.values(), ids=DENSE.keys())
def test_dense_valid_code_is_refused_past_the_node_limit(source: str) -> None:
    with pytest.raises(CompileError) as info:
        compile_handler(source)
    (v,) = info.value.violations
    assert v.message == f"source has more than {MAX_NODES} syntax nodes"


def test_ordinary_code_of_the_largest_allowed_size_compiles() -> None:
    example = (EXAMPLES / "call_logger" / "server" / "server.py").read_text()
    source = example * (MAX_SOURCE_BYTES // len(example))
    assert compile_handler(source).code is not None


def test_the_collector_is_left_as_it_was() -> None:
    gc.disable()
    compile_handler("x = 1\n")
    assert not gc.isenabled()
    gc.enable()
    with pytest.raises(CompileError):
        compile_handler("import os\n")
    assert gc.isenabled()


# -- names read from imported modules ------------------------------------------------------

def module_case(case_id: str, source: str, message: str | None) -> object:
    return pytest.param(source, message, id=case_id)


MODULE_READS = [
    module_case("submodule-not-offered", "import urllib\ndef h(p):\n"
                "    return urllib.request.urlopen('http://x')\n",
                "urllib.request is not available in handlers. urllib offers parse"),
    module_case("name-not-offered-in-dotted-import", "import urllib.parse\ndef h(p):\n"
                "    return urllib.parse.urlopen('x')\n",
                "urllib.parse.urlopen is not available in handlers"),
    module_case("alias", "import json as j\ndef h(p):\n    return j.decoder\n",
                "json.decoder is not available in handlers. json offers JSONDecodeError, "
                "dumps, loads"),
    module_case("submodule-bound-by-from-import", "from urllib import parse\ndef h(p):\n"
                "    return parse.splittype('x')\n",
                "urllib.parse.splittype is not available in handlers"),
    module_case("at-module-level", "import re\nX = re.enum\n",
                "re.enum is not available in handlers"),
    module_case("timer-family-name", "import time\ndef h(p):\n    time.sleep(1)\n",
                "time.sleep is not available in handlers: they cannot start threads"),
    module_case("written-to", "import json\njson.extra = 1\n",
                "json.extra is not available in handlers"),
    module_case("module-imported-twice", "import urllib\nimport urllib.parse\ndef h(p):\n"
                "    return urllib.request\n", "urllib.request is not available in handlers"),
    module_case("offered-names-compile", "import urllib.parse\nimport json\ndef h(p):\n"
                "    return [urllib.parse.quote(' '), json.dumps(1), urllib.parse]\n", None),
    module_case("parameter-shadows-module", "import json\ndef h(json):\n    return json.foo\n",
                None),
    module_case("rebound-at-module-level", "import json\njson = {'a': 1}\nx = json.keys\n",
                None),
    module_case("rebound-in-a-loop", "import re\ndef h(p):\n    for re in p:\n"
                "        return re.anything\n", None),
    module_case("import-inside-a-function", "def h(p):\n    import json\n"
                "    return json.__doc__ if False else 1\n", "__doc__"),
]


@pytest.mark.parametrize(("source", "message"), MODULE_READS)
def test_reading_a_name_a_module_does_not_offer_is_a_compile_error(
        source: str, message: str | None) -> None:
    if message is None:
        assert compile_handler(source).code is not None
        return
    with pytest.raises(CompileError) as info:
        compile_handler(source)
    assert any(message in str(v) for v in info.value.violations), str(info.value)


# -- where super().__init__ may appear -----------------------------------------------------

SUPER_INIT = [
    pytest.param("class A(Exception):\n    def __init__(self, m):\n        super().__init__(m)\n"
                 "        self.m = m\n", None, id="in-init"),
    pytest.param("class A:\n    def reset(self):\n        super().__init__()\n", None,
                 id="in-another-method"),
    pytest.param("class A:\n    def __init__(self, /, x):\n        super().__init__()\n", None,
                 id="positional-only-self"),
    pytest.param("class A:\n    def __init__(self):\n        if True:\n"
                 "            super().__init__()\n", None, id="nested-in-a-block"),
    pytest.param("class A:\n    @classmethod\n    def make(cls):\n        super().__init__()\n",
                 "in a classmethod or staticmethod", id="classmethod"),
    pytest.param("class A:\n    @staticmethod\n    def make(x):\n        super().__init__()\n",
                 "in a classmethod or staticmethod", id="staticmethod"),
    pytest.param("class A:\n    def m(self):\n        def inner(o):\n"
                 "            super().__init__()\n", "outside a method", id="nested-function"),
    pytest.param("class A:\n    m = lambda self: super().__init__()\n", "outside a method",
                 id="lambda-in-class-body"),
    pytest.param("class A:\n    def m(self):\n        [super().__init__() for _ in 'x']\n",
                 "outside a method", id="comprehension"),
    pytest.param("super().__init__()\n", "outside a method", id="module-level"),
    pytest.param("class A:\n    super().__init__()\n", "outside a method", id="class-body"),
    pytest.param("def f(self):\n    super().__init__()\n", "outside a method",
                 id="plain-function"),
    pytest.param("class A:\n    def m(*args):\n        super().__init__()\n",
                 "in a method without a self parameter", id="no-self"),
    *(pytest.param(f"class A:\n    def m(self, o):\n        {rebind}\n"
                   "        super().__init__()\n",
                   "in a method that assigns to its first parameter",
                   id=f"self-rebound-by-{how}")
      for how, rebind in [
          ("assignment", "self = o"), ("augmented", "self += o"), ("walrus", "(self := o)"),
          ("for", "for self in o: pass"), ("with", "with o as self: pass"),
          ("del", "del self"), ("import", "import json as self"),
          ("def", "def self(): pass"), ("except", "try:\n            pass\n"
                                                  "        except Exception as self:\n"
                                                  "            pass"),
          ("tuple-unpacking", "self, x = o")]),
]


@pytest.mark.parametrize(("source", "problem"), SUPER_INIT)
def test_super_init_is_allowed_only_in_a_plain_method_on_self(
        source: str, problem: str | None) -> None:
    if problem is None:
        assert compile_handler(source).code is not None
        return
    with pytest.raises(CompileError) as info:
        compile_handler(source)
    assert any(f"super().__init__ is not allowed {problem}" in v.message
               for v in info.value.violations), str(info.value)


# -- what the language admissions change in the compiled code ------------------------------

def run_module(source: str) -> dict[str, object]:
    """Run a compiled module in a fresh invocation namespace and return its globals."""
    from handlerbox.sandbox.namespace import LogCapture, new_namespace

    namespace = new_namespace(LogCapture(1024), "server")
    exec(compile_handler(source).code, namespace)
    return namespace


@pytest.mark.parametrize(("future", "expected"), [
    ("", {"x": "int", "y": "list[str] | None", "z": "T"}),
    ("from __future__ import annotations\n", {"x": "int", "y": "list[str] | None", "z": "'T'"}),
])
def test_class_annotations_stay_as_text_never_evaluated(
        future: str, expected: dict[str, str]) -> None:
    """Directly in a class body `x: T = v` keeps its annotation, as text (dataclasses find
    their fields there); elsewhere annotations are dropped. `open` in an annotation would be
    called if it were evaluated."""
    source = (future + "class A:\n    x: int = 1\n    y: list[str] | None\n    z: 'T'\n"
              "    w: open('pwned', 'w')\n"
              "def f(a: open('pwned', 'w')) -> open('pwned', 'w'):\n    v: open('x') = 1\n")
    with pytest.raises(CompileError) as info:
        compile_handler(source)
    assert all("annotations must be type expressions" in v.message
               for v in info.value.violations)
    namespace = run_module(source.replace("    w: open('pwned', 'w')\n", "").replace(
        "def f(a: open('pwned', 'w')) -> open('pwned', 'w'):\n    v: open('x') = 1\n", ""))
    kind: object = namespace["A"]
    assert vars(kind)["__annotations__"] == expected
    assert vars(kind)["x"] == 1 and "y" not in vars(kind)


def test_module_name_can_be_read_and_not_assigned() -> None:
    assert run_module("name = __name__\nclass A:\n    where = __name__\n")["name"] == "server"
    for source in ("__name__ = 'os'\n", "def f(__name__):\n    pass\n",
                   "import json as __name__\n", "x = json.__name__\n"):
        with pytest.raises(CompileError):
            compile_handler(source)


def test_a_syntax_error_found_by_the_compiler_is_reported_as_one() -> None:
    with pytest.raises(CompileError) as info:
        compile_handler("def h(p):\n    match p:\n        case [*a, *b]:\n            pass\n")
    (v,) = info.value.violations
    assert (v.line, v.message) == (3, "syntax error: multiple starred names in sequence pattern")


@pytest.mark.parametrize("source", [
    "class A(object, flag=True):\n    pass\n", "class A(**options):\n    pass\n",
    "from enum import Flag\nclass P(Flag, boundary=1):\n    R = 1\n"])
def test_class_keywords_are_reported_not_dropped(source: str) -> None:
    """RestrictedPython rebuilds a class statement without its keywords: they would vanish."""
    with pytest.raises(CompileError) as info:
        compile_handler(source)
    assert "class keyword" in info.value.violations[0].message


@pytest.mark.parametrize("source", ["x = y.__class__\n", "x.__dict__ += 1\n",
                                    "class A:\n    __eq__ = None\n",
                                    "class A:\n    def __getattr__(self, n):\n        pass\n"])
def test_dunder_messages_never_say_rename(source: str) -> None:
    with pytest.raises(CompileError) as info:
        compile_handler(source)
    assert all("rename" not in str(v) for v in info.value.violations), str(info.value)
