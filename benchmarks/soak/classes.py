"""The request classes (share of the mix, event, app group, expected outcome), their schedule
and their payloads.

No untrusted input. Classes are drawn from shuffled blocks of 100 (90/3/3/2/2), so every full
block holds the mix exactly. Every payload carries its sequence number, which the handlers echo.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RequestClass:
    """One class of request."""

    share: int
    """Requests of the class per block of 100."""
    outcome: str
    """The outcome each must end in."""
    event: str
    """The event dispatched (the soak apps' handler for it)."""
    group: str
    """The app group it goes to: regular, forever or victims."""
    slow: bool = False
    """Holds a worker for long (a timeout, a kill): takes a slow slot (traffic.py)."""
    tolerated: frozenset[str] = frozenset()
    """Outcomes tolerated instead of `outcome`, for at most `slack` of the class, plus one."""
    slack: float = 0.0


CLASSES: dict[str, RequestClass] = {
    "normal": RequestClass(90, "ok", "onCallCreate", "regular"),
    "error": RequestClass(3, "handler_error", "onCallUpdate", "regular"),
    # tolerated: no worker came free within the 0.3 s the short deadline also allows for
    # the wait
    "timeout": RequestClass(3, "timeout", "onCallCreate", "forever", slow=True,
                            tolerated=frozenset({"overloaded"}), slack=0.05),
    "bomb": RequestClass(2, "memory_limit", "onTicketCreate", "regular"),
    # tolerated: the kill missed, or landed after the reply was written (injector.py)
    "kill": RequestClass(2, "crashed", "onCallTransfer", "victims", slow=True,
                         tolerated=frozenset({"ok"}), slack=0.05),
}
MIX: dict[str, int] = {kind: c.share for kind, c in CLASSES.items()}
"""Requests of each class per block of 100."""


class Schedule:
    """Request classes in shuffled blocks of 100 that hold MIX exactly; thread-safe."""

    def __init__(self, seed: int, limit: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._block: list[str] = []
        self._seq = 0
        self._limit = limit

    def next(self) -> tuple[int, str] | None:
        """The next request's sequence number and class; None once `limit` were handed out."""
        with self._lock:
            if self._limit is not None and self._seq >= self._limit:
                return None
            if not self._block:
                self._block = [kind for kind, n in MIX.items() for _ in range(n)]
                self._rng.shuffle(self._block)
            self._seq += 1
            return self._seq, self._block.pop()


def make_payload(kind: str, seq: int, app_index: int, spin_seconds: float) -> dict[str, Any]:
    data: dict[str, Any] = {"seq": seq, "call": {
        "id": seq, "direction": "incoming", "phone_number": "+14155550199",
        "participants": [{"type": "Customer", "name": "Dana Whitfield"}]}}
    if kind == "kill":
        data["seconds"] = spin_seconds
    return {"account_id": f"acct-{app_index}", "domain": "soak.freshcaller.com",
            "event": CLASSES[kind].event, "region": "US", "timestamp": int(time.time()),
            "data": data, "iparams": {"vip_numbers": ["+12125550143"]}}
