"""Scheduled events: the schedule service's API and limits, the store's exactly-once claim, and
the scheduler thread firing on time, across restarts and between engines sharing a store.

One suite runs against every backend in BACKENDS; tests where engines share a store (threads,
processes, restarts) run against DURABLE ones. A Redis backend joins by adding a factory to
both. The clock is injected where time is only arithmetic; real time is used where the thread's
timing is the point (a schedule fires within a second of its due time).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from handlerbox.runtime.scheduler import Scheduler
from handlerbox.runtime.services.base import Scope, ServiceError
from handlerbox.runtime.services.schedules import (
    MemorySchedules,
    Occurrence,
    ScheduleBackend,
    ScheduleLimits,
    ScheduleService,
    SQLiteSchedules,
)
from handlerbox.runtime.services.schedules_redis import RedisSchedules
from handlerbox.runtime.services.sqlite import Database
from tests.redis_server import redis_server_fixture, unique_prefix  # noqa: F401

NOW = 1_900_000_000  # 2030-03-17T17:46:40Z, whole seconds
MIN = 60
A, B, C = Scope("crm", "100"), Scope("crm", "200"), Scope("billing", "100")
DEV = ScheduleLimits(min_lead_seconds=0, min_period_seconds=60)

Opener = Callable[[str], ScheduleBackend]
BACKENDS = ["memory", "sqlite", "redis"]
DURABLE = ["sqlite", "redis"]  # backends that engines in other threads and processes can share


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wal_file(path: Path) -> Path:
    """Puts a new SQLite file in WAL mode (a property of the file) before Database opens it.

    Works around a bug in runtime/services/sqlite.py, which sets WAL inside BEGIN IMMEDIATE:
    on a new file that is silently ignored (the file stays in rollback-journal mode), and on
    an existing file that is not WAL yet, Database() raises "cannot change into wal mode from
    within a transaction". Once it sets WAL outside the transaction this becomes a no-op."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()
    return path


@pytest.fixture
def opener(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Opener]:
    """Opens a backend by name; for a durable one, each call is a new handle (a new Database
    object or Redis client, as another engine would have) on the same store."""
    databases: list[Database] = []
    memory = MemorySchedules()
    path = wal_file(tmp_path / "schedules.sqlite3")
    prefix = unique_prefix()  # this test's keys on the session's redis-server
    clients: list[Any] = []

    def open_backend(kind: str) -> ScheduleBackend:
        if kind == "memory":
            return memory
        if kind == "redis":
            served = RedisSchedules.from_url(request.getfixturevalue("redis_server").url,
                                             prefix=prefix, buckets=4)
            clients.append(served.client)
            return served
        database = Database(path)
        databases.append(database)
        return SQLiteSchedules(database)

    yield open_backend
    for database in databases:
        database.close()
    for client in clients:
        client.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, opener: Opener) -> ScheduleBackend:
    return opener(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(backend: ScheduleBackend, clock: FakeClock) -> ScheduleService:
    return ScheduleService(backend, clock=clock)


def call(service: ScheduleService, operation: str, scope: Scope = A, **args: Any) -> Any:
    return service.call(scope, operation, args, time.monotonic() + 10)


def refused(service: ScheduleService, operation: str, scope: Scope = A, **args: Any
            ) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        call(service, operation, scope, **args)
    return caught.value


# -- the service API -----------------------------------------------------------------------

def test_one_time_schedule_is_stored_and_fetched(service: ScheduleService) -> None:
    made = call(service, "create", name="remind-42", data={"ticket": 42, "tags": ["a"]},
                schedule_at=iso(NOW + 600))
    expected = {"name": "remind-42", "data": {"ticket": 42, "tags": ["a"]},
                "schedule_at": iso(NOW + 600), "repeat": None, "paused": False,
                "next_run": iso(NOW + 600)}
    assert made == expected
    assert call(service, "fetch", name="remind-42") == expected


def test_schedule_at_offset_and_fraction_become_utc_rounded_up(
        service: ScheduleService) -> None:
    # Never early: 09:10:00.250 UTC fires at 09:10:01.
    made = call(service, "create", name="x", schedule_at="2030-03-18T14:40:00.250+05:30")
    assert made["schedule_at"] == made["next_run"] == "2030-03-18T09:10:01Z"


def test_recurring_starts_one_period_from_now_or_at_schedule_at(
        service: ScheduleService) -> None:
    made = call(service, "create", name="sync", repeat={"time_unit": "hours", "frequency": 2})
    assert made["repeat"] == {"time_unit": "hours", "frequency": 2}
    assert made["schedule_at"] == made["next_run"] == iso(NOW + 2 * 3600)
    call(service, "delete", name="sync")
    made = call(service, "create", name="sync", schedule_at=iso(NOW + 900),
                repeat={"time_unit": "days", "frequency": 1}, data={"k": "v"})
    assert made["next_run"] == iso(NOW + 900) and made["data"] == {"k": "v"}


def test_update_replaces_the_definition_and_keeps_paused(service: ScheduleService) -> None:
    call(service, "create", name="x", data={"v": 1}, schedule_at=iso(NOW + 600))
    call(service, "pause", name="x")
    updated = call(service, "update", name="x", data={"v": 2},
                   repeat={"time_unit": "minutes", "frequency": 30})
    assert updated["data"] == {"v": 2} and updated["paused"] is True
    assert updated["repeat"] == {"time_unit": "minutes", "frequency": 30}
    assert updated["next_run"] is None  # paused: nothing will fire
    assert call(service, "fetch", name="x") == updated


def test_delete_removes_the_schedule(service: ScheduleService) -> None:
    call(service, "create", name="x", schedule_at=iso(NOW + 600))
    assert call(service, "delete", name="x") == {"name": "x", "deleted": True}
    assert refused(service, "fetch", name="x").status == 404
    assert refused(service, "delete", name="x").status == 404


@pytest.mark.parametrize("operation", ["fetch", "update", "delete", "pause", "resume"])
def test_unknown_schedule_is_404(service: ScheduleService, operation: str) -> None:
    args: dict[str, Any] = {"name": "ghost"}
    if operation == "update":
        args["schedule_at"] = iso(NOW + 600)
    error = refused(service, operation, **args)
    assert error.status == 404 and "ghost" in error.message


def test_create_with_a_taken_name_is_409(service: ScheduleService) -> None:
    call(service, "create", name="x", schedule_at=iso(NOW + 600))
    error = refused(service, "create", name="x", schedule_at=iso(NOW + 900))
    assert error.status == 409 and "'x' already exists" in error.message


WEEK_AHEAD = iso(NOW + 7 * 86400)
BAD_ARGS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # (id, operation, args, status, part of the message)
    ("no name", "create", {"schedule_at": WEEK_AHEAD}, 400, "name must be 1-60"),
    ("empty name", "create", {"name": "", "schedule_at": WEEK_AHEAD}, 400, "name must be"),
    ("long name", "create", {"name": "n" * 61, "schedule_at": WEEK_AHEAD}, 400, "1-60"),
    ("name with /", "create", {"name": "../a", "schedule_at": WEEK_AHEAD}, 400, "'../a'"),
    ("name with space", "fetch", {"name": "a b"}, 400, "name must be"),
    ("name with NUL", "fetch", {"name": "a\x00"}, 400, "name must be"),
    ("unicode name", "fetch", {"name": "tíckét"}, 400, "name must be"),
    ("number name", "fetch", {"name": 7}, 400, "(got 7)"),
    ("neither kind", "create", {"name": "x"}, 400, "schedule_at (one-time) or repeat"),
    ("not ISO", "create", {"name": "x", "schedule_at": "tomorrow"}, 400, "not an ISO 8601"),
    ("no zone", "create", {"name": "x", "schedule_at": "2030-04-01T09:00:00"}, 400,
     "with a timezone"),
    ("no day 30", "create", {"name": "x", "schedule_at": "2030-02-30T09:00:00Z"}, 400,
     "not an ISO 8601"),
    ("epoch number", "create", {"name": "x", "schedule_at": NOW + 600}, 400,
     "ISO 8601 string"),
    ("huge string", "create", {"name": "x", "schedule_at": WEEK_AHEAD + "0" * 100_000}, 400,
     "not an ISO 8601"),
    ("too soon", "create", {"name": "x", "schedule_at": iso(NOW + 299)}, 400,
     "at least 300 seconds ahead"),
    ("past", "create", {"name": "x", "schedule_at": "2001-01-01T00:00:00Z"}, 400,
     "at least 300 seconds ahead"),
    ("year 10000", "create", {"name": "x", "schedule_at": "9999-12-31T23:59:59-14:00"}, 400,
     "before the year 10000"),
    ("repeat list", "create", {"name": "x", "repeat": ["hours", 1]}, 400,
     "repeat must be an object"),
    ("weeks", "create", {"name": "x", "repeat": {"time_unit": "weeks", "frequency": 1}},
     400, "time_unit must be one of minutes, hours, days"),
    ("no unit", "create", {"name": "x", "repeat": {"frequency": 1}}, 400, "(got null)"),
    ("negative", "create", {"name": "x", "repeat": {"time_unit": "hours", "frequency": -1}},
     400, "frequency must be a positive integer (got -1)"),
    ("zero", "create", {"name": "x", "repeat": {"time_unit": "hours", "frequency": 0}},
     400, "positive integer"),
    ("bool", "create", {"name": "x", "repeat": {"time_unit": "hours", "frequency": True}},
     400, "(got boolean)"),
    ("float", "create", {"name": "x", "repeat": {"time_unit": "hours", "frequency": 1.0}},
     400, "(got number)"),
    ("NaN", "create", {"name": "x", "repeat": {"time_unit": "hours", "frequency": math.nan}},
     400, "positive integer"),
    ("string", "create", {"name": "x", "repeat": {"time_unit": "hours", "frequency": "5"}},
     400, "positive integer"),
    ("huge", "create", {"name": "x", "repeat": {"time_unit": "days", "frequency": 10**30}},
     400, "at most 366 days"),
    ("short period", "create",
     {"name": "x", "repeat": {"time_unit": "minutes", "frequency": 4}}, 400,
     "at least 300 seconds (got 4 minutes)"),
    ("repeat extra", "create",
     {"name": "x", "repeat": {"time_unit": "hours", "frequency": 1, "at": "noon"}}, 400,
     "unknown key 'at' in repeat"),
    ("data list", "create", {"name": "x", "schedule_at": WEEK_AHEAD, "data": [1]}, 400,
     "data must be an object (got array)"),
    ("data NaN", "create", {"name": "x", "schedule_at": WEEK_AHEAD,
                            "data": {"v": math.nan}}, 400, "data['v']: nan is not JSON"),
    ("data set", "create", {"name": "x", "schedule_at": WEEK_AHEAD, "data": {"v": {1}}},
     400, "store plain JSON"),
    ("data int keys", "create", {"name": "x", "schedule_at": WEEK_AHEAD, "data": {1: 2}},
     400, "keys must be strings"),
    ("data 4 KB + 1", "create",
     {"name": "x", "schedule_at": WEEK_AHEAD, "data": {"v": "a" * 4089}}, 413,
     "4097 bytes as compact JSON; the limit is 4096"),
    ("data 10 MB", "create",
     {"name": "x", "schedule_at": WEEK_AHEAD, "data": {"v": "a" * 10_000_000}}, 413,
     "the limit is 4096"),
    ("scope smuggling", "create", {"name": "x", "schedule_at": WEEK_AHEAD,
                                   "account_id": "200"}, 400, "unknown argument 'account_id'"),
    ("fetch extra", "fetch", {"name": "x", "data": {}}, 400, "allowed: name"),
    ("no such op", "list", {}, 400, "unknown schedule operation 'list'"),
]


@pytest.mark.parametrize(("operation", "args", "status", "fragment"),
                         [case[1:] for case in BAD_ARGS], ids=[case[0] for case in BAD_ARGS])
def test_bad_arguments_name_the_field(service: ScheduleService, operation: str,
                                      args: dict[str, Any], status: int, fragment: str) -> None:
    error = refused(service, operation, **args)
    assert (error.status, fragment in error.message) == (status, True), error.message


def test_deeply_nested_data_is_refused_without_recursing(service: ScheduleService) -> None:
    deep: Any = {}
    for _ in range(50_000):
        deep = {"d": deep}
    error = refused(service, "create", name="x", schedule_at=WEEK_AHEAD, data=deep)
    assert error.status == 400 and "levels deep" in error.message


def test_data_of_exactly_4_kb_is_accepted(service: ScheduleService) -> None:
    made = call(service, "create", name="x", schedule_at=WEEK_AHEAD, data={"v": "é" * 2044})
    assert made["data"] == {"v": "é" * 2044}  # {"v":"..."}: 8 bytes + 2044 * 2 = 4096


def test_a_failed_update_changes_nothing(service: ScheduleService) -> None:
    made = call(service, "create", name="x", data={"v": 1}, schedule_at=WEEK_AHEAD)
    refused(service, "update", name="x", data={"v": "a" * 5000}, schedule_at=WEEK_AHEAD)
    refused(service, "update", name="x", repeat={"time_unit": "minutes", "frequency": 1})
    assert call(service, "fetch", name="x") == made


def test_1000_one_time_schedules_per_installation(service: ScheduleService) -> None:
    for index in range(1000):
        call(service, "create", name=f"s{index}", schedule_at=WEEK_AHEAD)
    error = refused(service, "create", name="one-more", schedule_at=WEEK_AHEAD)
    assert error.status == 422
    assert error.message.startswith("limit reached: at most 1000 one-time schedules")
    call(service, "create", scope=B, name="one-more", schedule_at=WEEK_AHEAD)  # B has room
    call(service, "create", name="sync", repeat={"time_unit": "hours", "frequency": 1})
    call(service, "delete", name="s0")
    call(service, "create", name="one-more", schedule_at=WEEK_AHEAD)


def test_one_recurring_schedule_per_installation(service: ScheduleService) -> None:
    hourly = {"time_unit": "hours", "frequency": 1}
    call(service, "create", name="sync", repeat=hourly)
    error = refused(service, "create", name="sync2", repeat=hourly)
    assert (error.status, error.message) == (
        422, "limit reached: at most 1 recurring schedule per installation; delete one first")
    call(service, "create", name="once", schedule_at=WEEK_AHEAD)
    assert refused(service, "update", name="once", repeat=hourly).status == 422
    call(service, "update", name="sync", repeat={"time_unit": "days", "frequency": 1})
    call(service, "create", scope=B, name="sync2", repeat=hourly)


def test_limits_are_operator_settings(backend: ScheduleBackend, clock: FakeClock) -> None:
    service = ScheduleService(backend, limits=DEV, clock=clock)
    call(service, "create", name="now", schedule_at=iso(NOW))
    call(service, "create", name="minutely", repeat={"time_unit": "minutes", "frequency": 1})
    with pytest.raises(ValidationError):
        ScheduleLimits(min_period_seconds=0)
    with pytest.raises(ValidationError):
        ScheduleLimits(max_one_time="1000")  # type: ignore[arg-type]  # strict: no coercion


def test_a_call_past_its_deadline_is_504(service: ScheduleService) -> None:
    with pytest.raises(ServiceError) as caught:
        service.call(A, "fetch", {"name": "x"}, time.monotonic() - 1)
    assert caught.value.status == 504


def test_call_async_behaves_like_call(service: ScheduleService) -> None:
    import asyncio

    made = asyncio.run(service.call_async(A, "create", {"name": "x", "schedule_at": WEEK_AHEAD},
                                          time.monotonic() + 10))
    assert made["name"] == "x"


def test_writes_that_can_bring_a_firing_closer_wake_the_scheduler(
        backend: ScheduleBackend, clock: FakeClock) -> None:
    woken: list[int] = []
    service = ScheduleService(backend, clock=clock, on_change=lambda: woken.append(1))
    call(service, "create", name="x", schedule_at=WEEK_AHEAD)
    call(service, "update", name="x", schedule_at=iso(NOW + 600))
    call(service, "pause", name="x")
    call(service, "fetch", name="x")
    call(service, "resume", name="x")
    assert len(woken) == 3  # create, update, resume


# -- hostile: one installation against another ---------------------------------------------

@pytest.mark.parametrize("other", [B, C], ids=["same app, other account", "other app"])
def test_an_installation_cannot_reach_another_installations_schedule(
        service: ScheduleService, backend: ScheduleBackend, clock: FakeClock,
        other: Scope) -> None:
    call(service, "create", name="x", data={"owner": "A"}, schedule_at=iso(NOW + 600))
    for operation in ("fetch", "delete", "pause", "resume"):
        assert refused(service, operation, scope=other, name="x").status == 404
    assert refused(service, "update", scope=other, name="x", data={"owner": "evil"},
                   schedule_at=iso(NOW + 600)).status == 404
    assert service.purge(other) == 0
    call(service, "create", scope=other, name="x", data={"owner": "other"},
         schedule_at=iso(NOW + 600))
    assert call(service, "fetch", name="x")["data"] == {"owner": "A"}
    assert call(service, "fetch", name="x")["paused"] is False
    fired = backend.claim_due(NOW + 600, 10)
    assert sorted((o.scope.installation, o.data["owner"]) for o in fired) == sorted(
        [(A.installation, "A"), (other.installation, "other")])


def test_purge_deletes_only_that_installation(service: ScheduleService) -> None:
    for scope in (A, B):
        call(service, "create", scope=scope, name="x", schedule_at=WEEK_AHEAD)
        call(service, "create", scope=scope, name="y",
             repeat={"time_unit": "hours", "frequency": 1})
    assert service.purge(A) == 2
    assert refused(service, "fetch", name="y").status == 404
    assert call(service, "fetch", scope=B, name="y")["name"] == "y"


# -- claiming due occurrences --------------------------------------------------------------

def test_a_one_time_schedule_is_claimed_once_at_its_time(
        service: ScheduleService, backend: ScheduleBackend) -> None:
    call(service, "create", scope=B, name="remind", data={"t": 1}, schedule_at=iso(NOW + 300))
    assert backend.next_due() == NOW + 300
    assert backend.claim_due(NOW + 299.9, 10) == []
    [occurrence] = backend.claim_due(NOW + 300, 10)
    assert occurrence == Occurrence("crm", "200", "remind", {"t": 1}, NOW + 300)
    assert occurrence.key == f"crm/200/remind/{NOW + 300}"
    assert occurrence.scope == B
    assert backend.claim_due(NOW + 10_000, 10) == []
    assert backend.next_due() is None
    assert refused(service, "fetch", scope=B, name="remind").status == 404


def test_recurring_with_missed_slots_fires_once_then_keeps_its_slots(
        service: ScheduleService, backend: ScheduleBackend) -> None:
    start = NOW + 600
    call(service, "create", name="sync", schedule_at=iso(start),
         repeat={"time_unit": "minutes", "frequency": 5})
    [first] = backend.claim_due(start, 10)
    assert (first.due, first.missed) == (start, 0)
    # down for 5.5 periods: one firing for the latest slot, then the next slot
    late = start + 5.5 * 300
    [caught_up] = backend.claim_due(late, 10)
    assert (caught_up.due, caught_up.missed) == (start + 5 * 300, 4)
    assert backend.claim_due(late, 10) == []
    assert call(service, "fetch", name="sync")["next_run"] == iso(start + 6 * 300)
    [on_time] = backend.claim_due(start + 6 * 300, 10)
    assert (on_time.due, on_time.missed) == (start + 6 * 300, 0)
    assert len({first.key, caught_up.key, on_time.key}) == 3


def test_paused_schedules_do_not_fire_and_resume_reenables(
        service: ScheduleService, backend: ScheduleBackend, clock: FakeClock) -> None:
    call(service, "create", name="once", schedule_at=iso(NOW + 300))
    call(service, "create", name="sync", schedule_at=iso(NOW + 300),
         repeat={"time_unit": "minutes", "frequency": 10})
    assert call(service, "pause", name="once")["paused"] is True
    call(service, "pause", name="sync")
    call(service, "pause", name="sync")  # pausing twice is harmless
    assert backend.next_due() is None
    assert backend.claim_due(NOW + 5000, 10) == []
    clock.now = NOW + 5000
    resumed = call(service, "resume", name="sync")
    # the slots that passed while paused are skipped: 300 + 10 min * k, first after 5000
    assert resumed["next_run"] == iso(NOW + 300 + 8 * 600) and resumed["paused"] is False
    # a one-time schedule whose time passed while paused fires at once: it has no next slot
    assert call(service, "resume", name="once")["next_run"] == iso(NOW + 300)
    assert [o.name for o in backend.claim_due(NOW + 5000, 10)] == ["once"]
    assert [o.name for o in backend.claim_due(NOW + 300 + 8 * 600, 10)] == ["sync"]


def test_claims_are_earliest_first_up_to_the_limit(
        backend: ScheduleBackend, clock: FakeClock) -> None:
    service = ScheduleService(backend, limits=DEV, clock=clock)
    for index in (3, 1, 2):
        call(service, "create", name=f"s{index}", schedule_at=iso(NOW + index))
    assert backend.next_due() == NOW + 1
    assert [o.name for o in backend.claim_due(NOW + 10, 2)] == ["s1", "s2"]
    assert [o.name for o in backend.claim_due(NOW + 10, 2)] == ["s3"]


def _fill(service: ScheduleService) -> set[str]:
    """300 one-time and 3 recurring schedules over 3 installations, all due by NOW + 60;
    returns the idempotency keys that must fire, each exactly once."""
    expected = set()
    for scope in (A, B, C):
        for index in range(100):
            call(service, "create", scope=scope, name=f"s{index}",
                 schedule_at=iso(NOW + index % 60))
            expected.add(f"{scope.installation}/s{index}/{NOW + index % 60}")
        call(service, "create", scope=scope, name="sync", schedule_at=iso(NOW),
             repeat={"time_unit": "minutes", "frequency": 1})
        expected.add(f"{scope.installation}/sync/{NOW + 60}")  # latest slot at NOW + 60
    return expected


def _claim_all(backend: ScheduleBackend, start: Any, now: float) -> list[str]:
    start.wait()
    keys: list[str] = []
    while batch := backend.claim_due(now, 7):
        keys.extend(o.key for o in batch)
    return keys


@pytest.mark.parametrize("kind", DURABLE)
def test_engines_on_threads_claim_each_occurrence_exactly_once(
        opener: Opener, clock: FakeClock, kind: str) -> None:
    expected = _fill(ScheduleService(opener(kind), limits=DEV, clock=clock))
    engines = [opener(kind) for _ in range(4)]  # each its own Database object
    start = threading.Barrier(len(engines))
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda e=e: results.append(_claim_all(e, start,
                                                                             NOW + 60)))
               for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    fired = Counter(key for keys in results for key in keys)
    assert set(fired) == expected and set(fired.values()) == {1}
    # (whether more than one of them won a claim is up to the scheduler of this machine: the
    # test asserts exactly once, not a race it cannot force; the process test below races)


def _claim_in_process(path: str, now: float, start: Any, out: Any) -> None:
    database = Database(path)
    try:
        out.put(_claim_all(SQLiteSchedules(database), start, now))
    finally:
        database.close()


@pytest.mark.timeout(30)
def test_engines_in_processes_claim_each_occurrence_exactly_once(
        tmp_path: Path, clock: FakeClock) -> None:
    path = wal_file(tmp_path / "shared.sqlite3")
    database = Database(path)
    expected = _fill(ScheduleService(SQLiteSchedules(database), limits=DEV, clock=clock))
    database.close()
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(3), context.Queue()
    processes = [context.Process(target=_claim_in_process, args=(str(path), NOW + 60, start,
                                                                 out)) for _ in range(3)]
    for process in processes:
        process.start()
    results = [out.get(timeout=20) for _ in processes]
    for process in processes:
        process.join(10)
        assert process.exitcode == 0
    fired = Counter(key for keys in results for key in keys)
    assert set(fired) == expected and set(fired.values()) == {1}


# -- the scheduler thread ------------------------------------------------------------------

class Recorder:
    """A `fire` that records each occurrence with the wall-clock time it was handed over."""

    def __init__(self) -> None:
        self.fired: list[tuple[Occurrence, float]] = []
        self.event = threading.Event()

    def __call__(self, occurrence: Occurrence) -> None:
        self.fired.append((occurrence, time.time()))
        self.event.set()

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.fired) < count and time.monotonic() < deadline:
            self.event.wait(0.05)
            self.event.clear()
        return len(self.fired) >= count


@pytest.mark.timeout(20)
def test_a_schedule_fires_within_a_second_of_its_time(backend: ScheduleBackend) -> None:
    record = Recorder()
    # max_wait far off: only wake() (from the service, after create) can bring it in time
    with Scheduler(backend, record, max_wait=30) as scheduler:
        service = ScheduleService(backend, limits=DEV, on_change=scheduler.wake)
        time.sleep(0.1)  # the loop is asleep on an empty store
        due = math.ceil(time.time() + 2)
        call(service, "create", name="soon", data={"n": 1}, schedule_at=iso(due))
        assert record.wait_for(1, 5)
    [(occurrence, fired_at)] = record.fired
    assert (occurrence.name, occurrence.data, occurrence.due) == ("soon", {"n": 1}, due)
    assert due <= fired_at <= due + 1
    assert scheduler.last_lag_seconds is not None and 0 <= scheduler.last_lag_seconds <= 1
    assert scheduler.stats()["scheduler.fired"] == 1 and not scheduler.running


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", DURABLE)
def test_a_schedule_another_engine_adds_fires_on_time(opener: Opener, kind: str) -> None:
    record = Recorder()
    with Scheduler(opener(kind), record, max_wait=0.5):
        other = ScheduleService(opener(kind), limits=DEV)  # no wake(): another process
        due = math.ceil(time.time() + 1)
        call(other, "create", name="theirs", schedule_at=iso(due))
        assert record.wait_for(1, 5)
    assert due <= record.fired[0][1] <= due + 1


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", DURABLE)
def test_a_restarted_engine_fires_what_fell_due_while_down_exactly_once(
        opener: Opener, kind: str) -> None:
    record = Recorder()
    due = math.ceil(time.time() + 1)
    call(ScheduleService(opener(kind), limits=DEV), "create", name="while-down",
         schedule_at=iso(due))
    with Scheduler(opener(kind), record):
        time.sleep(0.2)
    assert record.fired == []
    time.sleep(max(0.0, due + 0.3 - time.time()))  # down past the due time
    with Scheduler(opener(kind), record):  # the restarted engine: a new Database object
        assert record.wait_for(1, 3)
        time.sleep(0.6)  # more than max_wait: a second firing would show
    with Scheduler(opener(kind), record):
        time.sleep(0.6)
    assert [o.key for o, _ in record.fired] == [f"crm/100/while-down/{due}"]


@pytest.mark.parametrize("kind", DURABLE)
def test_a_restarted_engine_folds_missed_recurring_slots_into_one(
        opener: Opener, clock: FakeClock, kind: str) -> None:
    record = Recorder()
    call(ScheduleService(opener(kind), limits=DEV, clock=clock), "create", name="sync",
         schedule_at=iso(NOW + 60), repeat={"time_unit": "minutes", "frequency": 1})
    clock.now = NOW + 60
    with Scheduler(opener(kind), record, clock=clock, max_wait=0.05):
        assert record.wait_for(1, 3)
    clock.now = NOW + 60 + 4.5 * 60  # down for four and a half periods
    with Scheduler(opener(kind), record, clock=clock, max_wait=0.05) as scheduler:
        assert record.wait_for(2, 3)
        time.sleep(0.2)
        assert len(record.fired) == 2
        clock.now = NOW + 60 + 5 * 60
        scheduler.wake()
        assert record.wait_for(3, 3)
        time.sleep(0.2)
    assert [(o.due - NOW, o.missed) for o, _ in record.fired] == [(60, 0), (300, 3), (360, 0)]


def test_a_failing_fire_is_logged_and_the_loop_goes_on(
        backend: ScheduleBackend, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    service = ScheduleService(backend, limits=DEV, clock=clock)
    call(service, "create", name="a", schedule_at=iso(NOW))
    call(service, "create", name="b", schedule_at=iso(NOW + 1))
    record = Recorder()

    def fire(occurrence: Occurrence) -> None:
        if occurrence.name == "a":
            raise RuntimeError("engine queue full")
        record(occurrence)

    clock.now = NOW + 1
    with caplog.at_level(logging.ERROR, "handlerbox.runtime.scheduler"), \
            Scheduler(backend, fire, clock=clock, max_wait=0.05) as scheduler:
        assert record.wait_for(1, 3)
        assert scheduler.running
    assert scheduler.fire_errors == 1 and scheduler.fired == 1
    assert "fire failed for crm/100/a/" in caplog.text


class FlakyStore:
    """Delegates to a backend, but its first next_due() fails (a locked or broken store)."""

    def __init__(self, inner: ScheduleBackend) -> None:
        self.inner, self.calls = inner, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def next_due(self, apps: Any = None) -> float | None:
        self.calls += 1
        if self.calls == 1:
            raise OSError("disk I/O error")
        return self.inner.next_due(apps)


def test_a_failing_store_is_logged_and_retried(
        backend: ScheduleBackend, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    call(ScheduleService(backend, limits=DEV, clock=clock), "create", name="a",
         schedule_at=iso(NOW))
    record, flaky = Recorder(), FlakyStore(backend)
    with caplog.at_level(logging.ERROR, "handlerbox.runtime.scheduler"), \
            Scheduler(flaky, record, clock=clock, max_wait=0.05) as scheduler:
        assert record.wait_for(1, 3)
    assert scheduler.store_errors == 1 and "schedule store failed" in caplog.text


def test_an_idle_scheduler_sleeps_instead_of_polling(backend: ScheduleBackend) -> None:
    counting = FlakyStore(backend)
    counting.calls = 1  # no failure: only count
    with Scheduler(counting, Recorder(), max_wait=0.2):
        time.sleep(0.5)
    assert 2 <= counting.calls <= 6  # about one look per max_wait, not thousands


def test_lag_is_reported_to_the_metrics_hook(backend: ScheduleBackend,
                                             clock: FakeClock) -> None:
    call(ScheduleService(backend, limits=DEV, clock=clock), "create", name="a",
         schedule_at=iso(NOW))
    lags: list[tuple[str, float]] = []
    clock.now = NOW + 2.5
    record = Recorder()
    with Scheduler(backend, record, clock=clock, max_wait=0.05,
                   on_lag=lambda o, lag: lags.append((o.name, lag))) as scheduler:
        assert record.wait_for(1, 3)
    assert lags == [("a", 2.5)] and scheduler.last_lag_seconds == 2.5
    assert scheduler.stats()["scheduler.last_lag_seconds"] == 2.5


def test_a_scheduler_starts_once_and_stops_idempotently(backend: ScheduleBackend) -> None:
    scheduler = Scheduler(backend, Recorder())
    scheduler.stop()  # never started: nothing to do
    scheduler.start()
    with pytest.raises(RuntimeError):
        scheduler.start()
    scheduler.stop()
    scheduler.stop()
    assert not scheduler.running
