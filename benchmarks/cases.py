"""The suite's side of a case process: start it, send it ops, read its answers, stop it.

No untrusted input. A case that fails to start, answers with an error, or does not answer in
time is marked dead with the reason; the suite records it and carries on with the others.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from handlerbox.benchmarks.payloads import ROOT


class CaseFailed(Exception):
    """A case process could not start, answered an op with an error, or went silent."""


class MissingCase:
    """Stands in for a case whose optional package (the `bench` extra) is not installed: it
    measures nothing, and the results list it under "skipped" with the reason."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        self.error: str | None = None
        self.info: dict[str, Any] = {}
        self.alive = False

    def ready(self, timeout: float) -> None:
        pass

    def call(self, op: str, timeout: float, **args: Any) -> Any:
        return None

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def close(self) -> None:
        pass


class CaseProcess:
    def __init__(self, name: str, kind: str, config: dict[str, Any]) -> None:
        self.name = name
        self.error: str | None = None
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "handlerbox.benchmarks.server", kind, json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env,
            cwd=ROOT, start_new_session=True)
        self.buffer = b""
        self.info: dict[str, Any] = {}

    @property
    def alive(self) -> bool:
        return self.error is None

    def pause(self) -> None:
        """SIGSTOP the case's process group while other cases measure, so its idle threads
        (pools poll every 100 ms) never run beside them. Workers in sessions of their own
        (handlerbox's) are not stopped, but they sit blocked on their pipes."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, which: int) -> None:
        if self.alive and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, which)
            except (ProcessLookupError, PermissionError):
                pass

    def ready(self, timeout: float) -> None:
        """Wait for the case's contender to start."""
        try:
            self.info = self._read(timeout)
        except CaseFailed as exc:
            self._fail(f"could not start: {exc}")

    def call(self, op: str, timeout: float, **args: Any) -> Any:
        """Run one op; returns None (and marks the case dead) if it fails."""
        if not self.alive:
            return None
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
            self.process.stdin.flush()
            return self._read(timeout)
        except (CaseFailed, OSError) as exc:
            self._fail(f"{op} failed: {exc}")
            return None

    def close(self) -> None:
        self.resume()
        if self.process.poll() is None and self.alive:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(b'{"op": "close"}\n')
                self.process.stdin.close()
                self.process.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill()
        self.stderr.close()

    def _read(self, timeout: float) -> Any:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CaseFailed(f"no answer within {timeout:g} s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise CaseFailed(f"the case process exited ({self._stderr_tail()})")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        message = json.loads(line)
        if not message["ok"]:
            raise CaseFailed(message["error"].strip().splitlines()[-1] + "\n"
                             + message["error"])
        return message["result"]

    def _fail(self, reason: str) -> None:
        self.error = reason
        self._kill()

    def _kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip()
        return text[-2000:] or "no output"
