"""Framing on the worker pipes: a 4-byte big-endian length, then that many bytes of JSON.

Reads bytes a worker wrote, so everything here treats its input as hostile: the length is
checked against a cap before anything is allocated, and bodies are only ever parsed as JSON
into a dict (orjson: strict, depth-limited). The worker imports this too.
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

HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer broke the framing: a frame over the cap, bad JSON, or EOF mid-frame."""


class PeerClosed(ProtocolError):
    """EOF: the peer's end of the pipe is closed (the process exited or was killed)."""


class DeadlineReached(Exception):
    """No complete frame arrived before the deadline."""


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def write_frame(fd: int, body: bytes) -> None:
    """Write one frame; the pipe is blocking and sized so that requests rarely wait."""
    data = memoryview(frame(body))
    while data:
        written = os.write(fd, data)
        data = data[written:]


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


CHUNK = 65536


def read_frame(fd: int, reader: FrameReader, deadline: float | None = None) -> bytes:
    """One frame from `fd`: blocking (the worker's side), or, on a non-blocking fd (the
    host's side), waiting in poll() until data, EOF or `deadline` (time.monotonic), whichever
    comes first; nothing sleeps. The host reads before it polls: on one CPU the worker has
    usually answered by the time the request write returns. Raises PeerClosed, ProtocolError
    or DeadlineReached."""
    body = reader.next_body()
    while body is None:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            wait_readable(fd, reader, deadline)
            continue
        if not data:
            raise PeerClosed("peer closed the pipe")
        body = reader.feed(data)
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
