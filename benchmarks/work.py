"""What the peer pools run in their workers: the benchmark handler as plain Python.

Module-level functions only (the pools pickle them by name), and stdlib imports only, so a
`spawn` or `forkserver` worker pays for nothing the question does not ask about. The handler
is the same source file the handlerbox workers run under the sandbox, executed plainly.
"""

from __future__ import annotations

import os
from typing import Any

_SERVER = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))),
                       "tests", "apps", "bench_call_create", "server", "server.py")
_handler: Any = None


def handle(payload: dict[str, Any]) -> dict[str, Any]:
    """The typical onCallCreate handler (tests/apps/bench_call_create), compiled plainly."""
    global _handler
    if _handler is None:
        namespace: dict[str, Any] = {"__name__": "server"}
        with open(_SERVER, encoding="utf-8") as f:
            exec(compile(f.read(), _SERVER, "exec"), namespace)
        _handler = namespace["exports"]["onCallCreateHandler"]
    return _handler(payload)  # type: ignore[no-any-return]


def spin(payload: dict[str, Any]) -> None:
    """Never returns (the peers' version of tests/apps/bench_forever's onCallCreate)."""
    n = 0
    while True:
        n += 1


def serve_connection(connection: Any) -> None:
    """A cold-start worker: answer payloads on a multiprocessing Connection until None."""
    while True:
        payload = connection.recv()
        if payload is None:
            return
        connection.send(handle(payload))
