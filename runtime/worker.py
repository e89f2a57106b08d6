"""THE TRUST BOUNDARY: the loop a worker process runs; untrusted handler code runs under it.

Stdlib, orjson, sandbox and protocol only: no pydantic, no pickle, no threads. The worker
reads requests from the host on one pipe and answers on another, one JSON frame each
(runtime.protocol lists every message). During an invocation a handler's service call
(sandbox.services) becomes a call frame on the reply pipe, and the worker blocks on the
request pipe for the host's answer: the host owns the deadline throughout.

The code object comes from the host, which compiled it under the policy (marshal in the
trusted direction only). Anything the worker sends back is parsed by the host as capped JSON.
Test-only behaviour (fault injection, probes) lives in runtime.faults, as a subclass.
"""

from __future__ import annotations

import base64
import marshal
import os
import resource
from typing import Any

import orjson

from handlerbox.runtime import protocol
from handlerbox.sandbox import services
from handlerbox.sandbox.errors import HandlerError, HandlerNotFound, ResultError
from handlerbox.sandbox.policy import CompiledHandler
from handlerbox.sandbox.results import to_json_bytes
from handlerbox.sandbox.runner import Limits, invoke

MAX_REQUEST_BYTES = 48 << 20
"""Requests come from the host, but are still capped: a bind carries the module (1 MiB of
source and its code), an invocation a payload (256 KiB), an answer a response (6 MB)."""

MAX_CALL_ARGS = 400 << 10
"""A call's arguments as JSON (the host caps the whole frame at protocol.MAX_CALL_BYTES)."""


class Worker:
    """One installation's handler module, served invocation by invocation with fresh state."""

    def __init__(self, request_fd: int, reply_fd: int,
                 isolation: dict[str, str] | None = None) -> None:
        self.request_fd = request_fd
        self.reply_fd = reply_fd
        self.isolation = isolation or {}
        self.reader = protocol.FrameReader(MAX_REQUEST_BYTES)
        self.compiled: CompiledHandler | None = None
        self.limits = Limits()
        self.ready_pending = False

    def at(self, stage: str) -> bool:
        """A point in the worker's life (see runtime.faults); True when a test fault replaced
        the reply. Production workers do nothing here."""
        return False

    def serve(self) -> None:
        """Answer requests until the host closes the pipe.

        A bind is acknowledged just before the first handler starts, not on arrival: a
        fresh worker that dies before its ready reply never ran the handler, so the host
        may safely send the dispatch to another worker."""
        self.at("start")
        served = 0
        while True:
            if self.ready_pending:
                self.at("wait")
            try:
                request = protocol.decode(protocol.read_frame(self.request_fd, self.reader))
            except protocol.PeerClosed:
                return
            op = request.get("op")
            if op == "bind":
                self.bind(request)
                self.ready_pending = True
            elif op == "invoke":
                self.at("read")
                if self.ready_pending:
                    self.reply({"op": "ready", "pid": os.getpid(), "isolation": self.isolation})
                    self.ready_pending = False
                result = self.invoke(request["handler"], request["payload"])
                if not self.at("write"):
                    self.reply(result)
                served += 1
                if served == 1:
                    self.at("between")
            elif not self.other(request):
                raise protocol.ProtocolError(f"unknown request {op!r}")

    def other(self, request: dict[str, Any]) -> bool:
        """A request outside the protocol: test workers take probes here."""
        return False

    def bind(self, request: dict[str, Any]) -> None:
        code = marshal.loads(base64.b64decode(request["code"]))
        self.compiled = CompiledHandler(request["filename"], request["source"], code)
        self.limits = Limits(**request["limits"])
        services.connect(self.call_host)
        try:
            from handlerbox.runtime import proctitle

            proctitle.set_title(f"handlerbox worker app={request['app']} "
                                f"installation={request['installation']}")
        except ImportError:  # pragma: no cover - the title is for operators only
            pass

    def invoke(self, handler: str, payload: Any) -> dict[str, Any]:
        assert self.compiled is not None, "invoke before bind"
        start = resource.getrusage(resource.RUSAGE_SELF)
        reply: dict[str, Any] = {"op": "result"}
        self.at("run")
        try:
            outcome = invoke(self.compiled, handler, payload, self.limits)
            reply.update(status="ok", value=orjson.Fragment(outcome.result_json),
                         logs=outcome.logs)
        except MemoryError:
            reply.update(status="memory_limit", logs="")
        except (HandlerError, HandlerNotFound) as exc:
            error = exc if isinstance(exc, HandlerError) else HandlerError(
                "HandlerNotFound", str(exc))
            status = "memory_limit" if error.type_name == "MemoryError" else "error"
            reply.update(status=status, logs=exc.logs, error={
                "type": error.type_name, "message": error.message,
                "traceback": error.traceback})
        end = resource.getrusage(resource.RUSAGE_SELF)
        reply["cpu_ms"] = round(((end.ru_utime + end.ru_stime)
                                 - (start.ru_utime + start.ru_stime)) * 1000.0, 3)
        reply["max_rss_kb"] = end.ru_maxrss
        return reply

    def call_host(self, service: str, operation: str, args: dict[str, Any]) -> Any:
        """One service call for the running handler: a call frame out, the answer back."""
        try:
            encoded = to_json_bytes(args, MAX_CALL_ARGS)
        except ResultError as exc:
            raise services.ServiceError(400, "arguments must be plain JSON: "
                                        + exc.message.replace("value", "args", 1)) from None
        protocol.write_frame(self.reply_fd, b'{"op":"call","service":' + orjson.dumps(service)
                             + b',"operation":' + orjson.dumps(operation) + b',"args":'
                             + encoded + b"}")
        answer = protocol.decode(protocol.read_frame(self.request_fd, self.reader))
        if answer.get("op") != "answer":  # the host never does this: stop, do not guess
            os._exit(70)
        error = answer.get("error")
        if error is not None:
            raise services.ServiceError(error["status"], error["message"])
        return answer.get("value")

    def reply(self, message: dict[str, Any]) -> None:
        protocol.write_frame(self.reply_fd, encode(message))


def encode(message: dict[str, Any]) -> bytes:
    """Compact JSON for a reply; the handler's checked result goes in as an orjson.Fragment,
    spliced without being decoded again."""
    try:
        return orjson.dumps(message)
    except TypeError:  # a lone surrogate in logs or an error message: not valid UTF-8
        return orjson.dumps(_valid_text(message))


def _valid_text(value: Any) -> Any:
    """Strings with lone surrogates replaced, so they can travel as UTF-8 JSON."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _valid_text(v) for k, v in value.items()}
    return value


def main(worker: Worker) -> None:
    """Entry point in a freshly forked worker, after its isolation layers (runtime.zygote)."""
    status = 0
    try:
        worker.serve()
    except BaseException:
        status = 70
    os._exit(status)
