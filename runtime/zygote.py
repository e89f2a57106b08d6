"""The template process workers are forked from: a fresh interpreter, never the host.

Started by the host with `python -m runtime.zygote FD` (exec'd, so it carries no host memory,
threads or sockets), it imports only what a worker needs, warms the sandbox up, and then forks
one worker per request. It runs no handler code itself. Control messages on the socket FD:

    host -> zygote   {"op": "spawn", "id": n} + two fds (the worker's request and reply ends)
    zygote -> host   {"op": "spawned", "id": n, "pid": p}
    zygote -> host   {"op": "exited", "pid": p, "status": s}  (s < 0: killed by signal -s)

The socket is SOCK_SEQPACKET: one JSON object per packet, fds attached to their request.

EOF on the socket means the host is gone: the zygote kills its workers and exits.
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import signal
import socket
import sys

from runtime import worker
from sandbox import modules
from sandbox.runner import run_source

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def warm_up() -> None:
    """Import and build everything a worker touches, once, so forks start ready."""
    for name in modules.ALLOWED_MODULES:
        modules.facade(name)
    run_source("from datetime import datetime\ndef h(p):\n"
               "    return datetime.strptime('2024-01-02', '%Y-%m-%d').strftime('%d')\n",
               "h", {})


class Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.children: set[int] = set()

    def run(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ, "control")
        selector.register(wake_r, selectors.EVENT_READ, "child")
        self.send({"op": "ready", "pid": os.getpid()})
        while True:
            for key, _ in selector.select():
                if key.data == "child":
                    os.read(wake_r, 4096)
                    self.reap()
                elif not self.on_control():
                    self.shutdown()
                    return

    def on_control(self) -> bool:
        data, fds, _, _ = socket.recv_fds(self.control, 65536, 2)
        if not data:
            return False
        request = json.loads(data)
        if request.get("op") == "spawn" and len(fds) == 2:
            pid = self.fork_worker(*fds)
            self.send({"op": "spawned", "id": request["id"], "pid": pid})
        else:
            for fd in fds:
                os.close(fd)
        return True

    def fork_worker(self, request_fd: int, reply_fd: int) -> int:
        pid = os.fork()
        if pid == 0:
            self.become_worker(request_fd, reply_fd)
        os.close(request_fd)
        os.close(reply_fd)
        self.children.add(pid)
        return pid

    def become_worker(self, request_fd: int, reply_fd: int) -> None:
        """In the child: own process group, no inherited fds, then serve."""
        try:
            os.setsid()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            parent = os.getppid()
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the zygote died before the death signal was armed
                os._exit(1)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            keep = sorted({0, 1, 2, request_fd, reply_fd})
            for low, high in zip(keep, [*keep[1:], 1 << 16], strict=True):
                os.closerange(low + 1, high)
        except BaseException:
            os._exit(1)
        worker.main(request_fd, reply_fd)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"op": "exited", "pid": pid, "status": os.waitstatus_to_exitcode(status)})

    def send(self, message: dict[str, object]) -> None:
        try:
            self.control.send(json.dumps(message).encode())
        except OSError:
            pass  # the host is gone; the control loop sees EOF next

    def shutdown(self) -> None:
        for pid in self.children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    warm_up()
    Zygote(control).run()


if __name__ == "__main__":
    main()
