"""ServeConfig: the HTTP front door's settings, validated once at the edge; no untrusted input
(the operator writes them: a JSON file, command-line flags).

    config = ServeConfig.parse({"tokens": ["s3cret"], "database": "/var/lib/hb/db.sqlite3",
                                "data_dir": "/var/lib/hb/apps", "engine": {"workers": 4}})
    ServeConfig.parse({"tokens": []})   # ConfigError: serve.tokens: must not be empty
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator

from handlerbox.runtime.cluster.config import ClusterConfig
from handlerbox.runtime.config import EngineConfig
from handlerbox.runtime.errors import ConfigError
from handlerbox.runtime.events import MAX_EXTERNAL_BODY, MAX_METHOD_PAYLOAD
from handlerbox.runtime.payloads import MAX_PAYLOAD_BYTES
from handlerbox.runtime.validation import EdgeModel, problems

KIB, MIB = 1 << 10, 1 << 20


class ServeConfig(EdgeModel):
    """Settings of `handlerbox serve`; immutable once built.

    Authentication: every endpoint but /healthz, /readyz, /webhooks/{token} (and /metrics
    when `metrics_public`) wants `Authorization: Bearer <one of tokens>`.

    Storage: `database` is the engine's SQLite file (installations, stored data, schedules,
    and here the invocation results and the accepted-event journal); `data_dir` holds
    uploaded app versions (default: `<database>.apps`). Without a database both are
    temporary and removed at exit: set `database` for a server whose apps, results and
    accepted events survive a restart.

    Apps: `apps` are app directories loaded at start; `app_roots` are the only directories
    POST /apps may load a server-local path from (empty: that form is refused).

    Events: product events wait in a queue of `queue_size` (then 503 with Retry-After) and
    `consumers` tasks feed them to the engine (default: twice the engine's workers).
    Results stay readable for `results_ttl_seconds`. On SIGTERM, queued events get
    `shutdown_grace_seconds` to run; what is left stays in the journal for the next start
    (with a temporary database the server waits for all of them instead).

    Logs: one JSON line per invocation; the handler's own output is attached to that line
    (`handler_logs="attach"`), written as a line of its own ("separate") or left out ("off";
    it is kept with the stored result in every case).
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    tokens: list[SecretStr] = Field(min_length=1, repr=False)
    database: str | None = None
    data_dir: str | None = None
    apps: list[str] = Field(default_factory=list)
    app_roots: list[str] = Field(default_factory=list)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    queue_size: int = Field(default=1000, ge=1)
    consumers: int | None = Field(default=None, ge=1)
    results_ttl_seconds: float = Field(default=3600.0, gt=0)
    retry_after_seconds: int = Field(default=1, ge=0)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    max_event_bytes: int = Field(default=MAX_PAYLOAD_BYTES, ge=1)
    max_method_bytes: int = Field(default=MAX_METHOD_PAYLOAD, ge=1)
    max_webhook_bytes: int = Field(default=MAX_EXTERNAL_BODY, ge=1)
    max_json_bytes: int = Field(default=64 * KIB, ge=1)
    max_archive_bytes: int = Field(default=10 * MIB, ge=1)
    max_app_files: int = Field(default=500, ge=1)
    max_app_bytes: int = Field(default=50 * MIB, ge=1)
    handler_logs: Literal["attach", "separate", "off"] = "attach"
    metrics_public: bool = False
    cluster: ClusterConfig | None = None
    """Enqueue product events to a cluster (`handlerbox worker` hosts on Redis) instead of
    running them in process; their results come back from the cluster's result store."""

    @model_validator(mode="after")
    def _one_database(self) -> ServeConfig:
        if self.engine.database is not None:
            raise ValueError("set the database at the top level (database), not in engine")
        return self

    @property
    def durable(self) -> bool:
        """True when accepted events and results outlive the process (a database file)."""
        return self.database is not None

    @property
    def consumer_count(self) -> int:
        return self.consumers or 2 * self.engine.workers

    def engine_config(self) -> EngineConfig:
        """The engine's settings: the database, and webhook URLs that point at this server
        unless the operator chose a base URL."""
        settings: dict[str, Any] = {"database": self.database}
        if "webhook_base_url" not in self.engine.model_fields_set:
            settings["webhook_base_url"] = f"http://{self.host}:{self.port}"
        return self.engine.model_copy(update=settings)

    def token_bytes(self) -> tuple[bytes, ...]:
        return tuple(token.get_secret_value().encode() for token in self.tokens)

    @classmethod
    def parse(cls, obj: Mapping[str, Any]) -> ServeConfig:
        """Validate settings, or raise ConfigError naming each bad one."""
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise ConfigError("\n".join(problems(exc, "serve", {0: cls.model_fields}))
                              ) from None

    @staticmethod
    def read(path: str | Path) -> dict[str, Any]:
        """A JSON config file's settings (ConfigError when it cannot be read or parsed)."""
        try:
            loaded = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot be read as JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: must hold a JSON object")
        return loaded
