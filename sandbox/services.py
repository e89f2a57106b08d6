"""The `services` module handlers import: the platform's services, performed by the host.

    from services import db, request, schedule, webhook, ServiceError

    db.set("ticket:42", {"posted": True}, ttl=86400)
    db.get("ticket:42")                                   # ServiceError(404) when missing
    reply = request.invoke("postToChat", context={"room": "ops"}, body={"text": "hi"})
    schedule.create("remind", {"ticket": 42}, schedule_at="2026-12-01T09:00:00Z")
    webhook.generate_target_url()                         # {"url": ...}

Each function sends one call frame to the host and blocks for its answer (the host owns the
deadline; time spent here counts). No untrusted input is parsed here, but everything here is
handed to untrusted code: the functions close over nothing a handler can reach, and the
transport is set by the worker (`connect`), never by handler code. Outside a worker (the
in-process runner) every call raises ServiceError(503).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Transport = Callable[[str, str, dict[str, Any]], Any]


class ServiceError(Exception):
    """Raised in a handler when the host could not perform a service call: `status` (HTTP-like:
    400 bad arguments, 403 refused, 404 not found, 409 conflict, 413 too large, 429 over a
    limit, 502/504 upstream) and `message` say what and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class MethodError(Exception):
    """Raise in a server method (SMI) to answer the caller with an error: `status` (400-599)
    and `message`, e.g. `raise MethodError(404, "no such ticket")`."""

    def __init__(self, status: int, message: str) -> None:
        if type(status) is not int or not 400 <= status <= 599:
            raise ValueError("MethodError status must be an int from 400 to 599")
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _unavailable(service: str, operation: str, args: dict[str, Any]) -> Any:
    raise ServiceError(503, "services are only available to handlers running in a worker")


_transport: list[Transport] = [_unavailable]


def connect(transport: Transport) -> None:
    """Called by the worker once it is bound (trusted code only)."""
    _transport[0] = transport


SIGNATURES: dict[str, dict[str, tuple[str, ...]]] = {
    "db": {
        "set": ("key", "value", "ttl", "if_exists", "if_not_exists"),
        "get": ("key",),
        "delete": ("key",),
        "update": ("key", "action", "attributes"),
    },
    "request": {"invoke": ("name", "context", "body")},
    "schedule": {
        "create": ("name", "data", "schedule_at", "repeat"),
        "fetch": ("name",),
        "update": ("name", "data", "schedule_at", "repeat"),
        "delete": ("name",),
        "pause": ("name",),
        "resume": ("name",),
    },
    "webhook": {"generate_target_url": (), "revoke": ("url",)},
}
"""Each service's operations and their parameters, positional in this order or by keyword.
Optional arguments left as None are not sent, so the service's defaults apply; a required
one (REQUIRED) is sent as given, so `db.set(key, None)` stores null."""

REQUIRED: dict[tuple[str, str], int] = {
    ("db", "set"): 2, ("db", "get"): 1, ("db", "delete"): 1, ("db", "update"): 3,
    ("request", "invoke"): 1, ("schedule", "create"): 1, ("schedule", "fetch"): 1,
    ("schedule", "update"): 1, ("schedule", "delete"): 1, ("schedule", "pause"): 1,
    ("schedule", "resume"): 1, ("webhook", "revoke"): 1,
}
"""How many leading parameters of each operation are required."""


def _operation(service: str, operation: str, params: tuple[str, ...]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if len(args) > len(params):
            raise TypeError(f"{service}.{operation}() takes at most {len(params)} arguments "
                            f"({', '.join(params) or 'none'})")
        sent = dict(zip(params, args, strict=False))
        for name, value in kwargs.items():
            if type(name) is not str:  # `**{key: v}` with a str subclass: its __eq__ is code
                raise TypeError(f"{service}.{operation}() keywords must be plain strings")
            if name in sent:
                raise TypeError(f"{service}.{operation}() got {name} twice")
            sent[name] = value
        required = params[:REQUIRED.get((service, operation), 0)]
        return _transport[0](service, operation,
                             {k: v for k, v in sent.items() if v is not None or k in required})

    call.__name__ = call.__qualname__ = operation
    call.__doc__ = f"{service}.{operation}({', '.join(params)})"
    return call


def exports() -> dict[str, dict[str, Any]]:
    """The names of each service's facade (`services.db` ...), and the module's own."""
    tables: dict[str, dict[str, Any]] = {
        f"services.{service}": {op: _operation(service, op, params)
                                for op, params in operations.items()}
        for service, operations in SIGNATURES.items()}
    tables["services"] = {"ServiceError": ServiceError, "MethodError": MethodError}
    return tables


def allowed_modules() -> dict[str, frozenset[str]]:
    """The import allow-list entries for `services` and its service facades."""
    table = {f"services.{service}": frozenset(ops) for service, ops in SIGNATURES.items()}
    table["services"] = frozenset({*SIGNATURES, "ServiceError", "MethodError"})
    return table
