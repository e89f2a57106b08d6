"""The one error tree of handlerbox (sandbox and runtime alike); no untrusted input here.

    HandlerboxError                  root; every error carries a stable ``code``
    ├── CompileError                 the handler module breaks the policy (all violations)
    ├── HandlerNotFound              the manifest names a handler the module does not define
    ├── HandlerError                 the handler raised, or returned something that is not JSON
    │   └── ResultError              ... the return value is not plain, bounded JSON
    └── (runtime/errors.py adds the load, payload, engine and worker errors)

Codes are part of the public contract: the CLI prints them and maps them to exit statuses.
"""

from __future__ import annotations

from dataclasses import dataclass


class HandlerboxError(Exception):
    """Raised for every failure handlerbox reports; catch this to catch them all."""

    code = "error"


@dataclass(frozen=True)
class Violation:
    """One compile-time finding: where it is, what is wrong, and how to fix it."""

    filename: str
    line: int
    col: int
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.filename}:{self.line}:{self.col}: {self.message}"
        return f"{text}. {self.hint}" if self.hint else text


class CompileError(HandlerboxError):
    """Raised when a handler module cannot be compiled under the policy; lists every violation."""

    code = "compile_error"

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = tuple(violations)
        super().__init__("\n".join(str(v) for v in self.violations))


class HandlerNotFound(HandlerboxError):
    """Raised when the module defines no handler of the requested name."""

    code = "handler_not_found"
    logs = ""  # what the module printed before the lookup failed
    log_records: tuple[dict[str, str], ...] = ()  # what its loggers wrote (runner.Invocation)


class HandlerError(HandlerboxError):
    """Raised when handler code raises; carries the type, message and handler-only traceback."""

    code = "handler_error"
    logs = ""  # what the handler printed before it failed
    log_records: tuple[dict[str, str], ...] = ()  # what its loggers wrote (runner.Invocation)

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        super().__init__(f"{type_name}: {message}" if message else type_name)


class ResultError(HandlerError):
    """Raised when a handler returns a value that is not plain JSON within the limits (its code
    is its parent's, handler_error)."""

    def __init__(self, message: str) -> None:
        super().__init__("ResultError", message)
