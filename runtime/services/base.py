"""What every service shares: the scope a call acts for, the error a handler sees, the clock.

No untrusted input is parsed here; services receive arguments the engine has already checked
for shape (exact JSON types, sizes) and check their values themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from handlerbox.sandbox.errors import HandlerboxError

Clock = Callable[[], float]
"""Wall-clock seconds since the epoch (time.time); injected so tests can move time."""


@dataclass(frozen=True)
class Scope:
    """Whom a host call acts for: one installation (an app in one account). Built by the host
    from the worker's binding, never from anything the handler sends."""

    app: str
    account_id: str

    @property
    def installation(self) -> str:
        """The installation's key in every store: `app/account_id`."""
        return f"{self.app}/{self.account_id}"


class ServiceError(HandlerboxError):
    """Raised by a service when a call cannot be performed; the handler receives it as
    `services.ServiceError` with the same `status` (HTTP-like: 400 bad arguments, 404 not
    found, 409 conflict, 413 too large, 429 rate limited, 502/504 upstream) and `message`."""

    code = "service_error"

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


class Service(Protocol):
    """A service the host performs for handlers.

    `operations` names every operation a handler may call. `call` performs one for `scope`
    and returns a JSON value, or raises ServiceError; `deadline` is the invocation's
    (time.monotonic): nothing may wait past it. `call_async` is the same on the event loop,
    with no thread per call."""

    name: str
    operations: frozenset[str]

    def call(self, scope: Scope, operation: str, args: dict[str, Any],
             deadline: float) -> Any: ...

    async def call_async(self, scope: Scope, operation: str, args: dict[str, Any],
                         deadline: float) -> Any: ...


class RateLimiter:
    """At most `limit` events per `window` seconds per key (a sliding window of timestamps);
    thread-safe enough for the GIL: one deque per key, appended and trimmed in place."""

    def __init__(self, limit: int, window: float = 60.0, clock: Clock = time.monotonic) -> None:
        from collections import deque

        self.limit, self.window, self.clock = limit, window, clock
        self._seen: dict[str, deque[float]] = {}
        self._deque = deque

    def allow(self, key: str) -> bool:
        """Count one event for `key` if it is within the limit; False when it is not."""
        now = self.clock()
        seen = self._seen.setdefault(key, self._deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if len(seen) >= self.limit:
            return False
        seen.append(now)
        return True
