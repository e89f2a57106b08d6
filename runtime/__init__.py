"""handlerbox's runtime: apps, pooled sandboxed workers, deadlines, the Engine and the CLI.

Imports are lazy: worker processes import `runtime.worker` and must never load pydantic,
which the Engine and models need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.app import App
    from runtime.engine import Engine
    from runtime.models import EngineConfig, EventPayload, InvocationResult

__all__ = ["App", "Engine", "EngineConfig", "EventPayload", "InvocationResult"]

_HOMES = {"App": "runtime.app", "Engine": "runtime.engine", "EngineConfig": "runtime.models",
          "EventPayload": "runtime.models", "InvocationResult": "runtime.models"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
