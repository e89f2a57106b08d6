"""Scheduled events: the `schedule` service handlers call, its durable store, and the claim the
scheduler fires from. Touches untrusted input: every argument of a schedule host call.

    handler ──create/update/...──> ScheduleService ──checked Schedule──> ScheduleBackend
    Scheduler thread ──claim_due(now)──> [Occurrence, ...] ──fire()──> engine: onScheduledEvent

Times are whole epoch seconds: a `schedule_at` with a fraction is rounded up, so nothing fires
before the time asked for, and an occurrence's idempotency key is an integer. A claim removes a
one-time schedule, or moves a recurring one to its next future slot, in the same transaction
that selects it, so engines sharing one store fire each occurrence once; an occurrence claimed
by an engine that dies before `fire` hands it off is lost (at most once, never twice).
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import Field

from handlerbox.runtime.services.base import Clock, Scope, ServiceError
from handlerbox.runtime.services.sqlite import Database
from handlerbox.runtime.validation import EdgeModel, json_type, short
from handlerbox.sandbox.errors import ResultError
from handlerbox.sandbox.results import MAX_DEPTH, to_json_bytes

ONE_TIME, RECURRING = "one-time", "recurring"
UNITS = {"minutes": 60, "hours": 3600, "days": 86400}
MAX_PERIOD_S = 366 * 86400
"""Longer periods are refused: nobody can test them, and the slot arithmetic stays small."""
LATEST = 253402300799
"""9999-12-31T23:59:59Z: the last time `fetch` can write back as ISO 8601."""
NAME = re.compile(r"[A-Za-z0-9_.:-]{1,60}")
"""Names appear in logs, metrics and idempotency keys (`app/account/name/due`): no '/',
spaces, control characters or look-alike Unicode."""
_ARGS = {"create": ("name", "data", "schedule_at", "repeat"),
         "update": ("name", "data", "schedule_at", "repeat"),
         "fetch": ("name",), "delete": ("name",), "pause": ("name",), "resume": ("name",)}
_EXAMPLE = "e.g. '2030-01-31T09:00:00Z' or '2030-01-31T14:30:00+05:30'"


class ScheduleLimits(EdgeModel):
    """Operator settings of the schedule service; the defaults are the platform's.

        ScheduleLimits()                                          # production
        ScheduleLimits(min_lead_seconds=0, min_period_seconds=60)   # `handlerbox run`, tests

    `min_period_seconds` (default 5 minutes) bounds recurring schedules: each firing is a
    handler invocation, forever, for every installation; the platform fires "within minutes",
    so a shorter period would promise a precision it does not give.
    """

    max_one_time: int = Field(default=1000, ge=0)
    max_recurring: int = Field(default=1, ge=0)
    max_data_bytes: int = Field(default=4096, ge=2)
    min_lead_seconds: int = Field(default=300, ge=0)
    min_period_seconds: int = Field(default=300, ge=1)


@dataclass(frozen=True)
class Schedule:
    """One stored schedule. `schedule_at` is a one-time schedule's due time, or a recurring
    one's first slot (slots are `schedule_at + k * period`); `data` is compact JSON text."""

    name: str
    data: str
    schedule_at: int
    time_unit: str | None
    frequency: int | None
    next_run: int
    paused: bool = False
    created: float = 0.0

    @property
    def kind(self) -> str:
        return ONE_TIME if self.time_unit is None else RECURRING

    @property
    def period(self) -> int | None:
        return None if self.time_unit is None else UNITS[self.time_unit] * (self.frequency or 0)

    def view(self) -> dict[str, Any]:
        """What `fetch` returns; `next_run` is null while paused (nothing will fire)."""
        repeat = None if self.time_unit is None else {"time_unit": self.time_unit,
                                                      "frequency": self.frequency}
        return {"name": self.name, "data": json.loads(self.data),
                "schedule_at": iso(self.schedule_at), "repeat": repeat, "paused": self.paused,
                "next_run": None if self.paused else iso(self.next_run)}

    def resumed(self, now: float) -> Schedule:
        """Unpaused: a recurring schedule skips the slots that passed while it was paused (its
        next slot supersedes them); a one-time one keeps its time, and fires at once if it
        passed (it has no next slot, and dropping it would lose the event)."""
        if not self.paused:
            return self
        period = self.period
        next_run = self.next_run if period is None else future_slot(self.next_run, period, now)
        return replace(self, paused=False, next_run=next_run)


@dataclass(frozen=True)
class Occurrence:
    """One firing of a schedule, claimed by exactly one engine. `due` is the slot it stands
    for; `missed` counts earlier slots of a recurring schedule folded into it (an engine that
    was down fires once, not once per slot)."""

    app: str
    account_id: str
    name: str
    data: Any
    due: int
    missed: int = 0

    @property
    def scope(self) -> Scope:
        return Scope(self.app, self.account_id)

    @property
    def key(self) -> str:
        """Idempotency key: the same occurrence always has the same key, on every engine."""
        return f"{self.app}/{self.account_id}/{self.name}/{self.due}"


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def future_slot(slot: int, period: int, now: float) -> int:
    """The first slot `slot + k * period` (k >= 0) that is later than `now`."""
    return slot if slot > now else slot + (int((now - slot) // period) + 1) * period


def claim(next_run: int, period: int | None, now: float) -> tuple[int, int, int | None]:
    """For a row due at `now`: (due, missed, new next_run or None to delete). A recurring
    schedule fires once for its latest slot at or before `now`, then waits for the next."""
    if period is None:
        return next_run, 0, None
    missed = int((now - next_run) // period)
    due = next_run + missed * period
    return due, missed, due + period


def check_room(kind: str, count: int, limits: ScheduleLimits) -> None:
    """422 when the installation already has its quota of `kind` schedules: waiting will not
    help (429 means "retry later"), deleting one will."""
    cap = limits.max_one_time if kind == ONE_TIME else limits.max_recurring
    if count >= cap:
        raise ServiceError(422, f"limit reached: at most {cap} {kind} schedule"
                           f"{'' if cap == 1 else 's'} per installation; delete one first")


def missing(name: str) -> ServiceError:
    return ServiceError(404, f"no schedule named {name!r}")


def exists(name: str) -> ServiceError:
    return ServiceError(409, f"a schedule named {name!r} already exists; update or delete it")


class ScheduleBackend(Protocol):
    """A durable schedule store. Each method is atomic: count limits are checked, and due
    rows claimed, in the same transaction that writes."""

    def create(self, scope: Scope, schedule: Schedule, limits: ScheduleLimits) -> None:
        """Store a new schedule; ServiceError 409 if the name exists, 422 over a count limit."""

    def update(self, scope: Scope, schedule: Schedule, limits: ScheduleLimits) -> Schedule:
        """Replace a definition, keeping `paused` and `created`; 404, or 422 when the kind
        changes into a full quota. Returns what is stored."""

    def get(self, scope: Scope, name: str) -> Schedule | None: ...

    def delete(self, scope: Scope, name: str) -> bool: ...

    def set_paused(self, scope: Scope, name: str, paused: bool, now: float) -> Schedule | None:
        """Pause, or resume (`Schedule.resumed`); None if there is no such schedule."""

    def purge(self, scope: Scope) -> int:
        """Delete all of an installation's schedules (uninstall); how many there were."""

    def claim_due(self, now: float, limit: int,
                  apps: Collection[str] | None = None) -> list[Occurrence]:
        """Claim up to `limit` unpaused occurrences due at `now`, earliest first; only of
        `apps` when given (an engine claims only what it can run)."""

    def next_due(self, apps: Collection[str] | None = None) -> float | None:
        """The earliest next_run of an unpaused schedule (of `apps` when given), or None."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    installation TEXT NOT NULL, name TEXT NOT NULL, app TEXT NOT NULL, account_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('one-time', 'recurring')), data TEXT NOT NULL,
    schedule_at INTEGER NOT NULL, time_unit TEXT, frequency INTEGER,
    next_run INTEGER NOT NULL, paused INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
    PRIMARY KEY (installation, name));
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (next_run) WHERE paused = 0;
"""
_FIELDS = "name, data, schedule_at, time_unit, frequency, next_run, paused, created"


def _only_apps(apps: Collection[str] | None) -> tuple[str, tuple[str, ...]]:
    """A SQL condition on the app column, and its parameters (none when apps is None)."""
    if apps is None:
        return "", ()
    names = tuple(sorted(apps))
    return f" AND app IN ({', '.join('?' * len(names))})", names


def _row(row: tuple[Any, ...]) -> Schedule:
    name, data, schedule_at, unit, frequency, next_run, paused, created = row
    return Schedule(name, data, schedule_at, unit, frequency, next_run, bool(paused), created)


@contextmanager
def _busy_as_503() -> Iterator[None]:
    """A lock held past the busy timeout (or a disk error) is the host's problem: the handler
    gets a retryable 503 without SQLite's details; the scheduler logs it and retries."""
    try:
        yield
    except sqlite3.OperationalError:
        raise ServiceError(503, "the schedule store is busy; retry the operation later") \
            from None


class SQLiteSchedules:
    """Schedules in the embedded SQLite file; every write is one BEGIN IMMEDIATE transaction,
    so processes and Database objects sharing the file never fire an occurrence twice."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.schema(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with _busy_as_503(), self.db.transaction() as conn:
            yield conn

    def create(self, scope: Scope, schedule: Schedule, limits: ScheduleLimits) -> None:
        s, key = schedule, scope.installation
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM schedules WHERE installation = ? AND name = ?",
                            (key, s.name)).fetchone():
                raise exists(s.name)
            check_room(s.kind, self._count(key, s.kind), limits)
            conn.execute(f"INSERT INTO schedules (installation, app, account_id, kind, {_FIELDS})"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (key, scope.app, scope.account_id, s.kind, s.name, s.data,
                          s.schedule_at, s.time_unit, s.frequency, s.next_run, s.paused,
                          s.created))

    def update(self, scope: Scope, schedule: Schedule, limits: ScheduleLimits) -> Schedule:
        s, key = schedule, scope.installation
        with self._tx() as conn:
            old = self._get(key, s.name)
            if old is None:
                raise missing(s.name)
            if old.kind != s.kind:
                check_room(s.kind, self._count(key, s.kind), limits)
            conn.execute("UPDATE schedules SET kind = ?, data = ?, schedule_at = ?,"
                         " time_unit = ?, frequency = ?, next_run = ?"
                         " WHERE installation = ? AND name = ?",
                         (s.kind, s.data, s.schedule_at, s.time_unit, s.frequency, s.next_run,
                          key, s.name))
        return replace(s, paused=old.paused, created=old.created)

    def get(self, scope: Scope, name: str) -> Schedule | None:
        with _busy_as_503():
            return self._get(scope.installation, name)

    def delete(self, scope: Scope, name: str) -> bool:
        with self._tx() as conn:
            return conn.execute("DELETE FROM schedules WHERE installation = ? AND name = ?",
                                (scope.installation, name)).rowcount > 0

    def set_paused(self, scope: Scope, name: str, paused: bool, now: float) -> Schedule | None:
        with self._tx() as conn:
            old = self._get(scope.installation, name)
            if old is None:
                return None
            new = replace(old, paused=True) if paused else old.resumed(now)
            conn.execute("UPDATE schedules SET paused = ?, next_run = ?"
                         " WHERE installation = ? AND name = ?",
                         (new.paused, new.next_run, scope.installation, name))
            return new

    def purge(self, scope: Scope) -> int:
        with self._tx() as conn:
            return conn.execute("DELETE FROM schedules WHERE installation = ?",
                                (scope.installation,)).rowcount

    def claim_due(self, now: float, limit: int,
                  apps: Collection[str] | None = None) -> list[Occurrence]:
        claimed: list[tuple[str, str, str, str, int, int]] = []
        only, names = _only_apps(apps)
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT installation, app, account_id, name, data, time_unit, frequency,"
                f" next_run FROM schedules WHERE paused = 0 AND next_run <= ?{only}"
                " ORDER BY next_run LIMIT ?", (now, *names, max(limit, 0))).fetchall()
            for key, app, account, name, data, unit, frequency, next_run in rows:
                period = None if unit is None else UNITS[unit] * frequency
                due, missed, new_next = claim(next_run, period, now)
                if new_next is None:
                    conn.execute("DELETE FROM schedules WHERE installation = ? AND name = ?",
                                 (key, name))
                else:
                    conn.execute("UPDATE schedules SET next_run = ?"
                                 " WHERE installation = ? AND name = ?", (new_next, key, name))
                claimed.append((app, account, name, data, due, missed))
        return [Occurrence(app, account, name, json.loads(data), due, missed)
                for app, account, name, data, due, missed in claimed]

    def next_due(self, apps: Collection[str] | None = None) -> float | None:
        only, names = _only_apps(apps)
        row = self.db.connection().execute(
            f"SELECT MIN(next_run) FROM schedules WHERE paused = 0{only}", names).fetchone()
        return None if row[0] is None else float(row[0])

    def _get(self, key: str, name: str) -> Schedule | None:
        row = self.db.connection().execute(
            f"SELECT {_FIELDS} FROM schedules WHERE installation = ? AND name = ?",
            (key, name)).fetchone()
        return None if row is None else _row(row)

    def _count(self, key: str, kind: str) -> int:
        return int(self.db.connection().execute(
            "SELECT COUNT(*) FROM schedules WHERE installation = ? AND kind = ?",
            (key, kind)).fetchone()[0])


class MemorySchedules:
    """Schedules in a dict under one lock: fast unit tests only (nothing survives a restart,
    nothing is shared between processes)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], tuple[Scope, Schedule]] = {}
        self._lock = threading.Lock()

    def create(self, scope: Scope, schedule: Schedule, limits: ScheduleLimits) -> None:
        with self._lock:
            if (scope.installation, schedule.name) in self._rows:
                raise exists(schedule.name)
            check_room(schedule.kind, self._count(scope, schedule.kind), limits)
            self._rows[scope.installation, schedule.name] = (scope, schedule)

    def update(self, scope: Scope, schedule: Schedule, limits: ScheduleLimits) -> Schedule:
        with self._lock:
            found = self._rows.get((scope.installation, schedule.name))
            if found is None:
                raise missing(schedule.name)
            old = found[1]
            if old.kind != schedule.kind:
                check_room(schedule.kind, self._count(scope, schedule.kind), limits)
            new = replace(schedule, paused=old.paused, created=old.created)
            self._rows[scope.installation, schedule.name] = (scope, new)
            return new

    def get(self, scope: Scope, name: str) -> Schedule | None:
        found = self._rows.get((scope.installation, name))
        return None if found is None else found[1]

    def delete(self, scope: Scope, name: str) -> bool:
        with self._lock:
            return self._rows.pop((scope.installation, name), None) is not None

    def set_paused(self, scope: Scope, name: str, paused: bool, now: float) -> Schedule | None:
        with self._lock:
            found = self._rows.get((scope.installation, name))
            if found is None:
                return None
            old = found[1]
            new = replace(old, paused=True) if paused else old.resumed(now)
            self._rows[scope.installation, name] = (scope, new)
            return new

    def purge(self, scope: Scope) -> int:
        with self._lock:
            doomed = [key for key in self._rows if key[0] == scope.installation]
            for key in doomed:
                del self._rows[key]
            return len(doomed)

    def claim_due(self, now: float, limit: int,
                  apps: Collection[str] | None = None) -> list[Occurrence]:
        with self._lock:
            due = sorted((s.next_run, key) for key, (scope, s) in self._rows.items()
                         if not s.paused and s.next_run <= now
                         and (apps is None or scope.app in apps))[:max(limit, 0)]
            claimed = []
            for _, key in due:
                scope, s = self._rows[key]
                at, missed, new_next = claim(s.next_run, s.period, now)
                if new_next is None:
                    del self._rows[key]
                else:
                    self._rows[key] = (scope, replace(s, next_run=new_next))
                claimed.append(Occurrence(scope.app, scope.account_id, s.name,
                                          json.loads(s.data), at, missed))
            return claimed

    def next_due(self, apps: Collection[str] | None = None) -> float | None:
        with self._lock:
            return min((float(s.next_run) for scope, s in self._rows.values()
                        if not s.paused and (apps is None or scope.app in apps)), default=None)

    def _count(self, scope: Scope, kind: str) -> int:
        return sum(1 for key, (_, s) in self._rows.items()
                   if key[0] == scope.installation and s.kind == kind)


class ScheduleService:
    """The `schedule` host calls. Arguments mirror the platform's `$schedule` API:

        create({"name": "remind-42", "data": {"ticket": 42},
                "schedule_at": "2030-01-31T09:00:00Z"})                  # one-time
        create({"name": "sync", "repeat": {"time_unit": "hours", "frequency": 1}})  # recurring
        fetch / delete / pause / resume({"name": ...}); update(same arguments as create)

    `on_change` runs after a write that can make something due sooner (the engine passes
    `Scheduler.wake`). The scope comes from the worker's binding, never from `args`.
    """

    name = "schedule"
    operations = frozenset(_ARGS)

    def __init__(self, backend: ScheduleBackend, limits: ScheduleLimits | None = None,
                 clock: Clock = time.time, on_change: Callable[[], None] | None = None) -> None:
        self.backend, self.limits = backend, limits or ScheduleLimits()
        self.clock, self.on_change = clock, on_change

    def call(self, scope: Scope, operation: str, args: dict[str, Any], deadline: float) -> Any:
        if operation not in _ARGS:
            raise ServiceError(400, f"unknown schedule operation {short(operation)}"
                                    f" (allowed: {', '.join(_ARGS)})")
        if not isinstance(args, dict):
            raise ServiceError(400, f"arguments must be an object (got {json_type(args)})")
        for key in args:
            if key not in _ARGS[operation]:
                raise ServiceError(400, f"unknown argument {short(key)} for {operation}"
                                        f" (allowed: {', '.join(_ARGS[operation])})")
        if time.monotonic() >= deadline:
            raise ServiceError(504, "Timeout error while processing the request.")
        name = _name(args.get("name"))
        if operation in ("create", "update"):
            schedule = self._build(name, args)
            if operation == "create":
                self.backend.create(scope, schedule, self.limits)
            else:
                schedule = self.backend.update(scope, schedule, self.limits)
            self._changed()
            return schedule.view()
        if operation == "delete":
            if not self.backend.delete(scope, name):
                raise missing(name)
            return {"name": name, "deleted": True}
        if operation == "fetch":
            found = self.backend.get(scope, name)
        else:
            found = self.backend.set_paused(scope, name, operation == "pause", self.clock())
        if found is None:
            raise missing(name)
        if operation == "resume":
            self._changed()
        return found.view()

    async def call_async(self, scope: Scope, operation: str, args: dict[str, Any],
                         deadline: float) -> Any:
        """`call` on the event loop: a schedule write is one short local transaction, so it
        runs inline rather than on a thread. (A network backend would await here.)"""
        return self.call(scope, operation, args, deadline)

    def purge(self, scope: Scope) -> int:
        """Delete all of an installation's schedules (on uninstall)."""
        return self.backend.purge(scope)

    def _build(self, name: str, args: dict[str, Any]) -> Schedule:
        now = self.clock()
        data = _data(args.get("data", {}), self.limits)
        at = args.get("schedule_at")
        repeat = args.get("repeat")
        start = None if at is None else _time(at, now, self.limits)
        if repeat is None:
            if start is None:
                raise ServiceError(400, "schedule_at (one-time) or repeat (recurring) is"
                                        " required")
            return Schedule(name, data, start, None, None, start, created=now)
        unit, frequency = _repeat(repeat, self.limits)
        if start is None:
            start = math.ceil(now) + UNITS[unit] * frequency
        return Schedule(name, data, start, unit, frequency, start, created=now)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


def _got(value: Any) -> str:
    """How a message quotes a bad value: strings and integers clipped, others by JSON type."""
    return short(value) if type(value) in (str, int) else json_type(value)


def _name(value: Any) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ServiceError(400, "name must be 1-60 characters of letters, digits, '_', '-',"
                                f" '.' or ':' (got {_got(value)})")
    return value


def _data(value: Any, limits: ScheduleLimits) -> str:
    """Compact JSON text of `data`: an object of plain JSON, small and at most MAX_DEPTH deep
    (the key-value store's rule). The engine has capped the frame's size before this."""
    if not isinstance(value, dict):
        raise ServiceError(400, f"data must be an object (got {json_type(value)})")
    try:
        raw = to_json_bytes(value, max_bytes=sys.maxsize)
    except ResultError as exc:
        raise ServiceError(400, f"data{exc.message.removeprefix('value')}; store plain JSON"
                                " (objects, lists, strings, finite numbers, true/false, null)"
                                f" at most {MAX_DEPTH} levels deep") from None
    if len(raw) > limits.max_data_bytes:
        raise ServiceError(413, f"data is {len(raw)} bytes as compact JSON; the limit is"
                                f" {limits.max_data_bytes} bytes")
    return bytes(raw).decode("utf-8")


def _time(value: Any, now: float, limits: ScheduleLimits) -> int:
    """Whole epoch seconds of an ISO 8601 `schedule_at` with a zone, rounded up."""
    if not isinstance(value, str):
        raise ServiceError(400, f"schedule_at must be an ISO 8601 string ({_EXAMPLE});"
                                f" got {json_type(value)}")
    try:
        if len(value) > 40:  # the longest real one, with nanoseconds and offset, is 35
            raise ValueError(value)
        when = datetime.fromisoformat(value)
        epoch = None if when.utcoffset() is None else when.timestamp()
    except (ValueError, OverflowError):
        raise ServiceError(400, f"schedule_at is not an ISO 8601 date-time: {short(value)}"
                                f" ({_EXAMPLE})") from None
    if epoch is None:
        raise ServiceError(400, f"schedule_at must be an ISO 8601 date-time with a timezone,"
                                f" Z or an offset ({_EXAMPLE}); got {short(value)}")
    if epoch < now + limits.min_lead_seconds:
        raise ServiceError(400, f"schedule_at must be at least {limits.min_lead_seconds} seconds"
                                f" ahead (got {short(value)}, {epoch - now:+.0f} s from now)")
    if epoch > LATEST:
        raise ServiceError(400, "schedule_at must be before the year 10000")
    return math.ceil(epoch)


def _repeat(value: Any, limits: ScheduleLimits) -> tuple[str, int]:
    """(time_unit, frequency) of a `repeat` object, its period within the limits."""
    if not isinstance(value, dict):
        raise ServiceError(400, "repeat must be an object {time_unit, frequency}"
                                f" (got {json_type(value)})")
    for key in value:
        if key not in ("time_unit", "frequency"):
            raise ServiceError(400, f"unknown key {short(key)} in repeat"
                                    " (allowed: time_unit, frequency)")
    unit, frequency = value.get("time_unit"), value.get("frequency")
    if not isinstance(unit, str) or unit not in UNITS:
        raise ServiceError(400, "repeat.time_unit must be one of minutes, hours, days"
                                f" (got {_got(unit)})")
    if type(frequency) is not int or frequency < 1:
        raise ServiceError(400, "repeat.frequency must be a positive integer"
                                f" (got {_got(frequency)})")
    period = UNITS[unit] * frequency
    if period < limits.min_period_seconds:
        raise ServiceError(400, f"repeat: the period must be at least"
                                f" {limits.min_period_seconds} seconds (got {frequency} {unit})")
    if period > MAX_PERIOD_S:
        raise ServiceError(400, f"repeat: the period must be at most 366 days"
                                f" (got {frequency} {unit})")
    return unit, frequency
