"""App versions for the front door: an uploaded archive or a server-local folder becomes a
version the engine loads; untrusted input (archives and the names and paths callers send).

    data_dir/apps/<name>/<upload id>/<name>/     one uploaded version (the engine names an app
                                                 after its folder)
    data_dir/staging/<upload id>/                an archive being unpacked (removed after)

A version that loads is recorded in the `serve_app_versions` table of the engine's database;
the version the engine serves is marked active, so a restart loads the same ones again. Paths
callers name are served only from inside the configured `app_roots`, resolved (a symlink
cannot lead out). Archives go through runtime.serve.archive.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handlerbox.runtime.app import App
from handlerbox.runtime.engine import Engine
from handlerbox.runtime.serve import archive
from handlerbox.runtime.serve.responses import ApiError
from handlerbox.runtime.services.sqlite import Database

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}", re.ASCII)
"""App names: what an installation's `app` accepts (no '/', nothing to escape in a URL)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS serve_app_versions (
    name TEXT NOT NULL, version TEXT NOT NULL, path TEXT NOT NULL, source TEXT NOT NULL,
    added_at REAL NOT NULL, active INTEGER NOT NULL DEFAULT 0, request_timeout INTEGER,
    timeout REAL, PRIMARY KEY (name, version));
"""


@dataclass(frozen=True)
class LoadOptions:
    """Limits an operator may set per version: the app's request timeout (15, 20, 25 or 30)
    and an execution timeout override (seconds)."""

    request_timeout: int | None = None
    timeout: float | None = None


def check_app_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ApiError(422, "bad_app_name", "an app name is 1 to 100 letters, digits, '_', '.' "
                       "or '-', starting with a letter or digit")
    return name


class AppStore:
    """Versions on disk and in the table; every method is blocking (run it on a thread)."""

    def __init__(self, engine: Engine, database: Database, data_dir: Path,
                 app_roots: list[str], caps: archive.Caps) -> None:
        self.engine, self.database, self.data_dir = engine, database, data_dir.resolve()
        self.roots = [Path(root).resolve() for root in app_roots]
        self.caps = caps
        database.schema(SCHEMA)

    # -- adding versions -----------------------------------------------------------------

    def upload(self, data: bytes, name: str | None, options: LoadOptions) -> dict[str, Any]:
        """Unpack an archive, load it, and make it the active version of its app."""
        upload_id = uuid.uuid4().hex
        staging = self.data_dir / "staging" / upload_id
        try:
            root = archive.unpack(data, staging, self.caps)
            if not name and root == staging:
                raise ApiError(422, "app_name_needed", "the archive has manifest.json at its "
                               "top: name the app with ?name=")
            name = check_app_name(name or root.name)
            home = self.data_dir / "apps" / name / upload_id
            home.mkdir(parents=True)
            final = home / name
            root.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        try:
            return self._activate(self._load(final, options), "upload", options)
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise

    def load_path(self, path: str, options: LoadOptions) -> dict[str, Any]:
        """Load a server-local app folder inside one of the app roots."""
        if not self.roots:
            raise ApiError(403, "path_loading_disabled", "loading apps from server paths is "
                           "not enabled here (app_roots is empty): upload an archive")
        resolved = Path(path).resolve()
        if not any(resolved.is_relative_to(root) and resolved != root for root in self.roots):
            raise ApiError(403, "path_not_allowed", "that path is not inside an allowed app "
                           "root")
        check_app_name(resolved.name)
        return self._activate(self._load(resolved, options), "path", options)

    def load_configured(self, path: str) -> App:
        """An app folder from the server's own configuration (trusted location)."""
        app = self._load(Path(path), LoadOptions())
        self._activate(app, "config", LoadOptions())
        return app

    def activate(self, name: str, version: str) -> dict[str, Any]:
        """Serve a version loaded before (a rollback or roll-forward)."""
        row = self.database.connection().execute(
            "SELECT path, request_timeout, timeout FROM serve_app_versions WHERE name = ? AND "
            "version = ?", (name, version)).fetchone()
        if row is None:
            raise ApiError(404, "version_not_found", f"{name[:100]} has no version {version[:64]}")
        options = LoadOptions(row[1], row[2])
        app = self._load(Path(row[0]), options)
        if app.version != version:
            raise ApiError(409, "version_changed", f"the files of {name} {version} changed on "
                           f"disk (they are now version {app.version})")
        return self._activate(app, "", options)

    def unload(self, name: str) -> None:
        if self.engine.app(name) is None:
            raise ApiError(404, "app_not_found", f"no app called {name[:100]} is loaded")
        self.engine.unload_app(name)
        with self.database.transaction() as conn:
            conn.execute("UPDATE serve_app_versions SET active = 0 WHERE name = ?", (name,))

    def restore(self) -> list[str]:
        """Load the active version of every app again (at start); returns the problems."""
        rows = self.database.connection().execute(
            "SELECT name, version, path, request_timeout, timeout FROM serve_app_versions "
            "WHERE active = 1").fetchall()
        problems = []
        for name, version, path, request_timeout, timeout in rows:
            try:
                self.engine.load_app(path, request_timeout=request_timeout, timeout=timeout)
            except Exception as exc:
                problems.append(f"{name} {version} ({path}): {exc}")
        return problems

    # -- reading -------------------------------------------------------------------------

    def describe(self, name: str) -> dict[str, Any] | None:
        rows = self.database.connection().execute(
            "SELECT version, source, added_at, active FROM serve_app_versions WHERE name = ? "
            "ORDER BY added_at", (name,)).fetchall()
        app = self.engine.app(name)
        if app is None and not rows:
            return None
        return {"name": name, "version": app.version if app else None, "loaded": app is not None,
                "events": sorted(app.manifest.events) if app else [],
                "functions": sorted(app.manifest.functions) if app else [],
                "versions": [{"version": v, "source": s, "added_at": t,
                              "active": bool(a) and app is not None and app.version == v}
                             for v, s, t, a in rows]}

    def names(self) -> list[str]:
        rows = self.database.connection().execute(
            "SELECT DISTINCT name FROM serve_app_versions").fetchall()
        return sorted({r[0] for r in rows})

    # -- inside --------------------------------------------------------------------------

    def _load(self, path: Path, options: LoadOptions) -> App:
        return self.engine.load_app(path, request_timeout=options.request_timeout,
                                    timeout=options.timeout)

    def _activate(self, app: App, source: str, options: LoadOptions) -> dict[str, Any]:
        path = str(Path(app.path).resolve())
        with self.database.transaction() as conn:
            before = conn.execute("SELECT path FROM serve_app_versions WHERE name = ? AND "
                                  "version = ?", (app.name, app.version)).fetchone()
            conn.execute("UPDATE serve_app_versions SET active = 0 WHERE name = ?", (app.name,))
            if source:
                conn.execute(
                    "INSERT INTO serve_app_versions (name, version, path, source, added_at, "
                    "active, request_timeout, timeout) VALUES (?, ?, ?, ?, ?, 1, ?, ?) "
                    "ON CONFLICT (name, version) DO UPDATE SET active = 1, path = excluded.path,"
                    " source = excluded.source, request_timeout = excluded.request_timeout, "
                    "timeout = excluded.timeout",
                    (app.name, app.version, path, source, time.time(),
                     options.request_timeout, options.timeout))
            else:
                conn.execute("UPDATE serve_app_versions SET active = 1 WHERE name = ? AND "
                             "version = ?", (app.name, app.version))
        if source and before is not None and before[0] != path:
            self._remove_upload(Path(before[0]))  # the same content uploaded again
        found = self.describe(app.name)
        assert found is not None
        return found

    def _remove_upload(self, path: Path) -> None:
        """Remove an uploaded version's folder (never anything outside data_dir/apps)."""
        home = path.parent
        if home.parent.parent == (self.data_dir / "apps").resolve():
            shutil.rmtree(home, ignore_errors=True)
