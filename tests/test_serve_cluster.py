"""handlerbox serve in cluster mode: product events go to `handlerbox worker` hosts through
Redis, and their results come back to the front door (a real redis-server, a real host
process, a real uvicorn server on 127.0.0.1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import APPS, make_payload
from tests.redis_server import RedisServer, redis_server_fixture, unique_prefix  # noqa: F401
from tests.test_serve import serve

pytestmark = pytest.mark.timeout(90)
SHARDS = 2


@pytest.fixture
def host(redis_server: RedisServer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """One `handlerbox worker` host serving tests/apps/echo on every shard."""
    namespace = unique_prefix().rstrip(":")
    log = (tmp_path / "host.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "handlerbox", "worker", str(APPS / "echo"), "--redis",
         redis_server.url, "--namespace", namespace, "--shards", str(SHARDS), "--threads", "2",
         "--worker-timeout-ms", "20", "--database", str(tmp_path / "host.sqlite3")],
        stdout=subprocess.PIPE, stderr=log, text=True)
    line = process.stdout.readline() if process.stdout else ""
    assert "ready" in line, f"the host did not start: {line!r}; see {log.name}"
    sandboxes = {p.pid for p in psutil.Process(process.pid).children(recursive=True)}
    yield {"url": redis_server.url, "namespace": namespace, "pid": process.pid,
           "sandboxes": sandboxes}
    for pid in (process.pid, *sandboxes):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(10)


def test_product_events_run_on_the_cluster_and_their_results_come_back(
        host: dict[str, Any]) -> None:
    running, client, door = serve(apps=[str(APPS / "echo")], cluster={
        "redis_url": host["url"], "namespace": host["namespace"], "shards": SHARDS})
    try:
        waited = client.post("/apps/echo/events", params={"wait": "true"},
                             json=make_payload(id=1))
        assert waited.status_code == 200, waited.text
        body = waited.json()
        assert body["outcome"] == "ok", body
        assert body["value"] == {"account_id": "82918", "data": {"id": 1}}
        stored = client.get(f"/invocations/{body['id']}").json()
        pid = stored["result"]["worker_pid"]
        # it ran in a sandbox of the cluster host, not in the front door's own engine
        assert pid not in {w["pid"] for w in door.engine.worker_states()}
        assert pid in {p.pid for p in psutil.Process(host["pid"]).children(recursive=True)}
        accepted = client.post("/apps/echo/events", json=make_payload(id=2))
        assert accepted.status_code == 202, accepted.text
        href = accepted.json()["href"]
        for _ in range(200):
            state = client.get(href).json()
            if state.get("state") == "done":
                break
            time.sleep(0.05)
        assert state["state"] == "done", state
        assert state["result"]["value"]["data"] == {"id": 2}
        assert state["result"]["worker_pid"] == pid  # the same warm sandbox on the host
    finally:
        client.close()
        running.stop()
