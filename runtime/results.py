"""InvocationResult: the one result of every dispatch, and what it is made of; no untrusted input
(the engine builds results from worker replies it has already checked)."""

from __future__ import annotations

from typing import Any, Literal, Self, get_args

from pydantic import Field, model_validator

from handlerbox.runtime.validation import EdgeModel

Outcome = Literal["ok", "handler_error", "timeout", "memory_limit", "crashed",
                  "invalid_payload", "not_subscribed", "overloaded"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)


class ErrorInfo(EdgeModel):
    """What went wrong: the exception type, its message, the handler-only traceback."""

    type: str
    message: str
    traceback: str = ""


class HostCallRecord(EdgeModel):
    """One service call a handler made: which, how long it took, and its status (200 when
    it succeeded, else the status of the error the handler received)."""

    service: str
    operation: str
    duration_ms: float = Field(ge=0)
    status: int


class LogRecord(EdgeModel):
    """One record a handler logged through `logging` (its text is in `logs` too)."""

    level: str
    logger: str
    message: str


class InvocationResult(EdgeModel):
    """The one result of a dispatch. `value` is the handler's JSON value on `ok` and None
    otherwise; `timeout_s` is the limit that was in force."""

    outcome: Outcome
    app: str
    event: str
    handler: str | None = None
    value: Any = None
    error: ErrorInfo | None = None
    logs: str = ""
    log_records: list[LogRecord] = Field(default_factory=list)
    duration_ms: float = Field(default=0.0, ge=0)
    cpu_ms: float | None = Field(default=None, ge=0)
    max_rss_kb: int | None = Field(default=None, ge=0)
    timeout_s: float | None = Field(default=None, gt=0)
    worker_pid: int | None = None
    account_id: str | None = None
    host_calls: list[HostCallRecord] = Field(default_factory=list)
    status: int | None = None
    """For a server method (SMI): the response's HTTP-like status (see `with_status`)."""

    @model_validator(mode="after")
    def _one_of_value_or_error(self) -> Self:
        if self.outcome == "ok" and self.error is not None:
            raise ValueError("an ok result carries no error")
        if self.outcome != "ok" and self.value is not None:
            raise ValueError(f"a {self.outcome} result carries no value")
        return self

    @property
    def ok(self) -> bool:
        """True when the handler returned a value."""
        return self.outcome == "ok"


STATUS_BY_OUTCOME: dict[str, int] = {
    "ok": 200, "invalid_payload": 400, "not_subscribed": 404, "timeout": 504,
    "overloaded": 503, "handler_error": 500, "memory_limit": 500, "crashed": 500,
}
"""The status of a server method's response for each outcome; a handler that raises
`MethodError(status, message)` chooses its own."""


def with_status(result: InvocationResult) -> InvocationResult:
    """`result` with its SMI `status`: a MethodError's own status and message, else by outcome."""
    status = STATUS_BY_OUTCOME[result.outcome]
    error = result.error
    if error is not None and error.type == "MethodError":
        code, _, message = error.message.partition(": ")
        if code.isdigit() and 400 <= int(code) <= 599:
            status = int(code)
            error = ErrorInfo.model_construct(type="MethodError", message=message,
                                              traceback=error.traceback)
    return result.model_copy(update={"status": status, "error": error})
