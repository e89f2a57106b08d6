"""A real redis-server for the tests: a child process on a free loopback port, no persistence,
killed by its pid. No untrusted input.

    with RedisServer() as server:          # or the `redis_server` fixture below
        server.url                          # redis://127.0.0.1:PORT/0

It listens on 127.0.0.1 only (`--bind 127.0.0.1 --protected-mode yes`), keeps nothing on
disk (`--save '' --appendonly no`) and is SIGKILLed by pid when the block or session ends.
Tests skip (with the reason) only when no redis-server binary is installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from types import TracebackType

import pytest

START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server child process; `url` once started."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self._dir = tempfile.mkdtemp(prefix="handlerbox-redis-")
        for _ in range(5):  # another process may take the port between probe and bind
            self.port = free_port()
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--protected-mode", "yes", "--save", "", "--appendonly", "no",
                 "--dir", self._dir, "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_ready():
                return self
            self.kill()
        raise RuntimeError("redis-server did not start on a free loopback port")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)  # start-up only: the server gives no other ready signal
        return False

    def kill(self) -> None:
        """SIGKILL the server by its pid and reap it. Idempotent."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill()


@pytest.fixture(scope="session", name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    """A redis-server for the whole session, as the fixture `redis_server` (import this
    function into a test module; it is named apart so the import never shadows a parameter)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with RedisServer() as server:
        yield server


def unique_prefix() -> str:
    """A key prefix of its own for one test, so tests sharing a server never meet."""
    return f"t{uuid.uuid4().hex[:12]}:"
