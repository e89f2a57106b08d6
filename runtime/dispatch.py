"""One dispatch, written once for both APIs: a generator yields each wait, a driver performs it.

No untrusted input is parsed here (runtime.protocol and runtime.hostcalls check what workers
send), but every frame read here came from a worker. Data flow of one dispatch:

    route: payload -> (event, handler, request, installation key)     (runtime.engine)
      --> Acquire: an idle worker of the installation | a spare bound now | wait | overloaded
      --> bind frame (fresh worker) + invoke frame --> worker pipe
      <-- ready (fresh worker), then call frames, each performed by a service and answered,
          then the result frame; all read by the caller itself until the deadline
      at the deadline: SIGKILL the worker's process group, answer `timeout`; the pool's
      spare takes its place

The sync driver runs each step in the calling thread; the async driver awaits it on the
event loop (no thread per call). A cancelled async caller kills and releases its worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, cast

from handlerbox.runtime import hostcalls, protocol, replies
from handlerbox.runtime.app import App
from handlerbox.runtime.errors import (
    DeadlineReached,
    NotStarted,
    Overloaded,
    ProtocolError,
    WorkerError,
)
from handlerbox.runtime.outcomes import Ending
from handlerbox.runtime.pool import Lease, Pool
from handlerbox.runtime.results import InvocationResult
from handlerbox.runtime.services.base import Scope
from handlerbox.runtime.spawner import WorkerProcess

ATTEMPTS = 4
"""Workers that die before taking a request are replaced; a dispatch tries this many."""

Steps = Generator["Step", Any, InvocationResult]


@dataclass(frozen=True)
class Route:
    """Where a checked payload goes: its handler, its installation, the request to send."""

    event: str
    handler: str
    account_id: str
    request: bytes
    secrets: tuple[str, ...] = ()
    """The installation's secure iparam values: scrubbed from logs, errors and results."""

    def key(self, app: App) -> str:
        """The pool key: a worker serves one installation (an app in one account)."""
        return f"{app.key}/{self.account_id}"


class Step:
    """One wait of a dispatch, performed by the sync or the async driver."""

    def run(self) -> Any:
        raise NotImplementedError

    async def run_async(self) -> Any:
        raise NotImplementedError


class Acquire(Step):
    def __init__(self, pool: Pool, key: str, wait: float) -> None:
        self.pool, self.key, self.wait = pool, key, wait

    def run(self) -> Lease:
        return self.pool.acquire(self.key, self.wait)

    async def run_async(self) -> Lease:
        return await self.pool.acquire_async(self.key, self.wait)


class ReadReady(Step):
    def __init__(self, worker: WorkerProcess, deadline: float) -> None:
        self.worker, self.deadline = worker, deadline

    def run(self) -> None:
        replies.read_ready(self.worker, self.deadline)

    async def run_async(self) -> None:
        await replies.read_ready_async(self.worker, self.deadline)


class ReadReply(Step):
    """The next frame of an invocation: a call, or the result."""

    def __init__(self, worker: WorkerProcess, deadline: float, started: bool) -> None:
        self.worker, self.deadline, self.started = worker, deadline, started

    def run(self) -> bytes:
        return replies.read_reply(self.worker, self.deadline, self.started)

    async def run_async(self) -> bytes:
        return await replies.read_reply_async(self.worker, self.deadline, self.started)


class HostCall(Step):
    def __init__(self, services: hostcalls.Services, scope: Scope, call: hostcalls.Call,
                 deadline: float, calls: hostcalls.Calls) -> None:
        self.services, self.scope, self.call = services, scope, call
        self.deadline, self.calls = deadline, calls

    def run(self) -> bytes:
        return self.services.perform(self.scope, self.call, self.deadline, self.calls)

    async def run_async(self) -> bytes:
        return await self.services.perform_async(self.scope, self.call, self.deadline,
                                                 self.calls)


class ExitStatus(Step):
    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker

    def run(self) -> int | None:
        return replies.exit_status(self.worker)

    async def run_async(self) -> int | None:
        return await replies.exit_status_async(self.worker)


@dataclass
class Dispatcher:
    """Runs routed dispatches on the pool's workers."""

    pool: Pool
    services: hostcalls.Services
    bind_limits: dict[str, int]
    max_reply: int
    max_log_bytes: int
    memory_limit_mb: int
    max_host_calls: int
    stopped: Any  # () -> bool: the engine was closed without draining

    def steps(self, app: App, route: Route, start: float) -> Steps:
        ending = Ending(app, route.event, route.handler, route.account_id, start,
                        secrets=route.secrets)
        failure = "the workers died before they received the request"
        for _ in range(ATTEMPTS):
            try:
                lease: Lease = yield Acquire(self.pool, route.key(app), app.execution_timeout)
            except Overloaded as exc:
                return ending.overloaded(exc, self.stopped())
            except WorkerError as exc:  # the zygote could not fork one: try again
                failure = str(exc)
                continue
            worker = lease.worker
            deadline = time.monotonic() + app.execution_timeout
            calls = hostcalls.Calls(self.max_host_calls)
            ending.host_calls = calls.records
            try:
                self._send(app, route, lease)
                if lease.fresh:
                    yield ReadReady(worker, deadline)
                while True:
                    body = yield ReadReply(worker, deadline, started=calls.made > 0)
                    message = protocol.decode(body)
                    if message.get("op") != "call":
                        break
                    call = hostcalls.check(message, len(body))
                    scope = Scope(app.name, route.account_id)
                    answer = yield HostCall(self.services, scope, call, deadline, calls)
                    protocol.write_frame(worker.request_fd, answer)
                return self._finish(ending, worker, message)
            except NotStarted:
                self.pool.release(worker, healthy=False)
                continue
            except DeadlineReached:
                worker.kill()
                # issue 14: a spare is bound to the installation now, off the next call's path
                self.pool.release(worker, healthy=False, rebind=self._bind_request(app, route))
                return ending.timed_out(worker.pid)
            except (ProtocolError, OSError) as exc:
                worker.kill()
                self.pool.release(worker, healthy=False)  # before any further wait
                status = yield ExitStatus(worker)
                return ending.lost(exc, status, worker.pid, self.stopped())
            except GeneratorExit:  # the async caller was cancelled: nobody wants the reply
                worker.kill()
                self.pool.release(worker, healthy=False)
                raise
        return ending.never_started(ATTEMPTS, failure)

    def _send(self, app: App, route: Route, lease: Lease) -> None:
        worker = lease.worker
        try:
            if lease.fresh:
                worker.reader.max_bytes = self.max_reply
                if not lease.bind_sent:  # issue 14: the pool bound it ahead (after a timeout)
                    protocol.write_frame(worker.request_fd, self._bind_request(app, route))
            protocol.write_frame(worker.request_fd, route.request)
        except OSError as exc:  # EPIPE: the worker died before it got the request
            raise NotStarted() from exc

    def _bind_request(self, app: App, route: Route) -> bytes:
        return app.bind_request(self.bind_limits, f"{app.name}/{route.account_id}")

    def _finish(self, ending: Ending, worker: WorkerProcess,
                message: dict[str, Any]) -> InvocationResult:
        reply = protocol.check_result(message, self.max_log_bytes)
        if worker.reader.buffer:
            raise ProtocolError("unexpected bytes after the reply")
        self.pool.release(worker, healthy=reply["status"] in ("ok", "error"),
                          cpu_ms=reply["cpu_ms"], rss_kb=reply["max_rss_kb"])
        return ending.finished(reply, self.memory_limit_mb, worker.pid)


def drive(steps: Steps) -> InvocationResult:
    """Run a dispatch's steps in this thread."""
    answer: Any = None
    failed: BaseException | None = None
    while True:
        try:
            step = steps.throw(failed) if failed else steps.send(answer)
        except StopIteration as done:
            return cast(InvocationResult, done.value)
        try:
            answer, failed = step.run(), None
        except Exception as exc:
            answer, failed = None, exc
        except BaseException:  # KeyboardInterrupt and kin: give the worker back first
            steps.close()
            raise


async def drive_async(steps: Steps) -> InvocationResult:
    """Run a dispatch's steps on the event loop."""
    answer: Any = None
    failed: BaseException | None = None
    while True:
        try:
            step = steps.throw(failed) if failed else steps.send(answer)
        except StopIteration as done:
            return cast(InvocationResult, done.value)
        try:
            answer, failed = await step.run_async(), None
        except asyncio.CancelledError:
            steps.close()
            raise
        except Exception as exc:
            answer, failed = None, exc
