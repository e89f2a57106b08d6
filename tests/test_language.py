"""The language handlers write, admitted one decision at a time, each with its attacks.

Dunder methods, match statements, dataclasses, enum, functools, zoneinfo and logging: for
each, what it may do (a few working programs; tests/test_benign.py has many more), what it
must not reach (the real modules, code generated with real builtins, state shared across
invocations), and the places where trusted code meets handler objects (result checks, error
formatting), which must never run the handler's dunders.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import textwrap
import zoneinfo
from typing import Any

import pytest

from handlerbox.sandbox import (
    CompileError,
    HandlerError,
    HandlerNotFound,
    Limits,
    ResultError,
    compile_handler,
    invoke,
    run_source,
    to_json_bytes,
)
from handlerbox.sandbox import logs as sandbox_logs
from handlerbox.sandbox.guards import guarded_setattr, handler_metaclass
from handlerbox.sandbox.language import HandlerEnumType
from handlerbox.sandbox.modules import ALLOWED_MODULES, facade, logging_facade
from handlerbox.sandbox.names import ALLOWED_DUNDERS, REFUSED_DUNDERS, is_plain_attribute
from handlerbox.sandbox.policy import ALLOWED_HINT, ALLOWED_HINT_AGAIN
from handlerbox.sandbox.runner import MAX_ERROR_TEXT
from tests.conftest import APPS, make_payload
from tests.test_modules import reachable, shared_reachable


def src(body: str, prelude: str = "") -> str:
    """`prelude` at module level, then `def h(payload):` running `body`."""
    return textwrap.dedent(prelude) + "def h(payload):\n" + textwrap.indent(
        textwrap.dedent(body), "    ") + "\n"


def run(source: str, payload: Any = None) -> Any:
    return run_source(source, "h", payload)[0]


def compile_errors(source: str) -> list[str]:
    with pytest.raises(CompileError) as info:
        compile_handler(source)
    return [str(v) for v in info.value.violations]


def handler_error(source: str, payload: Any = None) -> HandlerError:
    with pytest.raises(HandlerError) as info:
        run_source(source, "h", payload)
    return info.value


# -- dunder methods: which, where, how -----------------------------------------------------

DUNDER_SIGNATURES = {
    "__init__": "(self)", "__post_init__": "(self)", "__hash__": "(self)",
    "__repr__": "(self)", "__str__": "(self)", "__format__": "(self, spec)",
    "__bool__": "(self)", "__len__": "(self)", "__iter__": "(self)", "__next__": "(self)",
    "__reversed__": "(self)", "__enter__": "(self)", "__exit__": "(self, *exc)",
    "__call__": "(self, *args)", "__neg__": "(self)", "__pos__": "(self)",
    "__abs__": "(self)", "__invert__": "(self)", "__int__": "(self)", "__float__": "(self)",
    "__complex__": "(self)", "__round__": "(self, n=None)", "__trunc__": "(self)",
    "__floor__": "(self)", "__ceil__": "(self)", "__getitem__": "(self, key)",
    "__setitem__": "(self, key, value)", "__delitem__": "(self, key)",
    "__missing__": "(self, key)", "__contains__": "(self, item)",
}


@pytest.mark.parametrize("name", sorted(ALLOWED_DUNDERS))
def test_every_allowed_dunder_compiles_as_a_method(name: str) -> None:
    signature = DUNDER_SIGNATURES.get(name, "(self, other)")
    source = f"class A:\n    def {name}{signature}:\n        return None\n"
    assert compile_handler(source).code is not None


@pytest.mark.parametrize("name", [*sorted(REFUSED_DUNDERS), "__dir__", "__sizeof__",
                                  "__length_hint__", "__weakref__"])
def test_a_refused_dunder_says_what_to_use_instead_never_rename(name: str) -> None:
    (message,) = compile_errors(f"class A:\n    def {name}(self, *a):\n        return 1\n")
    assert f'"{name}" cannot be defined in handlers' in message
    assert "rename" not in message
    assert ("Instead: " in message) == (name in REFUSED_DUNDERS)
    if name not in REFUSED_DUNDERS:
        assert "Handler classes may define comparisons" in message


DUNDER_PLACES = [
    pytest.param("def __eq__(a, b):\n    return True\n", "can only be defined directly in a "
                 "class body", id="module-level-function"),
    pytest.param("def f():\n    def __eq__(a, b):\n        return True\n    return __eq__\n",
                 "can only be defined directly in a class body", id="nested-function"),
    pytest.param("class A:\n    def m(self):\n        def __hash__():\n            return 1\n",
                 "can only be defined directly in a class body", id="function-in-a-method"),
    pytest.param("class A:\n    @staticmethod\n    def __eq__(a, b):\n        return True\n",
                 "cannot be decorated", id="decorated-staticmethod"),
    pytest.param("import functools\nclass A:\n    @functools.lru_cache\n"
                 "    def __hash__(self):\n        return 1\n", "cannot be decorated",
                 id="decorated-lru-cache"),
    pytest.param("class A:\n    @(lambda f: id)\n    def __hash__(self):\n        return 1\n",
                 "cannot be decorated", id="decorator-swaps-in-a-builtin"),
    pytest.param("class A:\n    __eq__ = lambda self, other: True\n", 'starts with "_"',
                 id="class-body-assignment"),
    pytest.param("class A:\n    __getattr__ = dict.get\n", 'starts with "_"',
                 id="class-body-assignment-of-a-builtin"),
    pytest.param("class A:\n    pass\nA.__eq__ = lambda s, o: True\n", 'starts with "_"',
                 id="attribute-assignment"),
    pytest.param("class A:\n    for __hash__ in [id]:\n        pass\n", 'starts with "_"',
                 id="loop-target-in-a-class-body"),
    pytest.param("class A:\n    import json as __reduce__\n", 'starts with "_"',
                 id="import-as-a-dunder"),
    pytest.param("class A:\n    def _missing_(self):\n        return 1\n",
                 "Library hooks named _like_this_", id="enum-missing-hook"),
    pytest.param("class A:\n    def _generate_next_value_(name, start, count, last):\n"
                 "        return name\n", "Library hooks named _like_this_",
                 id="enum-generate-next-value-hook"),
    pytest.param("class A:\n    _ignore_ = ['x']\n", 'starts with "_"', id="enum-ignore"),
    pytest.param("from enum import Flag\nclass P(Flag, boundary=1):\n    R = 1\n",
                 "class keyword boundary is not supported", id="class-keyword"),
    pytest.param("class A(**{'x': 1}):\n    pass\n", "class keyword ** is not supported",
                 id="class-keywords-unpacked"),
]


@pytest.mark.parametrize(("source", "message"), DUNDER_PLACES)
def test_dunders_only_as_plain_defs_in_a_class_body(source: str, message: str) -> None:
    assert any(message in text for text in compile_errors(source)), compile_errors(source)


DUNDER_RUNTIME_TRICKS = [
    pytest.param(src('setattr(A, "__eq__", lambda s, o: True)\nreturn A() == 1',
                     "class A:\n    pass\n"), id="setattr-on-the-class"),
    pytest.param(src('a = A()\nsetattr(a, "__eq__", lambda o: True)\nreturn a == 1',
                     "class A:\n    pass\n"), id="setattr-on-an-instance"),
    pytest.param(src('vars(A)["__eq__"] = 1\nreturn 1', "class A:\n    pass\n"),
                 id="vars-of-the-class"),
    pytest.param(src('locals()["__eq__"] = 1\nreturn 1'), id="locals"),
    pytest.param(src('return type("X", (), {"__getattr__": lambda s, n: n})().anything'),
                 id="type-with-three-arguments"),
    pytest.param(src('X = Enum("X", [("A", 1), ("__getattr__", lambda s, n: n)])\n'
                     "return X.A.anything", "from enum import Enum\n"),
                 id="enum-functional-api-with-dunders"),
    pytest.param(src('X = B("X", [("A", 1), ("__del__", lambda s: print("finalizer"))])\n'
                     "return 1", "from enum import Enum\nclass B(Enum):\n    pass\n"),
                 id="enum-functional-api-on-a-handler-base"),
    pytest.param(src('E = type(re.I).mro()[5]\nreturn repr(E("X", [("__del__", print)]))',
                     "import re\n"), id="real-enum-base-through-mro"),
    pytest.param(src('E = getattr(type(re.I), "mro")()[5]\nreturn repr(E)', "import re\n"),
                 id="real-enum-base-through-getattr-mro"),
    pytest.param(src("return repr(type(Color))",
                     "from enum import Enum\nclass Color(Enum):\n    RED = 1\n"),
                 id="the-enum-metaclass-through-type"),
    pytest.param(src("class X(type(re.I)):\n    pass\nreturn 1", "import re\n"),
                 id="a-real-flag-class-as-a-base"),
]


@pytest.mark.parametrize("source", DUNDER_RUNTIME_TRICKS)
def test_no_runtime_trick_defines_a_dunder_or_reaches_the_real_enum(source: str) -> None:
    with pytest.raises((CompileError, HandlerError)):
        run(source)


def test_allowed_dunders_work_on_handler_classes() -> None:
    source = src("""\
        a, b = V(1, 2), V(3, 4)
        a += b
        seen = {V(1, 1), V(1, 1)}
        with Guard() as g:
            raise KeyError("swallowed")
        return [repr(a), str(-a), f"{a:short}", abs(V(3, 4)), len(a), list(a), a[1],
                4 in a, bool(V(0, 0)), len(seen), V(1, 2) < V(2, 0), 3 * V(1, 1) == V(3, 3),
                g.closed, int(V(7, 0)), a(10)]""", """\
        class V:
            def __init__(self, x, y):
                self.x, self.y = x, y
            def __repr__(self):
                return f"V({self.x}, {self.y})"
            def __str__(self):
                return f"<{self.x},{self.y}>"
            def __format__(self, spec):
                return f"{self.x}/{self.y}" if spec == "short" else str(self)
            def __eq__(self, other):
                return (self.x, self.y) == (other.x, other.y)
            def __hash__(self):
                return hash((self.x, self.y))
            def __lt__(self, other):
                return (self.x, self.y) < (other.x, other.y)
            def __add__(self, other):
                return V(self.x + other.x, self.y + other.y)
            def __iadd__(self, other):
                self.x += other.x
                self.y += other.y
                return self
            def __rmul__(self, k):
                return V(k * self.x, k * self.y)
            def __neg__(self):
                return V(-self.x, -self.y)
            def __abs__(self):
                return (self.x ** 2 + self.y ** 2) ** 0.5
            def __len__(self):
                return 2
            def __iter__(self):
                return iter((self.x, self.y))
            def __getitem__(self, i):
                return (self.x, self.y)[i]
            def __contains__(self, v):
                return v in (self.x, self.y)
            def __bool__(self):
                return bool(self.x or self.y)
            def __int__(self):
                return self.x
            def __call__(self, k):
                return self.x * k
        class Guard:
            def __enter__(self):
                self.closed = False
                return self
            def __exit__(self, kind, value, tb):
                self.closed = True
                return kind is KeyError
        """)
    assert run(source) == ["V(4, 6)", "<-4,-6>", "4/6", 5.0, 2, [4, 6], 6, True, False, 1,
                           True, True, True, 7, 40]


# -- trusted code never runs a handler's dunders -------------------------------------------

SPY = """\
class Spy(str):
    def __eq__(self, other):
        print("SPY __eq__")
        return True
    def __hash__(self):
        return hash("h")
    def __len__(self):
        print("SPY __len__")
        raise RuntimeError("len")
    def __repr__(self):
        print("SPY __repr__")
        return "spied"
    def __str__(self):
        print("SPY __str__")
        return "spied"
    def __format__(self, spec):
        print("SPY __format__")
        return "spied"
    def __iter__(self):
        print("SPY __iter__")
        return iter([])
    def __bool__(self):
        print("SPY __bool__")
        return False
class Obj:
    def __repr__(self):
        print("SPY __repr__")
        return "spied"
    def __str__(self):
        print("SPY __str__")
        return "spied"
    def __format__(self, spec):
        print("SPY __format__")
        return "spied"
    def __len__(self):
        print("SPY __len__")
        raise RuntimeError("len")
    def __eq__(self, other):
        print("SPY __eq__")
        return True
    def __hash__(self):
        return 1
"""

TRUSTED_PATHS = [
    pytest.param(src("return {Spy('k'): 1}", SPY), ResultError,
                 "value: key of type Spy, JSON object keys must be strings",
                 id="result-dict-key-of-a-str-subclass"),
    pytest.param(src("return {'a': [Spy('x')]}", SPY), ResultError,
                 "value['a'][0]: Spy is not JSON", id="result-value-str-subclass"),
    pytest.param(src("return Obj()", SPY), ResultError, "value: Obj is not JSON",
                 id="result-object-with-every-dunder"),
    pytest.param(src("return [Obj(), {'k': {Obj(): 1}}]", SPY), ResultError,
                 "value[0]: Obj is not JSON", id="result-nested-objects"),
    pytest.param(src("raise ValueError(Obj())", SPY), HandlerError,
                 "(message not shown: its arguments include a Obj)",
                 id="error-argument-with-str-and-repr"),
    pytest.param(src("raise ValueError(Spy('x'))", SPY), HandlerError,
                 "(message not shown: its arguments include a Spy)",
                 id="error-argument-str-subclass"),
    pytest.param(src("raise E('plain')", SPY + "class E(Exception):\n    def __str__(self):\n"
                     "        print('SPY __str__')\n        return 'spied'\n"), HandlerError,
                 "plain", id="error-class-with-its-own-str"),
    pytest.param(src("raise KeyError(Spy('k'))", SPY), HandlerError,
                 "(message not shown: its arguments include a Spy)", id="key-error-key"),
    pytest.param(src("setattr(Box(), Obj(), 1)", SPY + "class Box:\n    pass\n"), HandlerError,
                 "attribute name must be a string, not Obj", id="setattr-name-not-formatted"),
    pytest.param(src("delattr(Box(), Spy('x'))", SPY + "class Box:\n    pass\n"), HandlerError,
                 "attribute name must be a string, not Spy", id="delattr-name-not-formatted"),
    pytest.param(src("getattr(Box(), Spy('x'))", SPY + "class Box:\n    pass\n"), HandlerError,
                 "attribute name must be a string", id="getattr-name-not-formatted"),
]


@pytest.mark.parametrize(("source", "error", "message"), TRUSTED_PATHS)
def test_result_and_error_paths_never_call_handler_dunders(
        source: str, error: type[HandlerError], message: str) -> None:
    with pytest.raises(error) as info:
        run(source)
    assert info.value.message == message
    assert "SPY" not in info.value.logs
    assert "spied" not in info.value.traceback


def test_the_traceback_never_looks_at_locals() -> None:
    source = src("big = Obj()\nname = Spy('x')\nraise ValueError('plain')", SPY)
    error = handler_error(source)
    assert "SPY" not in error.logs and "spied" not in error.traceback
    assert error.traceback.endswith("raise ValueError('plain')\n")


def test_exports_with_a_str_subclass_key_is_not_looked_up() -> None:
    source = SPY + "def f(p):\n    return 1\nexports = {Spy('h'): f}\n"
    with pytest.raises(HandlerNotFound) as info:
        run_source(source, "h", {})
    assert "exports has a key of type Spy" in str(info.value)
    assert "SPY" not in info.value.logs


def test_service_arguments_are_checked_by_exact_type() -> None:
    """What the worker does to a call's arguments (runtime.worker.call_host)."""
    spy_calls: list[str] = []

    class Key(str):
        def __eq__(self, other: object) -> bool:
            spy_calls.append("eq")
            return True

        def __hash__(self) -> int:
            spy_calls.append("hash")
            return 1

    args = {"key": "k"}
    args[Key("value")] = 1  # type: ignore[index]
    spy_calls.clear()
    with pytest.raises(ResultError, match="key of type Key"):
        to_json_bytes(args, 1 << 20)
    assert spy_calls == []


def test_a_service_keyword_must_be_a_plain_str() -> None:
    source = src("try:\n    db.get(**{Spy('key'): 'k'})\nexcept TypeError as e:\n"
                 "    return str(e)", SPY + "from services import db\n")
    value, logs = run_source(source, "h", {})
    assert value == "db.get() keywords must be plain strings" and "SPY" not in logs


def test_the_guards_never_format_a_handler_object() -> None:
    calls: list[str] = []
    own = handler_metaclass("Own", (), {})

    class Name(str):
        def __format__(self, spec: str) -> str:
            calls.append("format")
            return "x"

        def __str__(self) -> str:
            calls.append("str")
            return "x"

    for name in (Name("a"), own()):
        with pytest.raises(TypeError, match="attribute name must be a string, not"):
            guarded_setattr(own(), name, 1)
    assert calls == []


def test_recursion_through_eq_is_a_handler_error_with_folded_frames() -> None:
    source = src("return A() == A()", "class A:\n    def __eq__(self, other):\n"
                 "        return self == other\n")
    error = handler_error(source)
    assert error.type_name == "RecursionError"
    frames = error.traceback.splitlines()
    assert frames.count('  File "server.py", line 3, in __eq__') == 3
    assert re.fullmatch(r"  \[Previous line repeated \d+ more times\]", frames[-1])
    assert len(error.traceback) < 1000


def test_recursion_in_a_function_folds_like_cpython() -> None:
    source = "def f(n):\n    return f(n + 1)\ndef h(p):\n    return f(0)\n"
    error = handler_error(source)
    assert error.traceback.splitlines() == [
        '  File "server.py", line 4, in h', "    return f(0)",
        *['  File "server.py", line 2, in f', "    return f(n + 1)"] * 3,
        error.traceback.splitlines()[-1]]
    assert re.fullmatch(r"  \[Previous line repeated (\d+) more times\]",
                        error.traceback.splitlines()[-1])


def test_mutual_recursion_is_not_folded_and_stays_clipped() -> None:
    source = ("def a(n):\n    return b(n)\ndef b(n):\n    return a(n)\n"
              "def h(p):\n    return a(0)\n")
    error = handler_error(source)
    assert "Previous line repeated" not in error.traceback
    assert len(error.traceback) < MAX_ERROR_TEXT + 100


# -- match statements ----------------------------------------------------------------------

MATCH_REFUSED = [
    pytest.param("case object(__class__=c):", "cannot be matched in a class pattern: it is "
                 "not accessible", id="dunder-keyword"),
    pytest.param("case object(__dict__=d):", "not accessible", id="dict-keyword"),
    pytest.param("case object(_private=p):", "not accessible", id="private-keyword"),
    pytest.param("case object(gi_frame=f):", "not accessible", id="generator-frame-keyword"),
    pytest.param("case object(f_globals=g):", "not accessible", id="frame-globals-keyword"),
    pytest.param("case str(format=f):", "reads attributes without the run-time guard",
                 id="str-format-keyword"),
    pytest.param("case str(format_map=f):", "without the run-time guard",
                 id="str-format-map-keyword"),
    pytest.param("case type(register=r):", "without the run-time guard", id="abc-register"),
    pytest.param("case type(mro=m):", "without the run-time guard", id="mro-keyword"),
    pytest.param("case object(from_file=f):", "without the run-time guard",
                 id="zoneinfo-from-file"),
    pytest.param("case payload.__class__:", "invalid attribute name", id="value-dunder"),
    pytest.param("case payload.format:", "cannot be read in a pattern", id="value-format"),
    pytest.param("case {payload.format: 1}:", "cannot be read in a pattern",
                 id="mapping-key-format"),
    pytest.param("case x.format.y():", "cannot be read in a pattern", id="class-path-format"),
    pytest.param("case [_getattr_, *rest]:", 'starts with "_"', id="capture-guard-name"),
    pytest.param("case {**_write_}:", 'starts with "_"', id="mapping-rest-guard-name"),
    pytest.param("case [*_getiter_]:", 'starts with "_"', id="star-guard-name"),
    pytest.param("case int() as _print:", 'starts with "_"', id="as-guard-name"),
    pytest.param("case print:", "reserved name", id="capture-print"),
    pytest.param("case json.decoder:", "json.decoder is not available", id="module-name"),
]


@pytest.mark.parametrize(("case", "message"), MATCH_REFUSED)
def test_match_patterns_follow_the_name_rules_at_compile_time(case: str, message: str) -> None:
    source = src(f"match payload:\n    {case}\n        return 1", "import json\n")
    assert any(message in text for text in compile_errors(source)), compile_errors(source)


def test_a_class_pattern_on_a_facade_reads_only_what_it_offers() -> None:
    """`case object(codecs=c)` on json: the facade has no `codecs`, so the pattern does not
    match (the real module's `codecs` would lead to builtins)."""
    source = src("match json:\n    case object(codecs=c):\n        return repr(c)\n"
                 "    case object(dumps=d):\n        return d([1])", "import json\n")
    assert run(source) == "[1]"


def test_positional_patterns_on_a_class_without_match_args_fail_at_run_time() -> None:
    source = src("match P():\n    case P(x):\n        return x", "class P:\n    pass\n")
    error = handler_error(source)
    assert error.type_name == "TypeError"


def test_every_class_a_handler_can_reach_lists_plain_names_in_match_args() -> None:
    """Positional class patterns read `__match_args__` without the guard: every class reachable
    from a facade (and its call results), and every builtin class, lists only plain names."""
    import builtins

    classes = {v for v in vars(builtins).values() if isinstance(v, type)}
    for name in ALLOWED_MODULES:
        for _, value in shared_reachable(name, depth=3):
            classes.add(value if isinstance(value, type) else type(value))
    with_args = {c: getattr(c, "__match_args__", None) for c in classes}
    with_args = {c: a for c, a in with_args.items() if a is not None}
    assert with_args, "the walk should reach some (struct_time, ParseResult)"
    for kind, names in with_args.items():
        assert all(is_plain_attribute(n) for n in names), (kind, names)


def test_a_handler_class_cannot_end_up_with_unsafe_match_args() -> None:
    unsafe = type("Unsafe", (), {"__match_args__": ("format",)})
    with pytest.raises(TypeError, match="__match_args__"):
        from handlerbox.sandbox.language import check_match_args
        check_match_args(unsafe)
    time_args = run(src("match time.gmtime(0):\n"
                        "    case time.struct_time(year, month):\n        return [year, month]",
                        "import time\n"))
    assert time_args == [1970, 1]


# -- dataclasses -----------------------------------------------------------------------------

DATACLASS_REFUSED = [
    pytest.param(src("dataclass(uuid.UUID)\nreturn 1", "import uuid\n"
                     "from dataclasses import dataclass\n"),
                 "dataclass() takes a class defined in the handler", id="a-shared-class"),
    pytest.param(src("dataclass(frozen=True)(json.JSONDecodeError)\nreturn 1",
                     "import json\nfrom dataclasses import dataclass\n"),
                 "takes a class defined in the handler", id="a-shared-exception-class"),
    pytest.param(src("dataclass(A())\nreturn 1", "from dataclasses import dataclass\n"
                     "class A:\n    pass\n"), "takes a class", id="an-instance"),
    pytest.param(src("return 1", "from dataclasses import dataclass\n@dataclass\nclass A:\n"
                     "    format: str\n"), "field 'format' cannot be a dataclass field",
                 id="field-named-format"),
    pytest.param(src("return 1", "from dataclasses import dataclass\n@dataclass\nclass A:\n"
                     "    register: int = 0\n"), "field 'register'", id="field-named-register"),
    pytest.param(src("return 1", "from dataclasses import dataclass\n@dataclass\nclass A:\n"
                     "    gi_frame: int = 0\n"), "field 'gi_frame'", id="field-named-gi-frame"),
    pytest.param(src("return 1", "from dataclasses import dataclass\n@dataclass(slots=True)\n"
                     "class A:\n    x: int\n"), "slots", id="slots"),
    pytest.param(src("return asdict(uuid.NAMESPACE_DNS)", "import uuid\n"
                     "from dataclasses import asdict\n"), "should be called on dataclass "
                 "instances", id="asdict-on-a-shared-object"),
    pytest.param(src("return replace(P, x=1)", "from dataclasses import dataclass, replace\n"
                     "@dataclass\nclass P:\n    x: int\n"), "should be called on dataclass "
                 "instances", id="replace-on-the-class"),
    pytest.param(src("return 1", "from enum import Enum\nfrom dataclasses import dataclass\n"
                     "@dataclass\nclass C(Enum):\n    A = 1\n"), "cannot decorate an Enum",
                 id="an-enum"),
]


@pytest.mark.parametrize(("source", "message"), DATACLASS_REFUSED)
def test_dataclass_facade_refuses(source: str, message: str) -> None:
    assert message in str(handler_error(source))


FROZEN = "from dataclasses import dataclass\n@dataclass(frozen=True)\nclass P:\n    x: int\n"


@pytest.mark.parametrize("body", [
    "p = P(1)\nobject.__setattr__(p, 'x', 2)\nreturn p.x",
    "p = P(1)\ngetattr(object, '__setattr__')(p, 'x', 2)\nreturn p.x",
    "p = P(1)\nsuper(P, p).__setattr__('x', 2)\nreturn p.x",
    "p = P(1)\nP.__init__(p, 2)\nreturn p.x",
])
def test_a_frozen_dataclass_stays_frozen(body: str) -> None:
    with pytest.raises((CompileError, HandlerError)):
        run(src(body, FROZEN))
    assert run(src("p = P(1)\ntry:\n    p.x = 2\nexcept FrozenInstanceError as e:\n"
                   "    return [p.x, str(e)]", FROZEN
                   + "from dataclasses import FrozenInstanceError\n")) == [
        1, "cannot assign to field 'x'"]


def test_dataclass_methods_are_generated_from_field_names_and_text_annotations() -> None:
    source = src("""\
        p = Point(1, 2)
        return [repr(p), p == Point(1, 2), [f.name for f in fields(p)],
                [f.type for f in fields(Point)], Point(0, 5) < p, astuple(p),
                hash(Frozen(1)) == hash(Frozen(1))]""", """\
        from __future__ import annotations
        from dataclasses import dataclass, fields, astuple
        import typing
        @dataclass(order=True)
        class Point:
            x: int
            y: typing.Optional[int] = None
        @dataclass(frozen=True)
        class Frozen:
            v: list[int] | None
        """)
    assert run(source) == ["Point(x=1, y=2)", True, ["x", "y"], ["int", "typing.Optional[int]"],
                           True, [1, 2], True]


def test_no_shared_dataclass_or_field_is_reachable() -> None:
    """dataclass() takes a Field found on the class as the field itself and writes its name,
    type and kind into it: a Field any other invocation could reach must not exist."""
    import dataclasses

    for name in ALLOWED_MODULES:
        for path, value in shared_reachable(name, depth=3):
            assert not isinstance(value, dataclasses.Field), path
            assert isinstance(value, type) or not dataclasses.is_dataclass(value), path


def test_asdict_rebuilds_containers_and_never_deep_copies_other_values() -> None:
    source = src("""\
        box = Box()
        c = Carton(box, [Item("a", {1})], {"k": (Item("b", set()),)})
        d = asdict(c)
        d["items"][0]["tags"].add(2)
        return [d["box"] is box, sorted(c.items[0].tags), d["more"]["k"][0]["name"],
                astuple(c.items[0])[0]]""", """\
        from dataclasses import dataclass, asdict, astuple
        class Box:
            pass
        @dataclass
        class Item:
            name: str
            tags: set
        @dataclass
        class Carton:
            box: object
            items: list
            more: dict
        """)
    assert run(source) == [True, [1], "b", "a"]


def test_dataclass_defaults_are_made_fresh_in_every_invocation() -> None:
    """Defaults (and the objects a default_factory hands out) are made when the module runs,
    and the module runs again for every invocation."""
    compiled = compile_handler(src("""\
        s = Settings()
        s.shared["seen"].append(payload["account_id"])
        return [s.limit, s.shared["seen"], Settings().shared is s.shared]""", """\
        from dataclasses import dataclass, field
        SHARED = {"seen": []}
        @dataclass
        class Settings:
            limit: int = 10
            shared: dict = field(default_factory=lambda: SHARED)
        """))
    first = json.loads(invoke(compiled, "h", make_payload(account_id="A")).result_json)
    second = json.loads(invoke(compiled, "h", make_payload(account_id="B")).result_json)
    assert first == [10, ["A"], True]
    assert second == [10, ["B"], True]


# -- enum -------------------------------------------------------------------------------------

def test_enum_classes_work_and_the_shared_bases_stay_empty() -> None:
    source = src("""\
        return [Color.RED.value, Color(2).name, Color["BLUE"].value, len(Color),
                [c.name for c in Color], Color.RED is Color(1), isinstance(Color.RED, Enum),
                Level.HIGH > Level.LOW, Level.HIGH + 1, Mode.READ.upper(),
                str(Perm.R | Perm.W), Perm.R in (Perm.R | Perm.W), repr(Color.GREEN),
                Color.RED.describe()]""", """\
        from enum import Enum, IntEnum, StrEnum, Flag, auto, unique
        class Base(Enum):
            def describe(self):
                return self.name.lower() + "!"
        @unique
        class Color(Base):
            RED = auto()
            GREEN = auto()
            BLUE = auto()
        class Level(IntEnum):
            LOW = 1
            HIGH = 3
        class Mode(StrEnum):
            READ = auto()
        class Perm(Flag):
            R = auto()
            W = auto()
        """)
    assert run(source) == [1, "GREEN", 3, 3, ["RED", "GREEN", "BLUE"], True, True, True, 4,
                           "READ", "Perm.R|W", True, "<Color.GREEN: 2>", "red!"]
    for base in (facade("enum").Enum, facade("enum").Flag, facade("enum").IntEnum):
        assert base._member_map_ == {} and base._value2member_map_ == {}
        assert isinstance(base, HandlerEnumType)


ENUM_REFUSED = [
    pytest.param(src("return repr(Enum('X', 'A B'))", "from enum import Enum\n"),
                 "functional API", id="functional-api"),
    pytest.param(src("return repr(IntFlag('X', 'A B', boundary=None))",
                     "from enum import IntFlag\n"), "functional API", id="functional-intflag"),
    pytest.param(src("return repr(Color('X', 'A', type=int))",
                     "from enum import Enum\nclass Color(Enum):\n    pass\n"),
                 "functional API", id="functional-api-with-a-mixin"),
    pytest.param(src("return repr(Flag(3))", "from enum import Flag\n"), "no members",
                 id="a-member-less-flag-base"),
    pytest.param(src("Enum.planted = 1\nreturn 1", "from enum import Enum\n"),
                 "cannot be modified", id="write-to-a-base"),
    pytest.param(src("setattr(Color, 'RED', 5)\nreturn 1",
                     "from enum import Enum\nclass Color(Enum):\n    RED = 1\n"),
                 "cannot be modified", id="rebind-a-member"),
    pytest.param(src("return repr(Color.mro())",
                     "from enum import Enum\nclass Color(Enum):\n    RED = 1\n"),
                 "mro() is not available", id="mro-of-a-handler-enum"),
    pytest.param(src("return 1", "from enum import Enum\nclass Color(Enum):\n    RED = 1\n"
                     "class More(Color):\n    BLUE = 2\n"), "cannot extend", id="extend-members"),
]


@pytest.mark.parametrize(("source", "message"), ENUM_REFUSED)
def test_enum_facade_refuses(source: str, message: str) -> None:
    assert message in str(handler_error(source))


def test_enum_members_are_not_json_results() -> None:
    source = src("return {Mode.A: Mode.A}", "from enum import StrEnum\n"
                 "class Mode(StrEnum):\n    A = 'a'\n")
    with pytest.raises(ResultError, match="key of type Mode"):
        run(source)


# -- functools ---------------------------------------------------------------------------------

FUNCTOOLS_REFUSED = [
    pytest.param(src("total_ordering(uuid.UUID)\nreturn 1",
                     "import uuid\nfrom functools import total_ordering\n"),
                 "takes a class defined in the handler", id="total-ordering-shared-class"),
    pytest.param(src("wraps(f)(json.dumps)\nreturn json.dumps(1)",
                     "import json\nfrom functools import wraps\ndef f():\n    pass\n"),
                 "decorates a function defined in the handler", id="wraps-a-shared-function"),
    pytest.param(src("p = partial(json.dumps)\np.func = print\nreturn 1",
                     "import json\nfrom functools import partial\n"), "cannot be modified",
                 id="partial-rebind-func"),
    pytest.param(src("p = partial(json.dumps)\nsetattr(p, 'extra', 1)\nreturn 1",
                     "import json\nfrom functools import partial\n"), "cannot be modified",
                 id="partial-attribute"),
]


@pytest.mark.parametrize(("source", "message"), FUNCTOOLS_REFUSED)
def test_functools_facade_refuses(source: str, message: str) -> None:
    assert message in str(handler_error(source))


@pytest.mark.parametrize("name", ["cached_property", "singledispatch", "update_wrapper",
                                  "partialmethod", "_lru_cache_wrapper"])
def test_functools_names_left_out_are_compile_errors(name: str) -> None:
    assert compile_errors(f"from functools import {name}\n")


def test_an_lru_cache_lives_as_long_as_its_invocation() -> None:
    compiled = compile_handler(src("""\
        for n in payload["data"]["ns"]:
            square(n)
        info = square.cache_info()
        return [info.hits, info.misses, info.currsize]""", """\
        from functools import lru_cache
        @lru_cache(maxsize=None)
        def square(n):
            return n * n
        """))
    payload = make_payload(ns=[1, 2, 1, 3])
    assert json.loads(invoke(compiled, "h", payload).result_json) == [1, 3, 3]
    assert json.loads(invoke(compiled, "h", payload).result_json) == [1, 3, 3]


def test_wraps_copies_the_name_onto_a_handler_function_only() -> None:
    source = src("return [wrapped(2), inner(3)]", """\
        from functools import wraps
        def traced(f):
            @wraps(f)
            def wrapper(*args):
                return ["traced", f(*args)]
            return wrapper
        @traced
        def wrapped(x):
            '''Doc.'''
            return x * 2
        def inner(x):
            return x
        """)
    assert run(source) == [["traced", 4], 3]


# -- zoneinfo ---------------------------------------------------------------------------------

ZONE_REFUSED = [
    pytest.param("return repr(ZoneInfo.from_file)", "from_file is not available",
                 id="from-file"),
    pytest.param("return repr(getattr(ZoneInfo, 'from_file'))", "from_file is not available",
                 id="from-file-getattr"),
    pytest.param("class Z(ZoneInfo):\n    pass\nreturn repr(super(Z, Z).from_file)",
                 "from_file is not available", id="from-file-through-super"),
    pytest.param("return repr(ZoneInfo('UTC').from_file)", "from_file is not available",
                 id="from-file-on-an-instance"),
    pytest.param("return repr(ZoneInfo.no_cache(Key('UTC')))", "no_cache is not available",
                 id="no-cache"),
    pytest.param("return repr(super(ZoneInfo, ZoneInfo).no_cache(Key('UTC')))",
                 "no_cache is not available", id="the-c-no-cache-through-super"),
    pytest.param("class Z(ZoneInfo):\n    def m(self):\n        return super().no_cache('UTC')\n"
                 "return repr(Z('UTC').m())", "no_cache is not available",
                 id="no-cache-through-zero-argument-super"),
    pytest.param("return str(ZoneInfo('../../../../etc/passwd'))", "subdirectories of TZPATH",
                 id="relative-path"),
    pytest.param("return str(ZoneInfo('/etc/passwd'))", "absolute paths", id="absolute-path"),
    pytest.param("return str(ZoneInfo('__init__.py'))", "Invalid TZif file",
                 id="a-python-file-in-tzdata"),
    pytest.param("return str(ZoneInfo('json/decoder'))", "No time zone found",
                 id="a-module-path"),
]


@pytest.mark.parametrize(("body", "message"), ZONE_REFUSED)
def test_zoneinfo_reads_tzdata_zones_only(body: str, message: str) -> None:
    prelude = "from zoneinfo import ZoneInfo\nclass Key(str):\n    pass\n"
    assert message in str(handler_error(src(body, prelude)))


def test_a_zone_key_is_read_as_its_exact_text() -> None:
    """The stdlib checks a key with its own str methods, then splits it again to find the file:
    a str subclass answering "America/New_York" to the check and "/etc/passwd" to the lookup
    opened /etc/passwd with the real ZoneInfo. The facade's copies the key first."""
    source = src("""\
        zones = [ZoneInfo(Key("America/New_York")), type(ZoneInfo("UTC"))(Key("UTC"))]
        return [[str(z) for z in zones], CALLS, type(zones[0]) is ZoneInfo]""", """\
        from zoneinfo import ZoneInfo
        CALLS = []
        class Key(str):
            def split(self, *args):
                CALLS.append("split")
                return ["/etc/passwd"]
            def startswith(self, *args):
                CALLS.append("startswith")
                return False
            def __len__(self):
                CALLS.append("len")
                return 16
        """)
    assert run(source) == [["America/New_York", "UTC"], [], True]
    with pytest.raises(HandlerError, match="a zone key must be a str, not int"):
        run(src("return str(ZoneInfo(1))", "from zoneinfo import ZoneInfo\n"))


def test_zones_come_from_the_tzdata_package() -> None:
    facade("zoneinfo")
    assert zoneinfo.TZPATH == ()
    assert run(src("return ['America/New_York' in available_timezones(), "
                   "str(ZoneInfo('Europe/Paris'))]",
                   "from zoneinfo import ZoneInfo, available_timezones\n")) == [
        True, "Europe/Paris"]


def test_the_zone_cache_is_emptied_before_every_invocation() -> None:
    """The facade's ZoneInfo has its own cache (handlers never reach the real class's
    constructor: type() gives the facade's, mro() and no_cache are refused)."""
    zone_class = facade("zoneinfo").ZoneInfo
    assert zone_class is not zoneinfo.ZoneInfo and issubclass(zone_class, zoneinfo.ZoneInfo)
    nothing = compile_handler("def h(p):\n    return 1\n")
    loaded = zone_class("Asia/Tokyo")
    assert zone_class("Asia/Tokyo") is loaded
    invoke(nothing, "h", {})
    assert zone_class("Asia/Tokyo") is not loaded


def test_a_zone_is_the_same_object_within_an_invocation() -> None:
    """Same-zone datetime arithmetic depends on it (wall time, not UTC)."""
    source = src("""\
        a = datetime(2024, 3, 10, 0, 0, tzinfo=ZoneInfo("America/New_York"))
        b = datetime(2024, 3, 10, 12, 0, tzinfo=ZoneInfo("America/New_York"))
        return [ZoneInfo("America/New_York") is ZoneInfo("America/New_York"),
                (b - a).total_seconds() / 3600]""",
                 "from datetime import datetime\nfrom zoneinfo import ZoneInfo\n")
    assert run(source) == [True, 12.0]


# -- logging ---------------------------------------------------------------------------------

def records_of(source: str, payload: Any = None, limits: Limits | None = None) -> Any:
    outcome = invoke(compile_handler(source), "h", payload, limits or Limits())
    return json.loads(outcome.result_json), outcome.logs, outcome.log_records


def test_log_records_have_level_logger_and_message() -> None:
    value, logs, records = records_of(src("""\
        log = logging.getLogger(__name__)
        log.debug("dropped: below WARNING")
        log.warning("low stock: %s left", 3)
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        log.info("order %(id)s", {"id": 7})
        logging.getLogger("app.db").error("fails %d", "not a number")
        try:
            {}["k"]
        except KeyError:
            log.exception("lookup failed")
        return log.getEffectiveLevel()""", "import logging\n"))
    assert value == logging.INFO
    assert list(records[:3]) == [
        {"level": "WARNING", "logger": "server", "message": "low stock: 3 left"},
        {"level": "INFO", "logger": "server", "message": "order 7"},
        {"level": "ERROR", "logger": "app.db",
         "message": "fails %d [the message could not be formatted: TypeError]"}]
    assert records[3]["message"].startswith("lookup failed\nTraceback (most recent call last):")
    assert records[3]["message"].endswith("KeyError: 'k'")
    assert logs.startswith("WARNING:server:low stock: 3 left\nINFO:server:order 7\n")


def test_log_records_are_capped_by_count_and_bytes() -> None:
    source = src("for i in range(50):\n    logging.warning('line %d', i)\nreturn 1",
                 "import logging\n")
    _, _, records = records_of(source, limits=Limits(max_log_records=10))
    assert len(records) == 11 and records[9]["message"] == "line 9"
    assert records[10] == {"level": "WARNING", "logger": "handlerbox",
                           "message": "[log records truncated: 40 more records dropped]"}
    _, _, records = records_of(src("logging.error('y' * 3000)\nlogging.error('x' * 100_000)\n"
                                   "logging.error('z')\nreturn 1", "import logging\n"),
                               limits=Limits(max_log_bytes=4096))
    assert [r["message"][:1] for r in records] == ["y", "z", "["]
    assert records[-1]["message"] == "[log records truncated: 1 more records dropped]"


def test_a_long_message_is_clipped_in_its_record() -> None:
    _, _, records = records_of(src("logging.error('x' * 100_000)\nreturn 1",
                                   "import logging\n"),
                               limits=Limits(max_log_bytes=1 << 20))
    assert records[0]["message"].startswith("x" * sandbox_logs.MAX_MESSAGE_CHARS + "... [")
    assert len(records[0]["message"]) < sandbox_logs.MAX_MESSAGE_CHARS + 40


def test_log_records_hold_exact_strings_whatever_the_handler_passes() -> None:
    _, logs, records = records_of(src("""\
        log = logging.getLogger(Name("app"))
        log.warning(Msg("hi %s"), Obj())
        log.warning(Obj())
        return 1""", SPY.replace('print("SPY', 'print("LOGGED') + """\
class Name(str):
    pass
class Msg(str):
    def __mod__(self, args):
        return Msg("formatted")
import logging
"""))
    assert all(type(v) is str for r in records for v in r.values())
    # str(msg) first, as logging does: a str subclass's own `%` is never used
    assert records[0] == {"level": "WARNING", "logger": "app", "message": "hi spied"}
    assert records[1]["message"] == "spied" and "LOGGED __str__" in logs


def test_logging_is_a_fresh_module_in_every_invocation() -> None:
    compiled = compile_handler(src("""\
        before = [logging.getLogger("a").level, logging.getLogger().getEffectiveLevel()]
        logging.getLogger("a").setLevel("DEBUG")
        logging.basicConfig(level=logging.DEBUG)
        return before""", "import logging\n"))
    assert json.loads(invoke(compiled, "h", {}).result_json) == [0, 30]
    assert json.loads(invoke(compiled, "h", {}).result_json) == [0, 30]


def test_handler_logging_never_touches_the_real_logging_module() -> None:
    real = logging.getLogger()
    before = (dict(logging.root.manager.loggerDict), real.level, list(real.handlers))
    run(src("logging.basicConfig(level=logging.DEBUG, filename='pwned.log')\n"
            "logging.getLogger('handler.x').error('boom')\nreturn 1", "import logging\n"))
    assert (dict(logging.root.manager.loggerDict), real.level, list(real.handlers)) == before


@pytest.mark.parametrize("name", ["StreamHandler", "FileHandler", "Formatter", "Logger",
                                  "root", "getLevelName", "disable", "config"])
def test_logging_names_left_out_are_compile_errors(name: str) -> None:
    assert compile_errors(f"import logging\nx = logging.{name}\n")


def test_a_logging_facade_shares_nothing_between_invocations() -> None:
    first = reachable(logging_facade(sandbox_logs.LogRecords()), 3, "logging")
    second = {id(v) for _, v in reachable(logging_facade(sandbox_logs.LogRecords()), 3, "x")}
    shared = [(path, v) for path, v in first if id(v) in second]
    mutable = [(path, type(v).__name__) for path, v in shared
               if not isinstance(v, (int, str, type, type(None), tuple, frozenset))
               and type(v).__name__ not in ("builtin_function_or_method", "wrapper_descriptor",
                                            "method_descriptor", "getset_descriptor",
                                            "property", "function")]
    assert mutable == []


def test_the_shared_logging_facade_refuses_to_log() -> None:
    with pytest.raises(RuntimeError, match="only available while a handler runs"):
        facade("logging").getLogger("x")


# -- validator messages ----------------------------------------------------------------------

def test_bad_imports_list_the_allowed_modules_once() -> None:
    source = "import os\nimport sys\nimport socket\nfrom pickle import loads\nimport ctypes\n"
    texts = compile_errors(source)
    assert sum(ALLOWED_HINT in t for t in texts) == 1 and ALLOWED_HINT in texts[0]
    assert sum(ALLOWED_HINT_AGAIN in t for t in texts) == 3
    assert "socket is not available in handlers: they cannot start threads" in texts[2]


def test_the_new_modules_are_allowed_and_listed() -> None:
    for name in ("dataclasses", "enum", "functools", "zoneinfo", "logging"):
        assert name in ALLOWED_MODULES and name in ALLOWED_HINT


# -- through an engine: real workers (Landlock, seccomp) -------------------------------------

LANG_APP = APPS / "lang_port"


def test_through_an_engine_the_language_works_inside_the_worker_layers() -> None:
    """Real workers: zoneinfo reads the tzdata package inside Landlock's read-only view and
    under the seccomp filter (where the system's /usr/share/zoneinfo is unreadable)."""
    from handlerbox import Engine

    with Engine(workers=1) as engine:
        app = engine.load_app(LANG_APP)
        zones = engine.dispatch(app, make_payload("onZoneConvert", at="2024-03-10T06:30:00Z"))
        ticket = engine.dispatch(app, make_payload("onTicketCreate", subject="Printer down",
                                                   priority="high", tags=["hw", "hw", "ops"]))
        again = engine.dispatch(app, make_payload("onTicketCreate", subject="Mouse",
                                                  priority="low", tags=[]))
    assert zones.outcome == "ok", zones.error
    assert zones.value == {
        "new_york": "2024-03-10T01:30:00-05:00",
        "after_spring_forward": "2024-03-10T04:30:00-04:00",
        "fall_back_folds": ["EDT", "EST"],
        "utc_of_local_nine": "2024-11-04T14:00:00+00:00",
        "tokyo": "2024-03-10T15:30:00+09:00"}
    assert ticket.outcome == "ok", ticket.error
    assert ticket.value == {"ticket": {"subject": "Printer down", "priority": 3,
                                       "tags": ["hw", "ops"], "escalated": True},
                            "route": "oncall", "label": "P3:Printer down"}
    assert ticket.logs == "INFO:server.server:routing Printer down to oncall\n"
    # The same worker, a fresh logging module: basicConfig did not outlive its invocation.
    assert again.value == {"ticket": {"subject": "Mouse", "priority": 1, "tags": [],
                                      "escalated": False}, "route": "queue",
                           "label": "P1:Mouse"}
    assert again.logs == "" and again.worker_pid == ticket.worker_pid


@pytest.fixture(autouse=True)
def _collect_handler_cycles() -> Any:
    """Handler classes form cycles (a class and its methods): collect them between tests so a
    later test's process-wide checks start clean."""
    yield
    gc.collect()
