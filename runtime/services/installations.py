"""The installation store: which apps are installed in which accounts, with their iparams.

Touches input from the installing side (the front door): every field is checked here
(`Installation` is a strict edge model); iparams are checked against the app's declarations
by the caller (runtime.iparams.IparamsSpec.check) before they reach the store, which keeps
them as given. One interface, `InstallationStore`, with its backends beside it:
`SQLiteInstallations` (the embedded default, a table in the shared Database file) and
`MemoryInstallations` (unit tests).

    store = SQLiteInstallations(db)
    inst = store.add("my_app", "82918", version="1.0.0", domain="acme.freshcaller.com",
                     region="US", iparams=spec.check(values))
    store.get("my_app", "82918")            # Installation, or None
    store.update("my_app", "82918", iparams=spec.check(new_values))
    store.remove("my_app", "82918")         # InstallationNotFound when it is not there

An installation's iparams may hold secure values: `Installation`'s repr leaves iparams out,
and `redacted(spec)` gives a copy fit for logs and listings.
"""

from __future__ import annotations

import builtins
import copy
import json
import re
import sqlite3
import threading
import time
from collections.abc import Mapping
from typing import Annotated, Any, Protocol

from pydantic import AfterValidator, Field, ValidationError

from handlerbox.runtime.errors import (
    InstallationError,
    InstallationExists,
    InstallationNotFound,
)
from handlerbox.runtime.iparams import IparamsSpec
from handlerbox.runtime.payloads import Region
from handlerbox.runtime.services.base import Clock, Scope
from handlerbox.runtime.services.sqlite import Database
from handlerbox.runtime.validation import EdgeModel, short
from handlerbox.runtime.validation import problems as schema_problems

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}", re.ASCII)




def _check_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError("must be 1 to 100 letters, digits, '_', '.' or '-', starting with a "
                         f"letter or digit (got {short(value)})")
    return value


def _check_json(iparams: dict[str, Any]) -> dict[str, Any]:
    try:
        _dumps(iparams)
    except (TypeError, ValueError, RecursionError):
        raise ValueError("must be plain JSON (check them with IparamsSpec.check first)"
                         ) from None
    return iparams


Id = Annotated[str, AfterValidator(_check_id)]
"""App names and account ids: no '/' (Scope.installation joins them with one) and nothing a
URL or a log line would need to escape."""


class Installation(EdgeModel):
    """One app installed in one account. Times are epoch seconds (the store's clock)."""

    app: Id
    account_id: Id
    version: str = Field(min_length=1, max_length=64)
    domain: str = Field(min_length=1, max_length=253)
    region: Region
    iparams: Annotated[dict[str, Any], AfterValidator(_check_json)] = Field(
        default_factory=dict, repr=False)
    created_at: float
    updated_at: float

    @property
    def scope(self) -> Scope:
        """Whom host calls made for this installation act for."""
        return Scope(self.app, self.account_id)

    def redacted(self, spec: IparamsSpec) -> Installation:
        """A copy with secure iparam values replaced by "********" (listings, logs)."""
        return self.model_copy(update={"iparams": spec.redact(self.iparams)})

    def to_json(self) -> dict[str, Any]:
        """The installation as plain JSON (secure values included: redact first to show)."""
        return self.model_dump()

    @classmethod
    def build(cls, **fields: Any) -> Installation:
        """Validate the fields, or raise InstallationError naming each bad one."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            problems = schema_problems(exc, "installation", {0: cls.model_fields})
            raise InstallationError("\n".join(problems), problems) from None


class InstallationStore(Protocol):
    """Where installations live. Every method is atomic; `get` and `list` return copies."""

    def add(self, app: str, account_id: str, *, version: str, domain: str, region: str,
            iparams: Mapping[str, Any]) -> Installation:
        """Store a new installation (created_at = updated_at = now); InstallationExists when
        the app is already installed in the account, InstallationError for a bad field."""
        ...

    def get(self, app: str, account_id: str) -> Installation | None:
        """The installation, or None when the app is not installed in the account."""
        ...

    def list(self, app: str | None = None) -> builtins.list[Installation]:
        """Every installation (of `app`, when given), ordered by app then account id."""
        ...

    def update(self, app: str, account_id: str, *, iparams: Mapping[str, Any] | None = None,
               version: str | None = None) -> Installation:
        """Replace the iparams and/or the version (updated_at = now) and return the result;
        InstallationNotFound when there is no such installation."""
        ...

    def remove(self, app: str, account_id: str) -> Installation:
        """Delete the installation and return what it was; InstallationNotFound when there
        is none. (The caller revokes its webhook targets, schedules and data.)"""
        ...


def _not_found(app: str, account_id: str) -> InstallationNotFound:
    return InstallationNotFound(f"app {short(app)} is not installed in account "
                                f"{short(account_id)}")


def _exists(app: str, account_id: str) -> InstallationExists:
    return InstallationExists(f"app {short(app)} is already installed in account "
                              f"{short(account_id)}")


class MemoryInstallations:
    """InstallationStore in a dict, for unit tests; a lock makes each method atomic."""

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], Installation] = {}

    def add(self, app: str, account_id: str, *, version: str, domain: str, region: str,
            iparams: Mapping[str, Any]) -> Installation:
        now = self._clock()
        inst = Installation.build(app=app, account_id=account_id, version=version,
                                  domain=domain, region=region,
                                  iparams=copy.deepcopy(dict(iparams)), created_at=now,
                                  updated_at=now)
        with self._lock:
            if (app, account_id) in self._items:
                raise _exists(app, account_id)
            self._items[app, account_id] = inst
        return inst.model_copy(deep=True)

    def get(self, app: str, account_id: str) -> Installation | None:
        with self._lock:
            inst = self._items.get((app, account_id))
        return inst.model_copy(deep=True) if inst else None

    def list(self, app: str | None = None) -> builtins.list[Installation]:
        with self._lock:
            found = [i for k, i in sorted(self._items.items()) if app is None or k[0] == app]
        return [i.model_copy(deep=True) for i in found]

    def update(self, app: str, account_id: str, *, iparams: Mapping[str, Any] | None = None,
               version: str | None = None) -> Installation:
        with self._lock:
            old = self._items.get((app, account_id))
            if old is None:
                raise _not_found(app, account_id)
            inst = _updated(old, iparams, version, self._clock())
            self._items[app, account_id] = inst
        return inst.model_copy(deep=True)

    def remove(self, app: str, account_id: str) -> Installation:
        with self._lock:
            inst = self._items.pop((app, account_id), None)
        if inst is None:
            raise _not_found(app, account_id)
        return inst


def _updated(old: Installation, iparams: Mapping[str, Any] | None, version: str | None,
             now: float) -> Installation:
    fields = old.model_dump()
    if iparams is not None:
        fields["iparams"] = copy.deepcopy(dict(iparams))
    if version is not None:
        fields["version"] = version
    fields["updated_at"] = now
    return Installation.build(**fields)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS installations (
    app TEXT NOT NULL,
    account_id TEXT NOT NULL,
    version TEXT NOT NULL,
    domain TEXT NOT NULL,
    region TEXT NOT NULL,
    iparams TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (app, account_id)
) WITHOUT ROWID;
"""
_COLUMNS = "app, account_id, version, domain, region, iparams, created_at, updated_at"


class SQLiteInstallations:
    """InstallationStore as the `installations` table of the shared Database; it survives a
    restart. iparams are stored as JSON text (in the clear: the handler needs the values;
    protect the file as you would any secret store)."""

    def __init__(self, db: Database, clock: Clock = time.time) -> None:
        self.db = db
        self._clock = clock
        db.schema(_SCHEMA)

    def add(self, app: str, account_id: str, *, version: str, domain: str, region: str,
            iparams: Mapping[str, Any]) -> Installation:
        now = self._clock()
        inst = Installation.build(app=app, account_id=account_id, version=version,
                                  domain=domain, region=region, iparams=dict(iparams),
                                  created_at=now, updated_at=now)
        try:
            with self.db.transaction() as conn:
                conn.execute(f"INSERT INTO installations ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                             _row(inst))
        except sqlite3.IntegrityError:
            raise _exists(app, account_id) from None
        return inst

    def get(self, app: str, account_id: str) -> Installation | None:
        row = self.db.connection().execute(
            f"SELECT {_COLUMNS} FROM installations WHERE app = ? AND account_id = ?",
            (app, account_id)).fetchone()
        return _from_row(row) if row else None

    def list(self, app: str | None = None) -> builtins.list[Installation]:
        conn = self.db.connection()
        if app is None:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM installations "
                                "ORDER BY app, account_id")
        else:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM installations WHERE app = ? "
                                "ORDER BY account_id", (app,))
        return [_from_row(row) for row in rows.fetchall()]

    def update(self, app: str, account_id: str, *, iparams: Mapping[str, Any] | None = None,
               version: str | None = None) -> Installation:
        with self.db.transaction() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM installations "
                               "WHERE app = ? AND account_id = ?", (app, account_id)).fetchone()
            if row is None:
                raise _not_found(app, account_id)
            inst = _updated(_from_row(row), iparams, version, self._clock())
            conn.execute("UPDATE installations SET version = ?, iparams = ?, updated_at = ? "
                         "WHERE app = ? AND account_id = ?",
                         (inst.version, _dumps(inst.iparams), inst.updated_at, app, account_id))
        return inst

    def remove(self, app: str, account_id: str) -> Installation:
        with self.db.transaction() as conn:
            row = conn.execute(f"DELETE FROM installations WHERE app = ? AND account_id = ? "
                               f"RETURNING {_COLUMNS}", (app, account_id)).fetchone()
        if row is None:
            raise _not_found(app, account_id)
        return _from_row(row)


def _dumps(iparams: Mapping[str, Any]) -> str:
    """Compact JSON text; ValueError/TypeError for what is not plain JSON (a lone surrogate
    included, so that what is stored always encodes into a payload)."""
    text = json.dumps(iparams, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text.encode("utf-8")
    return text


def _row(inst: Installation) -> tuple[Any, ...]:
    return (inst.app, inst.account_id, inst.version, inst.domain, inst.region,
            _dumps(inst.iparams), inst.created_at, inst.updated_at)


def _from_row(row: tuple[Any, ...]) -> Installation:
    app, account_id, version, domain, region, iparams, created_at, updated_at = row
    return Installation.build(app=app, account_id=account_id, version=version, domain=domain,
                              region=region, iparams=json.loads(iparams),
                              created_at=created_at, updated_at=updated_at)
