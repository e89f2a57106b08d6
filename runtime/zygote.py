"""The template process workers are forked from: a fresh interpreter, never the host.

Started by the host with `python -m runtime.zygote FD SETTINGS` (exec'd, so it carries no host
memory, threads or sockets), it enters a network namespace with no interface, imports only
what a worker needs, warms the sandbox up, and then forks one worker per request; each child
applies the isolation layers (runtime.isolation) before it reads a single request. The
zygote runs no handler code itself. Control messages on the socket FD:

    host -> zygote   {"op": "spawn", "id": n} + two fds (the worker's request and reply ends)
    zygote -> host   {"op": "ready", "pid": p, "isolation": {...}}   (once, at start)
    zygote -> host   {"op": "spawned", "id": n, "pid": p}
    zygote -> host   {"op": "exited", "pid": p, "status": s}  (s < 0: killed by signal -s)

The socket is SOCK_SEQPACKET: one JSON object per packet, fds attached to their request.
EOF on the socket means the host is gone: the zygote kills its workers and exits.
"""

from __future__ import annotations

import gc
import json
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

from handlerbox.runtime import faults, isolation, proctitle, worker
from handlerbox.sandbox import modules
from handlerbox.sandbox.runner import run_source


def warm_up() -> None:
    """Import and build everything a worker touches, once, so forks start ready."""
    for name in modules.ALLOWED_MODULES:
        modules.facade(name)
    run_source("from datetime import datetime\ndef h(p):\n"
               "    return datetime.strptime('2024-01-02', '%Y-%m-%d').strftime('%d')\n",
               "h", {})


class Zygote:
    def __init__(self, control: socket.socket, settings: dict[str, Any]) -> None:
        self.control = control
        self.settings = settings
        self.children: set[int] = set()
        self.pid = os.getpid()
        self.faults_left = (settings.get("fault") or {}).get("count", 0)  # test only
        netns = isolation.enter_network_namespace() if settings["enabled"] else (
            "unavailable: isolation is turned off in the engine config")
        self.layers = isolation.WorkerLayers(settings, netns)

    def run(self) -> None:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ, "control")
        selector.register(wake_r, selectors.EVENT_READ, "child")
        self.send({"op": "ready", "pid": self.pid, "isolation": self.probe_layers()})
        while True:
            for key, _ in selector.select():
                if key.data == "child":
                    os.read(wake_r, 4096)
                    self.reap()
                elif not self.on_control():
                    self.shutdown()
                    return

    def probe_layers(self, rounds: int = 5) -> dict[str, Any]:
        """Fork throwaway children that apply every layer and report: what a worker gets,
        and (median of `rounds`) how long the fork plus layers, and the layers alone, take."""
        starts, layer_times, layers = [], [], {}
        for _ in range(rounds):
            read_end, write_end = os.pipe()
            started = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(read_end)
                    began = time.perf_counter()
                    report = self.layers.apply((write_end,), self.pid)
                    spent = (time.perf_counter() - began) * 1000.0
                    os.write(write_end, json.dumps([report, spent]).encode())
                finally:
                    os._exit(0)
            os.close(write_end)
            with os.fdopen(read_end, "rb") as f:
                data = f.read(65536)
            starts.append((time.perf_counter() - started) * 1000.0)
            os.waitpid(pid, 0)
            if not data:
                return {"layers": {name: "unavailable: the probe process died"
                                   for name in isolation.LAYERS}, "start_ms": 0.0,
                        "layers_ms": 0.0}
            layers, spent = json.loads(data)
            layer_times.append(spent)
        return {"layers": layers, "start_ms": round(sorted(starts)[rounds // 2], 3),
                "layers_ms": round(sorted(layer_times)[rounds // 2], 3)}

    def on_control(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.control, 65536, 2)
        except OSError:  # ECONNRESET when the host closed with our packets unread
            return False
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
        fault = self.settings.get("fault") if self.faults_left > 0 else None
        self.faults_left -= 1
        pid = os.fork()
        if pid == 0:
            self.become_worker(request_fd, reply_fd, fault)
        os.close(request_fd)
        os.close(reply_fd)
        self.children.add(pid)
        return pid

    def become_worker(self, request_fd: int, reply_fd: int,
                      fault: dict[str, Any] | None) -> None:
        """In the child: its own process group, every isolation layer, then serve."""
        try:
            os.setsid()
            proctitle.set_title("handlerbox worker (spare)")
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            report = self.layers.apply((request_fd, reply_fd), self.pid)
            if any(report.get(name) != isolation.ACTIVE for name in self.settings["require"]):
                os._exit(3)  # the host checked these at start; refuse rather than run bare
        except BaseException:  # a child must never return into the zygote's loop
            os._exit(1)
        worker.main(faults.make_worker(request_fd, reply_fd, report, self.settings["probes"],
                                       fault))

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
    proctitle.set_title("handlerbox zygote")
    control = socket.socket(fileno=int(sys.argv[1]))
    settings = json.loads(sys.argv[2])
    sys.path[:] = [p for p in sys.path if p not in ("", os.sep)]  # -m put the cwd, "/", there
    warm_up()
    # Everything imported so far lives as long as the workers: keep it out of their GC passes
    # (and its pages shared, not copied on a collection's write).
    gc.freeze()
    Zygote(control, settings).run()


if __name__ == "__main__":
    main()
