"""THE TRUST BOUNDARY: the loop a worker process runs; untrusted handler code runs under it.

Stdlib, orjson, sandbox, protocol (and the test-only faults) only: no pydantic, no pickle, no
threads. The worker reads requests from the host on one pipe and answers on another, one
JSON frame each:

    host -> worker  {"op": "bind", "app": ..., "filename": ..., "source": ..., "code": b64,
                     "limits": {...}}                -> {"op": "ready", "isolation": {...}}
    host -> worker  {"op": "invoke", "handler": ..., "payload": {...}}
                    -> {"op": "result", "status": "ok" | "error" | "memory_limit",
                        "value": <json>, "error": {...}, "logs": ..., "cpu_ms": ..., ...}

The code object comes from the host, which compiled it under the policy (marshal in the
trusted direction only). Anything the worker sends back is parsed by the host as capped JSON.
"""

from __future__ import annotations

import base64
import marshal
import os
import resource
from typing import Any

import orjson
from handlerbox.runtime import protocol
from handlerbox.runtime.faults import Fault
from handlerbox.sandbox.errors import HandlerError, HandlerNotFound
from handlerbox.sandbox.policy import CompiledHandler
from handlerbox.sandbox.runner import Limits, invoke

MAX_REQUEST_BYTES = 8 << 20
"""Requests come from the host, but are still capped: a bind carries the module (1 MiB of
source and its code), an invocation a payload (256 KiB) and its envelope."""


class Worker:
    """One app's handler module, served invocation by invocation with fresh state."""

    def __init__(self, request_fd: int, reply_fd: int, isolation: dict[str, str] | None = None,
                 probes: bool = False, fault: dict[str, Any] | None = None) -> None:
        self.request_fd = request_fd
        self.reply_fd = reply_fd
        self.isolation = isolation or {}
        self.probes = probes
        self.fault = Fault(fault, reply_fd)
        self.reader = protocol.FrameReader(MAX_REQUEST_BYTES)
        self.compiled: CompiledHandler | None = None
        self.limits = Limits()
        self.ready_pending = False
        self.served = 0

    def serve(self) -> None:
        """Answer requests until the host closes the pipe.

        A bind is acknowledged just before the first handler starts, not on arrival: a
        fresh worker that dies before its ready reply never ran the handler, so the host
        may safely send the dispatch to another worker."""
        self.fault("start")
        while True:
            if self.ready_pending:
                self.fault("wait")
            try:
                body = protocol.read_frame(self.request_fd, self.reader)
            except protocol.PeerClosed:
                return
            request = protocol.decode(body)
            if request.get("op") == "bind":
                self.bind(request)
                self.ready_pending = True
            elif request.get("op") == "invoke":
                self.fault("read")
                if self.ready_pending:
                    self.reply({"op": "ready", "pid": os.getpid(), "isolation": self.isolation})
                    self.ready_pending = False
                result = self.invoke(request["handler"], request["payload"])
                if not self.fault("write"):
                    self.reply(result)
                self.served += 1
                if self.served == 1:
                    self.fault("between")
            elif request.get("op") == "probe" and self.probes:
                self.reply({"op": "probe", "result": run_probe(request["source"])})
            else:
                raise protocol.ProtocolError(f"unknown request {request.get('op')!r}")

    def bind(self, request: dict[str, Any]) -> None:
        code = marshal.loads(base64.b64decode(request["code"]))
        self.compiled = CompiledHandler(request["filename"], request["source"], code)
        self.limits = Limits(**request["limits"])

    def invoke(self, handler: str, payload: Any) -> dict[str, Any]:
        assert self.compiled is not None, "invoke before bind"
        start = resource.getrusage(resource.RUSAGE_SELF)
        reply: dict[str, Any] = {"op": "result"}
        self.fault("run")
        try:
            outcome = invoke(self.compiled, handler, payload, self.limits)
            reply.update(status="ok", value=RawJSON(outcome.result_json), logs=outcome.logs)
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

    def reply(self, message: dict[str, Any]) -> None:
        protocol.write_frame(self.reply_fd, encode(message))


class RawJSON:
    """Bytes that are already JSON (the handler's checked result): spliced in, not re-encoded."""

    def __init__(self, data: bytes) -> None:
        self.data = data


def encode(message: dict[str, Any]) -> bytes:
    """Compact JSON for a reply, splicing RawJSON values in without decoding them again."""
    plain = {k: v for k, v in message.items() if not isinstance(v, RawJSON)}
    try:
        body = orjson.dumps(plain)
    except TypeError:  # a lone surrogate in logs or an error message: not valid UTF-8
        body = orjson.dumps(_valid_text(plain))
    for key, value in message.items():
        if isinstance(value, RawJSON):
            body = body[:-1] + b',"' + key.encode() + b'":' + value.data + b"}"
    return body


def _valid_text(value: Any) -> Any:
    """Strings with lone surrogates replaced, so they can travel as UTF-8 JSON."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {k: _valid_text(v) for k, v in value.items()}
    return value


def run_probe(source: str) -> Any:
    """TEST ONLY, and only when the engine was built with probes allowed: run unrestricted
    code in this worker (after its isolation layers) and return its `result` variable. The
    request comes from the host; handlers cannot send requests."""
    namespace: dict[str, Any] = {}
    try:
        exec(source, namespace)
    except BaseException as exc:  # the probe reports what stopped it
        return {"raised": type(exc).__name__, "message": str(exc)}
    return namespace.get("result")


def main(request_fd: int, reply_fd: int, isolation: dict[str, str] | None = None,
         probes: bool = False, fault: dict[str, Any] | None = None) -> None:
    """Entry point in a freshly forked worker, after its isolation layers (runtime.zygote)."""
    status = 0
    try:
        Worker(request_fd, reply_fd, isolation, probes, fault).serve()
    except BaseException:
        status = 70
    os._exit(status)
