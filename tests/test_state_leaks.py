"""What one invocation leaves in a worker's shared objects, the next one never finds.

A worker runs invocation after invocation in one process, and the module facades, with every
class, descriptor, registry and cache behind them, are shared by all of them. The tests run
invocations the way one worker does (runner.invoke, one after another, in this process):

- PLANTS: one technique per row tries to plant state (re-initialising a shared object with
  `super().__init__`, an ABC `register`, a facade write) and is refused at compile or run
  time; a probe invocation for another account then sees exactly what a clean one sees.
- CACHES: a row fills a process-wide cache (that invocation succeeds: caches are emptied,
  not refused); when the next invocation starts, the cache is empty again.
- Generic: everything a handler can observe from every facade (walked as a handler walks it:
  public names through the guards, type(), mro(), super(), what calls return), with the
  subclass relations of every class reached, and every lru_cache in the process, is the
  same before and after a batch of all the hostile rows.
- The admitted language (logging, enum, dataclasses, functools, zoneinfo): what it may do
  runs, and a probe afterwards sees a clean worker; what it must not do is refused.
- End to end through an Engine: one app plants, then probes, through real workers.
"""

from __future__ import annotations

import abc
import builtins
import collections.abc
import functools
import gc
import json
import re
import sys
import textwrap
import types
import typing
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from handlerbox.sandbox import CompileError, HandlerError, compile_handler, invoke
from handlerbox.sandbox.guards import guarded_super_init, handler_metaclass
from handlerbox.sandbox.modules import (
    _SYSTEM_RANDOM,
    ALLOWED_MODULES,
    EXPORTED_CLASSES,
    facade,
    reset_shared_state,
)
from tests.conftest import APPS, make_payload
from tests.test_modules import shared_reachable

APP = APPS / "shared_state"
PROBE = compile_handler((APP / "server" / "server.py").read_text())

CLEAN = {
    "json": '{"a": [1, 2]}',
    "json-names": [False, True, True],
    "uuid": "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "hostname": "example.com",
    "json-error-class": [False, False],
    "alias": ["typing.Mapping[str, int]", False, False],
    "chainmap": [False, False, False],
    "mapping": [True, False, False],
}
"""What the fixture app's `probe` handler returns in a clean worker (besides the account)."""


def probe(account: str = "B") -> dict[str, Any]:
    observed = json.loads(invoke(PROBE, "probe", make_payload(account_id=account)).result_json)
    assert observed.pop("account") == account
    return dict(observed)


def plant(source: str, account: str = "A") -> str:
    """Run `source`'s handler `h` as one invocation: "compile" or "run" for the stage that
    refused it, "ok" when nothing did."""
    try:
        compiled = compile_handler(source)
    except CompileError:
        return "compile"
    try:
        invoke(compiled, "h", make_payload(account_id=account))
    except HandlerError:
        return "run"
    return "ok"


def src(body: str, prelude: str = "") -> str:
    return textwrap.dedent(prelude) + "def h(payload):\n" + textwrap.indent(
        textwrap.dedent(body), "    ") + "\n"


ON_CLASS = "def on_class(method):\n    return lambda *args: method(Reinit, *args)\n"
IMPORTS = ("import collections\nimport json\nimport re\nimport typing\nimport urllib.parse\n"
           "import uuid\n")
PARSE_RESULT = "type(urllib.parse.urlparse('http://h/'))"


def reinit(base: str, call: str, decorated: bool = False) -> str:
    """A handler class on `base` whose method runs `super().__init__(target, *args)`. Called
    on the class itself, super() is bound to the class, and `__init__` is the base's own,
    unbound: it would initialise any shared object it is given."""
    return src(call, IMPORTS + (ON_CLASS if decorated else "") + f"class Reinit({base}):\n"
               + ("    @on_class\n" if decorated else "")
               + "    def reinit(self, target, *args):\n"
               + "        super().__init__(target, *args)\n")


PLANTS = [
    # -- re-initialising shared objects: run time -----------------------------------------
    pytest.param("run", src("pass", "import json\nclass Swap(type(json)):\n    pass\n"),
                 id="json-facade-class-as-base"),
    pytest.param("run", src("setattr(json, 'stash', ['account A'])\nreturn 1", IMPORTS),
                 id="json-facade-stash"),
    pytest.param("run", reinit("uuid.UUID", "Reinit.reinit(Reinit, uuid.NAMESPACE_DNS, '1' * 32)"),
                 id="uuid-namespace-reinit-through-the-class"),
    pytest.param("run", reinit("uuid.UUID", "Reinit.reinit(uuid.NAMESPACE_DNS, '1' * 32)", True),
                 id="uuid-namespace-reinit-from-a-decorator"),
    pytest.param("run", reinit("property", f"Reinit.reinit(Reinit, {PARSE_RESULT}.hostname, "
                                           "lambda s: 'spied')"), id="property-getter-rebind"),
    pytest.param("run", reinit("re.error", "Reinit.reinit(Reinit, json.JSONDecodeError, 'A')"),
                 id="exception-init-sets-class-attributes"),
    pytest.param("run", reinit("re.error", "Reinit.reinit(Reinit, typing.Mapping[str, int], 'A')"),
                 id="exception-init-through-a-cached-typing-alias"),
    pytest.param("run", src("pass", "import typing\nclass A(type(typing.List)):\n    pass\n"),
                 id="typing-internal-class-as-base"),
    pytest.param("run", src("pass", f"{IMPORTS}class R({PARSE_RESULT}.mro()[3]):\n    pass\n"),
                 id="urllib-mixin-as-base"),
    # -- re-initialising shared objects: compile time -------------------------------------
    pytest.param("compile", src("Reinit.reinit(json, 'json', {'dumps': print})",
                                "import json\nclass Reinit(Exception):\n    @classmethod\n"
                                "    def reinit(cls, target, *args):\n"
                                "        super().__init__(target, *args)\n"),
                 id="super-init-in-a-classmethod"),
    pytest.param("compile", src("Reinit.reinit(uuid.NAMESPACE_DNS, '1' * 32)",
                                "import uuid\nclass Reinit(uuid.UUID):\n    @staticmethod\n"
                                "    def reinit(target, *args):\n"
                                "        super().__init__(*args)\n"),
                 id="super-init-in-a-staticmethod"),
    pytest.param("compile", src("Reinit(int=1).reinit(Reinit, uuid.NAMESPACE_DNS)",
                                "import uuid\nclass Reinit(uuid.UUID):\n"
                                "    def reinit(self, cls, target):\n        self = cls\n"
                                "        super().__init__(target, '1' * 32)\n"),
                 id="super-init-after-rebinding-self"),
    pytest.param("compile", src("Reinit(int=1).reinit(uuid.NAMESPACE_DNS)",
                                "import uuid\nclass Reinit(uuid.UUID):\n"
                                "    def reinit(self, target):\n"
                                "        def inner(obj):\n"
                                "            super().__init__(obj, '1' * 32)\n"
                                "        inner(Reinit)\n"),
                 id="super-init-in-a-nested-function"),
    # -- process-wide registries ----------------------------------------------------------
    pytest.param("run", src("collections.ChainMap.register(dict)", IMPORTS),
                 id="chainmap-register"),
    pytest.param("run", src("typing.Mapping.register(int)", IMPORTS),
                 id="typing-alias-forwards-register"),
    pytest.param("run", src("getattr(collections.ChainMap, 'register')(list)", IMPORTS),
                 id="register-through-getattr"),
    pytest.param("run", src("register = collections.ChainMap.register\nregister(list)", IMPORTS),
                 id="register-bound-to-a-name"),
    pytest.param("run", src("from collections import ChainMap\nChainMap.register(list)"),
                 id="register-after-from-import"),
    # -- the admitted language: what it must not do --------------------------------------
    pytest.param("run", src("Enum('X', [('A', 1), ('__del__', lambda s: print('late'))])",
                            "from enum import Enum\n"), id="enum-functional-api-finalizer"),
    pytest.param("run", src("type(re.I).mro()[5]('X', [('__getattr__', lambda s, n: n)])",
                            IMPORTS), id="real-enum-base-through-mro"),
    pytest.param("run", src("dataclass(frozen=True)(uuid.UUID)",
                            IMPORTS + "from dataclasses import dataclass\n"),
                 id="dataclass-rewrites-a-shared-class"),
    pytest.param("run", src("functools.total_ordering(uuid.UUID)",
                            IMPORTS + "import functools\n"),
                 id="total-ordering-on-a-shared-class"),
    pytest.param("run", src("functools.wraps(h)(json.dumps)", IMPORTS + "import functools\n"),
                 id="wraps-renames-a-shared-function"),
    pytest.param("run", src("setattr(Enum, 'planted', ['account A'])",
                            "from enum import Enum\n"), id="enum-base-attribute"),
    pytest.param("compile", src("match collections.ChainMap:\n    case type(register=r):\n"
                                "        r(dict)", IMPORTS), id="match-pattern-reads-register"),
    pytest.param("compile", src("logging.root.setLevel(10)", "import logging\n"),
                 id="real-logging-root"),
    # -- hostile results and errors leave nothing behind either ---------------------------
    pytest.param("run", src("raise E()", "class " + "E" * 70_000 + "(Exception):\n    pass\n"
                            "E = " + "E" * 70_000 + "\n"), id="exception-class-name-70000"),
    pytest.param("run", src("k = 1\nfor _ in range(50_000):\n    k = (k,)\nreturn {k: 1}"),
                 id="result-key-50000-deep"),
    pytest.param("run", src("return [2 ** 64 + 1]"), id="result-beyond-64-bits"),
]


def test_the_probe_sees_a_clean_worker() -> None:
    assert probe() == CLEAN


@pytest.mark.parametrize(("stage", "source"), PLANTS)
def test_a_plant_is_refused_and_the_next_invocation_finds_nothing(stage: str, source: str) -> None:
    assert plant(source, account="A") == stage
    assert probe(account="B") == CLEAN


# -- caches: filled by one invocation, empty when the next starts -------------------------

def lru_size(wrapper: Any) -> int:
    return int(wrapper.cache_info().currsize)


def abc_cache_size() -> int:
    abcs = [collections.abc.Sequence, collections.abc.Iterable, collections.ChainMap]
    dumps = [abc._get_dump(cls) for cls in abcs]  # type: ignore[attr-defined]
    return sum(len(cache) + len(negative) for _, cache, negative, _ in dumps)


def strptime_cache_size() -> int:
    return len(sys.modules["_strptime"]._regex_cache)


def regexflag_pseudo_members() -> int:
    """Combinations (`re.I | re.M`) the shared RegexFlag class remembers beside its members."""
    own = {id(member) for member in re.RegexFlag._member_map_.values()}
    return sum(id(member) not in own for member in re.RegexFlag._value2member_map_.values())


CACHES = [
    pytest.param(src("re.compile('planted-[a-z]+')\nre.sub('(a)', r'\\1', 'a')", "import re\n"),
                 lambda: len(re._cache) + lru_size(re._compile_repl),  # type: ignore[attr-defined]
                 id="re-compile-and-template-caches"),
    pytest.param(src("urllib.parse.urlsplit('http://planted.example/')\n"
                     "urllib.parse.quote('a b', safe='!')", "import urllib.parse\n"),
                 lambda: lru_size(urllib.parse.urlsplit)
                 + lru_size(urllib.parse._byte_quoter_factory),  # type: ignore[attr-defined]
                 id="urllib-parse-caches"),
    pytest.param(src("datetime.datetime.strptime('2024-05', '%Y-%m')\ntime.strptime('7', '%d')",
                     "import datetime\nimport time\n"), strptime_cache_size,
                 id="strptime-regex-cache"),
    pytest.param(src("typing.List[int]\ntyping.Literal['planted']\ntyping.Mapping[str, int]",
                     "import typing\n"),
                 lambda: sum(lru_size(clear.__self__) for clear in typing._cleanups),  # type: ignore[attr-defined]
                 id="typing-alias-caches"),
    pytest.param(src("isinstance(payload, typing.Sequence)\n"
                     "isinstance(payload, collections.ChainMap)\n"
                     "issubclass(int, typing.Iterable)", "import collections\nimport typing\n"),
                 abc_cache_size, id="abc-isinstance-caches"),
    pytest.param(src("re.I | re.M | re.X\nre.compile('planted', re.I | re.S)", "import re\n"),
                 regexflag_pseudo_members, id="regexflag-combinations"),
]

NOTHING = compile_handler("def h(payload):\n    return payload['account_id']\n")


@pytest.mark.parametrize(("source", "size"), CACHES)
def test_a_cache_one_invocation_fills_is_empty_when_the_next_starts(
        source: str, size: Callable[[], int]) -> None:
    assert plant(source, account="A") == "ok"
    assert size() > 0, "the row did not fill the cache it is about"
    invoke(NOTHING, "h", make_payload(account_id="B"))
    assert size() == 0


def test_random_gauss_keeps_no_half_pair_for_the_next_call() -> None:
    assert plant(src("return [random.gauss(), random.gauss(1.0, 2.0)]", "import random\n")) == "ok"
    assert getattr(_SYSTEM_RANDOM, "gauss_next", None) is None


def test_tables_built_on_first_use_are_built_with_their_facade() -> None:
    """A handler cannot learn whether an earlier invocation used base64.b32encode or
    urllib.parse.unquote: their lazily built tables already exist before any handler runs."""
    import base64

    facade("base64")
    facade("urllib.parse")
    assert base64._b32tab2 and base64._b32rev  # type: ignore[attr-defined]
    assert urllib.parse._hextobyte is not None  # type: ignore[attr-defined]


# -- generic: everything observable, and every lru_cache ------------------------------------

USE_EVERYTHING = src("""\
    out = [json.dumps({"a": 1}), json.loads("[1]"), re.findall("[a-z]+", "ab cd"),
           re.sub("(a)", "[\\\\1]", "a"), re.split(",", "a,b"), re.escape("a.b"),
           datetime.datetime.strptime("2024-01-02", "%Y-%m-%d").strftime("%d %B"),
           time.strftime("%Y", time.gmtime(0)), time.strptime("3", "%d").tm_mday,
           urllib.parse.urlparse("http://u@h:1/p?q=1").port, urllib.parse.quote("a b/c"),
           urllib.parse.quote_plus("a&b"), urllib.parse.unquote("%41"),
           urllib.parse.urlencode({"k": "v w"}), urllib.parse.parse_qs("a=1&a=2"),
           urllib.parse.urljoin("http://h/a/b", "../c"), urllib.parse.urlsplit("//h").netloc,
           statistics.mean([1, 2]), statistics.median([3, 1]), html.escape("<"),
           base64.b32encode(b"x").decode(), base64.b64decode("eA==").decode(),
           hashlib.sha256(b"x").hexdigest(), hmac.new(b"k", b"m", "sha256").hexdigest(),
           string.capwords("a b"), str(decimal.Decimal("1.1") / 3), uuid.uuid5(
               uuid.NAMESPACE_DNS, "x").hex, str(uuid.uuid3(uuid.NAMESPACE_URL, "y")),
           random.choice([1]), random.gauss(), list(itertools.islice(itertools.count(), 2)),
           repr(typing.Optional[int]), repr(typing.Callable[[int], str]),
           repr(typing.Literal["x"]), typing.cast(int, 1),
           isinstance(payload, typing.Mapping), isinstance(payload, collections.ChainMap),
           collections.Counter("aab").most_common(1), math.fsum([0.1] * 3)]
    return len(out)""", "import base64\nimport collections\nimport datetime\nimport decimal\n"
                        "import hashlib\nimport hmac\nimport html\nimport itertools\n"
                        "import json\nimport math\nimport random\nimport re\n"
                        "import statistics\nimport string\nimport time\nimport typing\n"
                        "import urllib.parse\nimport uuid\n")

# -- the admitted language: what it may do, and leaves nothing of -----------------------------

LANGUAGE_IMPORTS = ("import functools\nimport logging\nimport re\n"
                    "from dataclasses import dataclass, field, asdict, replace\n"
                    "from enum import Enum, IntEnum, StrEnum, Flag, IntFlag, auto\n"
                    "from zoneinfo import ZoneInfo, available_timezones\n")

CONTAINED = [
    pytest.param(src("logging.basicConfig(level=logging.DEBUG)\n"
                     "logging.getLogger('app').setLevel('DEBUG')\n"
                     "logging.getLogger('app.db').debug('account %s', payload['account_id'])",
                     LANGUAGE_IMPORTS), id="logging-configured"),
    pytest.param(src("class Perm(Flag):\n    R = auto()\n    W = auto()\n"
                     "class Big(IntFlag):\n    A = 1\n"
                     "return [str(Perm(3)), int(Big(5) | 8), str(re.I | re.X)]", LANGUAGE_IMPORTS),
                 id="enums-and-flag-combinations"),
    pytest.param(src("@dataclass(frozen=True)\nclass P:\n    x: int\n"
                     "    tags: list = field(default_factory=list)\n"
                     "return asdict(replace(P(1), x=2))", LANGUAGE_IMPORTS),
                 id="dataclasses-defined"),
    pytest.param(src("@functools.lru_cache(maxsize=None)\ndef sq(n):\n    return n * n\n"
                     "return sum(sq(n % 7) for n in range(1000))", LANGUAGE_IMPORTS),
                 id="lru-cache-filled"),
    pytest.param(src("zones = [ZoneInfo(k) for k in sorted(available_timezones())[:40]]\n"
                     "return len(zones)", LANGUAGE_IMPORTS), id="zones-loaded"),
]

LANGUAGE_PROBE = compile_handler(src("""\
    app = logging.getLogger("app")
    return [logging.getLogger().level, app.level, app.getEffectiveLevel(), len(Enum), len(Flag),
            len(IntFlag), str(re.I | re.M)]""", LANGUAGE_IMPORTS))
LANGUAGE_CLEAN = [30, 0, 30, 0, 0, 0, "re.IGNORECASE|re.MULTILINE"]


def test_the_language_probe_sees_a_clean_worker() -> None:
    assert json.loads(invoke(LANGUAGE_PROBE, "h", make_payload()).result_json) == LANGUAGE_CLEAN


@pytest.mark.parametrize("source", CONTAINED)
def test_what_the_language_admits_leaves_nothing_for_the_next_invocation(source: str) -> None:
    assert plant(source, account="A") == "ok"
    assert json.loads(invoke(LANGUAGE_PROBE, "h", make_payload()).result_json) == LANGUAGE_CLEAN
    assert probe(account="B") == CLEAN


HOSTILE_BATCH = [USE_EVERYTHING, *(p.values[1] for p in PLANTS), *(p.values[0] for p in CACHES),
                 *(p.values[0] for p in CONTAINED)]


def fingerprint(value: Any) -> str:
    """What a handler can tell about `value` without walking further: a plain value itself;
    otherwise which object it is (id), or for a bound method, which method of which object."""
    kind = type(value)
    if kind in (str, bytes, int, float, complex, bool, type(None)):
        return f"{kind.__name__} {value!r:.200}"
    if kind in (tuple, frozenset):
        return f"{kind.__name__} of {len(value)}"  # the items are walked
    owner = getattr(value, "__self__", None)
    if isinstance(value, (types.MethodType, types.BuiltinMethodType, types.MethodWrapperType)):
        return f"{getattr(value, '__name__', '?')} of {fingerprint(owner)}"
    return f"{kind.__qualname__} at {id(value):x}"


PROBE_CLASSES = sorted((v for v in vars(builtins).values() if isinstance(v, type)),
                       key=lambda c: c.__qualname__)
"""What `issubclass(P, C)` is recorded for, for every class C reached: the classes an ABC
`register` in one invocation could make another invocation see as subclasses."""


def snapshot() -> tuple[dict[str, str], list[Any]]:
    """Everything observable from every facade, as path -> fingerprint; and the objects seen
    (kept alive by the caller, so a fresh object in a later snapshot cannot reuse an id)."""
    state: dict[str, str] = {}
    alive: list[Any] = []
    for name in ALLOWED_MODULES:
        facade(name)  # builds the facade, recording the classes it exports
    probes = [*PROBE_CLASSES, *sorted(EXPORTED_CLASSES, key=lambda c: c.__qualname__)]
    for name in sorted(ALLOWED_MODULES):
        for path, value in shared_reachable(name, depth=3):
            alive.append(value)
            state[path] = fingerprint(value)
            if isinstance(value, type):  # what an ABC register would change
                state[path + " <-"] = ",".join(p.__qualname__ for p in probes
                                               if _is_subclass(p, value))
    return state, alive


def _is_subclass(kind: type, of: type) -> bool:
    try:
        return issubclass(kind, of)
    except TypeError:
        return False


def lru_sizes() -> dict[str, int]:
    return {f"{getattr(w, '__module__', '?')}.{w.__qualname__} at {id(w):x}": lru_size(w)
            for w in gc.get_objects() if isinstance(w, functools._lru_cache_wrapper)}


def changes(before: dict[str, str], again: dict[str, str],
            after: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    """What differs between `before` and `after`, leaving out what already differed between
    two snapshots in a row (`again`): fresh objects made on every read (bound methods)."""
    stable = {path for path, seen in before.items() if again.get(path) == seen}
    found = {path: (before[path], after.get(path)) for path in stable
             if after.get(path) != before[path]}
    found.update({path: (None, seen) for path, seen in after.items()
                  if path not in before and path not in again})
    return found


@pytest.fixture
def observed() -> Iterator[Callable[[], dict[str, tuple[str | None, str | None]]]]:
    """Take two snapshots now; the test then calls the result for what changed since."""
    invoke(NOTHING, "h", make_payload())
    before, alive = snapshot()
    again, alive_again = snapshot()

    def changed() -> dict[str, tuple[str | None, str | None]]:
        invoke(NOTHING, "h", make_payload())
        after, _ = snapshot()
        return changes(before, again, after)

    yield changed
    del alive, alive_again


def test_nothing_observable_from_any_facade_changes_under_a_hostile_batch(
        observed: Callable[[], dict[str, tuple[str | None, str | None]]]) -> None:
    for source in HOSTILE_BATCH:
        plant(source)
    assert observed() == {}


@pytest.mark.parametrize("leak", ["class-attribute", "abc-register", "uuid-reinit"])
def test_the_snapshot_sees_a_leak_made_behind_the_guards(
        leak: str, observed: Callable[[], dict[str, tuple[str | None, str | None]]]) -> None:
    """Control: the same snapshot, with shared state changed directly by this test."""
    import uuid

    parse_result = urllib.parse.ParseResult
    old_int = uuid.NAMESPACE_DNS.int
    try:
        if leak == "class-attribute":
            parse_result.planted = 1  # type: ignore[attr-defined]
        elif leak == "abc-register":
            collections.ChainMap.register(frozenset)
        else:
            object.__setattr__(uuid.NAMESPACE_DNS, "int", 1)
        assert observed() != {}
    finally:
        if "planted" in vars(parse_result):
            del parse_result.planted  # type: ignore[attr-defined]
        collections.ChainMap._abc_registry_clear()  # type: ignore[attr-defined]
        collections.ChainMap._abc_caches_clear()  # type: ignore[attr-defined]
        object.__setattr__(uuid.NAMESPACE_DNS, "int", old_int)


def test_no_lru_cache_in_the_process_keeps_what_a_hostile_batch_put_in() -> None:
    """Shared caches only: a handler's own lru_cache dies with its invocation (collected here
    first: a cache on a method sits in a class, which is in a reference cycle)."""
    invoke(NOTHING, "h", make_payload())
    gc.collect()
    before = lru_sizes()
    for source in HOSTILE_BATCH:
        plant(source)
    invoke(NOTHING, "h", make_payload())
    gc.collect()
    grown = {name: (size, before.get(name)) for name, size in lru_sizes().items()
             if size > before.get(name, 0)}
    assert grown == {}


def test_the_lru_check_sees_a_cache_that_is_not_reset() -> None:
    """Control: fnmatch's pattern cache is not reset (no handler reaches it)."""
    import fnmatch

    before = lru_sizes()
    fnmatch.fnmatch("planted", f"pl*{len(before)}")
    assert any(size > before.get(name, 0) for name, size in lru_sizes().items())


def test_reset_empties_every_cache_the_rows_fill() -> None:
    for source in (p.values[0] for p in CACHES):
        plant(source)
    reset_shared_state()
    assert [size() for size in (p.values[1] for p in CACHES)] == [0] * len(CACHES)


# -- a handler's own classes still initialise their bases ----------------------------------

def test_a_handler_exception_class_still_initialises_its_base() -> None:
    source = src("""\
        try:
            raise AppError("bad", 400)
        except AppError as e:
            return [e.args[0], e.code, str(e), Point(1, 2).total()]""",
        "class AppError(ValueError):\n    def __init__(self, message, code):\n"
        "        super().__init__(message)\n        self.code = code\n"
        "class Base:\n    def __init__(self, x):\n        self.x = x\n"
        "class Point(Base):\n    def __init__(self, x, y, /):\n        super().__init__(x)\n"
        "        self.y = y\n    def total(self):\n        return self.x + self.y\n")
    outcome = invoke(compile_handler(source), "h", make_payload())
    assert json.loads(outcome.result_json) == ["bad", 400, "bad", 3]


def test_the_super_init_guard_binds_only_to_an_instance_of_a_handler_class() -> None:
    own_class = handler_metaclass("Own", (Exception,), {})
    own = own_class()
    guarded_super_init(super(own_class, own))("initialised")
    assert own.args == ("initialised",)
    for proxy in (super(own_class, own_class), super(ValueError, ValueError()),
                  super(own_class), "not a super"):
        with pytest.raises(TypeError):
            guarded_super_init(proxy)


# -- end to end: real workers --------------------------------------------------------------

LANGUAGE_APP = APPS / "lang_state"


def test_through_an_engine_the_language_leaves_nothing_for_the_next_dispatch() -> None:
    from handlerbox import Engine

    with Engine(workers=1) as engine:  # one installation: one worker serves all three
        app = engine.load_app(LANGUAGE_APP)
        before = engine.dispatch(app, make_payload("onCallUpdate", account_id="B"))
        planted = engine.dispatch(app, make_payload("onCallCreate", account_id="B"))
        after = engine.dispatch(app, make_payload("onCallUpdate", account_id="B"))
    assert planted.outcome == "ok", planted.error
    assert planted.value and set(planted.value.values()) == {"refused"}, planted.value
    assert before.value == after.value == {
        "account": "B", "logging": [30, 0, 30, False], "enum-bases": [0, 0, 0, False],
        "flags": ["Perm.R|W", "re.IGNORECASE|re.MULTILINE"], "cache": [0, 0, None, 0],
        "dataclass": [False, True], "zone": "Europe/Berlin"}
    assert before.worker_pid == planted.worker_pid == after.worker_pid


@pytest.mark.parametrize(("planter", "prober"), [("A", "A"), ("A", "B")],
                         ids=["same-account-same-worker", "another-account"])
def test_through_an_engine_what_one_dispatch_plants_the_next_never_finds(
        planter: str, prober: str) -> None:
    from handlerbox import Engine

    with Engine(workers=1) as engine:
        app = engine.load_app(APP)
        before = engine.dispatch(app, make_payload("onCallUpdate", account_id=prober))
        planted = engine.dispatch(app, make_payload("onCallCreate", account_id=planter))
        after = engine.dispatch(app, make_payload("onCallUpdate", account_id=prober))
    assert planted.outcome == "ok", planted.error
    assert planted.value and set(planted.value.values()) == {"refused"}, planted.value
    assert before.value == after.value == {**CLEAN, "account": prober}
    if planter == prober:  # one installation: the same worker served all three
        assert before.worker_pid == planted.worker_pid == after.worker_pid
