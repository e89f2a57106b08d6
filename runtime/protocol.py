"""The wire protocol between host and worker, all of it: framing, and every message.

Framing: a 4-byte big-endian length, then that many bytes of JSON. Reads bytes a worker
wrote, so everything here treats its input as hostile: the length is checked against a cap
before anything is allocated, bodies are only ever parsed as JSON into a dict (orjson:
strict, depth-limited), and each message is checked field by field. The worker imports this
too (stdlib and orjson only). The messages, one JSON object per frame:

    host -> worker   {"op": "bind", "app", "installation", "filename", "source", "code": b64,
                      "limits": {...}}                       once, on a fresh worker
    worker -> host   {"op": "ready", "pid", "isolation"}     just before its first handler
    host -> worker   {"op": "invoke", "handler", "payload"}
    worker -> host   {"op": "call", "service", "operation", "args": {...}}   0..n per invoke
    host -> worker   {"op": "answer", "value": ...} | {"op": "answer", "error": {"status",
                      "message"}}                             one per call
    worker -> host   {"op": "result", "status": "ok" | "error" | "memory_limit", "value",
                      "error": {"type", "message", "traceback"}, "logs", "log_records":
                      [{"level", "logger", "message"}], "cpu_ms", "max_rss_kb"}
                                                              ends the invocation
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
import time
from typing import Any

import orjson

from handlerbox.runtime.errors import DeadlineReached, PeerClosed, ProtocolError

__all__ = ["DeadlineReached", "PeerClosed", "ProtocolError"]

HEADER = struct.Struct(">I")




def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def write_frame(fd: int, body: bytes) -> None:
    """Write one frame; the pipe is blocking and sized so that requests rarely wait."""
    data = frame(body)
    written = os.write(fd, data)
    if written == len(data):  # the usual case: one write, no view to slice
        return
    view = memoryview(data)[written:]
    while view:
        view = view[os.write(fd, view):]


def unread_bytes(fd: int) -> int:
    """Bytes written to a pipe that its reader has not taken yet (FIONREAD works on either
    end): after a worker dies, unread request bytes prove it never saw the request."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0])
    except OSError:
        return 0


def decode(body: bytes) -> dict[str, Any]:
    """Parse a frame body that must be a JSON object."""
    try:
        message = orjson.loads(body)  # strict JSON: no NaN, at most 1024 levels deep
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


class FrameReader:
    """Incremental frame parser for one pipe: feed bytes as they arrive, take bodies out.

    Bytes past the end of a frame are kept for the next one (a worker may answer a bind and
    an invocation back to back)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buffer = bytearray()
        self._poller: select.poll | None = None

    def poller(self, fd: int) -> select.poll:
        """A poll object for the pipe this reader serves, made once."""
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(fd, select.POLLIN)
        return self._poller

    def next_body(self) -> bytes | None:
        """The first complete body in the buffer, or None while it is incomplete."""
        if len(self.buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self.buffer)
        if size > self.max_bytes:
            raise ProtocolError(f"frame of {size} bytes is over the cap of {self.max_bytes}")
        end = HEADER.size + size
        if len(self.buffer) < end:
            return None
        body = bytes(self.buffer[HEADER.size:end])
        del self.buffer[:end]
        return body

    def feed(self, data: bytes) -> bytes | None:
        self.buffer += data
        return self.next_body()

    def take(self, data: bytes) -> bytes | None:
        """`feed`, with a fast path for the usual case, a read that holds exactly one frame
        and nothing before it (no copies through the buffer); capped all the same."""
        if not self.buffer and len(data) >= HEADER.size:
            (size,) = HEADER.unpack_from(data)
            if size > self.max_bytes:
                raise ProtocolError(f"frame of {size} bytes is over the cap of {self.max_bytes}")
            if len(data) == HEADER.size + size:
                return data[HEADER.size:]
        return self.feed(data)


CHUNK = 65536


def read_frame(fd: int, reader: FrameReader, deadline: float | None = None) -> bytes:
    """One frame from `fd`: blocking (the worker's side), or, on a non-blocking fd (the
    host's side), waiting in poll() until data, EOF or `deadline` (time.monotonic), whichever
    comes first; nothing sleeps. The host reads before it polls: on one CPU the worker has
    usually answered by the time the request write returns. Raises PeerClosed, ProtocolError
    or DeadlineReached."""
    body = reader.next_body() if reader.buffer else None
    while body is None:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            wait_readable(fd, reader, deadline)
            continue
        if not data:
            raise PeerClosed("peer closed the pipe")
        body = reader.take(data)
    return body


def wait_readable(fd: int, reader: FrameReader, deadline: float | None) -> None:
    poller = reader.poller(fd)
    while True:
        if deadline is None:
            timeout_ms = None
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineReached()
            # poll() counts whole milliseconds and rounds a fraction up: round down instead,
            # and finish the last fraction of a millisecond with poll(0), never late.
            timeout_ms = int(remaining * 1000.0)
        if poller.poll(timeout_ms):
            return


# -- messages: host -> worker --------------------------------------------------------------

def bind_message(app: str, installation: str, filename: str, source: str, code_b64: str,
                 limits: dict[str, int]) -> bytes:
    return orjson.dumps({"op": "bind", "app": app, "installation": installation,
                         "filename": filename, "source": source, "code": code_b64,
                         "limits": limits})


def invoke_prefix(handler: str) -> bytes:
    """The start of an invoke request: the caller appends the payload's JSON and `}` (the
    payload is already encoded, so it is spliced in rather than encoded again)."""
    return b'{"op":"invoke","handler":' + orjson.dumps(handler) + b',"payload":'


def answer_message(value: Any = None, status: int = 200, message: str = "") -> bytes:
    """The host's answer to one call: its value, or an error with a status and message."""
    if status != 200:
        return orjson.dumps({"op": "answer", "error": {"status": status, "message": message}})
    return orjson.dumps({"op": "answer", "value": value})


# -- messages: worker -> host (untrusted: checked field by field) --------------------------

RESULT_STATUSES = ("ok", "error", "memory_limit")
MAX_ERROR_FIELD = 65536
MAX_CALL_BYTES = 512 << 10
"""A call frame carries at most a 100 KB request body or a 40 KB stored value and names."""
MAX_NAME = 64
MAX_LOG_RECORDS = 1000
"""The sandbox keeps at most this many `logging` records per invocation (plus a marker)."""


def check_ready(message: dict[str, Any]) -> None:
    if message.get("op") != "ready":
        raise ProtocolError("expected the worker's ready reply")


def check_result(message: dict[str, Any], max_log_bytes: int) -> dict[str, Any]:
    """A worker's result message, checked field by field."""
    if message.get("op") != "result" or message.get("status") not in RESULT_STATUSES:
        raise ProtocolError("not a result reply")
    logs = message.get("logs", "")
    if not isinstance(logs, str) or len(logs) > max_log_bytes + 200:
        raise ProtocolError("logs missing or over the cap")
    for name in ("cpu_ms", "max_rss_kb"):
        value = message.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ProtocolError(f"{name} is not a non-negative number")
    message["max_rss_kb"] = int(message["max_rss_kb"])
    records = message.get("log_records", [])
    if not (isinstance(records, list) and len(records) <= MAX_LOG_RECORDS + 1 and all(
            isinstance(r, dict) and set(r) == {"level", "logger", "message"}
            and all(isinstance(v, str) and len(v) <= MAX_ERROR_FIELD for v in r.values())
            for r in records)):
        raise ProtocolError("malformed log records")
    message["log_records"] = records
    if message["status"] == "error":
        error = message.get("error")
        if not (isinstance(error, dict) and set(error) == {"type", "message", "traceback"}
                and all(isinstance(v, str) and len(v) <= MAX_ERROR_FIELD
                        for v in error.values())):
            raise ProtocolError("malformed error")
    return message


def check_call(message: dict[str, Any], size: int) -> tuple[str, str, dict[str, Any]]:
    """A call frame's (service, operation, args), exact types and sizes; the engine checks
    that the service and operation exist, the service checks the arguments' values."""
    if size > MAX_CALL_BYTES:
        raise ProtocolError(f"call frame of {size} bytes is over the cap of {MAX_CALL_BYTES}")
    service, operation, args = (message.get("service"), message.get("operation"),
                                message.get("args"))
    if set(message) != {"op", "service", "operation", "args"}:
        raise ProtocolError("call frame has missing or unknown fields")
    if (type(service) is not str or type(operation) is not str or type(args) is not dict
            or len(service) > MAX_NAME or len(operation) > MAX_NAME):
        raise ProtocolError("call frame fields have the wrong types")
    return service, operation, args
