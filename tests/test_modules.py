"""Nothing reachable from a facade leads out: no module, frame, code object, real builtins,
or mutable shared state; imports through the hook hand out facades only."""

from __future__ import annotations

import abc
import builtins
import collections
import string
import subprocess
import sys
import types
import typing
import urllib.parse
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest

from handlerbox.sandbox.guards import guarded_getattr, guarded_type
from handlerbox.sandbox.modules import (
    ALLOWED_MODULES,
    EXPORTED_CLASSES,
    Facade,
    facade,
    reset_shared_state,
)
from handlerbox.sandbox.namespace import guarded_import
from handlerbox.sandbox.policy import is_forbidden_attribute

LEAKS = (types.ModuleType, types.FrameType, types.CodeType, types.TracebackType)
SHARED_MUTABLE = (dict, list, set, bytearray, deque)


def steps(obj: Any) -> Iterator[tuple[str, Any]]:
    """What a handler gets from `obj` in one step, each with how: its public attributes
    (through the run-time guard), `type(obj)`, the items of a list or tuple, and for a class
    its `mro()` and what `super(obj, obj)` reads from the classes after it (the methods of
    reachable classes)."""
    for name in dir(obj):
        if not is_forbidden_attribute(name):
            try:
                yield f".{name}", guarded_getattr(obj, name)
            except Exception:
                pass
    try:
        yield ".type()", guarded_type(obj)
    except TypeError:
        pass
    if type(obj) in (list, tuple):
        for index, item in enumerate(obj[:50]):
            yield f"[{index}]", item
    if isinstance(obj, type):
        mro = obj.mro()
        for index, base in enumerate(mro[1:], 1):
            yield f".mro()[{index}]", base
        if len(mro) > 1:
            for name in dir(mro[1]):
                if not is_forbidden_attribute(name):
                    try:
                        yield f".super().{name}", guarded_getattr(super(obj, obj), name)
                    except Exception:
                        pass


def reachable(root: Any, depth: int, label: str = "") -> list[tuple[str, Any]]:
    """Every object reachable from `root` in `depth` steps (see steps), each with one path
    (starting with `label`, else the root's repr)."""
    seen: set[int] = {id(root)}
    found: list[tuple[str, Any]] = []
    frontier = [(label or repr(root), root)]
    for _ in range(depth):
        next_frontier = []
        for path, obj in frontier:
            for how, value in steps(obj):
                if id(value) in seen:
                    continue
                seen.add(id(value))
                found.append((path + how, value))
                next_frontier.append((path + how, value))
        frontier = next_frontier
    return found


SAMPLES: dict[str, str] = {
    # Objects a handler gets by calling each module (walking never calls anything): their
    # classes carry shared descriptors (ParseResult.hostname) and methods too.
    "json": "json.JSONDecodeError('m', 'doc', 0)",
    "re": "[re.compile('a(b)'), re.match('a', 'a'), re.finditer('a', 'a'), re.error('x')]",
    "datetime": "[datetime.datetime(2024, 1, 1), datetime.timezone.utc, "
                "datetime.timedelta(1), datetime.date(2024, 1, 1), datetime.time(1)]",
    "time": "time.gmtime(0)",
    "collections": "[collections.Counter('ab'), collections.OrderedDict(), collections.deque(),"
                   " collections.defaultdict(list), collections.ChainMap({})]",
    "itertools": "[itertools.count(), itertools.groupby('aab'), itertools.chain()]",
    "decimal": "decimal.Decimal('1.5')",
    "random": "random.Random(1)",
    "uuid": "[uuid.uuid5(uuid.NAMESPACE_DNS, 'x'), uuid.NAMESPACE_DNS]",
    "hashlib": "[hashlib.sha256(), hashlib.blake2b()]",
    "hmac": "hmac.new(b'k', digestmod='sha256')",
    "urllib.parse": "[urllib.parse.urlparse('http://u:p@h:1/p?q#f'), "
                    "urllib.parse.urlsplit('http://h/'), urllib.parse.parse_qsl('a=1')]",
    "statistics": "statistics.StatisticsError('x')",
    "services": "[services.ServiceError(404, 'x'), services.MethodError(400, 'x')]",
    "typing": "[typing.List[int], typing.Optional[int], typing.Literal['x'], "
              "typing.Callable[[int], int], typing.Mapping[str, int]]",
    "dataclasses": "[dataclasses.field(default=1), dataclasses.field(metadata={'k': 1}), "
                   "dataclasses.FrozenInstanceError('x')]",
    "enum": "[enum.auto(), enum.Enum, enum.Flag]",
    "functools": "[functools.partial(max, 1), functools.cmp_to_key(lambda a, b: 0)(1), "
                 "functools.lru_cache(maxsize=2)(abs), functools.cache(abs)]",
    "zoneinfo": "[zoneinfo.ZoneInfo('UTC'), zoneinfo.ZoneInfo('America/New_York'), "
                "zoneinfo.ZoneInfoNotFoundError('x')]",
}


def sample(name: str) -> Any:
    """What calling module `name` hands out (SAMPLES), built fresh on each call; real Python
    here, as the guards do not change what a call returns."""
    return eval(SAMPLES[name], {n.split(".")[0]: facade(n.split(".")[0]) for n in ALLOWED_MODULES})


def shared_reachable(name: str, depth: int) -> list[tuple[str, Any]]:
    """Everything reachable from the facade of `name`, and from what calling it returns,
    that every invocation shares: for call results, what calls in two invocations (caches
    reset in between, as the runner does) both reach."""
    found = reachable(facade(name), depth, name)
    if name in SAMPLES:
        reset_shared_state()
        first = reachable(sample(name), depth, SAMPLES[name])
        reset_shared_state()
        second = reachable(sample(name), depth, SAMPLES[name])
        again = {id(value) for _, value in second}
        found += [(path, value) for path, value in first if id(value) in again]
    return found


@pytest.mark.parametrize("name", sorted(ALLOWED_MODULES))
def test_nothing_reachable_from_a_facade_leads_out(name: str) -> None:
    for path, value in shared_reachable(name, depth=3):
        assert not isinstance(value, LEAKS), f"{path} is a {type(value).__name__}"
        assert value is not builtins.__dict__, f"{path} is the real builtins"
        if isinstance(value, Facade):
            continue
        assert not isinstance(value, SHARED_MUTABLE), f"{path} is shared mutable state"
        assert not isinstance(value, string.Formatter), f"{path} is a string.Formatter"
        kind = value if isinstance(value, type) else type(value)
        assert not kind.__module__.startswith("handlerbox.") or kind in EXPORTED_CLASSES, \
            f"{path} is the sandbox's own {kind.__name__}"
        func = getattr(value, "__func__", value)
        assert func is not abc.ABCMeta.register, f"{path} is an ABC's register"


@pytest.mark.parametrize("name", sorted(ALLOWED_MODULES))
def test_a_facade_exports_exactly_its_vetted_names(name: str) -> None:
    exported = {n for n in vars(facade(name)) if not n.startswith("_")}
    assert exported <= ALLOWED_MODULES[name]
    assert not isinstance(facade(name), types.ModuleType)


def test_facades_are_read_only() -> None:
    json_facade = facade("json")
    with pytest.raises(AttributeError):
        json_facade.dumps = None  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del json_facade.dumps


@pytest.mark.parametrize("name, fromlist", [
    ("os", ()), ("sys", ()), ("json.decoder", ()), ("urllib.request", ()),
    ("json", ("decoder",)), ("time", ("sleep",)), ("builtins", ()), ("_strptime", ()),
])
def test_import_hook_refuses_what_is_not_allowed(name: str, fromlist: tuple[str, ...]) -> None:
    with pytest.raises(ImportError):
        guarded_import(name, None, None, fromlist, 0)


def test_import_hook_refuses_relative_imports() -> None:
    with pytest.raises(ImportError):
        guarded_import("json", None, None, (), 1)


def test_dotted_import_binds_the_parent_facade() -> None:
    parent = guarded_import("urllib.parse", None, None, None, 0)
    assert isinstance(parent, Facade) and parent.parse is facade("urllib.parse")


def test_c_internal_imports_succeed_but_hand_out_nothing() -> None:
    # What C code does (datetime.strptime imports _strptime): the return value is unused.
    assert guarded_import("_strptime", None, None, [], 0) is None
    assert "_strptime" in sys.modules


def test_strftime_and_strptime_work_in_a_fresh_interpreter() -> None:
    # In a fresh process time/_strptime are not yet imported, so C imports hit the hook.
    code = (
        "import sys\n"
        "from sandbox import run_source\n"
        "assert '_strptime' not in sys.modules\n"
        "src = '''\nfrom datetime import datetime\n"
        "def h(p):\n"
        "    d = datetime.strptime(p['at'], '%Y-%m-%d %H:%M')\n"
        "    return [d.strftime('%d/%m/%Y %H:%M'), d.isoformat()]\n'''\n"
        "print(run_source(src, 'h', {'at': '2024-02-29 13:45'})[0])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['29/02/2024 13:45', '2024-02-29T13:45:00']"


def test_no_facade_exposes_a_process_wide_cache() -> None:
    for name in ALLOWED_MODULES:
        for path, value in reachable(facade(name), depth=1):
            assert not hasattr(value, "cache_clear"), f"{path} exposes cache_clear"


def test_the_walk_follows_type_mro_super_and_call_results() -> None:
    """Control: the walk does reach what the tests above rely on it reaching."""
    paths = {path: value for name in ALLOWED_MODULES for path, value in shared_reachable(name, 3)}
    parse_result = urllib.parse.ParseResult
    assert any(v is parse_result.hostname for v in paths.values()), "a shared property"
    alias_class = type(typing.List)  # noqa: UP006 (the typing alias is the point)
    assert any(".type()" in p and v is alias_class for p, v in paths.items())
    assert any(".mro()[" in p for p in paths) and any(".super()." in p for p in paths)
    assert any(v is collections.ChainMap.copy for v in paths.values()), "a class's method"


@pytest.mark.parametrize(("attr", "attack"), [
    ("type-of-a-facade", lambda: guarded_type(facade("json"))),
    ("facade-as-a-base", lambda: type("F", (Facade,), {})),
    ("calling-the-facade-class", lambda: Facade("json", {})),  # type: ignore[call-arg]
])
def test_the_facade_class_is_out_of_reach_and_cannot_be_reinitialised(
        attr: str, attack: Any) -> None:
    with pytest.raises(TypeError):
        attack()
