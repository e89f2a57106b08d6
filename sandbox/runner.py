"""Runs a compiled handler in this process: exec the module fresh, resolve, call, encode.

Untrusted code runs here. The runtime's worker calls this behind the process boundary and
OS limits; tests call it directly. It never enforces time: the host owns every deadline.
The error and result paths around the handler are trusted code: they read handler objects
by exact type only (never `str`, `repr` or `==` on them), clip every text they report, and
turn any failure of their own into a handler error.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from handlerbox.sandbox.errors import HandlerError, HandlerNotFound, ResultError
from handlerbox.sandbox.logs import MAX_RECORDS, LogRecords
from handlerbox.sandbox.marks import is_handler_class
from handlerbox.sandbox.modules import reset_shared_state
from handlerbox.sandbox.namespace import LogCapture, new_namespace
from handlerbox.sandbox.policy import CompiledHandler, collector_paused, compile_handler
from handlerbox.sandbox.results import to_json_bytes


@dataclass(frozen=True)
class Limits:
    """Per-invocation output caps, in bytes (characters for logs). Log records (logging) are
    capped at max_log_records and, together, at max_log_bytes of UTF-8."""

    max_log_bytes: int = 64 * 1024
    max_result_bytes: int = 1024 * 1024
    max_log_records: int = MAX_RECORDS


@dataclass(frozen=True)
class Invocation:
    """What one successful call produced: the result as JSON bytes, the captured logs, and
    the records its loggers wrote: [{"level": "INFO", "logger": "app", "message": "..."}],
    exact strs, in order, the last one a truncation note if any were dropped (logs.py)."""

    result_json: bytes
    logs: str
    log_records: tuple[dict[str, str], ...] = ()


def resolve_handler(namespace: dict[str, Any], name: str) -> Any:
    """`exports[name]` when the module defines an `exports` dict, else the function `name`."""
    exports = namespace.get("exports")
    if exports is not None and type(exports) is not dict:
        # Exactly dict: a subclass could lie in __contains__ or __getitem__.
        raise HandlerNotFound(f"handler {name!r} not found: exports is a "
                              f"{_type_name(exports)}, it must be a plain dict")
    if exports is not None:
        # Keys of exactly str only: a str subclass key's __eq__ and __hash__ would run here.
        odd = next((k for k in exports if type(k) is not str), None)
        if odd is not None:
            raise HandlerNotFound(f"handler {name!r} not found: exports has a key of type "
                                  f"{_type_name(odd)}, its keys must be plain strings")
        if name not in exports:
            raise HandlerNotFound(f"handler {name!r} not found: exports has no key {name!r}")
        found = exports[name]
    elif name in namespace and not name.startswith("_"):
        found = namespace[name]
    else:
        raise HandlerNotFound(f"handler {name!r} not found: the module defines no function "
                              f"{name!r} and no exports dict")
    if not callable(found):
        raise HandlerNotFound(f"handler {name!r} is a {_type_name(found)}, not a function")
    return found


class Prepared:
    """One invocation's module, run ahead of its call in a fresh namespace; used once."""

    __slots__ = ("compiled", "error", "limits", "logs", "namespace", "records")

    def __init__(self, compiled: CompiledHandler, limits: Limits, logs: LogCapture,
                 records: LogRecords, namespace: dict[str, Any],
                 error: HandlerError | None) -> None:
        self.compiled, self.limits, self.logs, self.records = compiled, limits, logs, records
        self.namespace, self.error = namespace, error

    def call(self, name: str, payload: Any) -> Invocation:
        """Resolve handler `name`, call it on `payload` and encode the result, as `invoke`
        does; an error the module body raised is raised here. Clears the namespace."""
        logs, records = self.logs, self.records
        try:
            try:
                if self.error is not None:
                    raise self.error
                handler = resolve_handler(self.namespace, name)
                value = handler(payload)
            except HandlerNotFound:
                raise
            except BaseException as exc:  # SystemExit and the like are handler errors too
                raise handler_error(exc, self.compiled) from None
            result = _encode(value, self.limits.max_result_bytes)
        except (HandlerError, HandlerNotFound) as exc:
            exc.logs = logs.text()
            exc.log_records = records.result()
            raise
        finally:
            self.discard()
        return Invocation(result_json=result, logs=logs.text(), log_records=records.result())

    def discard(self) -> None:
        """Drop the namespace unused (it is never used again)."""
        namespace = self.namespace
        if namespace:
            # A module's functions point back at its namespace: clearing it breaks those
            # cycles, so refcounting frees the invocation now instead of a GC pass later.
            namespace["__builtins__"].clear()
            namespace.clear()


def prepare(compiled: CompiledHandler, limits: Limits = Limits()) -> Prepared:
    """The first half of an invocation, which a worker may run ahead of its request: empty
    the process-wide caches an earlier invocation may have filled (what one invocation does
    must not be observable by the next), then exec the module in a fresh namespace. An error
    the module body raises is kept and raised by `Prepared.call`."""
    reset_shared_state()
    logs = LogCapture(limits.max_log_bytes)
    records = LogRecords(logs.write, limits.max_log_records, limits.max_log_bytes,
                         describe=lambda exc: describe_exception(exc, compiled))
    # `__name__` is the module's dotted name (server/server.py is server.server), as Python
    # would name it: what getLogger(__name__) and a class's __module__ show.
    module_name = compiled.filename.rsplit(".", 1)[0].replace("/", ".")
    namespace = new_namespace(logs, module_name, records)
    error = None
    try:
        exec(compiled.code, namespace)
    except BaseException as exc:  # SystemExit and the like are handler errors too
        error = handler_error(exc, compiled)
    return Prepared(compiled, limits, logs, records, namespace, error)


def invoke(compiled: CompiledHandler, name: str, payload: Any,
           limits: Limits = Limits()) -> Invocation:
    """Exec the module in a fresh namespace, call handler `name` on `payload`, and encode
    the result (`prepare`, then `Prepared.call`). Anything the handler raises is a
    HandlerError, which carries the logs too."""
    return prepare(compiled, limits).call(name, payload)


def run_source(source: str, name: str, payload: Any, limits: Limits = Limits(),
               filename: str = "server.py") -> tuple[Any, str]:
    """Compile and invoke in one step, returning (value, logs): for tests and tools."""
    import json

    outcome = invoke(compile_handler(source, filename), name, payload, limits)
    return json.loads(outcome.result_json), outcome.logs


def _encode(value: Any, max_bytes: int) -> bytes:
    """The result as JSON, or a ResultError: the checker raises nothing else by design, and
    anything else it might raise (RecursionError deep in a key) becomes one too. MemoryError
    is left alone: the worker reports it as the memory limit."""
    try:
        return to_json_bytes(value, max_bytes)
    except (ResultError, MemoryError):
        raise
    except Exception as exc:
        raise ResultError(f"value: could not be checked as JSON ({type(exc).__name__})") \
            from None


MAX_ERROR_TEXT = 8192
"""Characters kept of an error's message and of its traceback (deep recursion makes long
ones; the host refuses anything much longer)."""

MAX_NAME_TEXT = 200
"""Characters kept of an exception's type name, and of each function name and source line
in a traceback (a one-line module of a megabyte, recursing 1,000 deep, is a gigabyte)."""

_PLAIN_ARGS = (str, int, float, bool, bytes, type(None))
_ARGS = BaseException.__dict__["args"]
"""BaseException's own `args` descriptor: a handler class cannot put anything in its way."""


def handler_error(exc: BaseException, compiled: CompiledHandler) -> HandlerError:
    """A HandlerError for `exc` with a traceback trimmed to the handler's own frames; never
    raises (a failure here would lose the handler's error and crash the worker)."""
    if isinstance(exc, HandlerError):
        return exc
    type_name = _type_name(exc)
    try:
        return HandlerError(type_name, _clip(error_message(exc), MAX_ERROR_TEXT),
                            _clip(_traceback(exc, compiled), MAX_ERROR_TEXT, keep_tail=True))
    except Exception:
        return HandlerError(type_name, "(the error could not be described)")


def error_message(exc: BaseException) -> str:
    """`str(exc)`, without running handler code.

    Handler classes may define `__str__` and `__repr__`, and their `args` may hold objects
    that do (`ValueError(obj)` prints `str(obj)`): so the message is built from `args` only
    when every argument is a plain str, int, float, bool, bytes or None, and is otherwise a
    note naming the argument's type. For a builtin or stdlib exception class `str(exc)` itself
    is used (KeyError quotes its key, UnicodeDecodeError explains itself): their `__str__` is
    not handler code and the handler cannot change their fields (guarded_write). For a
    handler's own class the message is what BaseException.__str__ would make of `args`: its
    own `__str__`, if it defines one, is never called."""
    args = _ARGS.__get__(exc)
    odd = next((a for a in args if type(a) not in _PLAIN_ARGS), _PLAIN_ARGS)
    if odd is not _PLAIN_ARGS:
        return f"(message not shown: its arguments include a {_type_name(odd)})"
    try:
        if not is_handler_class(type(exc)):
            return str(exc)
        if len(args) == 1:
            return str(args[0])
        return repr(args) if args else ""
    except ValueError:  # an int beyond the int-to-str digit limit
        return "(message not shown: an argument is too long to print)"


REPEATS_SHOWN = 3
"""A frame repeated more often in a row (runaway recursion) is shown this many times, then
"[Previous line repeated N more times]", as CPython prints it."""


def _traceback(exc: BaseException, compiled: CompiledHandler) -> str:
    """The handler's own frames, innermost last; source lines come from the compiled source
    (no file is read: lookup_lines=False keeps linecache out of it), and no frame's locals
    are looked at (capture_locals stays off: repr() of a local would run handler code)."""
    lines = compiled.source.splitlines()
    frames = traceback.StackSummary.extract(traceback.walk_tb(exc.__traceback__),
                                            lookup_lines=False)
    parts = []
    last: tuple[int | None, str] | None = None
    count = 0
    for f in frames:
        if f.filename != compiled.filename:
            continue
        if (f.lineno, f.name) != last:
            parts.append(_repeated(count))
            last, count = (f.lineno, f.name), 0
        count += 1
        if count > REPEATS_SHOWN:
            continue
        parts.append(f'  File "{f.filename}", line {f.lineno}, in '
                     f"{_clip(f.name, MAX_NAME_TEXT)}\n")
        if f.lineno and f.lineno <= len(lines):
            parts.append(f"    {_clip(lines[f.lineno - 1].strip(), MAX_NAME_TEXT)}\n")
    parts.append(_repeated(count))
    return "".join(parts)


def _repeated(count: int) -> str:
    more = count - REPEATS_SHOWN
    if more <= 0:
        return ""
    return f"  [Previous line repeated {more} more time{'s' if more > 1 else ''}]\n"


def describe_exception(exc: BaseException, compiled: CompiledHandler) -> str:
    """A handler's exception as logging.exception() shows it: its frames, type and message,
    built the way handler_error builds them (never raises)."""
    try:
        return (f"Traceback (most recent call last):\n{_traceback(exc, compiled)}"
                f"{_type_name(exc)}: {_clip(error_message(exc), MAX_ERROR_TEXT)}")
    except Exception:
        return f"{_type_name(exc)}: (the error could not be described)"


def _type_name(value: Any) -> str:
    """The name of `value`'s class, clipped: a handler can name a class 70,000 characters."""
    return _clip(type(value).__name__, MAX_NAME_TEXT)


def _clip(text: str, limit: int, keep_tail: bool = False) -> str:
    """`text` within `limit` characters, saying how much was left out (a traceback keeps its
    innermost frames, where the error is)."""
    if len(text) <= limit:
        return text
    left_out = len(text) - limit
    if keep_tail:
        head = limit // 4
        return (text[:head] + f"  ... [{left_out} characters of frames left out] ...\n"
                + text[-(limit - head):])
    return text[:limit] + f"... [{left_out} more characters]"


def declared_handlers(compiled: CompiledHandler) -> frozenset[str] | None:
    """The handler names a module declares, read from its syntax without running it:
    the keys of a top-level `exports = {...}` literal, else its top-level functions.
    None when `exports` is built some other way and only running the module can tell."""
    import ast

    with collector_paused():
        tree = ast.parse(compiled.source, compiled.filename)
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    exports: frozenset[str] | None = None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        if not any(isinstance(t, ast.Name) and t.id == "exports" for t in targets):
            continue
        value = getattr(node, "value", None)
        if isinstance(node, ast.Assign) and isinstance(value, ast.Dict) and all(
                isinstance(k, ast.Constant) and isinstance(k.value, str) for k in value.keys):
            exports = frozenset(k.value for k in value.keys)  # type: ignore[union-attr]
        else:
            return None
    return exports if exports is not None else frozenset(functions)
