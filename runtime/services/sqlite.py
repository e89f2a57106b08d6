"""The embedded store: one SQLite file (WAL) shared by every service's tables.

No untrusted input is parsed here. Each thread gets its own connection (sqlite3 objects
must not cross threads); `transaction()` serialises writers with BEGIN IMMEDIATE so a
read-modify-write (an update, a schedule claim) is atomic even across processes that share
the file. With no path, the database lives in a temporary file removed on close.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

BUSY_TIMEOUT_S = 2.0

DEADLINE: ContextVar[float | None] = ContextVar("handlerbox_deadline", default=None)
"""The deadline (time.monotonic) of the invocation a service call runs for, set by the host
around each call (runtime.hostcalls): no wait for a lock may outlast it."""

NO_WAIT: ContextVar[bool] = ContextVar("handlerbox_no_wait", default=False)
"""Set on the event loop: a locked store fails at once (a 503 from the service) and the host
retries the call with asyncio sleeps, so the loop never blocks on SQLite's lock wait."""


class Database:
    """A SQLite file opened in WAL mode; services create their own tables with `schema`."""

    def __init__(self, path: str | Path | None = None) -> None:
        self._temporary = path is None
        if path is None:
            handle, name = tempfile.mkstemp(prefix="handlerbox-", suffix=".sqlite3")
            os.close(handle)
            path = name
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        # Not inside a transaction: SQLite refuses to change the journal mode there.
        self.connection().execute("PRAGMA journal_mode=WAL")

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode: transactions are explicit)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise sqlite3.ProgrammingError("the database is closed")
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one writer at a time. Waiting for
        another writer's lock ends at the calling invocation's deadline (DEADLINE), if any."""
        conn = self.connection()
        deadline = DEADLINE.get()
        if NO_WAIT.get():
            conn.execute("PRAGMA busy_timeout = 0")
        elif deadline is not None:
            wait = min(BUSY_TIMEOUT_S, max(deadline - time.monotonic(), 0.0))
            conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def schema(self, statements: str) -> None:
        """Create a service's tables and indexes (idempotent `CREATE ... IF NOT EXISTS`)."""
        conn = self.connection()
        conn.executescript(statements)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        if self._temporary:
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(f"{self.path}{suffix}")
                except FileNotFoundError:
                    pass
