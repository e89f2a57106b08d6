"""Webhook target tokens and the `webhook` service: one suite run against every backend (add
a Redis one to BACKENDS)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from handlerbox.runtime.errors import ConfigError
from handlerbox.runtime.services.base import Scope, ServiceError
from handlerbox.runtime.services.sqlite import Database
from handlerbox.runtime.services.webhooks import (
    DEFAULT_BASE_URL,
    MemoryTokenBackend,
    SQLiteTokenBackend,
    TokenBackend,
    WebhookService,
    WebhookTokens,
    check_base_url,
    digest,
)

ALICE = Scope("crm_sync", "82918")
BOB = Scope("crm_sync", "10001")
OTHER_APP = Scope("ticket_bot", "82918")
DEADLINE = float("inf")


def memory(tmp_path: Path) -> tuple[TokenBackend, Callable[[], None]]:
    return MemoryTokenBackend(), lambda: None


def sqlite(tmp_path: Path) -> tuple[TokenBackend, Callable[[], None]]:
    db = Database(tmp_path / "store.sqlite3")
    return SQLiteTokenBackend(db), db.close




BACKENDS = {"memory": memory, "sqlite": sqlite}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TokenBackend]:
    made, close = BACKENDS[request.param](tmp_path)
    yield made
    close()


@pytest.fixture
def tokens(backend: TokenBackend) -> WebhookTokens:
    return WebhookTokens(backend, max_per_installation=3)


@pytest.fixture
def service(tokens: WebhookTokens) -> WebhookService:
    return WebhookService(tokens, base_url="https://hooks.example.com/")


# -- tokens --------------------------------------------------------------------------------

def test_a_generated_token_resolves_to_its_installation(tokens: WebhookTokens) -> None:
    token = tokens.generate(ALICE)
    assert len(token) == 43
    assert tokens.lookup(token) == ALICE
    assert tokens.count(ALICE) == 1


def test_tokens_are_unique(tokens: WebhookTokens) -> None:
    made = {tokens.generate(s) for s in (ALICE, ALICE, BOB, OTHER_APP)}
    assert len(made) == 4
    assert {tokens.lookup(t) for t in made} == {ALICE, BOB, OTHER_APP}


@pytest.mark.parametrize("token", [
    "A" * 43, "", "short", "A" * 44, "A" * 42 + "!", "../../etc/passwd", None, 42, b"A" * 43,
])
def test_unknown_and_malformed_tokens_resolve_to_nothing(tokens: WebhookTokens,
                                                        token: Any) -> None:
    tokens.generate(ALICE)
    assert tokens.lookup(token) is None
    assert tokens.revoke(token) is False


def test_a_revoked_token_is_refused_and_revoking_twice_is_false(tokens: WebhookTokens) -> None:
    token, kept = tokens.generate(ALICE), tokens.generate(ALICE)
    assert tokens.revoke(token) is True
    assert tokens.lookup(token) is None
    assert tokens.revoke(token) is False
    assert tokens.lookup(kept) == ALICE


def test_revoke_with_a_scope_only_revokes_that_installations_token(
        tokens: WebhookTokens) -> None:
    token = tokens.generate(ALICE)
    assert tokens.revoke(token, BOB) is False
    assert tokens.revoke(token, OTHER_APP) is False
    assert tokens.lookup(token) == ALICE
    assert tokens.revoke(token, ALICE) is True


def test_revoke_all_removes_only_that_installations_tokens(tokens: WebhookTokens) -> None:
    mine = [tokens.generate(ALICE) for _ in range(3)]
    bobs, others = tokens.generate(BOB), tokens.generate(OTHER_APP)
    assert tokens.revoke_all(ALICE) == 3
    assert all(tokens.lookup(t) is None for t in mine)
    assert tokens.lookup(bobs) == BOB and tokens.lookup(others) == OTHER_APP
    assert tokens.revoke_all(ALICE) == 0


def test_an_installation_holds_at_most_the_cap(tokens: WebhookTokens) -> None:
    held = [tokens.generate(ALICE) for _ in range(3)]
    with pytest.raises(ServiceError, match="at most 3 webhook target URLs") as info:
        tokens.generate(ALICE)
    assert info.value.status == 409
    assert tokens.generate(BOB)  # the cap is per installation
    tokens.revoke(held[0])
    assert tokens.lookup(tokens.generate(ALICE)) == ALICE


def test_concurrent_generates_never_pass_the_cap(tokens: WebhookTokens) -> None:
    made: list[str] = []
    refused: list[int] = []

    def attempt() -> None:
        try:
            made.append(tokens.generate(ALICE))
        except ServiceError as exc:
            refused.append(exc.status)

    threads = [threading.Thread(target=attempt) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 3 and refused == [409] * 7
    assert tokens.count(ALICE) == 3


def test_the_cap_must_be_positive(backend: TokenBackend) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        WebhookTokens(backend, max_per_installation=0)


def test_tokens_are_stored_only_as_their_hash(tmp_path: Path) -> None:
    path = tmp_path / "hooks.sqlite3"
    db = Database(path)
    try:
        tokens = WebhookTokens(SQLiteTokenBackend(db))
        made = [tokens.generate(ALICE) for _ in range(5)]
        stored = b"".join(Path(f"{path}{suffix}").read_bytes()
                          for suffix in ("", "-wal") if Path(f"{path}{suffix}").exists())
        assert stored, "the database files are empty"
        assert any(digest(t) in stored for t in made)  # the check can see what is stored
        for token in made:
            assert token.encode() not in stored
        rows = db.connection().execute("SELECT * FROM webhook_tokens").fetchall()
        assert all(token not in repr(row) for row in rows for token in made)
    finally:
        db.close()


def test_sqlite_tokens_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "hooks.sqlite3"
    db = Database(path)
    token = WebhookTokens(SQLiteTokenBackend(db)).generate(ALICE)
    db.close()
    db = Database(path)
    try:
        assert WebhookTokens(SQLiteTokenBackend(db)).lookup(token) == ALICE
    finally:
        db.close()


# -- the service ---------------------------------------------------------------------------

def test_generate_target_url_gives_a_url_that_resolves_to_the_caller(
        service: WebhookService) -> None:
    answer = service.call(ALICE, "generate_target_url", {}, DEADLINE)
    assert set(answer) == {"url"}
    url = answer["url"]
    assert url.startswith("https://hooks.example.com/webhooks/")
    assert service.tokens.lookup(service.token_from(url)) == ALICE


def test_the_default_base_url_is_the_local_server(tokens: WebhookTokens) -> None:
    url = WebhookService(tokens).call(ALICE, "generate_target_url", {}, DEADLINE)["url"]
    assert url.startswith(f"{DEFAULT_BASE_URL}/webhooks/") and DEFAULT_BASE_URL.startswith(
        "http://127.0.0.1:8080")


@pytest.mark.parametrize("form", ["url", "token"])
def test_revoke_takes_the_url_or_its_token(service: WebhookService, form: str) -> None:
    url = service.call(ALICE, "generate_target_url", {}, DEADLINE)["url"]
    target = url if form == "url" else service.token_from(url)
    assert service.call(ALICE, "revoke", {"url": target}, DEADLINE) == {"revoked": True}
    assert service.tokens.lookup(service.token_from(url)) is None


def test_revoke_accepts_a_url_under_an_earlier_base(tokens: WebhookTokens) -> None:
    old = WebhookService(tokens, "http://old.example.com:9000/base")
    url = old.call(ALICE, "generate_target_url", {}, DEADLINE)["url"]
    assert url.startswith("http://old.example.com:9000/base/webhooks/")
    new = WebhookService(tokens, "https://hooks.example.com")
    assert new.call(ALICE, "revoke", {"url": url}, DEADLINE) == {"revoked": True}


@pytest.mark.parametrize("caller", [BOB, OTHER_APP])
def test_one_installation_cannot_revoke_anothers_url(service: WebhookService,
                                                     caller: Scope) -> None:
    url = service.call(ALICE, "generate_target_url", {}, DEADLINE)["url"]
    with pytest.raises(ServiceError, match="no such webhook target URL") as info:
        service.call(caller, "revoke", {"url": url}, DEADLINE)
    assert info.value.status == 404
    assert service.tokens.lookup(service.token_from(url)) == ALICE


@pytest.mark.parametrize("url", [
    "https://hooks.example.com/webhooks/" + "A" * 43, "A" * 43, "", "https://hooks.example.com/",
    "https://hooks.example.com/webhooks/", "http://[::1/webhooks/x", "not a url",
])
def test_revoking_an_unknown_url_is_not_found(service: WebhookService, url: str) -> None:
    with pytest.raises(ServiceError) as info:
        service.call(ALICE, "revoke", {"url": url}, DEADLINE)
    assert info.value.status == 404


@pytest.mark.parametrize("operation, args, fragment", [
    ("generate_target_url", {"scope": "crm_sync/10001"}, "unknown argument 'scope'"),
    ("revoke", {}, "url: is required"),
    ("revoke", {"url": 5}, "url: must be a string"),
    ("revoke", {"url": "x", "account_id": "10001"}, "unknown argument 'account_id'"),
    ("delete_everything", {}, "has no operation 'delete_everything'"),
])
def test_bad_calls_are_refused_with_400(service: WebhookService, operation: str,
                                        args: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ServiceError, match=fragment) as info:
        service.call(ALICE, operation, args, DEADLINE)
    assert info.value.status == 400


def test_the_service_describes_itself(service: WebhookService) -> None:
    assert service.name == "webhook"
    assert service.operations == {"generate_target_url", "revoke"}


def test_call_async_is_the_same_call(service: WebhookService) -> None:
    answer = asyncio.run(service.call_async(ALICE, "generate_target_url", {},
                                            time.monotonic() + 5))
    assert service.tokens.lookup(service.token_from(answer["url"])) == ALICE


@pytest.mark.parametrize("base_url", [
    "ftp://hooks.example.com", "hooks.example.com", "https://", "https://h.example.com/?a=1",
    "https://h.example.com/#x", "https://h.example.com:99999", "https://h .example.com", 5,
])
def test_a_bad_base_url_is_a_config_error(base_url: Any) -> None:
    with pytest.raises(ConfigError, match="webhook base URL must be"):
        check_base_url(base_url)


def test_a_base_url_loses_its_trailing_slash() -> None:
    assert check_base_url("https://hooks.example.com/in/") == "https://hooks.example.com/in"
