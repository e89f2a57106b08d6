"""Host side of the zygote: starts the template process and asks it for workers.

Reads the zygote's control packets (capped, JSON only) on one daemon thread, which hands
spawn replies and exit statuses to whoever waits for them. If the zygote dies it is started
again on the next spawn.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from handlerbox.runtime import protocol
from handlerbox.runtime.errors import WorkerError

PIPE_BYTES = 1 << 20
"""Request pipes are enlarged so a 256 KiB payload is written without waiting on the worker."""

MAX_REPLY_BYTES = 16 << 20
"""No worker reply may claim more than this (results and logs are capped far below)."""

ZYGOTE_START_SECONDS = 60.0
_MAX_CONTROL_PACKET = 16384
_KEEP_EXITS = 4096


@dataclass(eq=False)
class WorkerProcess:
    """The host's handle on one worker: its pid, its pipe ends, and what it serves."""

    pid: int
    request_fd: int
    reply_fd: int
    reader: protocol.FrameReader = field(
        default_factory=lambda: protocol.FrameReader(MAX_REPLY_BYTES))
    app_key: str | None = None
    invocations: int = 0
    cpu_ms: float = 0.0
    exit_status: Future[int] = field(default_factory=Future)

    signalled: bool = False

    def stop(self) -> None:
        """SIGKILL the worker's whole process group, once, and never after the zygote reported
        its exit (the pid may belong to another process by then). Safe from any thread."""
        if self.signalled or self.exit_status.done():
            return
        self.signalled = True
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        """Stop the worker and close the host's pipe ends. Only the worker's current user may
        close them: another thread could otherwise read a reused fd number."""
        self.stop()
        for fd in (self.request_fd, self.reply_fd):
            if fd >= 0:
                os.close(fd)
        self.request_fd = self.reply_fd = -1


class Spawner:
    """Starts workers by asking the zygote to fork; thread-safe."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.isolation: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._pending: dict[int, Future[int]] = {}
        self._workers: dict[int, WorkerProcess] = {}
        self._exits: OrderedDict[int, int] = OrderedDict()
        self._next_id = 0
        self._closed = False

    @property
    def zygote_pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> dict[str, Any]:
        """Start the zygote now; returns its isolation report."""
        with self._lock:
            self._ensure_zygote()
        return self.isolation

    def spawn(self, timeout: float = 10.0) -> WorkerProcess:
        """A new, unbound worker. Raises WorkerError if the zygote cannot provide one."""
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        try:
            fcntl.fcntl(request_w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # a smaller pipe only means a large write waits for the worker to read
        try:
            with self._lock:
                control = self._ensure_zygote()
                self._next_id += 1
                reply: Future[int] = Future()
                self._pending[self._next_id] = reply
                message = json.dumps({"op": "spawn", "id": self._next_id}).encode()
                socket.send_fds(control, [message], [request_r, reply_w])
            pid = reply.result(timeout)
        except Exception as exc:
            for fd in (request_w, reply_r):
                os.close(fd)
            raise WorkerError(f"could not start a worker: {exc}") from exc
        finally:
            os.close(request_r)
            os.close(reply_w)
        os.set_blocking(reply_r, False)  # the host reads first and polls only when empty
        handle = WorkerProcess(pid, request_w, reply_r)
        with self._lock:
            status = self._exits.pop(pid, None)
            if status is None:
                self._workers[pid] = handle
        if status is not None:
            handle.exit_status.set_result(status)
        return handle

    def close(self) -> None:
        """Stop the zygote (it kills the workers it still has) and wait for it."""
        with self._lock:
            self._closed = True
            control, process = self._socket, self._process
            self._socket = None
        if control is not None:
            control.shutdown(socket.SHUT_RDWR)
            control.close()
        if process is not None:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    # -- the zygote ------------------------------------------------------------------------

    def _ensure_zygote(self) -> socket.socket:
        if self._closed:
            raise WorkerError("the engine is closed")
        if self._socket is not None:
            return self._socket
        host_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A minimal environment: the host's may hold secrets, and workers inherit this one.
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
        if os.environ.get("PYTHONPATH"):  # the zygote must import handlerbox as we did
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        with zygote_end:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "handlerbox.runtime.zygote", str(zygote_end.fileno()),
                 json.dumps(self.settings)],
                pass_fds=[zygote_end.fileno()], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, env=env, cwd="/")
        host_end.settimeout(ZYGOTE_START_SECONDS)
        try:
            hello = json.loads(host_end.recv(_MAX_CONTROL_PACKET))
        except (OSError, ValueError) as exc:
            self._process.kill()
            raise WorkerError(f"the zygote did not start: {exc}") from exc
        if hello.get("op") != "ready":
            raise WorkerError("the zygote did not start")
        self.isolation = hello.get("isolation", {})
        host_end.settimeout(None)
        self._socket = host_end
        threading.Thread(target=self._read_control, args=(host_end,), daemon=True,
                         name="handlerbox-zygote-reader").start()
        return host_end

    def _read_control(self, control: socket.socket) -> None:
        while True:
            try:
                packet = control.recv(_MAX_CONTROL_PACKET)
                message = json.loads(packet) if packet else None
            except (OSError, ValueError):
                message = None
            if not isinstance(message, dict):
                self._zygote_lost(control)
                return
            if message.get("op") == "spawned":
                with self._lock:
                    reply = self._pending.pop(int(message.get("id", 0)), None)
                if reply is not None:
                    reply.set_result(int(message["pid"]))
            elif message.get("op") == "exited":
                self._exited(int(message["pid"]), int(message["status"]))

    def _exited(self, pid: int, status: int) -> None:
        with self._lock:
            handle = self._workers.pop(pid, None)
            if handle is None:
                self._exits[pid] = status
                while len(self._exits) > _KEEP_EXITS:
                    self._exits.popitem(last=False)
        if handle is not None:
            handle.exit_status.set_result(status)

    def _zygote_lost(self, control: socket.socket) -> None:
        with self._lock:
            if self._socket is control:
                self._socket = None
            pending, self._pending = self._pending, {}
            orphans, self._workers = self._workers, {}
        control.close()
        for reply in pending.values():
            reply.set_exception(WorkerError("the zygote exited"))
        for handle in orphans.values():
            if not handle.exit_status.done():
                handle.exit_status.set_result(-signal.SIGKILL)  # they die with the zygote


def describe_status(status: int) -> str:
    """`SIGKILL(-9)` for a signal, `exit(3)` for an exit code."""
    if status < 0:
        try:
            return f"{signal.Signals(-status).name}({status})"
        except ValueError:
            return f"signal({status})"
    return f"exit({status})"
