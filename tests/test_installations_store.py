"""The installation store: one suite run against every backend (add a Redis one to BACKENDS)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from handlerbox.runtime.iparams import REDACTED, IparamsSpec
from handlerbox.runtime.services.base import Scope
from handlerbox.runtime.services.installations import (
    Installation,
    InstallationError,
    InstallationExists,
    InstallationNotFound,
    InstallationStore,
    MemoryInstallations,
    SQLiteInstallations,
)
from handlerbox.runtime.services.sqlite import Database

SECRET = "sk_live_Zq8-UNMISTAKABLE-7f3c"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def memory(tmp_path: Path, clock: FakeClock) -> tuple[InstallationStore, Callable[[], None]]:
    return MemoryInstallations(clock), lambda: None


def sqlite(tmp_path: Path, clock: FakeClock) -> tuple[InstallationStore, Callable[[], None]]:
    db = Database(tmp_path / "store.sqlite3")
    return SQLiteInstallations(db, clock), db.close




BACKENDS = {"memory": memory, "sqlite": sqlite}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path,
          clock: FakeClock) -> Iterator[InstallationStore]:
    made, close = BACKENDS[request.param](tmp_path, clock)
    yield made
    close()


def add(store: InstallationStore, app: str = "crm_sync", account_id: str = "82918",
        **fields: Any) -> Installation:
    values: dict[str, Any] = {"version": "1.0.0", "domain": "acme.freshcaller.com",
                              "region": "US", "iparams": {"api_key": SECRET, "n": 3}}
    values.update(fields)
    return store.add(app, account_id, **values)


def test_add_then_get_returns_the_installation(store: InstallationStore,
                                               clock: FakeClock) -> None:
    made = add(store)
    assert made == store.get("crm_sync", "82918")
    assert (made.app, made.account_id, made.version, made.domain, made.region) == (
        "crm_sync", "82918", "1.0.0", "acme.freshcaller.com", "US")
    assert made.iparams == {"api_key": SECRET, "n": 3}
    assert made.created_at == made.updated_at == clock.now
    assert made.scope == Scope("crm_sync", "82918")


def test_get_of_a_missing_installation_is_none(store: InstallationStore) -> None:
    add(store)
    assert store.get("crm_sync", "1") is None
    assert store.get("other", "82918") is None


def test_adding_twice_is_a_conflict(store: InstallationStore) -> None:
    add(store)
    with pytest.raises(InstallationExists, match="already installed") as info:
        add(store, version="2.0.0")
    assert info.value.status == 409 and info.value.code == "installation_exists"
    assert store.get("crm_sync", "82918").version == "1.0.0"  # type: ignore[union-attr]


def test_list_is_ordered_and_filters_by_app(store: InstallationStore) -> None:
    for app, account in [("b_app", "2"), ("a_app", "9"), ("b_app", "1"), ("a_app", "10")]:
        add(store, app, account)
    assert [(i.app, i.account_id) for i in store.list()] == [
        ("a_app", "10"), ("a_app", "9"), ("b_app", "1"), ("b_app", "2")]
    assert [i.account_id for i in store.list("b_app")] == ["1", "2"]
    assert store.list("none") == []


def test_update_replaces_iparams_and_version_and_touches_updated_at(
        store: InstallationStore, clock: FakeClock) -> None:
    made = add(store)
    clock.now += 60
    updated = store.update("crm_sync", "82918", iparams={"api_key": "new-key-value"})
    assert updated.iparams == {"api_key": "new-key-value"}
    assert updated.version == "1.0.0"
    assert (updated.created_at, updated.updated_at) == (made.created_at, clock.now)
    clock.now += 60
    again = store.update("crm_sync", "82918", version="1.1.0")
    assert again.version == "1.1.0" and again.iparams == {"api_key": "new-key-value"}
    assert store.get("crm_sync", "82918") == again


def test_update_or_remove_of_a_missing_installation_is_not_found(
        store: InstallationStore) -> None:
    with pytest.raises(InstallationNotFound, match="not installed") as info:
        store.update("crm_sync", "82918", version="2")
    assert info.value.status == 404
    with pytest.raises(InstallationNotFound):
        store.remove("crm_sync", "82918")


def test_remove_returns_what_was_removed_and_frees_the_slot(store: InstallationStore) -> None:
    made = add(store)
    assert store.remove("crm_sync", "82918") == made
    assert store.get("crm_sync", "82918") is None
    assert store.list() == []
    add(store, version="2.0.0")
    assert store.get("crm_sync", "82918").version == "2.0.0"  # type: ignore[union-attr]


def test_returned_installations_are_copies(store: InstallationStore) -> None:
    add(store)
    got = store.get("crm_sync", "82918")
    assert got is not None
    got.iparams["api_key"] = "tampered"
    assert store.get("crm_sync", "82918").iparams["api_key"] == SECRET  # type: ignore[union-attr]


@pytest.mark.parametrize("fields, fragment", [
    ({"region": "MARS"}, "installation.region: must be one of US, EU, EUC, AUS, IND"),
    ({"version": ""}, "installation.version: must not be empty"),
    ({"version": 1}, "installation.version: must be a string (got integer)"),
    ({"domain": ""}, "installation.domain: must not be empty"),
    ({"iparams": {"x": float("nan")}}, "installation.iparams: must be plain JSON"),
    ({"iparams": {"x": object()}}, "installation.iparams: must be plain JSON"),
    ({"iparams": {"x": "\ud800"}}, "installation.iparams: must be plain JSON"),
])
def test_bad_fields_are_refused_and_nothing_is_stored(
        store: InstallationStore, fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InstallationError, match=re.escape(fragment)):
        add(store, **fields)
    assert store.list() == []


@pytest.mark.parametrize("app, account_id", [
    ("", "1"), ("a/b", "1"), ("crm", "1/2"), ("crm", ""), ("my app", "1"), ("-x", "1"),
    ("crm", "x" * 101),
])
def test_app_and_account_ids_cannot_smuggle_separators(
        store: InstallationStore, app: str, account_id: str) -> None:
    with pytest.raises(InstallationError, match="must be 1 to 100 letters, digits"):
        add(store, app, account_id)


def test_a_bad_update_leaves_the_installation_as_it_was(store: InstallationStore) -> None:
    made = add(store)
    with pytest.raises(InstallationError, match=r"installation\.iparams"):
        store.update("crm_sync", "82918", iparams={"x": float("inf")})
    assert store.get("crm_sync", "82918") == made


def test_repr_never_shows_iparams_and_redacted_hides_secure_ones(
        store: InstallationStore) -> None:
    spec = IparamsSpec.parse({"api_key": {"type": "api_key"}, "n": {"type": "number"}})
    made = add(store)
    assert SECRET not in repr(made) and SECRET not in str(made)
    shown = made.redacted(spec)
    assert shown.iparams == {"api_key": REDACTED, "n": 3}
    assert made.iparams["api_key"] == SECRET


def test_concurrent_adds_of_one_installation_let_exactly_one_win(
        store: InstallationStore) -> None:
    outcomes: list[str] = []

    def attempt() -> None:
        try:
            add(store)
            outcomes.append("added")
        except InstallationExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["added"] + ["exists"] * 7


def test_sqlite_installations_survive_reopening_the_file(tmp_path: Path,
                                                         clock: FakeClock) -> None:
    path = tmp_path / "persist.sqlite3"
    db = Database(path)
    first = SQLiteInstallations(db, clock)
    made = add(first)
    add(first, "other_app", "5", region="EU", iparams={})
    first.update("crm_sync", "82918", version="1.2.3")
    db.close()

    db = Database(path)
    try:
        reopened = SQLiteInstallations(db, clock)
        got = reopened.get("crm_sync", "82918")
        assert got is not None
        assert got.version == "1.2.3" and got.iparams == made.iparams
        assert got.created_at == made.created_at
        assert [i.app for i in reopened.list()] == ["crm_sync", "other_app"]
    finally:
        db.close()


def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path,
                                                       clock: FakeClock) -> None:
    path = tmp_path / "shared.sqlite3"
    db1, db2 = Database(path), Database(path)
    try:
        one, two = SQLiteInstallations(db1, clock), SQLiteInstallations(db2, clock)
        add(one)
        with pytest.raises(InstallationExists):
            add(two)
        two.remove("crm_sync", "82918")
        assert one.get("crm_sync", "82918") is None
    finally:
        db1.close()
        db2.close()
