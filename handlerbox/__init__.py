"""handlerbox: run untrusted event-handler code in pooled, sandboxed worker processes.

    from handlerbox import Engine

    with Engine(workers=2) as engine:
        app = engine.load_app("examples/call_logger")
        result = engine.dispatch(app, payload)

The package maps the repository's folders: `handlerbox.sandbox` (sandbox/: the compile-time
policy and run-time guards), `handlerbox.runtime` (runtime/: processes, the Engine, the CLI)
and `handlerbox.benchmarks` (benchmarks/). Names here are imported lazily: worker processes
import only the sandbox and the worker loop, never pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from handlerbox.runtime.app import App
    from handlerbox.runtime.config import EngineConfig
    from handlerbox.runtime.engine import Engine
    from handlerbox.runtime.errors import (
        AppLoadError,
        ConfigError,
        EngineClosed,
        IsolationError,
        ManifestError,
        PayloadError,
        WorkerError,
    )
    from handlerbox.runtime.payloads import EventPayload
    from handlerbox.runtime.results import InvocationResult
    from handlerbox.sandbox.errors import CompileError, HandlerboxError

__all__ = ["App", "AppLoadError", "CompileError", "ConfigError", "Engine", "EngineClosed",
           "EngineConfig", "EventPayload", "HandlerboxError", "InvocationResult",
           "IsolationError", "ManifestError", "PayloadError", "WorkerError"]

_HOMES = {
    "App": "handlerbox.runtime.app", "Engine": "handlerbox.runtime.engine",
    "EngineConfig": "handlerbox.runtime.config", "EventPayload": "handlerbox.runtime.payloads",
    "InvocationResult": "handlerbox.runtime.results",
    **{name: "handlerbox.runtime.errors" for name in (
        "AppLoadError", "ConfigError", "EngineClosed", "IsolationError", "ManifestError",
        "PayloadError", "WorkerError")},
    "CompileError": "handlerbox.sandbox.errors", "HandlerboxError": "handlerbox.sandbox.errors",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'handlerbox' has no attribute {name!r}")
