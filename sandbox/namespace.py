"""Builds the globals of one invocation: frozen builtins, guards, imports, print and logging.

No untrusted input is parsed here, but everything built here is handed to untrusted code:
each invocation gets a fresh globals dict and a fresh `__builtins__` dict (if `__builtins__`
were missing, exec would insert the real one), and its own `logging` module (logs.py).
"""

from __future__ import annotations

import builtins
import importlib
from types import MappingProxyType
from typing import Any

from handlerbox.sandbox.guards import (
    GUARDS,
    guarded_delattr,
    guarded_getattr,
    guarded_hasattr,
    guarded_setattr,
    guarded_type,
)
from handlerbox.sandbox.logs import LogRecords
from handlerbox.sandbox.marks import OWNER, OWNER_MARK
from handlerbox.sandbox.modules import ALLOWED_MODULES, facade, logging_facade

_SAFE_BUILTIN_NAMES = (
    # values and containers
    "None", "True", "False", "Ellipsis", "NotImplemented", "bool", "int", "float", "complex",
    "str", "bytes", "bytearray", "list", "tuple", "dict", "set", "frozenset", "slice",
    "range", "object",
    # functions over values
    "abs", "all", "any", "ascii", "bin", "callable", "chr", "divmod", "enumerate", "filter",
    "format", "hash", "hex", "id", "isinstance", "issubclass", "iter", "len", "map", "max",
    "min", "next", "oct", "ord", "pow", "repr", "reversed", "round", "sorted", "sum", "zip",
    # class helpers; `__build_class__` is what a class statement calls
    "property", "staticmethod", "classmethod", "super", "__build_class__",
    # exceptions handlers raise and catch
    "ArithmeticError", "AssertionError", "AttributeError", "BaseException", "Exception",
    "IndexError", "KeyError", "LookupError", "NameError", "NotImplementedError",
    "OverflowError", "RecursionError", "RuntimeError", "StopIteration", "TypeError",
    "UnicodeDecodeError", "UnicodeEncodeError", "UnicodeError", "ValueError",
    "ZeroDivisionError", "MemoryError",
)
"""Left out on purpose: open, exec, eval, compile, globals, locals, vars, dir, help, input,
breakpoint, memoryview (raw buffers), __import__ (replaced), and the real getattr, setattr,
delattr, hasattr and type (replaced by guarded versions)."""

# C code imports through the current frame's `__import__` (datetime.strftime imports time,
# datetime.strptime imports _strptime). It uses sys.modules, not the return value, so these
# are imported for real and the handler never receives them.
_C_INTERNAL_IMPORTS = frozenset({"time", "_strptime"})


def guarded_import(name: str, globals: Any = None, locals: Any = None,
                   fromlist: Any = (), level: int = 0) -> Any:
    """`__import__` for handlers: facades of allowed modules, matched on the full name."""
    if level != 0:
        raise ImportError("relative imports are not allowed in handlers")
    if name in ALLOWED_MODULES:
        for attr in fromlist or ():
            if attr not in ALLOWED_MODULES[name]:
                raise ImportError(f"{name}.{attr} is not available in handlers")
        if name == "logging":
            return _invocation_logging(globals)
        if fromlist or "." not in name:
            return facade(name)
        return facade(name.split(".")[0])
    if name in _C_INTERNAL_IMPORTS and isinstance(fromlist, list):
        importlib.import_module(name)
        return None
    raise ImportError(f"import of {name} is not allowed in handlers")


_LOG_RECORDS = "_handlerbox_log_records"
_LOGGING = "_handlerbox_logging"
"""Globals of an invocation (handlers cannot name `_` globals): its LogRecords, and the
`logging` facade built from them on the first import."""


def _invocation_logging(globals: Any) -> Any:
    """The importing invocation's own `logging` (an import statement passes its module's
    globals); the shared one, which keeps nothing, outside an invocation."""
    if type(globals) is not dict or _LOG_RECORDS not in globals:
        return facade("logging")
    if _LOGGING not in globals:
        globals[_LOGGING] = logging_facade(globals[_LOG_RECORDS])
    return globals[_LOGGING]


class LogCapture:
    """Collects `print` output for one invocation, up to a byte cap."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def write(self, text: str) -> None:
        """Keep `text` while the UTF-8 size of everything kept stays within the cap."""
        encoded = None if text.isascii() else text.encode("utf-8", "surrogatepass")
        size = len(text) if encoded is None else len(encoded)
        room = self.max_bytes - self.size
        if size > room:
            if room <= 0:
                self.dropped += size
                return
            kept = text[:room] if encoded is None else encoded[:room].decode("utf-8", "ignore")
            kept_size = room if encoded is None else len(kept.encode("utf-8", "surrogatepass"))
            self.dropped += size - kept_size
            text, size = kept, kept_size
        self.parts.append(text)
        self.size += size

    def text(self) -> str:
        joined = "".join(self.parts)
        if self.dropped:
            joined += f"\n[logs truncated: {self.dropped} more bytes dropped]\n"
        return joined

    # RestrictedPython turns `print(...)` into `_print._call_print(...)` after
    # `_print = _print_(_getattr_)`, and the name `printed` into `_print()`.
    def __call__(self) -> str:
        return "".join(self.parts)

    def _call_print(self, *objects: Any, sep: str | None = " ", end: str | None = "\n",
                    file: Any = None, flush: bool = False) -> None:
        if file is not None:
            raise TypeError("print(file=...) is not available in handlers: "
                            "output is captured as the invocation's logs")
        sep = " " if sep is None else sep
        end = "\n" if end is None else end
        if type(sep) is not str or type(end) is not str:
            raise TypeError("print() sep and end must be strings")
        self.write(sep.join(map(str, objects)) + end)


def _builtins_template() -> MappingProxyType[str, Any]:
    table = {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES}
    table.update(
        __import__=guarded_import,
        getattr=guarded_getattr,
        hasattr=guarded_hasattr,
        setattr=guarded_setattr,
        delattr=guarded_delattr,
        type=guarded_type,
    )
    return MappingProxyType(table)


BUILTINS = _builtins_template()
"""The frozen template; each invocation gets its own copy."""


def new_namespace(logs: LogCapture, module_name: str = "handler",
                  records: LogRecords | None = None) -> dict[str, Any]:
    """Fresh globals for one invocation: copied builtins, guards, print into `logs`, logging
    into `records`, and the mark that makes its functions the handler's own (marks.py)."""
    namespace = dict(GUARDS)
    namespace["__builtins__"] = dict(BUILTINS)
    namespace["__name__"] = module_name
    namespace["_print_"] = lambda _getattr_=None: logs
    namespace[OWNER_MARK] = OWNER
    namespace[_LOG_RECORDS] = records if records is not None else LogRecords(logs.write)
    return namespace
