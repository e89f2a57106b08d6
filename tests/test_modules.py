"""Nothing reachable from a facade leads out: no module, frame, code object, real builtins,
or mutable shared state; imports through the hook hand out facades only."""

from __future__ import annotations

import builtins
import subprocess
import sys
import types
from typing import Any

import pytest
from handlerbox.sandbox.modules import ALLOWED_MODULES, Facade, facade
from handlerbox.sandbox.namespace import guarded_import
from handlerbox.sandbox.policy import is_forbidden_attribute

LEAKS = (types.ModuleType, types.FrameType, types.CodeType, types.TracebackType)
SHARED_MUTABLE = (dict, list, set, bytearray)


def reachable(root: Any, depth: int) -> list[tuple[str, Any]]:
    """Every object reachable from `root` through names a handler may read, `depth` deep."""
    seen: set[int] = set()
    found: list[tuple[str, Any]] = []
    frontier = [(repr(root), root)]
    for _ in range(depth):
        next_frontier = []
        for path, obj in frontier:
            for name in dir(obj):
                if is_forbidden_attribute(name):
                    continue
                try:
                    value = getattr(obj, name)
                except Exception:
                    continue
                if id(value) in seen:
                    continue
                seen.add(id(value))
                found.append((f"{path}.{name}", value))
                next_frontier.append((f"{path}.{name}", value))
        frontier = next_frontier
    return found


@pytest.mark.parametrize("name", sorted(ALLOWED_MODULES))
def test_nothing_reachable_from_a_facade_leads_out(name: str) -> None:
    for path, value in reachable(facade(name), depth=3):
        assert not isinstance(value, LEAKS), f"{path} is a {type(value).__name__}"
        assert value is not builtins.__dict__, f"{path} is the real builtins"
        if isinstance(value, Facade):
            continue
        assert not (isinstance(value, SHARED_MUTABLE) and path.count(".") == 1), \
            f"{path} is shared mutable state"


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
