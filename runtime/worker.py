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
import gc
import marshal
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import orjson

from handlerbox.runtime import proctitle, protocol
from handlerbox.sandbox import runner, services
from handlerbox.sandbox.errors import HandlerError, HandlerNotFound, ResultError
from handlerbox.sandbox.policy import CompiledHandler, compile_handler
from handlerbox.sandbox.results import to_json_bytes
from handlerbox.sandbox.runner import Limits, invoke

# issue 14, hot-path prep: the sandbox's prepare-ahead API, when it offers one. prepare(compiled,
# limits) resets the shared caches, then runs the module body in a fresh namespace; the object
# it returns is used once: .call(name, payload) -> Invocation (as invoke), or .discard().
# Without it, every invocation runs its module body on the request path (runner.invoke).
prepare_module: Callable[[CompiledHandler, Limits], Any] | None = getattr(
    runner, "prepare", None)

PREPARED_MAX_AGE = 1.0
"""Seconds a prepared module may wait for its request; older, it is run again (module bodies
that read the clock see the time their invocation arrived, give or take this)."""

PREPARE_SLOW = 0.05
"""A module body that took longer than this to prepare is prepared on the request path from
then on (a slow body should run under the host's deadline, not while the worker is idle)."""

WARM_UP_SOURCE = """import json
def warm_up(payload):
    data = payload["data"]
    print("warm", len(data))
    return json.loads(json.dumps({"keys": sorted(data), "call": data["call"]["id"]}))
"""
"""issue 14: a trusted handler each worker runs once before its first request. A fork shares
the zygote's pages until it writes them; an invocation writes a few hundred (reference counts,
caches, allocator state): copying them now, off the request path, takes about 0.7 ms off the
first invocation (the one that answers right after a timeout)."""

WARM_UP_AFTER_MS = 5
"""A new worker warms up only if no request came this long after it started (a spare)."""

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
        self.active = False  # an invocation is running: service calls are its own
        # issue 14, hot-path prep: the next invocation's module, run after the last reply
        self.prepare_ahead = prepare_module is not None
        self.prepared: Any = None
        self.prepared_at = 0.0
        self.usage_before: resource.struct_rusage | None = None  # CPU since the last reply
        self.preparing = False
        self.spoiled = False

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
        self.warm_up()
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
                # Finalizers of what the invocation left in cycles (a suspended generator's
                # `finally`) run now, between invocations, where service calls are refused:
                # never inside a later invocation, on its deadline and in its result.
                gc.collect()
                served += 1
                if served == 1:
                    self.at("between")
                if self.prepare_ahead:  # issue 14: off the request path
                    self.prepare_next()
            elif not self.other(request):
                raise protocol.ProtocolError(f"unknown request {op!r}")

    def warm_up(self) -> None:
        """issue 14: run WARM_UP_SOURCE once (trusted code; the next invocation resets the
        shared caches as every invocation does). Never fails the worker. Skipped when a
        request comes within WARM_UP_AFTER_MS: a worker started for a waiting dispatch, not
        a spare, whose first invocation would only wait for the warm-up (on one CPU a new
        worker may get this far before the host even learns its pid)."""
        if self.reader.poller(self.request_fd).poll(WARM_UP_AFTER_MS):
            return
        try:
            compiled = compile_handler(WARM_UP_SOURCE, "warm_up.py")
            code = marshal.loads(base64.b64decode(base64.b64encode(marshal.dumps(
                compiled.code))))
            request = protocol.decode(orjson.dumps({"op": "invoke", "payload": {
                "data": {"call": {"id": 1}, "actor": {"type": "system"}}}}))
            warm = CompiledHandler(compiled.filename, compiled.source, code)
            encode({"op": "result", "value": orjson.Fragment(
                invoke(warm, "warm_up", request["payload"], Limits()).result_json)})
        except Exception:
            pass

    def other(self, request: dict[str, Any]) -> bool:
        """A request outside the protocol: test workers take probes here."""
        return False

    def bind(self, request: dict[str, Any]) -> None:
        code = marshal.loads(base64.b64decode(request["code"]))
        self.compiled = CompiledHandler(request["filename"], request["source"], code)
        self.limits = Limits(**request["limits"])
        services.connect(self.call_host)
        proctitle.set_title(f"handlerbox worker app={request['app']} "
                            f"installation={request['installation']}")

    def prepare_next(self) -> None:
        """issue 14: run the next invocation's module body now, while the host has nothing for
        this worker: the sandbox resets the shared caches first, then execs the module in a
        fresh namespace that only the next invocation uses. No host call can be made now: one
        spoils the preparation, and the module runs again when the request comes."""
        assert self.compiled is not None and prepare_module is not None
        self.usage_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        self.preparing, self.spoiled = True, False
        try:
            prepared = prepare_module(self.compiled, self.limits)
        except BaseException:  # MemoryError and all: the request path runs the module again
            prepared = None
        finally:
            self.preparing = False
        self.prepared_at = time.monotonic()
        if self.prepared_at - started > PREPARE_SLOW:
            self.prepare_ahead = False
        if prepared is not None and self.spoiled:
            prepared.discard()
            prepared = None
        self.prepared = prepared

    def invoke(self, handler: str, payload: Any) -> dict[str, Any]:
        assert self.compiled is not None, "invoke before bind"
        prepared, self.prepared = self.prepared, None
        if prepared is not None and time.monotonic() - self.prepared_at > PREPARED_MAX_AGE:
            prepared.discard()
            prepared = None
        # CPU counts from the last reply on: a preparation, used or not, is this invocation's
        start, self.usage_before = (self.usage_before
                                    or resource.getrusage(resource.RUSAGE_SELF)), None
        reply: dict[str, Any] = {"op": "result"}
        self.at("run")
        self.active = True
        try:
            if prepared is not None:
                outcome = prepared.call(handler, payload)
            else:
                outcome = invoke(self.compiled, handler, payload, self.limits)
            reply.update(status="ok", value=orjson.Fragment(outcome.result_json),
                         logs=outcome.logs, log_records=outcome.log_records)
        except MemoryError:
            reply.update(status="memory_limit", logs="")
        except (HandlerError, HandlerNotFound) as exc:
            error = exc if isinstance(exc, HandlerError) else HandlerError(
                "HandlerNotFound", str(exc))
            status = "memory_limit" if error.type_name == "MemoryError" else "error"
            reply.update(status=status, logs=exc.logs, log_records=exc.log_records, error={
                "type": error.type_name, "message": error.message,
                "traceback": error.traceback})
        finally:
            self.active = False
        end = resource.getrusage(resource.RUSAGE_SELF)
        reply["cpu_ms"] = round(((end.ru_utime + end.ru_stime)
                                 - (start.ru_utime + start.ru_stime)) * 1000.0, 3)
        reply["max_rss_kb"] = end.ru_maxrss
        return reply

    def call_host(self, service: str, operation: str, args: dict[str, Any]) -> Any:
        """One service call for the running handler: a call frame out, the answer back."""
        if self.preparing:  # issue 14: a module body being prepared ahead cannot call out
            self.spoiled = True
            raise services.ServiceError(503, "services are not available to a module body "
                                        "run ahead of its invocation")
        if not self.active:
            raise services.ServiceError(409, "no invocation is running: code left over from "
                                        "an earlier invocation (a finalizer) cannot call "
                                        "services")
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
