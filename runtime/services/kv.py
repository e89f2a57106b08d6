"""The per-installation key-value store (host service "db"); its arguments are untrusted.

    handler -> engine (frame is plain JSON) -> KVStore.call (operation, argument values,
    deadline, rate) -> KVBackend (SQLiteKV in production, MemoryKV in unit tests)

Entries are keyed by (Scope.installation, key) as two separate columns, never one joined
string, and matched with `=` only (never LIKE or a prefix), so no key string can reach
another installation's entries. Values are stored as compact JSON text; expiry is absolute
wall-clock time; an expired entry is invisible and deleted lazily (when touched, or by
`sweep`). Every update is a read-modify-write inside one backend transaction.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, Protocol

from handlerbox.runtime.services.base import Clock, RateLimiter, Scope, ServiceError
from handlerbox.runtime.services.sqlite import Database
from handlerbox.sandbox.errors import ResultError
from handlerbox.sandbox.results import MAX_DEPTH, to_json_bytes

MAX_KEY_CHARS = 60
MAX_ENTRY_BYTES = 40 * 1024  # key (UTF-8) + value (compact JSON, UTF-8)
MAX_TTL_S = 10 * 365 * 86400  # ten years: a bound, so a huge int cannot overflow the expiry
RATE_LIMIT = 50  # operations per minute per installation

Condition = Literal["exists", "not_exists"] | None
Change = Callable[[str], str]
"""Maps the stored JSON text to the new JSON text, or raises ServiceError to change nothing."""


class KVBackend(Protocol):
    """JSON text by (installation, key). `now` is wall-clock seconds; an entry whose
    `expires_at <= now` is absent to every method. Each method is atomic."""

    def get(self, installation: str, key: str, now: float) -> str | None: ...

    def set(self, installation: str, key: str, value: str, expires_at: float | None,
            now: float, condition: Condition = None) -> bool:
        """Store, unless a live entry must exist (or must not) and does not: then False."""

    def delete(self, installation: str, key: str, now: float) -> bool:
        """Remove the entry; True when a live one was there."""

    def update(self, installation: str, key: str, now: float, change: Change) -> str | None:
        """Store `change(value)` over a live entry, keeping its expiry, and return it; None
        when there is no live entry. If `change` raises, nothing is written."""

    def purge(self, installation: str) -> int:
        """Remove every entry of the installation; how many."""

    def sweep(self, now: float) -> int:
        """Remove every installation's expired entries; how many."""


def _expired(expires_at: float | None, now: float) -> bool:
    return expires_at is not None and expires_at <= now


_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    installation TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, expires_at REAL,
    PRIMARY KEY (installation, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
"""
_WHERE = "WHERE installation = ? AND key = ?"


@contextmanager
def _busy_as_503() -> Iterator[None]:
    """A lock held past the busy timeout (or a disk error) is the host's problem: the handler
    gets a retryable 503 without SQLite's details."""
    try:
        yield
    except sqlite3.OperationalError:
        raise ServiceError(503, "the key-value store is busy; retry the operation later") \
            from None


class SQLiteKV(KVBackend):
    """One `kv` table in the shared Database. Writes run in `db.transaction()` (BEGIN
    IMMEDIATE), so a check-then-write is atomic across threads and across processes that
    share the file; reads need no transaction (WAL gives each statement a snapshot)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.schema(_SCHEMA)

    def get(self, installation: str, key: str, now: float) -> str | None:
        with _busy_as_503():
            row = self.db.connection().execute(
                f"SELECT value, expires_at FROM kv {_WHERE}", (installation, key)).fetchone()
            if row is None:
                return None
            if _expired(row[1], now):  # lazily delete, unless re-set meanwhile
                with self.db.transaction() as conn:
                    conn.execute(f"DELETE FROM kv {_WHERE} AND expires_at <= ?",
                                 (installation, key, now))
                return None
            return str(row[0])

    def _live(self, conn: sqlite3.Connection, installation: str, key: str,
              now: float) -> str | None:
        row = conn.execute(f"SELECT value, expires_at FROM kv {_WHERE}",
                           (installation, key)).fetchone()
        return None if row is None or _expired(row[1], now) else str(row[0])

    def set(self, installation: str, key: str, value: str, expires_at: float | None,
            now: float, condition: Condition = None) -> bool:
        with _busy_as_503(), self.db.transaction() as conn:
            if condition is not None:
                present = self._live(conn, installation, key, now) is not None
                if present != (condition == "exists"):
                    return False
            conn.execute("INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT (installation, key) "
                         "DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                         (installation, key, value, expires_at))
            return True

    def delete(self, installation: str, key: str, now: float) -> bool:
        with _busy_as_503(), self.db.transaction() as conn:
            present = self._live(conn, installation, key, now) is not None
            conn.execute(f"DELETE FROM kv {_WHERE}", (installation, key))
            return present

    def update(self, installation: str, key: str, now: float, change: Change) -> str | None:
        with _busy_as_503(), self.db.transaction() as conn:
            old = self._live(conn, installation, key, now)
            if old is None:
                return None
            new = change(old)
            conn.execute(f"UPDATE kv SET value = ? {_WHERE}", (new, installation, key))
            return new

    def purge(self, installation: str) -> int:
        return self._delete("installation = ?", installation)

    def sweep(self, now: float) -> int:
        return self._delete("expires_at <= ?", now)

    def _delete(self, where: str, arg: str | float) -> int:
        with _busy_as_503(), self.db.transaction() as conn:
            return int(conn.execute(f"DELETE FROM kv WHERE {where}", (arg,)).rowcount)


class MemoryKV(KVBackend):
    """A dict behind one lock: a stand-in for fast unit tests only (nothing persists, nothing
    is shared between processes)."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], tuple[str, float | None]] = {}
        self._lock = threading.Lock()

    def _live(self, where: tuple[str, str], now: float) -> str | None:
        entry = self._data.get(where)
        if entry is not None and _expired(entry[1], now):
            del self._data[where]
            entry = None
        return None if entry is None else entry[0]

    def get(self, installation: str, key: str, now: float) -> str | None:
        with self._lock:
            return self._live((installation, key), now)

    def set(self, installation: str, key: str, value: str, expires_at: float | None,
            now: float, condition: Condition = None) -> bool:
        with self._lock:
            present = self._live((installation, key), now) is not None
            if condition is not None and present != (condition == "exists"):
                return False
            self._data[installation, key] = (value, expires_at)
            return True

    def delete(self, installation: str, key: str, now: float) -> bool:
        with self._lock:
            present = self._live((installation, key), now) is not None
            self._data.pop((installation, key), None)
            return present

    def update(self, installation: str, key: str, now: float, change: Change) -> str | None:
        with self._lock:
            old = self._live((installation, key), now)
            if old is None:
                return None
            new = change(old)
            self._data[installation, key] = (new, self._data[installation, key][1])
            return new

    def purge(self, installation: str) -> int:
        return self._drop(lambda where, _: where[0] == installation)

    def sweep(self, now: float) -> int:
        return self._drop(lambda _, entry: _expired(entry[1], now))

    def _drop(self, doomed: Callable[[tuple[str, str], tuple[str, float | None]], bool]) -> int:
        with self._lock:
            gone = [where for where, entry in self._data.items() if doomed(where, entry)]
            for where in gone:
                del self._data[where]
            return len(gone)


# Parameters of each handler operation: (required, optional).
_PARAMS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "set": (frozenset({"key", "value"}), frozenset({"ttl", "if_exists", "if_not_exists"})),
    "get": (frozenset({"key"}), frozenset()),
    "delete": (frozenset({"key"}), frozenset()),
    "update": (frozenset({"key", "action", "attributes"}), frozenset()),
}
_MISSING = object()


class KVStore:
    """The "db" service: set / get / delete / update on the calling installation's keys.

    `call` is the handler's door: it checks the deadline and the rate (`rate_limit` calls
    per minute per installation; every call counts, refused ones too, except those refused
    for the rate), then the operation and argument names, then runs the method of the same
    name, which checks each argument's type and value. Host code may call the methods
    directly (not rate limited). `clock` (wall-clock) dates expiry; `rate_clock`
    (monotonic) drives the rate window.
    """

    name = "db"
    operations = frozenset(_PARAMS)

    def __init__(self, backend: KVBackend, clock: Clock = time.time,
                 rate_limit: int = RATE_LIMIT, rate_clock: Clock = time.monotonic) -> None:
        self.backend, self.clock, self.rate_limit = backend, clock, rate_limit
        self._limiter = RateLimiter(rate_limit, 60.0, rate_clock)

    @classmethod
    def sqlite(cls, database: Database, **options: Any) -> KVStore:
        """A store over the `kv` table of `database` (created if missing)."""
        return cls(SQLiteKV(database), **options)

    def call(self, scope: Scope, operation: str, args: dict[str, Any], deadline: float) -> Any:
        if time.monotonic() >= deadline:
            raise ServiceError(504, "Timeout error while processing the request. (The "
                                    "invocation's deadline passed before this db call ran.)")
        if not self._limiter.allow(scope.installation):
            raise ServiceError(429, f"rate limit reached: {self.rate_limit} operations per "
                                    "minute per installation; wait before retrying, and keep "
                                    "related fields in one object to need fewer operations")
        if type(args) is not dict:
            raise ServiceError(400, f"db arguments must be an object, got {_show(args)}")
        if type(operation) is not str or operation not in _PARAMS:
            raise ServiceError(400, f"db has no operation {_show(operation)}; use one of "
                                    f"{', '.join(sorted(_PARAMS))}")
        required, optional = _PARAMS[operation]
        unknown = sorted(_show(name) for name in args if name not in required | optional)
        if unknown:
            raise ServiceError(400, f"db.{operation} does not take {', '.join(unknown)}; it "
                                    f"takes {', '.join(sorted(required | optional))}")
        missing = sorted(required - set(args))
        if missing:
            raise ServiceError(400, f"db.{operation} needs {', '.join(missing)}")
        return getattr(self, operation)(scope, **args)

    async def call_async(self, scope: Scope, operation: str, args: dict[str, Any],
                         deadline: float) -> Any:
        """`call`, inline on the event loop: SQLite is a local file and each operation one
        or two indexed statements (microseconds), cheaper than a hop to a thread. It can
        only block while another writer holds the lock (at most the busy timeout)."""
        return self.call(scope, operation, args, deadline)

    def set(self, scope: Scope, key: Any, value: Any, ttl: Any = None, if_exists: Any = False,
            if_not_exists: Any = False) -> dict[str, bool]:
        """Store `value` (any JSON) under `key`, replacing value and expiry; `ttl` seconds
        until it expires. if_exists: only over a live key (else 404); if_not_exists: only a
        new key (else 409)."""
        _check_key(key)
        if ttl is not None and (type(ttl) is not int or not 1 <= ttl <= MAX_TTL_S):
            raise ServiceError(400, f"ttl must be a whole number of seconds from 1 to "
                                    f"{MAX_TTL_S} (ten years), got {_show(ttl)}; leave it out "
                                    "to keep the key until it is deleted")
        for flag, given in (("if_exists", if_exists), ("if_not_exists", if_not_exists)):
            if type(given) is not bool:
                raise ServiceError(400, f"{flag} must be true or false, got {_show(given)}")
        if if_exists and if_not_exists:
            raise ServiceError(400, "if_exists and if_not_exists exclude each other; pass "
                                    "at most one")
        text = _encode(key, value)
        now = self.clock()
        condition: Condition = "exists" if if_exists else "not_exists" if if_not_exists else None
        if self.backend.set(scope.installation, key, text,
                            None if ttl is None else now + ttl, now, condition):
            return {"created": True}
        if if_exists:
            raise _not_found(key, "set with if_exists stores only over an existing key")
        raise ServiceError(409, f"key {key!r} already exists; set with if_not_exists stores "
                                "only a new key (drop if_not_exists to overwrite it)")

    def get(self, scope: Scope, key: Any) -> Any:
        """The stored value; 404 when the key is missing or expired."""
        _check_key(key)
        text = self.backend.get(scope.installation, key, self.clock())
        if text is None:
            raise _not_found(key, "set it first, or handle the 404")
        return json.loads(text)

    def delete(self, scope: Scope, key: Any) -> dict[str, bool]:
        """Remove the key; 404 when it is missing or expired, so a handler can tell."""
        _check_key(key)
        if not self.backend.delete(scope.installation, key, self.clock()):
            raise _not_found(key, "nothing was deleted; treat 404 as done if deleting twice "
                                  "is fine")
        return {"deleted": True}

    def update(self, scope: Scope, key: Any, action: Any, attributes: Any) -> Any:
        """Change attributes of the stored object at dotted paths, all or nothing, keeping
        the expiry; returns the new value (so an increment needs no extra get)."""
        _check_key(key)
        apply = _action(action, attributes)

        def change(text: str) -> str:
            stored = json.loads(text)
            if type(stored) is not dict:
                raise ServiceError(400, f"key {key!r} holds {_kind(stored)}, not an object; "
                                        "update changes attributes of a stored object (use "
                                        "set to replace other values)")
            apply(stored)
            return _encode(key, stored)

        new = self.backend.update(scope.installation, key, self.clock(), change)
        if new is None:
            raise _not_found(key, "update changes an existing object; set it first")
        return json.loads(new)

    def purge(self, scope: Scope) -> int:
        """Delete all of the installation's keys (on uninstall); the number deleted."""
        return self.backend.purge(scope.installation)

    def sweep(self) -> int:
        """Delete every installation's expired entries (a periodic host job; optional,
        since expired entries are invisible anyway)."""
        return self.backend.sweep(self.clock())


def _action(action: Any, attributes: Any) -> Callable[[dict[str, Any]], None]:
    """Check an update's action and attributes up front; return what applies them."""
    if type(action) is not str or action not in _ACTIONS:
        raise ServiceError(400, "update action must be set, remove, increment or append, got "
                                f"{_show(action)}")
    pairs: list[tuple[Any, Any]] = []
    if action == "remove" and type(attributes) is list:
        pairs = [(path, None) for path in attributes]
    elif action != "remove" and type(attributes) is dict:
        pairs = list(attributes.items())
    if not pairs:
        raise ServiceError(400, f"update {action} needs attributes as a non-empty " + (
            "list of paths" if action == "remove" else "object of {path: value}") +
            f", got {_show(attributes)}")
    for path, given in pairs:
        if action == "append" and type(given) is not list:
            raise ServiceError(400, f"update append needs a list of values to add for {path!r}"
                                    f", got {_show(given)}")
        if action == "increment" and not _is_number(given):
            raise ServiceError(400, f"update increment needs a finite number for {path!r}, "
                                    f"got {_show(given)}")
    steps = [(path, _split(path), given) for path, given in pairs]
    do = _ACTIONS[action]

    def apply(obj: dict[str, Any]) -> None:
        for path, parts, given in steps:
            parent = _parent(obj, parts, path, create=action != "remove")
            if parent is not None:  # None: remove of a path that is already absent
                do(parent, parts[-1], given, path)

    return apply


def _set(parent: dict[str, Any], name: str, given: Any, path: str) -> None:
    parent[name] = given


def _remove(parent: dict[str, Any], name: str, given: Any, path: str) -> None:
    parent.pop(name, None)


def _increment(parent: dict[str, Any], name: str, given: Any, path: str) -> None:
    current = parent.get(name, 0)
    if not _is_number(current):
        raise ServiceError(400, f"cannot increment {path!r}: it holds {_kind(current)}, not a "
                                "number (a missing attribute counts from 0)")
    try:
        total: int | float = current + given
    except OverflowError:  # an int too large to mix with a float
        total = math.inf
    if not _is_number(total):
        raise ServiceError(400, f"incrementing {path!r} overflows; store smaller numbers")
    parent[name] = total


def _append(parent: dict[str, Any], name: str, given: Any, path: str) -> None:
    current = parent.get(name, [])
    if type(current) is not list:
        raise ServiceError(400, f"cannot append to {path!r}: it holds {_kind(current)}, not a "
                                "list")
    parent[name] = [*current, *given]


_ACTIONS: dict[str, Callable[[dict[str, Any], str, Any, str], None]] = {
    "set": _set, "remove": _remove, "increment": _increment, "append": _append}


def _is_number(value: Any) -> bool:
    """An int (not a bool) or a finite float."""
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _split(path: Any) -> list[str]:
    """`"a.b"` is attribute b of object a; a dot cannot be part of an attribute name."""
    if type(path) is not str or not path or "" in path.split("."):
        raise ServiceError(400, f"attribute paths are dotted names like 'a' or 'a.b', got "
                                f"{_show(path)}")
    return path.split(".")


def _parent(obj: dict[str, Any], parts: list[str], path: str,
            create: bool) -> dict[str, Any] | None:
    """The object holding the path's last name; missing objects on the way are created (or,
    when not `create`, None is returned). Anything else on the way is an error."""
    node = obj
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part, _MISSING)
        if child is _MISSING:
            if not create:
                return None
            child = node[part] = {}
        elif type(child) is not dict:
            raise ServiceError(400, f"cannot reach {path!r}: {'.'.join(parts[:depth + 1])!r} "
                                    f"holds {_kind(child)}, not an object")
        node = child
    return node


def _check_key(key: Any) -> None:
    if type(key) is not str or not key:
        raise ServiceError(400, f"key must be a non-empty string, got {_show(key)}")
    if len(key) > MAX_KEY_CHARS:
        raise ServiceError(400, f"key is {len(key)} characters; keys are at most "
                                f"{MAX_KEY_CHARS} characters: use a shorter key")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ServiceError(400, "key is not valid Unicode text (it holds a lone surrogate); "
                                "use a key of whole characters") from None


def _encode(key: str, value: Any) -> str:
    """Compact JSON text of `value`, if it is plain JSON and fits with the key in 40 KB. The
    engine has already capped the frame's size, so the value is bounded before this."""
    try:
        encoded = to_json_bytes(value, max_bytes=sys.maxsize)
    except ResultError as exc:
        raise ServiceError(400, f"{exc.message}; store plain JSON (objects, lists, strings, "
                                f"finite numbers, true/false, null) at most {MAX_DEPTH} levels "
                                "deep") from None
    size = len(key.encode("utf-8")) + len(encoded)
    if size > MAX_ENTRY_BYTES:
        raise ServiceError(413, f"key and value would take {size} bytes as compact JSON; the "
                                f"limit is {MAX_ENTRY_BYTES} bytes (40 KB) per key: store "
                                "less, or split it across keys; nothing was changed")
    return bytes(encoded).decode("utf-8")


def _not_found(key: str, hint: str) -> ServiceError:
    return ServiceError(404, f"key {key!r} not found in this installation's store (never "
                             f"set, deleted or expired); {hint}")


def _kind(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), f"a {type(value).__name__}")


def _show(value: Any) -> str:
    """A short, safe rendering of an untrusted value (huge ints cannot even be repr'd)."""
    if type(value) is int and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    if type(value) in (dict, list):
        return f"{_kind(value)} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
