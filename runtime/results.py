"""InvocationResult: the one result of every dispatch, and what it is made of; no untrusted input
(the engine builds results from worker replies it has already checked)."""

from __future__ import annotations

from typing import Any, Literal, Self, get_args

from handlerbox.runtime.validation import EdgeModel
from pydantic import Field, model_validator

Outcome = Literal["ok", "handler_error", "timeout", "memory_limit", "crashed",
                  "invalid_payload", "not_subscribed", "overloaded"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)


class ErrorInfo(EdgeModel):
    """What went wrong: the exception type, its message, the handler-only traceback."""

    type: str
    message: str
    traceback: str = ""


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
    duration_ms: float = Field(default=0.0, ge=0)
    cpu_ms: float | None = Field(default=None, ge=0)
    max_rss_kb: int | None = Field(default=None, ge=0)
    timeout_s: float | None = Field(default=None, gt=0)
    worker_pid: int | None = None

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
