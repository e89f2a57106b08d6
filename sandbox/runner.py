"""Runs a compiled handler in this process: exec the module fresh, resolve, call, encode.

Untrusted code runs here. The runtime's worker calls this behind the process boundary and
OS limits; tests call it directly. It never enforces time: the host owns every deadline.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from handlerbox.sandbox.errors import HandlerError, HandlerNotFound
from handlerbox.sandbox.namespace import LogCapture, new_namespace
from handlerbox.sandbox.policy import CompiledHandler, compile_handler
from handlerbox.sandbox.results import to_json_bytes


@dataclass(frozen=True)
class Limits:
    """Per-invocation output caps, in bytes (characters for logs)."""

    max_log_bytes: int = 64 * 1024
    max_result_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class Invocation:
    """What one successful call produced: the result as JSON bytes, and the captured logs."""

    result_json: bytes
    logs: str


def resolve_handler(namespace: dict[str, Any], name: str) -> Any:
    """`exports[name]` when the module defines an `exports` dict, else the function `name`."""
    exports = namespace.get("exports")
    if exports is not None and type(exports) is not dict:
        # Exactly dict: a subclass could lie in __contains__ or __getitem__.
        raise HandlerNotFound(f"handler {name!r} not found: exports is a "
                              f"{type(exports).__name__}, it must be a plain dict")
    if exports is not None:
        if name not in exports:
            raise HandlerNotFound(f"handler {name!r} not found: exports has no key {name!r}")
        found = exports[name]
    elif name in namespace and not name.startswith("_"):
        found = namespace[name]
    else:
        raise HandlerNotFound(f"handler {name!r} not found: the module defines no function "
                              f"{name!r} and no exports dict")
    if not callable(found):
        raise HandlerNotFound(f"handler {name!r} is a {type(found).__name__}, not a function")
    return found


def invoke(compiled: CompiledHandler, name: str, payload: Any,
           limits: Limits = Limits()) -> Invocation:
    """Exec the module in a fresh namespace, call handler `name` on `payload`, and encode
    the result. Anything the handler raises is a HandlerError, which carries the logs too."""
    logs = LogCapture(limits.max_log_bytes)
    namespace = new_namespace(logs, module_name=compiled.filename.rsplit(".", 1)[0])
    try:
        try:
            exec(compiled.code, namespace)
            handler = resolve_handler(namespace, name)
            value = handler(payload)
        except HandlerNotFound:
            raise
        except BaseException as exc:  # SystemExit and the like are handler errors too
            raise handler_error(exc, compiled) from None
        result = to_json_bytes(value, limits.max_result_bytes)
    except (HandlerError, HandlerNotFound) as exc:
        exc.logs = logs.text()
        raise
    finally:
        # A module's functions point back at its namespace: clearing it breaks those cycles,
        # so refcounting frees the invocation now instead of a GC pass in a later one.
        namespace["__builtins__"].clear()
        namespace.clear()
    return Invocation(result_json=result, logs=logs.text())


def run_source(source: str, name: str, payload: Any, limits: Limits = Limits(),
               filename: str = "server.py") -> tuple[Any, str]:
    """Compile and invoke in one step, returning (value, logs): for tests and tools."""
    import json

    outcome = invoke(compile_handler(source, filename), name, payload, limits)
    return json.loads(outcome.result_json), outcome.logs


MAX_ERROR_TEXT = 8192
"""Characters kept of an error's message and of its traceback (deep recursion makes long
ones; the host refuses anything much longer)."""


def handler_error(exc: BaseException, compiled: CompiledHandler) -> HandlerError:
    """A HandlerError for `exc` with a traceback trimmed to the handler's own frames."""
    if isinstance(exc, HandlerError):
        return exc
    lines = compiled.source.splitlines()
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename == compiled.filename]
    text = "".join(
        f'  File "{f.filename}", line {f.lineno}, in {f.name}\n'
        + (f"    {lines[f.lineno - 1].strip()}\n" if f.lineno and f.lineno <= len(lines) else "")
        for f in frames)
    try:
        message = str(exc)
    except BaseException:  # a hostile __str__ must not escape
        message = "<unprintable exception>"
    return HandlerError(type(exc).__name__, _clip(message, MAX_ERROR_TEXT),
                        _clip(text, MAX_ERROR_TEXT, keep_tail=True))


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
