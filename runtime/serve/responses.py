"""JSON responses of the front door: the error shape, the engine errors' statuses, and what an
invocation's outcome answers; no untrusted input (it renders values the engine checked).

Every error is `{"error": {"code", "message", "problems"?}}` with a stable code; every
invocation is the same envelope whatever its kind (see `invocation_body`).

    outcome            status  notes
    ok                 200
    invalid_payload    400     (the front door answers 422 before dispatch for a bad event)
    not_subscribed     404
    timeout            504     message: "Timeout error while processing the request."
    overloaded         503     Retry-After
    handler_error      500     a server method's MethodError chooses its own status
    memory_limit       500
    crashed            500
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.responses import Response

from handlerbox.runtime.errors import (
    AppLoadError,
    ConfigError,
    EngineClosed,
    InstallationError,
    PayloadError,
)
from handlerbox.runtime.outcomes import TIMEOUT_MESSAGE
from handlerbox.runtime.results import STATUS_BY_OUTCOME, InvocationResult
from handlerbox.sandbox.errors import CompileError, HandlerboxError

RETRY_STATUSES = frozenset({429, 503})


class JSONResponse(Response):
    """application/json rendered by orjson (handler values are plain JSON already)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """Raised by a route to answer with a JSON error; `code` is stable, `problems` lists each
    finding (one line each) when there are several."""

    def __init__(self, status: int, code: str, message: str,
                 problems: Sequence[str] = (), headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.problems = list(problems)
        self.headers = dict(headers or {})


def error_response(status: int, code: str, message: str, problems: Sequence[str] = (),
                   headers: Mapping[str, str] | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if problems and list(problems) != [message]:
        error["problems"] = list(problems)
    return JSONResponse({"error": error}, status_code=status, headers=dict(headers or {}))


def api_error_response(exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.problems, exc.headers)


def from_engine_error(exc: HandlerboxError) -> ApiError:
    """The one place an engine error becomes an HTTP status."""
    problems: list[str] = list(getattr(exc, "problems", ()) or ())
    if isinstance(exc, CompileError):
        problems = [str(v) for v in exc.violations]
    if isinstance(exc, InstallationError):
        status = exc.status
    elif isinstance(exc, (PayloadError, AppLoadError, CompileError, ConfigError)):
        status = 422  # IparamsError, a bad manifest, a module the policy refuses
    elif isinstance(exc, EngineClosed):
        status = 503
    else:
        status = 500
    return ApiError(status, exc.code, str(exc).split("\n", 1)[0] if problems else str(exc),
                    problems)


def outcome_status(result: InvocationResult) -> int:
    """The HTTP status of an invocation: a server method's own `status`, else by outcome."""
    if result.status is not None:
        return result.status
    return STATUS_BY_OUTCOME[result.outcome]


def invocation_body(invocation_id: str, kind: str, result: InvocationResult,
                    status: int, *, public: bool = False) -> dict[str, Any]:
    """The answer to a caller that waited: ids, outcome, status, the handler's value or
    error (type and message; the traceback and logs are in GET /invocations/{id}).
    `public` (webhook senders, who are not the platform) leaves the error's text out."""
    body: dict[str, Any] = {"id": invocation_id, "kind": kind, "app": result.app,
                            "event": result.event, "account_id": result.account_id,
                            "outcome": result.outcome, "status": status, "value": result.value,
                            "duration_ms": round(result.duration_ms, 3)}
    if result.outcome == "ok":
        return body
    if result.outcome == "timeout":
        body["message"] = TIMEOUT_MESSAGE
    elif public:
        body["message"] = _PUBLIC_MESSAGES.get(result.outcome, "The handler failed.")
    elif result.error is not None:
        body["message"] = result.error.message
    if not public and result.error is not None:
        body["error"] = {"type": result.error.type, "message": result.error.message}
    return body


_PUBLIC_MESSAGES = {
    "overloaded": "The server is busy; try again later.",
    "not_subscribed": "The app does not take external events.",
    "invalid_payload": "The request was refused.",
}


def retry_headers(status: int, retry_after: int) -> dict[str, str]:
    return {"Retry-After": str(retry_after)} if status in RETRY_STATUSES else {}
