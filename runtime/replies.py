"""Reading a worker's frames, sync or in the event loop: untrusted input.

Every frame is capped (runtime.protocol), then parsed and checked there field by field
before the engine uses any of it. EOF is classified here too: a fresh worker that dies before
its ready reply, or any worker that dies with our request still unread in its pipe, never
started the handler (NotStarted), so the engine may hand the dispatch to another worker.
"""

from __future__ import annotations

import asyncio
import os
import time

from handlerbox.runtime import protocol
from handlerbox.runtime.errors import NotStarted
from handlerbox.runtime.spawner import WorkerProcess

EXIT_STATUS_WAIT = 1.0
"""How long to wait for the zygote's report of a dead worker's exit status."""

# -- sync ----------------------------------------------------------------------------------

def read_ready(worker: WorkerProcess, deadline: float) -> None:
    """A fresh worker's ready reply (sent just before its first handler starts)."""
    try:
        protocol.check_ready(protocol.decode(
            protocol.read_frame(worker.reply_fd, worker.reader, deadline)))
    except protocol.PeerClosed:
        raise NotStarted() from None


def read_reply(worker: WorkerProcess, deadline: float, started: bool) -> bytes:
    """The next frame of an invocation (a call or the result). `started`: the handler has
    made a host call, so EOF can no longer mean it never ran."""
    try:
        return protocol.read_frame(worker.reply_fd, worker.reader, deadline)
    except protocol.PeerClosed:
        if not started:
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
        protocol.check_ready(protocol.decode(await read_frame_async(worker, deadline)))
    except protocol.PeerClosed:
        raise NotStarted() from None


async def read_reply_async(worker: WorkerProcess, deadline: float, started: bool) -> bytes:
    try:
        return await read_frame_async(worker, deadline)
    except protocol.PeerClosed:
        if not started:
            raise_if_never_taken(worker)
        raise


async def read_frame_async(worker: WorkerProcess, deadline: float) -> bytes:
    """Wait for one frame in the event loop: a reader callback and a deadline timer."""
    body = worker.reader.next_body() if worker.reader.buffer else None
    while body is None:  # read before registering with the loop: the answer is often there
        try:
            data = os.read(worker.reply_fd, protocol.CHUNK)
        except BlockingIOError:
            break
        if not data:
            raise protocol.PeerClosed("peer closed the pipe")
        body = worker.reader.take(data)
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
            frame = worker.reader.take(data)
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
