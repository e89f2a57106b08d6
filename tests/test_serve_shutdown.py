"""SIGTERM to `python -m handlerbox serve` under load: exit 0, no process left behind, and
every accepted (202) event has a stored result, or, when the grace runs out, stays journalled
and runs at the next start."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import APPS, make_payload

TOKEN = "shutdown-token"
REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """`python -m handlerbox serve` in a subprocess, its JSON log lines in a file."""

    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"tokens": [TOKEN], "port": self.port, "apps": [str(APPS / "echo")],
                  "database": str(tmp / "db.sqlite3"), "data_dir": str(tmp / "apps"),
                  **settings}
        (tmp / "serve.json").write_text(json.dumps(config))
        self.log_path = tmp / f"serve-{self.port}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "handlerbox", "serve", "--config", str(tmp / "serve.json")],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.05)
        self.children = psutil.Process(self.proc.pid).children(recursive=True)
        assert self.children, "the engine's zygote and workers should be running"

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(45)
        _, alive = psutil.wait_procs(self.children, timeout=5)
        assert not alive, f"left behind: {alive}"
        return code

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines()
                if line.startswith("{")]


def stored(database: Path) -> dict[str, str]:
    with sqlite3.connect(database) as conn:
        return dict(conn.execute("SELECT id, state FROM serve_invocations WHERE kind = "
                                 "'product'").fetchall())


async def post_events(url: str, count: int, loops: int, every: float = 0.0
                      ) -> tuple[list[str], list[int]]:
    """Send `count` product events as 202s; returns the accepted ids and other statuses."""
    accepted: list[str] = []
    others: list[int] = []
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=30) as client:
        async def one(i: int) -> None:
            event = make_payload("onAgentUpdate", loops=loops) if i % 2 else make_payload(n=i)
            try:
                response = await client.post("/apps/echo/events", json=event)
            except httpx.TransportError:  # the listener closed: not accepted
                others.append(0)
                return
            if response.status_code == 202:
                accepted.append(response.json()["id"])
            else:
                others.append(response.status_code)

        tasks = []
        for i in range(count):
            tasks.append(asyncio.create_task(one(i)))
            if every:
                await asyncio.sleep(every)
        await asyncio.gather(*tasks)
    return accepted, others


def test_sigterm_under_load_runs_every_accepted_event_and_exits_0(tmp_path: Path) -> None:
    server = Server(tmp_path, engine={"workers": 2}, shutdown_grace_seconds=30)

    async def load_then_terminate() -> tuple[list[str], list[int]]:
        sender = asyncio.create_task(post_events(server.url, 400, 1_000_000, every=0.002))
        await asyncio.sleep(0.4)  # mid-stream: events queued, running, still arriving
        server.proc.send_signal(signal.SIGTERM)
        return await sender

    accepted, others = asyncio.run(load_then_terminate())
    code = server.proc.wait(45)
    _, alive = psutil.wait_procs(server.children, timeout=5)
    assert code == 0, server.log_path.read_text()[-3000:]
    assert not alive, f"left behind: {alive}"
    assert accepted, "some events should have been accepted before the signal"
    assert set(others) <= {0, 503}, others  # refused while draining, or the listener was closed
    states = stored(tmp_path / "db.sqlite3")
    assert all(states.get(i) == "done" for i in accepted), \
        [i for i in accepted if states.get(i) != "done"][:5]
    lines = server.log_lines()
    assert any(line["msg"] == "draining" for line in lines)
    stopped = [line for line in lines if line["msg"] == "stopped"]
    assert stopped and stopped[0]["left_queued"] == 0
    ran = {line["id"] for line in lines if line["msg"] == "invocation"}
    assert set(accepted) <= ran


def test_events_left_when_the_grace_runs_out_run_at_the_next_start(tmp_path: Path) -> None:
    settings = {"engine": {"workers": 1}, "consumers": 1, "shutdown_grace_seconds": 0}
    first = Server(tmp_path, **settings)
    accepted, others = asyncio.run(post_events(first.url, 30, 3_000_000))
    assert len(accepted) == 30 and not others
    assert first.terminate() == 0, first.log_path.read_text()[-3000:]
    states = stored(tmp_path / "db.sqlite3")
    assert set(states.get(i) for i in accepted) <= {"done", "queued"}
    left = [i for i in accepted if states[i] == "queued"]
    assert left, "with no grace, the queue should not have been drained"

    second = Server(tmp_path, **settings)
    try:
        with httpx.Client(base_url=second.url, headers={"Authorization": f"Bearer {TOKEN}"}
                          ) as client:
            deadline = time.monotonic() + 40
            for invocation_id in left:
                while (found := client.get(f"/invocations/{invocation_id}").json()).get(
                        "state") != "done":
                    assert time.monotonic() < deadline, found
                    time.sleep(0.05)
                assert found["result"]["outcome"] == "ok"
    finally:
        assert second.terminate() == 0
    assert set(stored(tmp_path / "db.sqlite3").values()) == {"done"}
    assert any(line["msg"] == "ready" and line["recovered"] == len(left)
               for line in second.log_lines())


def test_a_server_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HANDLERBOX_SERVE_TOKENS"}
    done = subprocess.run([sys.executable, "-m", "handlerbox", "serve", "--port", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 2
    assert "serve.tokens" in done.stderr and "HANDLERBOX_SERVE_TOKENS" in done.stderr
