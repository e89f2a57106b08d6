"""The physical floor: two processes ping-ponging the payload's bytes over a raw os.pipe.

No untrusted input. Each message is a 4-byte big-endian length and the bytes, read and written
with os.read/os.write, no decoding: the least any pipe-fed worker pool can cost in Python on
this machine. Two children: one echoes the payload back ("floor", as the question defines it),
one answers with a small fixed reply like a handler's result ("floor_small_reply": for large
payloads that is the honest floor of a dispatch, whose reply stays small).
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import Any

from handlerbox.benchmarks import payloads
from handlerbox.benchmarks.stats import time_calls

HEADER = struct.Struct(">I")
PIPE_BYTES = 1 << 20
SMALL_REPLY = payloads.compact({"call_id": 10384, "queue": "support",
                                "caller": "Dana Whitfield", "direction": "incoming"})


def read_exact(fd: int, size: int) -> bytes:
    chunk = os.read(fd, size)
    if len(chunk) == size or not chunk:
        return chunk
    parts = [chunk]
    left = size - len(chunk)
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise EOFError("peer closed the pipe")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def round_trip(request_fd: int, reply_fd: int, message: bytes) -> bytes:
    write_all(request_fd, message)
    (size,) = HEADER.unpack(read_exact(reply_fd, HEADER.size))
    return read_exact(reply_fd, size)


def serve(request_fd: int, reply_fd: int, small_reply: bool) -> None:
    """The child: answer every framed message until EOF."""
    answer = HEADER.pack(len(SMALL_REPLY)) + SMALL_REPLY
    while True:
        header = read_exact(request_fd, HEADER.size)
        if not header:
            return
        (size,) = HEADER.unpack(header)
        body = read_exact(request_fd, size)
        write_all(reply_fd, answer if small_reply else header + body)


class Peer:
    """A forked child on its own pair of pipes."""

    def __init__(self, small_reply: bool) -> None:
        request_r, self.request_fd = os.pipe()
        self.reply_fd, reply_w = os.pipe()
        for fd in (self.request_fd, reply_w):
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
            except OSError:
                pass
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                keep = sorted({0, 1, 2, request_r, reply_w})
                for low, high in zip(keep, [*keep[1:], 1 << 16], strict=True):
                    os.closerange(low + 1, high)  # only its own pipes: EOF reaches it
                serve(request_r, reply_w, small_reply)
            except BaseException:
                code = 1
            os._exit(code)
        os.close(request_r)
        os.close(reply_w)

    def close(self) -> None:
        os.close(self.request_fd)
        os.close(self.reply_fd)
        os.waitpid(self.pid, 0)


class FloorCase:
    """Ops: latency(calls, warmup, size, reply)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.peers = {"echo": Peer(small_reply=False), "small": Peer(small_reply=True)}
        self.messages = {size: HEADER.pack(len(body)) + body
                         for size, body in ((s, payloads.payload_bytes(s))
                                            for s in payloads.SIZES)}
        for size, message in self.messages.items():
            assert round_trip(self.peers["echo"].request_fd, self.peers["echo"].reply_fd,
                              message) == message[HEADER.size:], size

    def latency(self, calls: int, warmup: int, size: str = "350",
                reply: str = "echo") -> list[int]:
        peer, message = self.peers[reply], self.messages[size]
        request_fd, reply_fd = peer.request_fd, peer.reply_fd
        return time_calls(lambda: round_trip(request_fd, reply_fd, message), calls, warmup)

    def close(self) -> None:
        for peer in self.peers.values():
            peer.close()
