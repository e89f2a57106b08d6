"""Escape attempts: every one is refused (CompileError or HandlerError) and writes nothing.

One table, one row per technique. Each source, if the technique worked, would write a file
in the current directory or return the repr of an object a handler must never hold (a class
walk, a frame, real builtins, a module); so "not refused" shows up as a returned value and a
write shows up in the directory. Each row uses only its own technique, so a refusal of some
other construct cannot hide a hole.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from handlerbox.sandbox import CompileError, HandlerError, run_source


def src(body: str, prelude: str = "") -> str:
    """`prelude` at module level, then `def h(payload):` running `body`."""
    return textwrap.dedent(prelude) + "def h(payload):\n" + textwrap.indent(
        textwrap.dedent(body), "    ") + "\n"


def wide(text: str) -> str:
    """Fullwidth look-alikes (U+FF01..U+FF5E) of ASCII text; NFKC maps them back."""
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


def bold(text: str) -> str:
    """MATHEMATICAL BOLD SMALL letters; NFKC maps them back to ASCII."""
    return "".join(chr(0x1D41A + ord(c) - ord("a")) for c in text)


def esc(case_id: str, body: str, prelude: str = "") -> object:
    return pytest.param(src(body, prelude), id=case_id)


STR_SUB = "class S(str):\n    pass\n"
FAKE_NAME = ("class Name(str):\n    def startswith(self, prefix, *rest):\n        return False\n"
             "    def __eq__(self, other):\n        return False\n")
GEN = "def gen():\n    yield 1\n    yield 2\n"
BOX = "class Box:\n    def __init__(self):\n        self.x = 1\n"
CLS = "class A:\n    limit = 1\n"
CAUGHT = ("def caught():\n    try:\n        1 / 0\n"
          "    except ZeroDivisionError as e:\n        return e\n")
SINK = ("class Sink:\n    def __init__(self):\n        self.data = []\n"
        "    def write(self, text):\n        self.data.append(text)\n")

ESCAPES = [
    # -- class-hierarchy walks ----------------------------------------------------------------
    esc("walk-tuple-class-bases-subclasses",
        "return repr(().__class__.__bases__[0].__subclasses__())"),
    esc("walk-getattr-computed-names", """\
        cls = getattr((), "__cla" + "ss__")
        base = getattr(cls, "__ba" + "ses__")[0]
        return repr(getattr(base, "__subcla" + "sses__")())"""),
    esc("walk-getattr-joined-name",
        'return repr(getattr(payload, "".join(["_", "_class_", "_"])))'),
    esc("walk-str-subclass-fake-name", 'return repr(getattr((), Name("__class__")))', FAKE_NAME),
    esc("walk-str-subclass-fake-name-setattr",
        'b = Box()\nsetattr(b, Name("__class__"), A)\nreturn repr(b)', FAKE_NAME + BOX + CLS),
    esc("walk-type-mro-getattr",
        'return repr(getattr(type(payload).mro()[-1], "__subclasses__")())'),
    esc("walk-object-builtin-subclasses", "return repr(object.__subclasses__())"),
    esc("walk-super-getattr-subclasses",
        'return repr(getattr(super(A, A), "__subclasses__")())', CLS),
    esc("walk-super-thisclass", "return repr(super(A, A()).__thisclass__)", CLS),
    esc("walk-facade-type-init-globals", "return repr(type(json).__init__.__globals__)",
        "import json\n"),
    esc("walk-class-cell-in-method", "return repr(Box().who())",
        "class Box:\n    def who(self):\n        return __class__\n"),
    # -- str.format reached through super(): a super object is not a str ------------------------
    esc("super-format-attribute-traversal",
        'return super(S, S("{0.__globals__[__builtins__][open]}")).format(json.dumps)',
        "import json\n" + STR_SUB),
    esc("super-format-zero-arg-in-method",
        'return S("{0.__globals__[__builtins__]}").leak(json.dumps)',
        "import json\nclass S(str):\n    def leak(self, x):\n        return super().format(x)\n"),
    esc("super-format-unbound-from-class",
        'return super(S, S).format("{0.__class__.__mro__}", payload)', STR_SUB),
    esc("super-format-map", 'return super(S, S("{x.__globals__}")).format_map({"x": json.dumps})',
        "import json\n" + STR_SUB),
    esc("super-format-via-getattr",
        'return getattr(super(S, S("{0.__class__.__base__}")), "format")(payload)', STR_SUB),
    # -- frames through generators and coroutines ---------------------------------------------
    esc("generator-gi-frame", "g = gen()\nnext(g)\nreturn repr(g.gi_frame.f_back.f_globals)", GEN),
    esc("generator-getattr-gi-frame", 'return repr(getattr(gen(), "gi_frame"))', GEN),
    esc("generator-getattr-computed-name",
        'return repr(getattr(gen(), "gi" + "_fr" + "ame"))', GEN),
    esc("generator-gi-code", "return repr(gen().gi_code)", GEN),
    esc("genexpr-getattr-frame-globals",
        'return repr(getattr(getattr((x for x in payload), "gi_frame"), "f_globals"))'),
    esc("generator-getattr-gi-yieldfrom",
        'outer = outer_gen()\nnext(outer)\nreturn repr(getattr(outer, "gi_yieldfrom"))',
        GEN + "def outer_gen():\n    yield from gen()\n"),
    esc("generator-throw-traceback-frame",
        'g = catcher()\nnext(g)\nreturn repr(getattr(g.throw(ValueError()), "__traceback__"))',
        "def catcher():\n    try:\n        yield 1\n"
        "    except ValueError as e:\n        yield e\n"),
    esc("generator-send-getattr-into-frame",
        "g = receiver()\nnext(g)\nreturn repr(g.send(getattr))",
        "def receiver():\n    g = yield\n    yield g(receiver(), 'gi_frame')\n"),
    esc("coroutine-async-def-cr-frame", "return repr(co().cr_frame)",
        "async def co():\n    return 1\n"),
    esc("coroutine-await", "return 1", "async def co(x):\n    return await x\n"),
    esc("async-generator", "return repr(ag())", "async def ag():\n    yield 1\n"),
    # -- tracebacks and exception internals ---------------------------------------------------
    esc("traceback-tb-frame", "return repr(caught().__traceback__.tb_frame.f_globals)", CAUGHT),
    esc("traceback-getattr", 'return repr(getattr(getattr(caught(), "__traceback__"), "tb_frame"))',
        CAUGHT),
    esc("exception-with-traceback-getattr",
        'return repr(getattr(caught().with_traceback(None), "__tra" + "ceback__"))', CAUGHT),
    esc("exception-context-getattr", """\
        try:
            caught()
        except ValueError as e:
            return repr(getattr(getattr(e, "__context__"), "__traceback__"))""",
        CAUGHT.replace("return e", "raise ValueError('second')")),
    esc("exception-cause-getattr", """\
        try:
            raise ValueError("second") from caught()
        except ValueError as e:
            return repr(getattr(e, "__cause__"))""", CAUGHT),
    esc("exception-args-carry-function-globals",
        'return repr(getattr(ValueError(h).args[0], "__globals__"))'),
    # -- format strings ----------------------------------------------------------------------
    esc("format-attribute", 'return "{0.__class__.__mro__}".format(payload)'),
    esc("format-index-builtins", 'return "{0.__globals__[__builtins__]}".format(json.dumps)',
        "import json\n"),
    esc("format-str-format-unbound", 'return str.format("{0.__class__}", payload)'),
    esc("format-type-of-str-unbound", 'return type("").format("{0.__class__}", payload)'),
    esc("format-map-init-globals", 'return "{x.__init__.__globals__}".format_map({"x": Box()})',
        BOX),
    esc("format-map-unbound", 'return str.format_map("{x.__class__}", {"x": payload})'),
    esc("format-nested-spec", 'return "{0:{1.__class__}}".format("", payload)'),
    esc("format-auto-numbered-field", 'return "{.__class__}".format(payload)'),
    esc("format-conversion-and-spec", 'return "{0.__class__!r:>40}".format(payload)'),
    esc("format-getattr-bound", 'return getattr("{0.__class__}", "format")(payload)'),
    esc("format-str-subclass-instance", 'return S("{0.__class__}").format(payload)', STR_SUB),
    esc("format-stored-on-class", 'return T.fmt("{0.__class__}", payload)',
        "class T:\n    fmt = str.format\n"),
    esc("format-through-map", 'return list(map(str.format, ["{0.__class__}"], [payload]))[0]'),
    esc("format-printed-as-template",
        'print("{0.__class__}")\nreturn printed.strip().format(payload)'),
    esc("format-builtin-with-field-spec", 'return format(payload, "{0.__class__}")'),
    esc("fstring-attribute", 'return f"{payload.__class__}"'),
    esc("fstring-nested-spec", """return f"{'':{payload.__class__}}" """),
    esc("string-formatter-attribute", 'return string.Formatter().format("{0.__class__}", payload)',
        "import string\n"),
    esc("string-formatter-from-import", 'return Formatter().format("{0.__class__}", payload)',
        "from string import Formatter\n"),
    esc("string-formatter-getattr",
        'return getattr(string, "Formatter")().vformat("{0.__class__}", [payload], {})',
        "import string\n"),
    # -- parameters shadowing the guard hooks ---------------------------------------------
    esc("posonly-shadows-getattr", "return leak(getattr)",
        'def leak(_getattr_, /):\n    return "{0.__class__}".format(())\n'),
    esc("posonly-shadows-write", "poke(lambda o: o, json.dumps)\nreturn json.dumps.pwned",
        "import json\ndef poke(_write_, target, /):\n    target.pwned = 1\n"),
    esc("lambda-posonly-shadows-write", "return repr(f(1))", "f = lambda _write_, /: _write_\n"),
    esc("kwonly-shadows-getiter", "return f()", "def f(*, _getiter_=list):\n    return 1\n"),
    esc("vararg-shadows-getattr", "return f()", "def f(*_getattr_):\n    return 1\n"),
    esc("method-posonly-shadows-getitem", "return 1",
        "class A:\n    def m(self, _getitem_, /):\n        return 1\n"),
    # -- syntax RestrictedPython has had trouble with --------------------------------------
    esc("try-star-traceback", """\
        try:
            raise ValueError(1)
        except* ValueError as group:
            return repr(group.exceptions[0].with_traceback(None))"""),
    esc("try-star-shadows-guard", "try:\n    pass\nexcept* ValueError as _getattr_:\n    pass"),
    esc("match-class-pattern-dunder", """\
        match payload:
            case object(__class__=cls):
                return repr(cls.__subclasses__)"""),
    esc("match-class-pattern-str-format", """\
        match "{0.__class__.__mro__}":
            case str(format=f):
                return f(payload)"""),
    esc("match-class-pattern-abc-register",
        "match collections.ChainMap:\n    case type(register=r):\n        r(dict)\n"
        "        return isinstance({}, collections.ChainMap)", "import collections\n"),
    esc("match-class-pattern-mro", "match type(re.I):\n    case type(mro=m):\n"
        "        return repr(m())", "import re\n"),
    esc("match-class-pattern-dict", "match payload:\n    case object(__dict__=d):\n"
        "        return repr(d)"),
    esc("match-class-pattern-frame", "g = gen()\nnext(g)\nmatch g:\n"
        "    case object(gi_frame=f):\n        return repr(f.f_globals)", GEN),
    esc("match-value-pattern-dunder", "match 1:\n    case payload.__class__:\n"
        "        return 'matched'"),
    esc("match-value-pattern-format", "match 1:\n    case payload.format:\n"
        "        return 'matched'"),
    esc("match-positional-reads-format-through-match-args", """\
        match S("{0.__class__}"):
            case A(f):
                return f(payload)""",
        "from dataclasses import dataclass\n@dataclass\nclass A:\n    format: str\n"
        "class S(A, str):\n    pass\n"),
    esc("decorator-lambda-globals",
        "return repr(g)", "@lambda f: f.__globals__\ndef g():\n    pass\n"),
    esc("decorator-getattr-globals", "return repr(g)",
        'def grab(f):\n    return getattr(f, "__glo" + "bals__")\n@grab\ndef g():\n    pass\n'),
    esc("decorator-class-dict", "return repr(A)",
        '@(lambda c: getattr(c, "__dict__"))\nclass A:\n    pass\n'),
    # -- metaclasses and type() ------------------------------------------------------------
    esc("metaclass-keyword-type", "return repr(A)", "class A(metaclass=type):\n    pass\n"),
    esc("metaclass-subclass-of-type", 'return repr(M("X", (), {}))', "class M(type):\n    pass\n"),
    esc("metaclass-dunder-in-body", "return repr(A)", "class A:\n    __metaclass__ = type\n"),
    esc("type-three-arguments", 'return repr(type("X", (object,), {"pwn": 1}))'),
    esc("type-of-type", 'meta = type(type)\nreturn repr(meta("X", (object,), {}))'),
    esc("type-of-int", 'meta = type(int)\nreturn repr(meta("X", (object,), {}))'),
    esc("type-of-handler-class", 'meta = type(A)\nreturn repr(meta("X", (A,), {}))', CLS),
    # -- re-initialising shared objects (tests/test_state_leaks.py checks nothing stays) ---
    esc("super-init-classmethod-reinits-facade", 'R.go(json)\nreturn json.dumps(1)',
        "import json\nclass R(Exception):\n    @classmethod\n    def go(cls, t):\n"
        "        super().__init__(t, 'json', {'dumps': repr})\n"),
    esc("super-init-method-called-on-class", "R.go(R, uuid.NAMESPACE_DNS)\n"
        "return str(uuid.NAMESPACE_DNS)", "import uuid\nclass R(uuid.UUID):\n"
        "    def go(self, t):\n        super().__init__(t, '1' * 32)\n"),
    esc("super-init-rebinds-shared-property", "P.go(P, T.hostname, repr)\n"
        "return urllib.parse.urlparse('http://h/').hostname",
        "import urllib.parse\nT = type(urllib.parse.urlparse('http://h/'))\n"
        "class P(property):\n    def go(self, t, f):\n        super().__init__(t, f)\n"),
    esc("type-of-facade-as-base", "return repr(F)", "import json\nclass F(type(json)):\n"
        "    pass\n"),
    esc("type-of-facade", "return repr(type(json).__init__)", "import json\n"),
    esc("typing-internal-class-as-base", "return repr(A)",
        "import typing\nclass A(type(typing.List).mro()[1]):\n    pass\n"),
    esc("abc-register-chainmap", "collections.ChainMap.register(dict)\n"
        "return isinstance({}, collections.ChainMap)", "import collections\n"),
    esc("abc-register-through-typing-alias", "typing.Mapping.register(int)\n"
        "return isinstance(1, typing.Mapping)", "import typing\n"),
    esc("abc-register-getattr", 'getattr(collections.ChainMap, "regis" + "ter")(list)\n'
        "return 'registered'", "import collections\n"),
    # -- dunder methods -------------------------------------------------------------------
    esc("dunder-getattr-answers-deepcopy-probes", "return repr(A().__deepcopy__)",
        "class A:\n    def __getattr__(self, name):\n        return open\n"),
    esc("dunder-del-finalizer", "A()\nreturn 'finalized'",
        "class A:\n    def __del__(self):\n        open('pwned', 'w')\n"),
    esc("dunder-set-name-on-a-shared-class", "return 1",
        "class D:\n    def __set_name__(self, owner, name):\n        owner.x = 1\n"),
    esc("dunder-init-subclass", "return 1", "class A:\n    def __init_subclass__(cls):\n"
        "        pass\n"),
    esc("dunder-class-getitem", "return repr(A[int])",
        "class A:\n    def __class_getitem__(cls, item):\n        return open\n"),
    esc("dunder-reduce-ex", "return 1", "class A:\n    def __reduce_ex__(self, p):\n"
        "        return (open, ('pwned', 'w'))\n"),
    esc("dunder-descriptor-get", "return repr(B().a)", "class D:\n    def __get__(self, o, t):\n"
        "        return open\nclass B:\n    a = D()\n"),
    esc("dunder-new", "return repr(A())", "class A:\n    def __new__(cls):\n"
        "        return open\n"),
    esc("dunder-mro-entries", "return 1", "class M:\n    def __mro_entries__(self, bases):\n"
        "        return (object,)\n"),
    esc("dunder-index", "return [1, 2][A()]", "class A:\n    def __index__(self):\n"
        "        return 0\n"),
    esc("dunder-assigned-a-builtin", "return repr(A().anything)",
        "class A:\n    __getattr__ = getattr\n"),
    esc("dunder-decorator-swaps-the-function", "return repr(A()['open'])",
        "class A:\n    @(lambda f: getattr)\n    def __getitem__(self, k):\n        pass\n"),
    esc("dunder-defined-in-a-function", "return 1",
        "def make():\n    def __getattr__(self, n):\n        return open\n"
        "    return __getattr__\n"),
    esc("dunder-read-of-a-defined-dunder", "return repr(A().__eq__)",
        "class A:\n    def __eq__(self, other):\n        return True\n"),
    # -- enum, dataclasses, functools, zoneinfo, logging --------------------------------------
    esc("enum-functional-api-defines-dunders",
        'X = Enum("X", [("A", 1), ("__getattr__", lambda s, n: open)])\n'
        'return repr(X.A.pwned)', "from enum import Enum\n"),
    esc("enum-functional-api-mixes-in-an-internal-class",
        'X = Enum("X", [("A", (1, 2))], type=type(typing.List))\nreturn repr(X)',
        "import typing\nfrom enum import Enum\n"),
    esc("enum-real-base-through-mro",
        'E = type(re.I).mro()[5]\nreturn repr(E("X", [("__del__", print)]))', "import re\n"),
    esc("enum-real-base-through-getattr-mro",
        'return repr(getattr(type(uuid.uuid4().is_safe), "mro")())', "import uuid\n"),
    esc("enum-metaclass-through-type", "return repr(type(Color)('X', (), {}))",
        "from enum import Enum\nclass Color(Enum):\n    RED = 1\n"),
    esc("enum-sunder-hook-missing", "return repr(Color(5))",
        "from enum import Enum\nclass Color(Enum):\n    RED = 1\n    def _missing_(cls, v):\n"
        "        return open\n"),
    esc("enum-write-to-the-shared-base", "Enum.planted = 1\nreturn 'planted'",
        "from enum import Enum\n"),
    esc("enum-real-flag-class-as-a-base", "return 1", "import re\nclass F(type(re.I)):\n"
        "    pass\n"),
    esc("generic-alias-mro-entries-smuggles-an-internal-base", "return repr(X)",
        "import typing\nGA = type(list[int])\nclass X(GA(type(typing.List), (int,))):\n"
        "    pass\n"),
    esc("generic-alias-of-a-handler-class-as-a-base-of-an-internal", "return repr(X)",
        "import typing\nclass A(list):\n    pass\nclass X(A[int], type(typing.List)):\n"
        "    pass\n"),
    esc("dataclass-on-a-shared-class", "dataclass(frozen=True)(uuid.UUID)\n"
        "return str(uuid.NAMESPACE_DNS)", "import uuid\nfrom dataclasses import dataclass\n"),
    esc("dataclass-field-named-like-an-internal", "return 1",
        "from dataclasses import dataclass\n@dataclass\nclass A:\n    f_globals: dict\n"),
    esc("dataclass-frozen-object-setattr", "p = P(1)\nobject.__setattr__(p, 'x', 2)\n"
        "return p.x", "from dataclasses import dataclass\n@dataclass(frozen=True)\n"
        "class P:\n    x: int\n"),
    esc("dataclass-make-dataclass-exec", 'return repr(make_dataclass("X", ["a"]))',
        "from dataclasses import make_dataclass\n"),
    esc("dataclass-field-class-as-a-base", "return 1",
        "import dataclasses\nclass F(type(dataclasses.field())):\n    pass\n"),
    esc("functools-total-ordering-on-a-shared-class", "functools.total_ordering(uuid.UUID)\n"
        "return 'patched'", "import functools\nimport uuid\n"),
    esc("functools-wraps-renames-a-shared-function", "functools.wraps(h)(json.dumps)\n"
        "return 'renamed'", "import functools\nimport json\n"),
    esc("functools-update-wrapper", "functools.update_wrapper(json.dumps, h)\nreturn 1",
        "import functools\nimport json\n"),
    esc("functools-partial-setstate", "p = functools.partial(print)\n"
        "p.__setstate__((open, ('pwned', 'w'), {}, None))\nreturn repr(p())",
        "import functools\n"),
    esc("functools-partial-func-globals", "return repr(functools.partial(h).func.__globals__)",
        "import functools\n"),
    esc("functools-cached-property-lock", "return repr(cached_property)",
        "from functools import cached_property\n"),
    esc("zoneinfo-from-file", "return repr(ZoneInfo.from_file(payload))",
        "from zoneinfo import ZoneInfo\n"),
    esc("zoneinfo-key-leaves-tzdata", 'return str(ZoneInfo("../../../../../etc/passwd"))',
        "from zoneinfo import ZoneInfo\n"),
    esc("zoneinfo-c-no-cache-with-a-lying-key",
        'return str(super(ZoneInfo, ZoneInfo).no_cache(Key("America/New_York")))',
        "from zoneinfo import ZoneInfo\nclass Key(str):\n    def split(self, *a):\n"
        "        return ['/etc/passwd']\n"),
    esc("zoneinfo-reset-tzpath", 'reset_tzpath(["/"])\nreturn 1',
        "from zoneinfo import reset_tzpath\n"),
    esc("zoneinfo-tzpath", "return repr(zoneinfo.TZPATH)", "import zoneinfo\n"),
    esc("logging-real-root-manager", "return repr(logging.root.manager.loggerDict)",
        "import logging\n"),
    esc("logging-stream-handler-to-a-file", 'logging.FileHandler("pwned")\nreturn 1',
        "import logging\n"),
    esc("logging-logger-internals", "return repr(logging.getLogger()._records)",
        "import logging\n"),
    esc("logging-logger-class-through-type", "return repr(type(logging.getLogger()))",
        "import logging\n"),
    esc("logging-bound-method-self", "return repr(logging.info.__self__)", "import logging\n"),
    esc("logging-manager-through-getattr", 'return repr(getattr(logging.getLogger(), '
        '"manager"))', "import logging\n"),
    # -- attribute chains out of every facade --------------------------------------------
    esc("json-codecs-builtins", 'return repr(json.codecs.builtins.open("pwned", "w"))',
        "import json\n"),
    esc("json-decoder-module",
        'return repr(json.decoder.re.sys.modules["os"].system("touch pwned"))',
        "import json\n"),
    esc("json-dumps-globals", 'return repr(json.dumps.__globals__["codecs"])', "import json\n"),
    esc("json-getattr-default-probe",
        'codecs = getattr(json, "codecs", None)\nreturn repr(codecs.builtins.open("pwned", "w"))',
        "import json\n"),
    esc("json-error-class-getattr-init", 'return repr(getattr(json.JSONDecodeError, "__init__"))',
        "import json\n"),
    esc("re-enum-sys",
        'return repr(re.enum.sys.modules["os"].system("touch pwned"))', "import re\n"),
    esc("re-functools", "return repr(re.functools)", "import re\n"),
    esc("datetime-sys", 'return repr(datetime.sys.modules["os"].system("touch pwned"))',
        "import datetime\n"),
    esc("time-tzset", "time.tzset()\nreturn 'changed the process-wide zone'", "import time\n"),
    esc("math-getattr-loader", 'return repr(getattr(math, "__loader__"))', "import math\n"),
    esc("collections-abc-sys", 'return repr(collections.abc.sys)', "import collections\n"),
    esc("collections-namedtuple-exec", 'return repr(collections.namedtuple("P", "x"))',
        "import collections\n"),
    esc("collections-host-class-write",
        'collections.Counter.most_common = lambda self, n=None: "pwned"\nreturn "patched"',
        "import collections\n"),
    esc("itertools-loader", 'return repr(itertools.__loader__.load_module("os"))',
        "import itertools\n"),
    esc("decimal-getcontext",
        "decimal.getcontext().prec = 1\nreturn 'changed'", "import decimal\n"),
    esc("random-random-self", "return repr(random.random.__self__)", "import random\n"),
    esc("random-getattr-self",
        'return repr(getattr(random.random, "__self__"))', "import random\n"),
    esc("random-seed-shared-state", "random.seed(1)\nreturn 'seeded'", "import random\n"),
    esc("uuid-os", 'return repr(uuid.os.system("touch pwned"))', "import uuid\n"),
    esc("uuid-property-fget-globals",
        "return repr(uuid.UUID.hex.fget.__globals__)", "import uuid\n"),
    esc("base64-binascii", "return repr(base64.binascii)", "import base64\n"),
    esc("hashlib-getattr-private", 'return repr(getattr(hashlib, "_" + "hashlib"))',
        "import hashlib\n"),
    esc("hmac-new-globals", "return repr(hmac.new.__globals__)", "import hmac\n"),
    esc("statistics-sys", 'return repr(statistics.sys.modules["os"])', "import statistics\n"),
    esc("html-entities", "return repr(html.entities)", "import html\n"),
    esc("urllib-request", 'return repr(urllib.request.urlopen("file:///etc/passwd"))',
        "import urllib\n"),
    esc("urllib-parse-sys", "return repr(urllib.parse.sys)", "import urllib.parse\n"),
    esc("facade-dict", 'return repr(json.__dict__)', "import json\n"),
    # -- from-imports of names a facade does not export ------------------------------------
    esc("from-json-import-decoder", 'return repr(decoder.re.sys)', "from json import decoder\n"),
    esc("from-re-import-enum", "return repr(enum.sys)", "from re import enum\n"),
    esc("from-time-import-sleep", "sleep(0)\nreturn 'slept'", "from time import sleep\n"),
    esc("from-collections-import-namedtuple", 'return repr(namedtuple("P", "x"))',
        "from collections import namedtuple\n"),
    esc("from-uuid-import-uuid1", "return str(uuid1())", "from uuid import uuid1\n"),
    esc("from-urllib-import-request", 'return repr(request.urlopen("file:///etc/passwd"))',
        "from urllib import request\n"),
    esc("from-datetime-import-sys", 'return repr(sys.modules["os"])', "from datetime import sys\n"),
    # -- dotted, relative and star imports; modules outside the allow-list ------------------
    esc("import-os-path", 'return repr(os.system("touch pwned"))', "import os.path\n"),
    esc("import-urllib-request", 'return repr(urllib.request.urlopen("file:///etc/passwd"))',
        "import urllib.request\n"),
    esc("import-xml-etree", "return repr(xml.etree)", "import xml.etree\n"),
    esc("import-json-decoder", "return repr(json.decoder)", "import json.decoder\n"),
    esc("import-os", 'return repr(os.system("touch pwned"))', "import os\n"),
    esc("import-os-as-json", 'return repr(json.system("touch pwned"))', "import os as json\n"),
    esc("import-sys", 'return repr(sys.modules["os"].system("touch pwned"))', "import sys\n"),
    esc("import-subprocess", 'return repr(subprocess.run(["touch", "pwned"]))',
        "import subprocess\n"),
    esc("import-importlib", 'return repr(importlib.import_module("os").system("touch pwned"))',
        "import importlib\n"),
    esc("import-ctypes",
        'return repr(ctypes.CDLL(None).system(b"touch pwned"))', "import ctypes\n"),
    esc("import-pickle", """return repr(pickle.loads(b"cos\\nsystem\\n(S'touch pwned'\\ntR."))""",
        "import pickle\n"),
    esc("import-marshal", "return repr(marshal.loads(payload))", "import marshal\n"),
    esc("import-gc", "return repr(gc.get_referrers(payload))", "import gc\n"),
    esc("import-inspect", "return repr(inspect.stack())", "import inspect\n"),
    esc("import-builtins", 'return repr(builtins.open("pwned", "w"))', "import builtins\n"),
    esc("import-pathlib", 'pathlib.Path("pwned").touch()\nreturn "touched"', "import pathlib\n"),
    esc("import-io", 'return repr(io.open("pwned", "w"))', "import io\n"),
    esc("import-codecs", 'return repr(codecs.open("pwned", "w"))', "import codecs\n"),
    esc("import-operator-attrgetter", 'return repr(operator.attrgetter("__class__")(payload))',
        "import operator\n"),
    esc("import-posix", 'return repr(posix.system("touch pwned"))', "import posix\n"),
    esc("from-os-import-system", 'return repr(system("touch pwned"))', "from os import system\n"),
    esc("from-builtins-import-open", 'return repr(open("pwned", "w"))',
        "from builtins import open\n"),
    esc("from-builtins-import-star", 'return repr(open("pwned", "w"))', "from builtins import *\n"),
    esc("relative-import", "return repr(server)", "from . import server\n"),
    esc("relative-import-named", 'return repr(dumps)', "from .json import dumps\n"),
    esc("star-import-allowed-module", 'return repr(dumps)', "from json import *\n"),
    esc("star-import-os", 'return repr(system("touch pwned"))', "from os import *\n"),
    # -- builtins tampering ------------------------------------------------------------------
    esc("builtins-dunder-subscript", 'return repr(__builtins__["open"]("pwned", "w"))'),
    esc("builtins-dunder-attribute", 'return repr(__builtins__.open("pwned", "w"))'),
    esc("dunder-import", 'return repr(__import__("os").system("touch pwned"))'),
    esc("open", 'open("pwned", "w").write("x")\nreturn "written"'),
    esc("eval", 'return repr(eval("open")("pwned", "w"))'),
    esc("exec", 'exec("open(\'pwned\', \'w\')")\nreturn "executed"'),
    esc("compile", 'return repr(compile("open(\'pwned\', \'w\')", "x", "exec"))'),
    esc("globals", 'return repr(globals()["__builtins__"])'),
    esc("locals", "return repr(locals())"),
    esc("vars", "return repr(vars())"),
    esc("dir", "return repr(dir())"),
    esc("breakpoint", "breakpoint()\nreturn 'debugging'"),
    esc("input", "return input()"),
    esc("memoryview", 'return repr(memoryview(b"x"))'),
    esc("exit", "exit(0)\nreturn 'exited'"),
    esc("getattr-print-self", 'return repr(getattr(print, "__self__"))'),
    # -- print(file=...) and printed -------------------------------------------------------
    esc("print-file-keyword", 's = Sink()\nprint("x", file=s)\nreturn s.data', SINK),
    esc("print-file-through-kwargs", 's = Sink()\nprint("x", **{"file": s})\nreturn s.data', SINK),
    esc("print-file-through-alias", 's = Sink()\np = print\np("x", file=s)\nreturn s.data', SINK),
    esc("print-self-log-capture", "return repr(print.__self__.parts)"),
    esc("print-rebound-to-open", 'print("x")\nreturn repr(printed)', "print = open\n"),
    esc("printed-assigned", "return repr(printed)", "printed = open\n"),
    esc("printed-defined", "return repr(printed())", "def printed():\n    return open\n"),
    esc("printed-dunder", "return repr(printed.__class__)"),
    esc("print-collector-name", "return repr(_print)"),
    # -- writes to modules, classes and functions ----------------------------------------
    esc("write-facade-attribute", 'json.dumps = lambda *a, **k: "pwned"\nreturn json.dumps(1)',
        "import json\n"),
    esc("write-facade-setattr", 'setattr(json, "loads", None)\nreturn "patched"', "import json\n"),
    esc("write-facade-delattr", 'delattr(json, "dumps")\nreturn "deleted"', "import json\n"),
    esc("write-facade-del-statement", "del json.dumps\nreturn 'deleted'", "import json\n"),
    esc("write-facade-augmented", "math.pi += 1\nreturn math.pi", "import math\n"),
    esc("write-facade-type", 'type(json).pwned = 1\nreturn "patched"', "import json\n"),
    esc("write-handler-class", "A.limit = 10 ** 9\nreturn A.limit", CLS),
    esc("write-handler-class-setattr", 'setattr(A, "limit", 0)\nreturn A.limit', CLS),
    esc("write-handler-class-augmented", "A.limit += 1\nreturn A.limit", CLS),
    esc("write-handler-class-delattr", 'delattr(A, "limit")\nreturn "deleted"', CLS),
    esc("write-builtin-class", "int.pwned = 1\nreturn 'patched'"),
    esc("write-builtin-class-setattr", 'setattr(str, "upper", None)\nreturn "patched"'),
    esc("write-host-function", "json.dumps.pwned = 1\nreturn json.dumps.pwned", "import json\n"),
    esc("write-handler-function", "f.x = 1\nreturn f.x", "def f():\n    pass\n"),
    esc("write-handler-function-setattr", 'setattr(f, "x", 1)\nreturn f.x', "def f():\n    pass\n"),
    esc("write-super-object", "b = Box()\nsuper(Box, b).y = 1\nreturn 'written'", BOX),
    esc("setattr-dunder-class-on-instance",
        'b = Box()\nsetattr(b, "__class__", A)\nreturn "swapped"',
        BOX + CLS),
    esc("delattr-dunder-on-instance", 'delattr(Box(), "__dict__")\nreturn "deleted"', BOX),
    # -- NFKC look-alike identifiers -------------------------------------------------------
    esc("nfkc-fullwidth-letters", f"return repr(().__{wide('class')}__)"),
    esc("nfkc-fullwidth-underscores", f"return repr(()._{wide('_class__')})"),
    esc("nfkc-leading-fullwidth-underscore", f"return repr(().{wide('__class__')})"),
    esc("nfkc-math-bold-letters", f"return repr(().__{bold('class')}__)"),
    esc("nfkc-fullwidth-getattr", f'return repr({wide("getattr")}((), "__class__"))'),
    esc("nfkc-fullwidth-string-name", f'return repr(getattr((), "{wide("__class__")}"))'),
    esc("nfkc-fullwidth-open", f'return repr({wide("open")}("pwned", "w"))'),
    esc("nfkc-fullwidth-import-os", 'return repr(os.system("touch pwned"))',
        f"import {wide('os')}\n"),
    esc("nfkc-fullwidth-guard-name", "json.dumps = 1\nreturn 'patched'",
        f"import json\n_{wide('write')}_ = lambda o: o\n"),
    # -- probes, defaults, walrus, scopes ----------------------------------------------------
    esc("getattr-default-does-not-hide-refusal",
        'return repr(getattr(payload, "__class__", None))'),
    esc("lambda-default-captures-getattr-guard", "return repr(f())", "f = lambda g=_getattr_: g\n"),
    esc("lambda-default-captures-builtins", "return repr(f())", "f = lambda b=__builtins__: b\n"),
    esc("def-default-captures-write-guard",
        "return repr(f())", "def f(w=_write_):\n    return w\n"),
    esc("walrus-captures-builtins", "return repr([(b := __builtins__) for _ in (1,)])"),
    esc("walrus-rebinds-getiter-guard", "return [(_getiter_ := list) for x in (1,)]"),
    esc("walrus-leaks-class",
        'return repr([y for x in [payload] if (y := getattr(x, "__class__"))])'),
    esc("global-rebinds-guard", "global _getattr_\n_getattr_ = None\nreturn 'rebound'"),
    esc("global-builtins", 'global __builtins__\nreturn repr(__builtins__)'),
    esc("nonlocal-rebinds-outer-name", """\
        found = None
        def inner():
            nonlocal found
            found = getattr(payload, "__cla" + "ss__")
        inner()
        return repr(found)"""),
    # -- module-level code counts too -------------------------------------------------------
    esc("module-level-open", 'return "loaded"', 'open("pwned", "w").write("x")\n'),
    esc("module-level-class-body-open",
        'return "loaded"', 'class A:\n    f = open("pwned", "w")\n'),
    esc("module-level-default-argument-open", 'return "loaded"',
        'def f(x=open("pwned", "w")):\n    pass\n'),
    esc("module-level-annotation-open", 'return "loaded"',
        'def f(x: open("pwned", "w")):\n    pass\n'),
    esc("module-level-annotated-assignment", 'return "loaded"', 'leak: open("pwned", "w") = 1\n'),
]


def test_the_table_is_big_and_ids_are_unique() -> None:
    ids = [p.id for p in ESCAPES]
    assert len(ids) >= 70
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("source", ESCAPES)
def test_escape_attempt_is_refused_and_writes_nothing(
        source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        value, _ = run_source(source, "h", {"name": "x"})
    except (CompileError, HandlerError):
        refused, value = True, None
    else:
        refused = False
    assert list(tmp_path.iterdir()) == []
    assert refused, f"not refused: the handler returned {value!r:.300}"


def test_the_harness_sees_a_handler_that_is_not_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the same harness, on an allowed program, runs it and finds no files."""
    monkeypatch.chdir(tmp_path)
    source = src('return [payload["name"], json.dumps(type(payload) is dict)]', "import json\n")
    assert run_source(source, "h", {"name": "x"}) == (["x", "true"], "")
    assert list(tmp_path.iterdir()) == []
