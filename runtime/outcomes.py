"""Every way a dispatch ends, as an InvocationResult; no untrusted input (worker replies are
checked before they get here).

One table maps each internal fault (runtime.errors.DispatchFault) to the outcome the caller
sees, so no fault can escape as an exception; a test checks the table covers the tree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from handlerbox.runtime.app import App
from handlerbox.runtime.errors import (
    DeadlineReached,
    DispatchFault,
    NotStarted,
    Overloaded,
    PeerClosed,
    ProtocolError,
)
from handlerbox.runtime.iparams import scrub, scrub_value
from handlerbox.runtime.results import (
    ErrorInfo,
    HostCallRecord,
    InvocationResult,
    LogRecord,
    Outcome,
)
from handlerbox.runtime.spawner import describe_status

TIMEOUT_MESSAGE = "Timeout error while processing the request."
"""The platform's own text for a timeout (its HTTP status is 504)."""

FAULT_OUTCOMES: dict[type[DispatchFault], Outcome] = {
    DeadlineReached: "timeout",
    ProtocolError: "crashed",
    PeerClosed: "crashed",
    NotStarted: "crashed",  # only once every attempt failed: before that it is retried
    Overloaded: "overloaded",
}


@dataclass
class Ending:
    """What every result of one dispatch shares; each method builds one kind of ending."""

    app: App
    event: str
    handler: str | None
    account_id: str | None
    start: float
    host_calls: list[HostCallRecord] | None = None
    secrets: tuple[str, ...] = ()

    def result(self, outcome: Outcome, **fields: Any) -> InvocationResult:
        return InvocationResult.model_construct(
            outcome=outcome, app=self.app.name, event=self.event, handler=self.handler,
            value=fields.pop("value", None), error=fields.pop("error", None),
            logs=fields.pop("logs", ""), log_records=fields.pop("log_records", []),
            duration_ms=(time.monotonic() - self.start) * 1000.0,
            cpu_ms=fields.pop("cpu_ms", None), max_rss_kb=fields.pop("max_rss_kb", None),
            timeout_s=self.app.execution_timeout, worker_pid=fields.pop("worker_pid", None),
            account_id=self.account_id, host_calls=self.host_calls or [])

    def failed(self, outcome: Outcome, kind: str, message: str,
               **fields: Any) -> InvocationResult:
        return self.result(outcome, error=ErrorInfo(type=kind, message=message), **fields)

    def finished(self, reply: dict[str, Any], memory_limit_mb: int,
                 worker_pid: int) -> InvocationResult:
        """A checked result message from the worker; secure iparam values scrubbed."""
        if self.secrets:
            reply = _scrubbed(reply, self.secrets)
        common = {"logs": reply["logs"], "log_records": [
                      LogRecord.model_construct(**r) for r in reply["log_records"]],
                  "cpu_ms": reply["cpu_ms"],
                  "max_rss_kb": reply["max_rss_kb"], "worker_pid": worker_pid}
        status = reply["status"]
        if status == "ok":
            return self.result("ok", value=reply["value"], **common)
        if status == "memory_limit":
            return self.failed("memory_limit", "MemoryError", "the handler went over the "
                               f"memory limit of {memory_limit_mb} MiB", **common)
        return self.result("handler_error", error=ErrorInfo(**reply["error"]), **common)

    def timed_out(self, worker_pid: int) -> InvocationResult:
        elapsed = time.monotonic() - self.start
        return self.failed("timeout", "Timeout", f"{TIMEOUT_MESSAGE} The handler ran past its "
                           f"limit of {self.app.execution_timeout:g} s (elapsed {elapsed:.3f} s).",
                           worker_pid=worker_pid)

    def lost(self, fault: BaseException, status: int | None, worker_pid: int,
             engine_stopped: bool) -> InvocationResult:
        how = describe_status(status) if status is not None else "exit status unknown"
        if engine_stopped:
            message = "the engine was closed without draining while the handler ran"
        elif isinstance(fault, PeerClosed):
            message = f"the worker died while running the handler: {how}"
        else:
            message = f"the worker broke the protocol ({fault}); it was killed"
        return self.failed("crashed", "WorkerCrashed", message, worker_pid=worker_pid)

    def overloaded(self, fault: Overloaded, engine_stopped: bool) -> InvocationResult:
        if engine_stopped:
            return self.failed("crashed", "EngineClosed", "the engine was closed without "
                               "draining before a worker took the dispatch")
        return self.failed(FAULT_OUTCOMES[Overloaded], "Overloaded", str(fault))

    def never_started(self, attempts: int, failure: str) -> InvocationResult:
        return self.failed(FAULT_OUTCOMES[NotStarted], "WorkerCrashed",
                           f"{attempts} attempts to start the handler failed: {failure}")


def _scrubbed(reply: dict[str, Any], secrets: tuple[str, ...]) -> dict[str, Any]:
    """The reply with every secure iparam value replaced in its logs, error and value: a
    handler that prints or returns a secret must not show it to whoever reads results."""
    reply = dict(reply, logs=scrub(reply["logs"], secrets), log_records=[
        {k: scrub(v, secrets) for k, v in r.items()} for r in reply["log_records"]])
    if "value" in reply:
        reply["value"] = scrub_value(reply["value"], secrets)
    if isinstance(reply.get("error"), dict):
        reply["error"] = {k: scrub(v, secrets) for k, v in reply["error"].items()}
    return reply
