"""Reading a worker's replies, sync or in the event loop, and checking them: untrusted input.

Every reply is one capped frame (runtime.protocol), parsed as JSON and checked field by field
before the engine uses any of it. EOF is classified here too: a fresh worker that dies before
its ready reply, or any worker that dies with our request still unread in its pipe, never
started the handler (NotStarted), so the engine may hand the dispatch to another worker.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from handlerbox.runtime import protocol
from handlerbox.runtime.spawner import WorkerProcess

EXIT_STATUS_WAIT = 1.0
"""How long to wait for the zygote's report of a dead worker's exit status."""

MAX_ERROR_FIELD = 65536


class NotStarted(Exception):
    """The worker was gone before it took the request: the handler never ran."""


# -- sync ----------------------------------------------------------------------------------

def read_ready(worker: WorkerProcess, deadline: float) -> None:
    """A fresh worker's ready reply (sent just before its first handler starts)."""
    try:
        check_ready(protocol.read_frame(worker.reply_fd, worker.reader, deadline))
    except protocol.PeerClosed:
        raise NotStarted() from None


def read_result(worker: WorkerProcess, deadline: float) -> bytes:
    try:
        return protocol.read_frame(worker.reply_fd, worker.reader, deadline)
    except protocol.PeerClosed:
        raise_if_never_taken(worker)
        raise


def exit_status(worker: WorkerProcess) -> int | None:
    """The dead worker's exit status as the zygote reports it; None if it does not come."""
    try:
        return worker.exit_status.result(EXIT_STATUS_WAIT)
    except Exception:  # unknown is an honest answer
        return None


# -- asyncio -------------------------------------------------------------------------------

async def read_ready_async(worker: WorkerProcess, deadline: float) -> None:
    try:
        check_ready(await read_frame_async(worker, deadline))
    except protocol.PeerClosed:
        raise NotStarted() from None


async def read_result_async(worker: WorkerProcess, deadline: float) -> bytes:
    try:
        return await read_frame_async(worker, deadline)
    except protocol.PeerClosed:
        raise_if_never_taken(worker)
        raise


async def read_frame_async(worker: WorkerProcess, deadline: float) -> bytes:
    """Wait for one frame in the event loop: a reader callback and a deadline timer."""
    body = worker.reader.next_body()
    while body is None:  # read before registering with the loop: the answer is often there
        try:
            data = os.read(worker.reply_fd, protocol.CHUNK)
        except BlockingIOError:
            break
        if not data:
            raise protocol.PeerClosed("peer closed the pipe")
        body = worker.reader.feed(data)
    if body is not None:
        return body
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    fd = worker.reply_fd

    def on_readable() -> None:
        if done.done():
            return
        try:
            data = os.read(fd, protocol.CHUNK)
            if not data:
                raise protocol.PeerClosed("peer closed the pipe")
            frame = worker.reader.feed(data)
        except BlockingIOError:
            return  # a spurious wake-up: keep waiting
        except (protocol.ProtocolError, OSError) as exc:
            done.set_exception(exc)
            return
        if frame is not None:
            done.set_result(frame)

    def on_deadline() -> None:
        if not done.done():
            done.set_exception(protocol.DeadlineReached())

    loop.add_reader(fd, on_readable)
    timer = loop.call_later(max(deadline - time.monotonic(), 0.0), on_deadline)
    try:
        return await done
    finally:
        loop.remove_reader(fd)
        timer.cancel()


async def exit_status_async(worker: WorkerProcess) -> int | None:
    try:
        return await asyncio.wait_for(asyncio.wrap_future(worker.exit_status),
                                      EXIT_STATUS_WAIT)
    except Exception:  # unknown is an honest answer
        return None


# -- checks --------------------------------------------------------------------------------

def raise_if_never_taken(worker: WorkerProcess) -> None:
    """After EOF: if no reply bytes came and our request is still unread in the worker's pipe,
    the worker never saw it."""
    if not worker.reader.buffer and protocol.unread_bytes(worker.request_fd) > 0:
        raise NotStarted()


def check_ready(body: bytes) -> None:
    if protocol.decode(body).get("op") != "ready":
        raise protocol.ProtocolError("expected the worker's ready reply")


def check_result(reply: dict[str, Any], max_log_bytes: int) -> dict[str, Any]:
    """A worker's result reply, checked field by field."""
    if reply.get("op") != "result" or reply.get("status") not in ("ok", "error",
                                                                  "memory_limit"):
        raise protocol.ProtocolError("not a result reply")
    logs = reply.get("logs", "")
    if not isinstance(logs, str) or len(logs) > max_log_bytes + 200:
        raise protocol.ProtocolError("logs missing or over the cap")
    for name in ("cpu_ms", "max_rss_kb"):
        value = reply.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise protocol.ProtocolError(f"{name} is not a non-negative number")
    reply["max_rss_kb"] = int(reply["max_rss_kb"])
    if reply["status"] == "error":
        error = reply.get("error")
        if not (isinstance(error, dict) and set(error) == {"type", "message", "traceback"}
                and all(isinstance(v, str) and len(v) <= MAX_ERROR_FIELD
                        for v in error.values())):
            raise protocol.ProtocolError("malformed error")
    return reply
