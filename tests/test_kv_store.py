"""The key-value store ("db" service): one suite run against every backend.

Add a backend by adding a factory to BACKENDS (e.g. "redis", skipped when no server is up);
every test that takes the `backend` fixture then runs against it too.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from handlerbox.runtime.services.base import Scope, ServiceError
from handlerbox.runtime.services.kv import (
    MAX_ENTRY_BYTES,
    MAX_TTL_S,
    KVBackend,
    KVStore,
    MemoryKV,
    SQLiteKV,
)
from handlerbox.runtime.services.kv_redis import RedisKV
from handlerbox.runtime.services.sqlite import Database
from tests.redis_server import RedisServer, redis_server_fixture, unique_prefix  # noqa: F401

A = Scope("app", "1")
B = Scope("app", "2")  # same app, another account
C = Scope("app2", "1")  # another app, same account
NO_LIMIT = 10**9


@contextmanager
def sqlite_backend(tmp_path: Path) -> Iterator[KVBackend]:
    db = Database(tmp_path / "kv.sqlite3")
    try:
        yield SQLiteKV(db)
    finally:
        db.close()


@contextmanager
def memory_backend(tmp_path: Path) -> Iterator[KVBackend]:
    yield MemoryKV()


@contextmanager
def redis_backend(server: RedisServer) -> Iterator[KVBackend]:
    """A real redis-server (tests/redis_server.py); a key prefix of its own per test."""
    import redis

    client = redis.Redis.from_url(server.url)
    try:
        yield RedisKV(client, prefix=unique_prefix())
    finally:
        client.close()


BACKENDS: dict[str, Callable[[Path], AbstractContextManager[KVBackend]]] = {
    "sqlite": sqlite_backend,
    "memory": memory_backend,
}
SERVED = ["redis"]  # backends on a server: made from the session's server, not tmp_path


class FakeClock:
    """Wall-clock and monotonic time at once, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=[*BACKENDS, *SERVED])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KVBackend]:
    opened = (redis_backend(request.getfixturevalue("redis_server"))
              if request.param == "redis" else BACKENDS[request.param](tmp_path))
    with opened as made:
        yield made


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(backend: KVBackend, clock: FakeClock) -> KVStore:
    return KVStore(backend, clock=clock, rate_limit=NO_LIMIT, rate_clock=clock)


def do(store: KVStore, scope: Scope, operation: str, **args: Any) -> Any:
    """One call through the handler's door, as the engine makes it."""
    return store.call(scope, operation, args, time.monotonic() + 30)


def refused(status: int, *words: str) -> Any:
    """`with refused(404, "k"):` the call fails with that status and a message holding words."""

    @contextmanager
    def check() -> Iterator[None]:
        with pytest.raises(ServiceError) as caught:
            yield
        assert caught.value.status == status, caught.value.message
        for word in words:
            assert word in caught.value.message, caught.value.message

    return check()


# --- set / get / delete ------------------------------------------------------------------

@pytest.mark.parametrize("value", [{"a": 1, "b": [1, 2, {"c": None}]}, [1, "x"], "text", 0, -7,
                                   2.5, True, False, None, {}, [], "ünïcødé ✓", 2**63 - 1])
def test_set_then_get_returns_the_value(store: KVStore, value: Any) -> None:
    assert do(store, A, "set", key="k", value=value) == {"created": True}
    assert do(store, A, "get", key="k") == value


def test_set_overwrites_and_a_returned_value_is_a_copy(store: KVStore) -> None:
    do(store, A, "set", key="k", value={"n": 1})
    do(store, A, "set", key="k", value={"n": 2})
    got = do(store, A, "get", key="k")
    got["n"] = 99
    assert do(store, A, "get", key="k") == {"n": 2}


def test_get_of_a_missing_key_is_404(store: KVStore) -> None:
    with refused(404, "'nope'", "not found"):
        do(store, A, "get", key="nope")


def test_delete_removes_then_a_second_delete_is_404(store: KVStore) -> None:
    do(store, A, "set", key="k", value=1)
    assert do(store, A, "delete", key="k") == {"deleted": True}
    with refused(404):
        do(store, A, "get", key="k")
    with refused(404, "'k'"):
        do(store, A, "delete", key="k")


# --- ttl ---------------------------------------------------------------------------------

def test_a_key_expires_after_its_ttl(store: KVStore, clock: FakeClock) -> None:
    do(store, A, "set", key="k", value=1, ttl=10)
    clock.now += 9.99
    assert do(store, A, "get", key="k") == 1
    clock.now += 0.01
    with refused(404, "expired"):
        do(store, A, "get", key="k")
    with refused(404):
        do(store, A, "delete", key="k")
    with refused(404):
        do(store, A, "update", key="k", action="set", attributes={"a": 1})


def test_expired_entries_are_deleted_lazily_or_by_sweep(store: KVStore, backend: KVBackend,
                                                         clock: FakeClock) -> None:
    do(store, A, "set", key="short", value=1, ttl=5)
    do(store, A, "set", key="touched", value=1, ttl=5)
    do(store, A, "set", key="long", value=1, ttl=50)
    do(store, A, "set", key="forever", value=1)
    clock.now += 10
    with refused(404):
        do(store, A, "get", key="touched")  # deletes it
    assert store.sweep() == 1  # only "short" was left to sweep
    assert do(store, A, "get", key="long") == 1
    assert do(store, A, "get", key="forever") == 1


def test_set_without_ttl_clears_an_earlier_ttl(store: KVStore, clock: FakeClock) -> None:
    do(store, A, "set", key="k", value=1, ttl=5)
    do(store, A, "set", key="k", value=2)
    clock.now += 100
    assert do(store, A, "get", key="k") == 2


def test_update_keeps_the_ttl(store: KVStore, clock: FakeClock) -> None:
    do(store, A, "set", key="k", value={"n": 1}, ttl=5)
    do(store, A, "update", key="k", action="increment", attributes={"n": 1})
    clock.now += 5
    with refused(404):
        do(store, A, "get", key="k")


# --- conditional set ---------------------------------------------------------------------

def test_if_not_exists_stores_only_a_new_key(store: KVStore, clock: FakeClock) -> None:
    assert do(store, A, "set", key="k", value=1, if_not_exists=True) == {"created": True}
    with refused(409, "already exists", "if_not_exists"):
        do(store, A, "set", key="k", value=2, if_not_exists=True)
    assert do(store, A, "get", key="k") == 1
    do(store, A, "set", key="t", value=1, ttl=1)
    clock.now += 1
    assert do(store, A, "set", key="t", value=2, if_not_exists=True) == {"created": True}


def test_if_exists_stores_only_over_an_existing_key(store: KVStore, clock: FakeClock) -> None:
    with refused(404, "if_exists"):
        do(store, A, "set", key="k", value=1, if_exists=True)
    with refused(404):
        do(store, A, "get", key="k")
    do(store, A, "set", key="k", value=1, ttl=3)
    assert do(store, A, "set", key="k", value=2, if_exists=True) == {"created": True}
    assert do(store, A, "get", key="k") == 2
    do(store, A, "set", key="k", value=3, ttl=1)
    clock.now += 1
    with refused(404):
        do(store, A, "set", key="k", value=4, if_exists=True)


def test_if_exists_and_if_not_exists_together_are_refused(store: KVStore) -> None:
    with refused(400, "at most one"):
        do(store, A, "set", key="k", value=1, if_exists=True, if_not_exists=True)


# --- update ------------------------------------------------------------------------------

UPDATES = [  # (stored, action, attributes, result)
    ({"a": 1}, "set", {"b": 2, "a": "x"}, {"a": "x", "b": 2}),
    ({"a": {"b": 1}}, "set", {"a.c": [1], "x.y.z": True}, {"a": {"b": 1, "c": [1]},
                                                          "x": {"y": {"z": True}}}),
    ({"a": {"b": 1, "c": 2}, "d": 3}, "remove", ["a.b", "d", "missing", "nope.deeper"],
     {"a": {"c": 2}}),
    ({"n": 1, "f": 0.5}, "increment", {"n": 2, "f": 1, "new": -3, "m.k": 1.5},
     {"n": 3, "f": 1.5, "new": -3, "m": {"k": 1.5}}),
    ({"n": 2**62}, "increment", {"n": 2**62}, {"n": 2**63}),
    ({"l": [1]}, "append", {"l": [2, [3]], "new": ["x"], "o.p": []},
     {"l": [1, 2, [3]], "new": ["x"], "o": {"p": []}}),
]


@pytest.mark.parametrize(("stored", "action", "attributes", "result"), UPDATES)
def test_update_actions(store: KVStore, stored: Any, action: str, attributes: Any,
                        result: Any) -> None:
    do(store, A, "set", key="k", value=stored)
    assert do(store, A, "update", key="k", action=action, attributes=attributes) == result
    assert do(store, A, "get", key="k") == result


UPDATE_ERRORS = [  # (stored, action, attributes, words in the message)
    ([1, 2], "set", {"a": 1}, ["holds a list", "not an object"]),
    ("text", "increment", {"a": 1}, ["holds a string", "not an object"]),
    ({"a": 5}, "set", {"a.b": 1}, ["'a.b'", "'a' holds a number", "not an object"]),
    ({"a": {"b": []}}, "remove", ["a.b.c"], ["'a.b.c'", "'a.b' holds a list"]),
    ({"a": "1"}, "increment", {"a": 1}, ["'a'", "holds a string", "not a number"]),
    ({"a": True}, "increment", {"a": 1}, ["holds a boolean", "not a number"]),
    ({"a": None}, "increment", {"a": 1}, ["holds null"]),
    ({"a": 1e308}, "increment", {"a": 1e308}, ["overflows"]),
    ({"a": 1.5}, "increment", {"a": 10**400}, ["overflows"]),
    ({"a": {}}, "append", {"a": [1]}, ["'a'", "holds an object", "not a list"]),
    ({"a": 1}, "set", {"b": 1, "a.c": 2}, ["'a' holds a number"]),  # the first must not stick
]


@pytest.mark.parametrize(("stored", "action", "attributes", "words"), UPDATE_ERRORS)
def test_update_type_errors_are_400_and_change_nothing(store: KVStore, stored: Any,
                                                       action: str, attributes: Any,
                                                       words: list[str]) -> None:
    do(store, A, "set", key="k", value=stored)
    with refused(400, *words):
        do(store, A, "update", key="k", action=action, attributes=attributes)
    assert do(store, A, "get", key="k") == stored


@pytest.mark.parametrize(("action", "attributes", "words"), [
    ("merge", {"a": 1}, ["set, remove, increment or append", "'merge'"]),
    (None, {"a": 1}, ["action"]),
    (["set"], {"a": 1}, ["action"]),
    ({"set": 1}, {"a": 1}, ["action"]),
    ("set", {}, ["non-empty object"]),
    ("set", ["a"], ["non-empty object"]),
    ("remove", {"a": 1}, ["non-empty list of paths"]),
    ("remove", [], ["non-empty list of paths"]),
    ("remove", [1], ["dotted names"]),
    ("set", {"": 1}, ["dotted names"]),
    ("set", {"a..b": 1}, ["dotted names", "'a..b'"]),
    ("set", {".a": 1}, ["dotted names"]),
    ("increment", {"a": "1"}, ["finite number", "'a'"]),
    ("increment", {"a": True}, ["finite number"]),
    ("increment", {"a": math.nan}, ["finite number"]),
    ("increment", {"a": math.inf}, ["finite number"]),
    ("append", {"a": 1}, ["list of values", "'a'"]),
    ("set", {"a": math.nan}, ["not JSON"]),
])
def test_update_argument_errors_are_400(store: KVStore, action: Any, attributes: Any,
                                        words: list[str]) -> None:
    do(store, A, "set", key="k", value={"a": 0})
    with refused(400, *words):
        do(store, A, "update", key="k", action=action, attributes=attributes)
    assert do(store, A, "get", key="k") == {"a": 0}


def test_update_of_a_missing_key_is_404(store: KVStore) -> None:
    with refused(404, "'k'", "set it first"):
        do(store, A, "update", key="k", action="increment", attributes={"n": 1})


def test_update_that_would_pass_40_kb_is_413_and_changes_nothing(store: KVStore) -> None:
    do(store, A, "set", key="k", value={"l": ["x" * 1000] * 39})
    with refused(413, "40 KB", "nothing was changed"):
        do(store, A, "update", key="k", action="append", attributes={"l": ["y" * 2000]})
    assert len(do(store, A, "get", key="k")["l"]) == 39


def test_update_nesting_past_the_depth_limit_is_400(store: KVStore) -> None:
    do(store, A, "set", key="k", value={})
    with refused(400, "deeper"):
        do(store, A, "update", key="k", action="set", attributes={".".join(["a"] * 150): 1})


# --- limits ------------------------------------------------------------------------------

def test_keys_of_60_characters_pass_and_61_are_refused(store: KVStore) -> None:
    do(store, A, "set", key="k" * 60, value=1)
    do(store, A, "set", key="😀" * 60, value=2)  # characters, not bytes
    assert do(store, A, "get", key="😀" * 60) == 2
    with refused(400, "61 characters", "at most 60"):
        do(store, A, "set", key="k" * 61, value=1)
    with refused(400, "61 characters"):
        do(store, A, "get", key="k" * 61)


def test_key_plus_value_of_40_kb_passes_and_one_byte_more_is_413(store: KVStore) -> None:
    key = "kk"
    fits = "x" * (MAX_ENTRY_BYTES - len(key) - 2)  # 2 for the JSON quotes
    do(store, A, "set", key=key, value=fits)
    with refused(413, f"{MAX_ENTRY_BYTES + 1} bytes", "40 KB", "split it across keys"):
        do(store, A, "set", key=key, value=fits + "x")
    with refused(413):  # the key's bytes count too
        do(store, A, "set", key=key + "k", value=fits)
    with refused(413):  # UTF-8 bytes, not characters
        do(store, A, "set", key=key, value="é" * (MAX_ENTRY_BYTES // 2))
    assert do(store, A, "get", key=key) == fits


def test_the_51st_operation_in_a_minute_is_429(backend: KVBackend, clock: FakeClock) -> None:
    store = KVStore(backend, clock=clock, rate_clock=clock)
    do(store, A, "set", key="k", value=0)
    for _ in range(48):
        do(store, A, "get", key="k")
    with refused(400):  # refused calls count too
        do(store, A, "get", key="")
    with refused(429, "50 operations per minute per installation"):
        do(store, A, "get", key="k")
    with refused(404):  # not 429: another installation has its own budget
        do(store, B, "get", key="k")
    clock.now += 60
    assert do(store, A, "get", key="k") == 0


# --- purge -------------------------------------------------------------------------------

def test_purge_deletes_every_key_of_one_installation_only(store: KVStore) -> None:
    for i in range(5):
        do(store, A, "set", key=f"k{i}", value=i)
    do(store, B, "set", key="k0", value="b")
    do(store, C, "set", key="k0", value="c")
    assert store.purge(A) == 5
    for i in range(5):
        with refused(404):
            do(store, A, "get", key=f"k{i}")
    assert do(store, B, "get", key="k0") == "b"
    assert do(store, C, "get", key="k0") == "c"
    assert store.purge(A) == 0


# --- the handler's door: operation, argument names, deadline, async ---------------------

@pytest.mark.parametrize(("operation", "args", "status", "words"), [
    ("drop", {"key": "k"}, 400, ["no operation 'drop'", "delete, get, set, update"]),
    ("get", {"key": "k", "extra": 1, "ttl": 3}, 400, ["does not take 'extra', 'ttl'"]),
    ("set", {"key": "k"}, 400, ["needs value"]),
    ("update", {"key": "k", "action": "set"}, 400, ["needs attributes"]),
    ("get", {}, 400, ["needs key"]),
    ("purge", {}, 400, ["no operation 'purge'"]),  # host-only methods are not operations
    ("sweep", {}, 400, ["no operation 'sweep'"]),
    ("call", {}, 400, ["no operation"]),
    ("__init__", {"backend": None}, 400, ["no operation"]),
])
def test_call_checks_operation_and_argument_names(store: KVStore, operation: str,
                                                  args: dict[str, Any], status: int,
                                                  words: list[str]) -> None:
    with refused(status, *words):
        store.call(A, operation, args, time.monotonic() + 30)


def test_call_past_the_deadline_is_504(store: KVStore) -> None:
    with refused(504, "Timeout error while processing the request."):
        store.call(A, "get", {"key": "k"}, time.monotonic() - 1)


def test_call_async_gives_the_same_results(store: KVStore) -> None:
    deadline = time.monotonic() + 30
    assert asyncio.run(store.call_async(A, "set", {"key": "k", "value": [1]}, deadline)) == {
        "created": True}
    assert asyncio.run(store.call_async(A, "get", {"key": "k"}, deadline)) == [1]
    with refused(404):
        asyncio.run(store.call_async(A, "get", {"key": "x"}, deadline))


def test_kvstore_is_the_db_service() -> None:
    store = KVStore(MemoryKV())
    assert store.name == "db"
    assert store.operations == {"set", "get", "delete", "update"}


# --- attacks: no key string reaches another installation's entries -----------------------

HOSTILE_KEYS = ["k", "/", "a/b", "app/2", "app/2/k", "app", "2", "%", "_", "%%", "k%", "_k",
                "*", "[k]", "'", '"', "' OR '1'='1", "k'; DROP TABLE kv; --", "\\", "\x00",
                "k\x00", "\x00app/2", "😀" * 60, "é" * 60, " ", "K"]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_no_key_reaches_another_installation(store: KVStore, key: str) -> None:
    do(store, A, "set", key=key, value={"owner": "A", "n": 0})
    for other in (B, C):
        with refused(404):
            do(store, other, "get", key=key)
        with refused(404):
            do(store, other, "delete", key=key)
        with refused(404):
            do(store, other, "update", key=key, action="increment", attributes={"n": 1})
        with refused(404):
            do(store, other, "set", key=key, value="stolen", if_exists=True)
        do(store, other, "set", key=key, value={"owner": "other"})
        assert store.purge(other) == 1
    assert do(store, A, "get", key=key) == {"owner": "A", "n": 0}


def test_wildcards_and_prefixes_match_only_themselves(store: KVStore) -> None:
    for key in ("abc", "a_c", "a", "ab"):
        do(store, A, "set", key=key, value=key)
    do(store, B, "set", key="abc", value="B")
    for probe in ("a%", "%", "a_", "_bc", "a*", "abc\x00", "ABC", "ab "):
        with refused(404):
            do(store, A, "get", key=probe)
        with refused(404):
            do(store, A, "delete", key=probe)
    assert [do(store, A, "get", key=k) for k in ("abc", "a_c", "a", "ab")] == [
        "abc", "a_c", "a", "ab"]
    assert do(store, B, "get", key="abc") == "B"


def test_keys_differing_after_a_nul_are_distinct(store: KVStore) -> None:
    do(store, A, "set", key="x\x00y", value=1)
    do(store, A, "set", key="x\x00z", value=2)
    do(store, A, "set", key="x", value=3)
    assert [do(store, A, "get", key=k) for k in ("x\x00y", "x\x00z", "x")] == [1, 2, 3]


@pytest.mark.parametrize("key", [None, 5, True, 1.5, ["k"], {"k": 1}, "", "\ud800", "k" * 1000])
def test_hostile_keys_are_400(store: KVStore, key: Any) -> None:
    for operation, extra in (("set", {"value": 1}), ("get", {}), ("delete", {}),
                             ("update", {"action": "set", "attributes": {"a": 1}})):
        with refused(400, "key"):
            do(store, A, operation, key=key, **extra)


@pytest.mark.parametrize("ttl", [True, False, 0, -1, 1.5, 60.0, math.nan, math.inf, "60", [60],
                                 MAX_TTL_S + 1, 10**100, 2**64])
def test_hostile_ttls_are_400(store: KVStore, ttl: Any) -> None:
    with refused(400, "ttl must be a whole number of seconds"):
        do(store, A, "set", key="k", value=1, ttl=ttl)
    with refused(404):
        do(store, A, "get", key="k")


@pytest.mark.parametrize("flag", ["if_exists", "if_not_exists"])
@pytest.mark.parametrize("given", [1, 0, "true", None, [True]])
def test_condition_flags_must_be_booleans(store: KVStore, flag: str, given: Any) -> None:
    with refused(400, flag, "true or false"):
        do(store, A, "set", key="k", value=1, **{flag: given})


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("value", "words"), [
    (math.nan, ["nan", "not JSON"]),
    ({"a": [1, math.inf]}, ["inf"]),
    (nested(1000), ["nested deeper than 100"]),
    ({"a": nested(200)}, ["nested deeper"]),
    (10**5000, ["integer outside the range"]),
    ({1: "non-str key"}, ["must be strings"]),
    ({"k": {1, 2}}, ["set is not JSON"]),
    ({"\ud800": 1}, ["cannot be encoded"]),
], ids=["nan", "inf", "1000-deep", "200-deep", "5000-digit-int", "int-key", "set", "surrogate"])
def test_values_that_are_not_plain_json_are_400(store: KVStore, value: Any,
                                                words: list[str]) -> None:
    with refused(400, *words):
        do(store, A, "set", key="k", value=value)
    with refused(404):
        do(store, A, "get", key="k")


def test_huge_int_increment_that_cannot_be_stored_is_400(store: KVStore) -> None:
    do(store, A, "set", key="k", value={"n": 1})
    with refused(400, "integer outside the range"):
        do(store, A, "update", key="k", action="increment", attributes={"n": 10**5000})
    assert do(store, A, "get", key="k") == {"n": 1}


# --- SQLite: concurrency across threads and processes, persistence -----------------------

def hammer(store: KVStore, times: int, errors: list[BaseException]) -> None:
    try:
        for _ in range(times):
            do(store, A, "update", key="counter", action="increment", attributes={"n": 1})
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def run_threads(targets: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_four_threads_incrementing_one_key_lose_nothing(tmp_path: Path) -> None:
    db = Database(tmp_path / "kv.sqlite3")
    store = KVStore.sqlite(db, rate_limit=NO_LIMIT)
    do(store, A, "set", key="counter", value={"n": 0})
    errors: list[BaseException] = []
    run_threads([partial(hammer, store, 200, errors) for _ in range(4)])
    assert errors == []
    assert do(store, A, "get", key="counter") == {"n": 800}
    db.close()


def test_two_databases_on_one_file_incrementing_lose_nothing(tmp_path: Path) -> None:
    first = Database(tmp_path / "kv.sqlite3")
    second = Database(tmp_path / "kv.sqlite3")
    stores = [KVStore.sqlite(db, rate_limit=NO_LIMIT) for db in (first, second)]
    do(stores[0], A, "set", key="counter", value={"n": 0})
    errors: list[BaseException] = []
    run_threads([partial(hammer, each, 150, errors) for each in stores for _ in range(2)])
    assert errors == []
    assert do(stores[1], A, "get", key="counter") == {"n": 600}
    first.close()
    second.close()


CHILD = """
import sys, time
from handlerbox.runtime.services.base import Scope
from handlerbox.runtime.services.kv import KVStore
from handlerbox.runtime.services.sqlite import Database
store = KVStore.sqlite(Database(sys.argv[1]), rate_limit=10**9)
for _ in range(int(sys.argv[2])):
    store.call(Scope("app", "1"), "update",
               {"key": "counter", "action": "increment", "attributes": {"n": 1}},
               time.monotonic() + 30)
"""


def test_two_processes_on_one_file_incrementing_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite3"
    db = Database(path)
    store = KVStore.sqlite(db, rate_limit=NO_LIMIT)
    do(store, A, "set", key="counter", value={"n": 0})
    Database(path).close()
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(path), "200"])
                for _ in range(2)]
    assert [child.wait(timeout=50) for child in children] == [0, 0]
    assert do(store, A, "get", key="counter") == {"n": 400}
    db.close()


def test_values_survive_closing_and_reopening_the_file(tmp_path: Path) -> None:
    clock = FakeClock()
    db = Database(tmp_path / "kv.sqlite3")
    store = KVStore.sqlite(db, clock=clock)
    do(store, A, "set", key="k", value={"a": [1, "ü"]})
    do(store, A, "set", key="t", value=1, ttl=10)
    do(store, B, "set", key="k", value="b")
    db.close()
    db = Database(tmp_path / "kv.sqlite3")
    store = KVStore.sqlite(db, clock=clock)
    assert do(store, A, "get", key="k") == {"a": [1, "ü"]}
    assert do(store, B, "get", key="k") == "b"
    assert do(store, A, "get", key="t") == 1
    clock.now += 10
    with refused(404):
        do(store, A, "get", key="t")
    db.close()


def test_redis_threads_incrementing_one_key_lose_nothing(request: pytest.FixtureRequest) -> None:
    """Update's WATCH/MULTI retry: racing writers to one installation lose no increment."""
    with redis_backend(request.getfixturevalue("redis_server")) as backend:
        store = KVStore(backend, rate_limit=NO_LIMIT)
        do(store, A, "set", key="counter", value={"n": 0})
        errors: list[BaseException] = []
        run_threads([partial(hammer, store, 100, errors) for _ in range(4)])
        assert errors == []
        assert do(store, A, "get", key="counter") == {"n": 400}
