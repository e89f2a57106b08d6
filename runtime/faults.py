"""TEST ONLY: make a worker die, hang or break the protocol at a chosen stage.

Armed only through `Engine(inject_fault=...)`, which tests use; the zygote hands the fault to
the first `count` workers it forks. Stages, in a worker's life:

    start    before it reads anything          wait     bound, before its first request
    read     request read, handler not started run      inside the invocation
    write    instead of the result reply       between  after its first reply
"""

from __future__ import annotations

import os
import signal
import struct
from typing import Any

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
