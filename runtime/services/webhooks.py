"""Webhook targets for external events: per-installation tokens and the `webhook` service.

Touches untrusted input twice: tokens in URLs posted by anyone on the internet (`lookup`),
and the handler's host-call arguments (`WebhookService.call`). A token is 32 random bytes
(secrets.token_urlsafe); the store keeps only its SHA-256, so a copy of the database holds
no live token, and a lookup indexes by that hash, so its timing says nothing about how close
a guess was. One interface, `TokenBackend`, with its backends beside it: `SQLiteTokenBackend`
(a table in the shared Database file) and `MemoryTokenBackend` (unit tests).

    tokens = WebhookTokens(SQLiteTokenBackend(db))
    service = WebhookService(tokens, base_url="https://hooks.example.com")
    service.call(scope, "generate_target_url", {}, deadline)  # {"url": ".../webhooks/<token>"}
    tokens.lookup(token)          # the Scope the token belongs to, or None
    tokens.revoke_all(scope)      # on uninstall
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

from handlerbox.runtime.errors import ConfigError
from handlerbox.runtime.services.base import Clock, Scope, ServiceError
from handlerbox.runtime.services.sqlite import Database
from handlerbox.runtime.validation import short

TOKEN_BYTES = 32
"""Random bytes per token: 256 bits, so guessing one is hopeless."""
MAX_TOKENS_PER_INSTALLATION = 10
"""An installation may hold this many live target URLs; an app that needs a new one revokes
an old one first (a silent eviction would break a URL some third party still posts to)."""
DEFAULT_BASE_URL = "http://127.0.0.1:8080"
"""Where `handlerbox serve` listens by default; operators set the public address."""
WEBHOOK_PATH = "/webhooks/"

_TOKEN = re.compile(r"[A-Za-z0-9_\-]{43}", re.ASCII)
"""What secrets.token_urlsafe(32) produces; anything else is refused before any lookup."""


def digest(token: str) -> bytes:
    """The SHA-256 of a token: what the store keeps and indexes instead of the token."""
    return hashlib.sha256(token.encode("ascii")).digest()


class TokenBackend(Protocol):
    """Where token digests live, each with the installation it belongs to."""

    def add(self, key: bytes, scope: Scope, created_at: float, limit: int) -> bool:
        """Store `key` for `scope` unless the scope already holds `limit` keys (then False);
        atomic, so concurrent adds never pass the limit."""
        ...

    def find(self, key: bytes) -> Scope | None:
        ...

    def delete(self, key: bytes, scope: Scope | None = None) -> bool:
        """Delete `key` (only if it belongs to `scope`, when given); True if it was there."""
        ...

    def delete_all(self, scope: Scope) -> int:
        ...

    def count(self, scope: Scope) -> int:
        ...


class WebhookTokens:
    """Generate, resolve and revoke the tokens of webhook target URLs."""

    def __init__(self, backend: TokenBackend, *,
                 max_per_installation: int = MAX_TOKENS_PER_INSTALLATION,
                 clock: Clock = time.time) -> None:
        if max_per_installation < 1:
            raise ConfigError("webhook tokens per installation must be at least 1; got "
                              f"{short(max_per_installation)}")
        self.backend = backend
        self.max_per_installation = max_per_installation
        self._clock = clock

    def generate(self, scope: Scope) -> str:
        """A new token for `scope`; ServiceError 409 when it already holds the maximum."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        if not self.backend.add(digest(token), scope, self._clock(), self.max_per_installation):
            raise ServiceError(409, f"an installation may hold at most "
                                    f"{self.max_per_installation} webhook target URLs; "
                                    "revoke one it no longer uses first")
        return token

    def lookup(self, token: Any) -> Scope | None:
        """The installation `token` belongs to, or None (unknown, revoked, malformed)."""
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return None
        return self.backend.find(digest(token))

    def revoke(self, token: Any, scope: Scope | None = None) -> bool:
        """Revoke `token` (only if it belongs to `scope`, when given); True if it was live."""
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return False
        return self.backend.delete(digest(token), scope)

    def revoke_all(self, scope: Scope) -> int:
        """Revoke every token of `scope` (on uninstall); how many there were."""
        return self.backend.delete_all(scope)

    def count(self, scope: Scope) -> int:
        return self.backend.count(scope)


class MemoryTokenBackend:
    """TokenBackend in a dict, for unit tests; a lock makes each method atomic."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scopes: dict[bytes, Scope] = {}

    def add(self, key: bytes, scope: Scope, created_at: float, limit: int) -> bool:
        with self._lock:
            if sum(s == scope for s in self._scopes.values()) >= limit:
                return False
            self._scopes[key] = scope
            return True

    def find(self, key: bytes) -> Scope | None:
        with self._lock:
            return self._scopes.get(key)

    def delete(self, key: bytes, scope: Scope | None = None) -> bool:
        with self._lock:
            if key not in self._scopes or scope not in (None, self._scopes[key]):
                return False
            del self._scopes[key]
            return True

    def delete_all(self, scope: Scope) -> int:
        with self._lock:
            keys = [k for k, s in self._scopes.items() if s == scope]
            for key in keys:
                del self._scopes[key]
            return len(keys)

    def count(self, scope: Scope) -> int:
        with self._lock:
            return sum(s == scope for s in self._scopes.values())


_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_tokens (
    digest BLOB PRIMARY KEY,
    app TEXT NOT NULL,
    account_id TEXT NOT NULL,
    created_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webhook_tokens_installation ON webhook_tokens (app, account_id);
"""


class SQLiteTokenBackend:
    """TokenBackend as the `webhook_tokens` table of the shared Database (digests only)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.schema(_SCHEMA)

    def add(self, key: bytes, scope: Scope, created_at: float, limit: int) -> bool:
        with self.db.transaction() as conn:
            (held,) = conn.execute("SELECT count(*) FROM webhook_tokens WHERE app = ? AND "
                                   "account_id = ?", (scope.app, scope.account_id)).fetchone()
            if held >= limit:
                return False
            conn.execute("INSERT INTO webhook_tokens (digest, app, account_id, created_at) "
                         "VALUES (?, ?, ?, ?)", (key, scope.app, scope.account_id, created_at))
        return True

    def find(self, key: bytes) -> Scope | None:
        row = self.db.connection().execute(
            "SELECT app, account_id FROM webhook_tokens WHERE digest = ?", (key,)).fetchone()
        return Scope(row[0], row[1]) if row else None

    def delete(self, key: bytes, scope: Scope | None = None) -> bool:
        with self.db.transaction() as conn:
            if scope is None:
                cursor = conn.execute("DELETE FROM webhook_tokens WHERE digest = ?", (key,))
            else:
                cursor = conn.execute("DELETE FROM webhook_tokens WHERE digest = ? AND app = ? "
                                      "AND account_id = ?", (key, scope.app, scope.account_id))
        return cursor.rowcount > 0

    def delete_all(self, scope: Scope) -> int:
        with self.db.transaction() as conn:
            cursor = conn.execute("DELETE FROM webhook_tokens WHERE app = ? AND account_id = ?",
                                  (scope.app, scope.account_id))
        return cursor.rowcount

    def count(self, scope: Scope) -> int:
        (held,) = self.db.connection().execute(
            "SELECT count(*) FROM webhook_tokens WHERE app = ? AND account_id = ?",
            (scope.app, scope.account_id)).fetchone()
        return int(held)


def check_base_url(base_url: str) -> str:
    """The operator's public address for webhooks, without a trailing '/'; ConfigError
    unless it is an http(s) URL with a host and no query or fragment."""
    ok = isinstance(base_url, str) and not any(c.isspace() for c in base_url)
    if ok:
        try:
            parts = urlsplit(base_url)
            ok = (parts.scheme in ("http", "https") and bool(parts.hostname)
                  and not parts.query and not parts.fragment)
            parts.port  # noqa: B018 (raises ValueError for a bad port)
        except ValueError:
            ok = False
    if not ok:
        raise ConfigError("webhook base URL must be an http or https URL with a host and no "
                          "query or fragment, like https://hooks.example.com; got "
                          f"{short(base_url)}")
    return base_url.rstrip("/")


class WebhookService:
    """The `webhook` service handlers call (the platform's generateTargetUrl).

    - `generate_target_url` (no arguments) -> `{"url": "<base_url>/webhooks/<token>"}`: a new
      URL whose POSTs run this installation's onExternalEvent handler.
    - `revoke` (`url`: a URL it was given, or its token) -> `{"revoked": true}`; 404 unless
      the URL is live and belongs to the calling installation (another installation's URL
      is reported exactly like an unknown one).

    The installation comes from `scope` (the worker's binding), never from the arguments."""

    name = "webhook"
    operations = frozenset({"generate_target_url", "revoke"})

    def __init__(self, tokens: WebhookTokens, base_url: str = DEFAULT_BASE_URL) -> None:
        self.tokens = tokens
        self.base_url = check_base_url(base_url)

    def url_for(self, token: str) -> str:
        return f"{self.base_url}{WEBHOOK_PATH}{token}"

    @staticmethod
    def token_from(url_or_token: str) -> str:
        """The token in a target URL (whatever its base, which the operator may have moved),
        or the argument itself when it is not a URL."""
        if "://" not in url_or_token:
            return url_or_token
        try:
            path = urlsplit(url_or_token).path
        except ValueError:  # e.g. an unclosed IPv6 bracket
            return ""
        _, sep, token = path.rpartition(WEBHOOK_PATH)
        return token if sep else ""

    def call(self, scope: Scope, operation: str, args: dict[str, Any],
             deadline: float) -> Any:
        """Each operation is one short SQLite statement: nothing here waits on the deadline
        beyond SQLite's busy timeout."""
        if operation == "generate_target_url":
            _only(args, ())
            return {"url": self.url_for(self.tokens.generate(scope))}
        if operation == "revoke":
            _only(args, ("url",))
            url = args.get("url")
            if not isinstance(url, str):
                raise ServiceError(400, "url: must be a string: the target URL to revoke")
            if not self.tokens.revoke(self.token_from(url), scope):
                raise ServiceError(404, "no such webhook target URL for this installation")
            return {"revoked": True}
        raise ServiceError(400, f"the webhook service has no operation {short(operation)} "
                                f"(it has: {', '.join(sorted(self.operations))})")

    async def call_async(self, scope: Scope, operation: str, args: dict[str, Any],
                         deadline: float) -> Any:
        """Runs inline on the event loop: each operation is a single indexed statement on a
        local file, shorter than a thread hand-off."""
        return self.call(scope, operation, args, deadline)


def _only(args: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = [k for k in args if k not in allowed]
    if unknown:
        takes = f"it takes: {', '.join(allowed)}" if allowed else "it takes none"
        raise ServiceError(400, f"unknown argument {short(unknown[0])} ({takes})")
    missing = [k for k in allowed if k not in args]
    if missing:
        raise ServiceError(400, f"{missing[0]}: is required")

