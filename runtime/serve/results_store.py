"""Invocation results by id, and the journal of accepted events, in the engine's SQLite file;
no untrusted input is parsed here (the front door builds every record).

    serve_invocations: id, kind, app, state, accepted_at, finished_at, request, record
      queued   an accepted product event not finished yet; `request` holds its payload so the
               next start can run it if this process stops first
      done     `record` is the result (JSON), readable until `ttl` seconds after it finished

Writes go through `Journal`: they are grouped into one transaction per batch on a thread of
its own, so the event loop never waits on SQLite. An accepted event's row is committed before
the caller hears 202 (`await journal.accept(...)`); a result is written behind the response
(`journal.finish(...)`) and served from memory until it is committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from handlerbox.runtime.services.sqlite import Database

log = logging.getLogger("handlerbox.serve")

SCHEMA = """
CREATE TABLE IF NOT EXISTS serve_invocations (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, app TEXT NOT NULL, state TEXT NOT NULL,
    accepted_at REAL NOT NULL, finished_at REAL, request BLOB, record BLOB);
CREATE INDEX IF NOT EXISTS serve_invocations_state ON serve_invocations (state, accepted_at);
CREATE INDEX IF NOT EXISTS serve_invocations_finished ON serve_invocations (finished_at);
"""


@dataclass(frozen=True)
class Accepted:
    """A product event accepted for later: its payload is kept until it has a result."""

    id: str
    app: str
    request: bytes
    accepted_at: float


@dataclass(frozen=True)
class Finished:
    """An invocation's result record (JSON), stored under its id."""

    id: str
    kind: str
    app: str
    accepted_at: float
    finished_at: float
    record: bytes


class ResultsStore:
    """The table; every method runs on the calling thread (the Journal's, or a pool's)."""

    def __init__(self, database: Database, ttl: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.database, self.ttl, self.clock = database, ttl, clock
        database.schema(SCHEMA)

    def write(self, ops: Sequence[Accepted | Finished]) -> None:
        with self.database.transaction() as conn:
            for op in ops:
                if isinstance(op, Accepted):
                    conn.execute("INSERT OR IGNORE INTO serve_invocations (id, kind, app, state,"
                                 " accepted_at, request) VALUES (?, 'product', ?, 'queued', ?, ?)",
                                 (op.id, op.app, op.accepted_at, op.request))
                else:
                    conn.execute("INSERT OR REPLACE INTO serve_invocations (id, kind, app, state,"
                                 " accepted_at, finished_at, request, record) "
                                 "VALUES (?, ?, ?, 'done', ?, ?, NULL, ?)",
                                 (op.id, op.kind, op.app, op.accepted_at, op.finished_at,
                                  op.record))

    def get(self, invocation_id: str) -> dict[str, Any] | None:
        """The stored record, `{"id", "state": "queued", ...}` for an event not run yet, or
        None when the id is unknown or its result expired."""
        row = self.database.connection().execute(
            "SELECT state, kind, app, accepted_at, finished_at, record FROM serve_invocations "
            "WHERE id = ?", (invocation_id,)).fetchone()
        if row is None:
            return None
        state, kind, app, accepted_at, finished_at, record = row
        if state == "queued":
            return {"id": invocation_id, "kind": kind, "app": app, "state": "queued",
                    "accepted_at": accepted_at}
        if finished_at < self.clock() - self.ttl:
            return None
        found: dict[str, Any] = orjson.loads(record)
        return found

    def queued(self) -> list[Accepted]:
        """Accepted product events without a result, oldest first (for a restart)."""
        rows = self.database.connection().execute(
            "SELECT id, app, request, accepted_at FROM serve_invocations WHERE state = 'queued' "
            "ORDER BY accepted_at").fetchall()
        return [Accepted(id=r[0], app=r[1], request=bytes(r[2]), accepted_at=r[3])
                for r in rows]

    def purge(self) -> int:
        """Forget results older than the TTL; returns how many went."""
        with self.database.transaction() as conn:
            cursor = conn.execute("DELETE FROM serve_invocations WHERE state = 'done' AND "
                                  "finished_at < ?", (self.clock() - self.ttl,))
        return cursor.rowcount


class Journal:
    """Group-commits writes to a ResultsStore from the event loop.

        journal = Journal(store); journal.start()
        await journal.accept(Accepted(...))    # returns once the row is committed
        journal.finish(Finished(...))          # returns at once; readable via recent()
        await journal.close()                  # writes what is pending, then stops
    """

    def __init__(self, store: ResultsStore) -> None:
        self.store = store
        self._ops: list[Accepted | Finished] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._recent: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handlerbox-journal")
        self.write_errors = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="handlerbox-journal")

    async def accept(self, op: Accepted) -> None:
        """Commit an accepted event's row (raises what the write raised)."""
        if self._closing:
            raise RuntimeError("the journal is closed")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ops.append(op)
        self._waiters.append(waiter)
        self._wake.set()
        await waiter

    def finish(self, op: Finished) -> bool:
        """Queue a result for writing; False when the journal is closed (not stored)."""
        if self._closing:
            return False
        self._recent[op.id] = op.record
        self._ops.append(op)
        self._wake.set()
        return True

    def recent(self, invocation_id: str) -> bytes | None:
        """A result not committed yet."""
        return self._recent.get(invocation_id)

    async def read(self, call: Callable[[], Any]) -> Any:
        """Run a read on the journal's thread (its own connection; it never blocks the loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._ops:
                ops, self._ops = self._ops, []
                waiters, self._waiters = self._waiters, []
                error: BaseException | None = None
                try:
                    await loop.run_in_executor(self._thread, self.store.write, ops)
                except Exception as exc:  # the store failed: callers of accept() hear it
                    error = exc
                    self.write_errors += 1
                    log.error("results store write failed: %s", exc)
                for waiter in waiters:
                    if not waiter.done():
                        if error is None:
                            waiter.set_result(None)
                        else:
                            waiter.set_exception(error)
                for op in ops:
                    if isinstance(op, Finished) and self._recent.get(op.id) is op.record:
                        del self._recent[op.id]
            if self._closing and not self._ops:
                return
