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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_S = 2.0


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
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one writer at a time."""
        conn = self.connection()
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
