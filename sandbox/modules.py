"""The modules handlers may import, as facades holding only vetted names; no untrusted input.

A handler never receives a real module: `json.codecs.builtins`, `re.enum.sys` and the like
lead out of the sandbox. A Facade holds only the functions, classes and constants listed
here; each list leaves out what reaches a module, the filesystem, the process or global
state, with the reason beside it. tests/test_modules.py walks everything reachable from
every facade and fails if it finds a module, frame, code object or mutable container.

Facades and what they hold are shared by every invocation in the process, so nothing a
handler can reach may carry state from one invocation to the next: `reset_shared_state()`
empties the stdlib caches behind these modules, and the runner calls it before each one.
The one facade that is not shared is `logging`'s: each invocation gets its own
(logging_facade), bound to the invocation's records.
"""

from __future__ import annotations

import abc
import base64 as _base64
import collections.abc
import importlib
import os
import random as _random
import re as _re
import sys
import typing as _typing
import urllib.parse as _urllib_parse
import zoneinfo as _zoneinfo
from collections.abc import Callable
from typing import Any

from handlerbox.sandbox import language as _language
from handlerbox.sandbox import logs as _logs
from handlerbox.sandbox import services as _services
from handlerbox.sandbox.marks import OWNER, OWNER_MARK

ALLOWED_MODULES: dict[str, frozenset[str]] = {
    # dumps/loads only: the encoder/decoder classes expose their module's internals.
    "json": frozenset({"dumps", "loads", "JSONDecodeError"}),
    "math": frozenset({
        "ceil", "floor", "trunc", "fabs", "sqrt", "isqrt", "exp", "log", "log2", "log10",
        "pow", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "hypot", "degrees",
        "radians", "isclose", "isfinite", "isinf", "isnan", "gcd", "lcm", "fsum", "prod",
        "comb", "perm", "factorial", "copysign", "fmod", "modf", "remainder", "dist",
        "pi", "e", "tau", "inf", "nan",
    }),
    # no `re.enum`, `re.sre_compile` etc.: real modules hang off the real `re`.
    "re": frozenset({
        "compile", "search", "match", "fullmatch", "findall", "finditer", "sub", "subn",
        "split", "escape", "error", "IGNORECASE", "I", "MULTILINE", "M", "DOTALL", "S",
        "VERBOSE", "X", "ASCII", "A",
    }),
    # no `datetime.sys`; strftime/strptime import `time` and `_strptime` from C (see imports).
    "datetime": frozenset({
        "date", "datetime", "time", "timedelta", "timezone", "MINYEAR", "MAXYEAR",
    }),
    # no sleep (the timer family); no tzset (changes the worker's process-wide zone).
    "time": frozenset({
        "time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns",
        "gmtime", "localtime", "mktime", "strftime", "strptime", "asctime", "ctime",
        "struct_time", "timezone", "altzone", "daylight",
    }),
    # no namedtuple: it builds classes by exec-ing generated source.
    "collections": frozenset({"OrderedDict", "Counter", "defaultdict", "deque", "ChainMap"}),
    "itertools": frozenset({
        "accumulate", "chain", "combinations", "combinations_with_replacement", "compress",
        "count", "cycle", "dropwhile", "filterfalse", "groupby", "islice", "pairwise",
        "permutations", "product", "repeat", "starmap", "takewhile", "tee", "zip_longest",
    }),
    # no getcontext/setcontext/localcontext: the context is process-wide state.
    "decimal": frozenset({
        "Decimal", "InvalidOperation", "DivisionByZero", "ROUND_HALF_UP", "ROUND_HALF_EVEN",
        "ROUND_HALF_DOWN", "ROUND_UP", "ROUND_DOWN", "ROUND_CEILING", "ROUND_FLOOR",
    }),
    # bound to a SystemRandom: no seed/state shared between invocations or forked workers;
    # gauss is normalvariate (Random.gauss saves half of each pair for the next call).
    "random": frozenset({
        "random", "randint", "randrange", "choice", "choices", "shuffle", "sample", "uniform",
        "gauss", "Random",
    }),
    # no uuid1/getnode: finding the MAC address may start a subprocess.
    "uuid": frozenset({
        "uuid3", "uuid4", "uuid5", "UUID", "NAMESPACE_DNS", "NAMESPACE_URL", "NAMESPACE_OID",
        "NAMESPACE_X500",
    }),
    "base64": frozenset({
        "b64encode", "b64decode", "urlsafe_b64encode", "urlsafe_b64decode",
        "standard_b64encode", "standard_b64decode", "b32encode", "b32decode", "b16encode",
        "b16decode",
    }),
    "hashlib": frozenset({
        "md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3_256", "sha3_512",
        "blake2b", "blake2s",
    }),
    "hmac": frozenset({"new", "compare_digest", "digest"}),
    # constants and capwords only: string.Formatter traverses attributes in its fields.
    "string": frozenset({
        "ascii_letters", "ascii_lowercase", "ascii_uppercase", "digits", "hexdigits",
        "octdigits", "punctuation", "printable", "whitespace", "capwords",
    }),
    "statistics": frozenset({
        "mean", "fmean", "median", "median_low", "median_high", "mode", "multimode", "stdev",
        "pstdev", "variance", "pvariance", "StatisticsError",
    }),
    "html": frozenset({"escape", "unescape"}),
    # names for type hints only: no get_type_hints (it evaluates strings against module
    # globals), no NamedTuple/TypedDict/Protocol (they need metaclasses).
    "typing": frozenset({
        "Any", "Optional", "Union", "List", "Dict", "Tuple", "Set", "FrozenSet", "Iterable",
        "Iterator", "Callable", "Mapping", "Sequence", "MutableMapping", "Literal", "cast",
        "TYPE_CHECKING",
    }),
    # `from __future__ import annotations`: compiler directives; the feature records are inert.
    "__future__": frozenset({
        "annotations", "generator_stop", "division", "absolute_import", "print_function",
        "unicode_literals", "with_statement", "nested_scopes", "generators",
    }),
    # The language modules: each admitted name is a decision (sandbox/language.py, logs.py).
    # dataclass/total_ordering/wraps take the handler's own classes and functions only (they
    # change them); asdict/astuple never deep-copy; no make_dataclass (builds a class from
    # strings), InitVar/ClassVar/KW_ONLY (string annotations cannot name them), slots=True.
    "dataclasses": frozenset(_language.DATACLASSES),
    # The bases are the facade's own subclasses: their metaclass refuses the functional API.
    # No EnumType/EnumMeta (a metaclass), member/nonmember/verify/property (rarely needed).
    "enum": frozenset(_language.ENUM),
    # lru_cache/cache are per invocation: each decoration makes its own cache, in a module
    # that runs fresh every invocation. No cached_property (a threading.RLock, __set_name__),
    # singledispatch (registries), update_wrapper (writes into any function).
    "functools": frozenset(_language.FUNCTOOLS),
    # ZoneInfo is the facade's subclass (exact-str keys, its own cache, emptied before every
    # invocation); zones come from the tzdata package only (_pin_tzdata). No TZPATH or
    # reset_tzpath (process-wide); ZoneInfo.from_file and no_cache are refused (guards).
    "zoneinfo": frozenset(_language.ZONEINFO),
    # Built per invocation from its LogRecords (logs.py), never the real logging module.
    "logging": _logs.NAMES,
    "urllib": frozenset({"parse"}),
    "urllib.parse": frozenset({
        "quote", "quote_plus", "unquote", "unquote_plus", "urlencode", "urlparse",
        "urlsplit", "urlunparse", "urlunsplit", "urljoin", "parse_qs", "parse_qsl",
    }),
}

# `services`: the platform's services, performed by the host (sandbox/services.py).
ALLOWED_MODULES.update(_services.allowed_modules())

FORBIDDEN_MODULE_ATTRS = frozenset({("time", "sleep")})
"""Names of allowed modules that belong to the timer family: refused with its hint."""

_SYSTEM_RANDOM = _random.SystemRandom()


class Facade:
    """A read-only stand-in for a module that holds only vetted names.

    It has no `__init__` to re-run (`facade()` fills a new instance once, so `super().__init__`
    or any other call cannot re-initialise a shared facade) and cannot be subclassed; the
    guards refuse it to `type()` and as a base class. Exports stay in the instance `__dict__`
    because module attributes are read on every handler line: a dict hit is the fast path."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("module facades cannot be subclassed")

    def __getattr__(self, attr: str) -> Any:
        name = object.__getattribute__(self, "_facade_name")
        if (name, attr) in FORBIDDEN_MODULE_ATTRS:
            raise AttributeError(f"{name}.{attr} is not available in handlers: they cannot "
                                 "sleep or start timers. Use a scheduled event to run code later.")
        raise AttributeError(f"{name}.{attr} is not available in handlers")

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError("handler modules are read-only")

    def __delattr__(self, attr: str) -> None:
        raise AttributeError("handler modules are read-only")

    def __repr__(self) -> str:
        return f"<handler module {object.__getattribute__(self, '_facade_name')}>"


_FACADES: dict[str, Facade] = {}

EXPORTED_CLASSES: set[type] = set()
"""Every class a facade exports by name; handler classes may subclass these (guards)."""


def facade(dotted: str) -> Facade:
    """The facade of an allowed module (built once per process, then shared read-only)."""
    found = _FACADES.get(dotted)
    if found is None:
        exports = _exports(dotted)
        found = _make_facade(dotted, exports)
        EXPORTED_CLASSES.update(v for v in exports.values() if isinstance(v, type))
        _WARM_UP.get(dotted, lambda: None)()
        _FACADES[dotted] = found
    return found


def _make_facade(dotted: str, exports: dict[str, Any]) -> Facade:
    made = object.__new__(Facade)
    vars(made).update(exports, _facade_name=dotted)
    return made


def logging_facade(records: _logs.LogRecords) -> Facade:
    """The `logging` module of one invocation: its functions write into `records`. (The
    shared `facade("logging")` has the same names and functions that refuse: it is what the
    tests walk, and what an import outside an invocation would get.)"""
    return _make_facade("logging", _logs.exports(records))


def _exports(dotted: str) -> dict[str, Any]:
    names = ALLOWED_MODULES[dotted]
    tables = {"dataclasses": _language.DATACLASSES, "enum": _language.ENUM,
              "functools": _language.FUNCTOOLS, "zoneinfo": _language.ZONEINFO,
              "logging": _logs.outside_an_invocation()}
    if dotted in tables:
        return {n: tables[dotted][n] for n in names}
    if dotted == "random":
        real: Any = _SYSTEM_RANDOM
        exports = {n: getattr(real, n) for n in names - {"Random", "gauss"}}
        return {**exports, "Random": _random.Random, "gauss": real.normalvariate}
    if dotted.split(".")[0] == "services":
        own = _services.exports()[dotted]
        return {n: facade(f"{dotted}.{n}") if f"{dotted}.{n}" in ALLOWED_MODULES else own[n]
                for n in names}
    real = importlib.import_module(dotted)
    exports = {}
    for n in names:
        if f"{dotted}.{n}" in ALLOWED_MODULES:
            exports[n] = facade(f"{dotted}.{n}")
        elif hasattr(real, n):
            exports[n] = _without_cache_handles(getattr(real, n))
    return exports


def _without_cache_handles(value: Any) -> Any:
    """lru_cache wrappers (urllib.parse.urlsplit) expose cache_info/cache_clear, state that
    every invocation in the process shares: hand out a plain function instead."""
    if not hasattr(value, "cache_clear"):
        return value

    def call(*args: Any, **kwargs: Any) -> Any:
        return value(*args, **kwargs)

    call.__name__ = call.__qualname__ = getattr(value, "__name__", "function")
    call.__doc__ = value.__doc__
    return call


# -- state shared by every invocation ------------------------------------------------------

def _pin_tzdata() -> None:
    """Zones come from the tzdata package (a pinned pip dependency, inside the worker's
    read-only view of site-packages), the same on every host: not from /usr/share/zoneinfo,
    which differs between machines and which Landlock leaves unreadable in a worker (zoneinfo
    would find the file by stat, then fail to open it). This sets the process's zoneinfo
    search path, once. Every subpackage of tzdata.zoneinfo (America, Europe, ...) is imported
    now, as the first ZoneInfo(key) of a region would do: so no invocation can learn from
    the time an import takes which regions an earlier one used."""
    import tzdata

    _zoneinfo.reset_tzpath(to=[])
    root = os.path.dirname(tzdata.__file__)
    for folder, _, files in sorted(os.walk(os.path.join(root, "zoneinfo"))):
        if "__init__.py" in files:
            importlib.import_module("tzdata." + os.path.relpath(folder, root).replace(os.sep, "."))


def _warm_total_ordering() -> None:
    """total_ordering renames the functools helpers it installs (`_gt_from_lt.__name__ =
    "__gt__"`), once per process: done here, so no invocation is the first."""
    for op in ("__lt__", "__le__", "__gt__", "__ge__"):
        _language.total_ordering(type("Warm", (), {op: lambda self, other: True,
                                                   OWNER_MARK: OWNER}))


_WARM_UP: dict[str, Callable[[], Any]] = {
    # Tables these build on first use, once per process: built with the facade, so a handler
    # cannot learn whether an earlier invocation in the same worker used them.
    "base64": lambda: _base64.b32decode(_base64.b32encode(b"x")),
    "urllib.parse": lambda: _urllib_parse.unquote("%41"),
    "zoneinfo": _pin_tzdata,
    "functools": _warm_total_ordering,
}


def _abc_classes() -> list[Any]:
    """The ABCs an `isinstance` on a reachable ABC (collections.ChainMap, typing.Mapping's
    origin) can touch: collections.abc and every ABC below it, found once per process."""
    found: set[Any] = set()
    stack: list[Any] = [c for c in vars(collections.abc).values() if isinstance(c, abc.ABCMeta)]
    while stack:
        cls = stack.pop()
        if cls not in found:
            found.add(cls)
            stack.extend(c for c in type.__subclasses__(cls) if isinstance(c, abc.ABCMeta))
    return list(found)


_ABC_CACHE_CLEARS: list[Callable[[], None]] = []


def reset_shared_state() -> None:
    """Empty every process-wide cache a handler can fill, so that no invocation can learn
    (by timing, or by identity through `id()`) what an earlier one in this worker did.

    Each is a cache, so emptying it changes no result. It runs on every dispatch: a few
    microseconds when the previous invocation filled none of them."""
    _re.purge()  # compiled patterns, and the sub() template cache
    _urllib_parse.clear_cache()  # type: ignore[attr-defined]  # urlsplit results, quoters
    for clear in getattr(_typing, "_cleanups", ()):  # typing.List[int] and the like
        clear()
    strptime = sys.modules.get("_strptime")  # imported by C code on first strptime
    if strptime is not None:
        strptime._regex_cache.clear()
    if not _ABC_CACHE_CLEARS:
        _ABC_CACHE_CLEARS.extend(c._abc_caches_clear for c in _abc_classes())
    for clear in _ABC_CACHE_CLEARS:  # isinstance() answers remembered by each ABC
        clear()
    if "zoneinfo" in _FACADES:  # ZoneInfo(key) returns the instance an earlier call loaded
        # (the facade's class has its own cache: handlers never reach the real class's)
        _language.ZoneInfo.clear_cache()
    _forget_pseudo_members(_re.RegexFlag)


_OWN_MEMBERS: dict[type, int] = {}


def _forget_pseudo_members(flag: Any) -> None:
    """A shared Flag class remembers each combination it has made (`re.I | re.M` is one),
    in its value-to-member map: keep its own members only (their count is known, so an
    untouched map costs one len())."""
    table = flag._value2member_map_
    if len(table) == _OWN_MEMBERS.get(flag):
        return
    own = {id(member) for member in flag._member_map_.values()}
    for value in [v for v, member in table.items() if id(member) not in own]:
        del table[value]
    _OWN_MEMBERS[flag] = len(table)
