"""`handlerbox serve`: the HTTP front door over the Engine (Starlette on uvicorn); the package
root stays light (the CLI imports it for `add_parser`; Starlette loads only when used).

    from handlerbox.runtime.serve import ServeConfig, create_app
    app = create_app(ServeConfig.parse({"tokens": ["s3cret"]}))     # any ASGI server

Modules, one job each: config (ServeConfig), app (routes), door (lifecycle and invocations),
queue (bounded product-event queue), results_store (results by id and the accepted-event
journal in SQLite), appstore (app versions), archive (safe unpacking of uploads), body
(capped request bodies), auth (bearer tokens), responses (statuses and JSON shapes), metrics
(Prometheus), logs (JSON lines), cli and main (the command and its uvicorn runner).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from handlerbox.runtime.serve.cli import add_parser

if TYPE_CHECKING:
    from handlerbox.runtime.serve.app import create_app
    from handlerbox.runtime.serve.config import ServeConfig
    from handlerbox.runtime.serve.door import FrontDoor

__all__ = ["FrontDoor", "ServeConfig", "add_parser", "create_app"]

_HOMES = {"create_app": "handlerbox.runtime.serve.app",
          "ServeConfig": "handlerbox.runtime.serve.config",
          "FrontDoor": "handlerbox.runtime.serve.door"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'handlerbox.runtime.serve' has no attribute {name!r}")
