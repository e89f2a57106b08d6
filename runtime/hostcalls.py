"""Host calls: a worker's call frames, checked and performed by the services; untrusted input.

A call frame has passed protocol.check_call (exact types, size). Here the service and the
operation must exist, the invocation must be under its cap on calls, and the scope is the
worker's binding, never anything the frame says. Every call ends in one answer frame, and
one record in the invocation's result: service, operation, duration and status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from handlerbox.runtime import protocol
from handlerbox.runtime.results import HostCallRecord
from handlerbox.runtime.services.base import Scope, Service, ServiceError
from handlerbox.runtime.services.sqlite import DEADLINE, NO_WAIT

MAX_ANSWER_BYTES = 40 << 20
"""A 6 MB response body, base64 or JSON-escaped (up to 6x), must fit; the worker takes it."""


OVER_CAP_GRACE = 20
"""Calls answered 429 past the cap before the worker is killed: a handler that ignores the
429 must not turn its invocation into an unbounded stream of frames."""


@dataclass
class Calls:
    """The host calls of one invocation, for its cap and its result (which records each
    call up to the cap, and the first one refused for it)."""

    limit: int
    records: list[HostCallRecord] = field(default_factory=list)
    made: int = 0

    def count(self) -> None:
        """One more call; ProtocolError when the handler keeps calling past the cap."""
        self.made += 1
        if self.made > self.limit + OVER_CAP_GRACE:
            raise protocol.ProtocolError(
                f"the handler went on calling services past the cap of {self.limit} calls "
                "per invocation")


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    args: dict[str, Any]


def check(message: dict[str, Any], size: int) -> Call:
    """The call in a worker's frame; ProtocolError when the frame is malformed."""
    return Call(*protocol.check_call(message, size))


class Services:
    """The services a host offers handlers, by name."""

    def __init__(self, services: Mapping[str, Service]) -> None:
        self.by_name = dict(services)

    def _find(self, call: Call, calls: Calls) -> Service:
        if calls.made > calls.limit:
            raise ServiceError(429, f"more than {calls.limit} service calls in one invocation")
        service = self.by_name.get(call.service)
        if service is None:
            raise ServiceError(400, f"unknown service {call.service[:64]!r}; services: "
                               f"{', '.join(sorted(self.by_name))}")
        if call.operation not in service.operations:
            raise ServiceError(400, f"{call.service} has no operation {call.operation[:64]!r};"
                               f" it offers {', '.join(sorted(service.operations))}")
        return service

    def perform(self, scope: Scope, call: Call, deadline: float, calls: Calls) -> bytes:
        """Perform one call in this thread; the answer frame's body."""
        calls.count()
        start = time.monotonic()
        bound = DEADLINE.set(deadline)
        try:
            service = self._find(call, calls)
            value = service.call(scope, call.operation, call.args, deadline)
        except ServiceError as exc:
            return _record(calls, call, start, exc.status, message=exc.message)
        except Exception as exc:  # a service bug must not take the dispatch down
            return _record(calls, call, start, 500, message=f"the service failed: "
                                                             f"{type(exc).__name__}")
        finally:
            DEADLINE.reset(bound)
        return _record(calls, call, start, 200, value=value)

    async def perform_async(self, scope: Scope, call: Call, deadline: float,
                            calls: Calls) -> bytes:
        """Perform one call on the event loop; it is cancelled at the deadline."""
        calls.count()
        start = time.monotonic()
        bound, no_wait = DEADLINE.set(deadline), NO_WAIT.set(True)
        try:
            service = self._find(call, calls)
            value = await asyncio.wait_for(_retry_busy(
                lambda: service.call_async(scope, call.operation, call.args, deadline),
                deadline), max(deadline - time.monotonic(), 0.0))
        except ServiceError as exc:
            return _record(calls, call, start, exc.status, message=exc.message)
        except TimeoutError:
            return _record(calls, call, start, 504, message="the invocation's deadline "
                                                             "passed during the call")
        except Exception as exc:
            return _record(calls, call, start, 500, message=f"the service failed: "
                                                             f"{type(exc).__name__}")
        finally:
            NO_WAIT.reset(no_wait)
            DEADLINE.reset(bound)
        return _record(calls, call, start, 200, value=value)


async def _retry_busy(attempt: Callable[[], Awaitable[Any]], deadline: float) -> Any:
    """Run `attempt` again while the store is busy (503: a lock another writer holds; the
    transaction changed nothing), with short asyncio sleeps, until the deadline."""
    pause = 0.002
    while True:
        try:
            return await attempt()
        except ServiceError as exc:
            if exc.status != 503 or time.monotonic() + pause >= deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)


def _record(calls: Calls, call: Call, start: float, status: int, value: Any = None,
            message: str = "") -> bytes:
    try:
        answer = protocol.answer_message(value, status, message[:4096])
    except TypeError:  # a service returned something that is not JSON: its bug, say so
        status, answer = 500, protocol.answer_message(
            None, 500, "the service answered with a value that is not JSON")
    if len(answer) > MAX_ANSWER_BYTES:
        status, answer = 502, protocol.answer_message(None, 502, "the answer is too large")
    if calls.made > calls.limit + 1:
        return answer  # refused for the cap: counted, not recorded again
    calls.records.append(HostCallRecord.model_construct(
        service=call.service[:64], operation=call.operation[:64],
        duration_ms=(time.monotonic() - start) * 1000.0, status=status))
    return answer


__all__ = ["Call", "Calls", "Services", "check"]
