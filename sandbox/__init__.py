"""handlerbox's sandbox: compile-time policy and run-time guards for untrusted handler code.

No processes and no pydantic here; `runtime` runs this inside every worker.
"""

from handlerbox.sandbox.errors import (
    CompileError,
    HandlerboxError,
    HandlerError,
    HandlerNotFound,
    ResultError,
    Violation,
)
from handlerbox.sandbox.modules import ALLOWED_MODULES
from handlerbox.sandbox.policy import CompiledHandler, compile_handler
from handlerbox.sandbox.results import to_json_bytes
from handlerbox.sandbox.runner import Invocation, Limits, invoke, run_source

__all__ = [
    "ALLOWED_MODULES",
    "CompileError",
    "CompiledHandler",
    "HandlerError",
    "HandlerNotFound",
    "HandlerboxError",
    "Invocation",
    "Limits",
    "ResultError",
    "Violation",
    "compile_handler",
    "invoke",
    "run_source",
    "to_json_bytes",
]
