"""Runs the front door under uvicorn in this process, with SIGTERM as a graceful stop; no
untrusted input here (requests are the routes' business).

    SIGTERM/SIGINT -> the door stops taking work at once (readyz 503, new work 503)
                   -> uvicorn closes the listener and waits for requests in flight
                   -> lifespan shutdown: FrontDoor.aclose() drains the queue and the engine
                   -> exit 0, workers and zygote reaped

uvicorn re-raises a caught signal after it stops (so the process dies of it); the handlers
installed here first are what it restores and re-raises into, which is how a clean stop
exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from types import FrameType
from typing import TextIO

import uvicorn

from handlerbox.runtime.serve import logs
from handlerbox.runtime.serve.app import create_app
from handlerbox.runtime.serve.config import ServeConfig
from handlerbox.runtime.serve.door import FrontDoor

EXIT_OK, EXIT_FAILED = 0, 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RESPONSE_MARGIN_S = 45.0
"""How long requests in flight may take after the grace (the longest handler runs 40 s)."""


class _Server(uvicorn.Server):
    """uvicorn's server, telling the door the moment a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, door: FrontDoor) -> None:
        super().__init__(config)
        self.door = door

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self.door.begin_drain_soon()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket bound before the server starts (port 0 picks a free one).

    Made with proto=IPPROTO_TCP on purpose: asyncio sets TCP_NODELAY only on connections
    whose socket says so, and without it every response waits ~40 ms for a delayed ACK
    (Nagle: uvicorn writes the head and the body separately)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def build(config: ServeConfig, sock: socket.socket) -> _Server:
    # The port the socket got (port 0 picks one): webhook URLs must name it.
    app = create_app(config.model_copy(update={"port": sock.getsockname()[1]}))
    door: FrontDoor = app.state.door
    uv_config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", server_header=False,
        timeout_graceful_shutdown=int(config.shutdown_grace_seconds + RESPONSE_MARGIN_S))
    return _Server(uv_config, door)


def serve(config: ServeConfig, log_stream: TextIO | None = None) -> int:
    """Serve until SIGTERM or SIGINT; 0 after a clean stop, 1 when it could not start."""
    logs.configure(log_stream or sys.stderr)
    try:
        sock = bind(config.host, config.port)
    except OSError as exc:
        logs.event("bind_failed", logging.ERROR, host=config.host, port=config.port, error=str(exc))
        return EXIT_FAILED
    server = build(config, sock)
    logs.event("listening", host=config.host, port=sock.getsockname()[1])
    previous = {sig: signal.signal(sig, _ignore) for sig in STOP_SIGNALS}
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except SystemExit as exc:  # uvicorn exits this way when the lifespan startup failed
        logs.event("start_failed", logging.ERROR, code=exc.code)
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    return EXIT_OK if server.started else EXIT_FAILED


def _ignore(sig: int, frame: FrameType | None) -> None:
    """What uvicorn re-raises into after a clean stop: nothing more to do."""
