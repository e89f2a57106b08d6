"""TEST ONLY: workers that die, hang or break the protocol at a chosen stage, or run probes.

Armed only through `Engine(inject_fault=...)` and `Engine(allow_probes=True)`, which tests
use; the zygote hands the fault to the first `count` workers it forks. Kept out of the trust
boundary's loop (runtime.worker): a production worker's hooks do nothing. Stages, in a
worker's life:

    start    before it reads anything          wait     bound, before its first request
    read     request read, handler not started run      inside the invocation
    write    instead of the result reply       between  after its first reply
"""

from __future__ import annotations

import os
import signal
import struct
from typing import Any

from handlerbox.runtime.worker import Worker

STAGES = ("start", "wait", "read", "run", "write", "between")
ACTIONS = ("sigkill", "sigsegv", "exit", "hang", "flood", "malformed", "overcap", "garbage",
           "half")


class Fault:
    """Fires `action` once, the first time the worker reaches `stage`."""

    def __init__(self, spec: dict[str, Any] | None, reply_fd: int) -> None:
        self.stage = spec["stage"] if spec else None
        self.action = spec["action"] if spec else None
        self.reply_fd = reply_fd

    def __call__(self, stage: str) -> bool:
        """Act if armed for `stage`; True when the fault replaced the reply."""
        if stage != self.stage:
            return False
        self.stage = None  # once
        action = self.action
        if action == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "sigsegv":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif action == "exit":
            os._exit(7)
        elif action == "hang":
            while True:
                pass
        elif action == "flood":
            for fd in (1, 2):
                os.write(fd, b"flood " * 200_000)
            return False
        elif action == "malformed":
            os.write(self.reply_fd, struct.pack(">I", 8) + b"not json")
        elif action == "overcap":
            os.write(self.reply_fd, struct.pack(">I", 1 << 30) + b"x" * 1024)
        elif action == "garbage":
            os.write(self.reply_fd, os.urandom(4096))
        elif action == "half":
            os.write(self.reply_fd, struct.pack(">I", 100) + b"{" * 50)
            os._exit(0)
        return True


class TestWorker(Worker):
    """A worker with a fault armed, or probes allowed."""

    def __init__(self, request_fd: int, reply_fd: int, isolation: dict[str, str],
                 probes: bool, fault: dict[str, Any] | None) -> None:
        super().__init__(request_fd, reply_fd, isolation)
        self.probes = probes
        self.fault = Fault(fault, reply_fd)

    def at(self, stage: str) -> bool:
        return self.fault(stage)

    def other(self, request: dict[str, Any]) -> bool:
        if request.get("op") != "probe" or not self.probes:
            return False
        self.reply({"op": "probe", "result": run_probe(request["source"])})
        return True


def run_probe(source: str) -> Any:
    """Run unrestricted code in this worker (after its isolation layers) and return its
    `result` variable. The request comes from the host; handlers cannot send requests."""
    namespace: dict[str, Any] = {}
    try:
        exec(source, namespace)
    except BaseException as exc:  # the probe reports what stopped it
        return {"raised": type(exc).__name__, "message": str(exc)}
    return namespace.get("result")


def make_worker(request_fd: int, reply_fd: int, isolation: dict[str, str], probes: bool,
                fault: dict[str, Any] | None) -> Worker:
    if probes or fault:
        return TestWorker(request_fd, reply_fd, isolation, probes, fault)
    return Worker(request_fd, reply_fd, isolation)
