"""The runtime's errors: app loading, payloads, configuration, the engine and its workers.

They extend the one tree rooted at sandbox.errors.HandlerboxError; each class keeps a stable
``code`` (part of the public contract: the CLI prints it and maps it to an exit status).

    HandlerboxError
    ├── AppLoadError                 app_load_error
    │   └── ManifestError            manifest_error
    ├── PayloadError                 invalid_payload
    ├── ConfigError                  config_error
    ├── EngineClosed                 engine_closed
    ├── IsolationError               isolation_unavailable
    └── WorkerError                  worker_error
"""

from __future__ import annotations

from collections.abc import Sequence

from handlerbox.sandbox.errors import HandlerboxError


class _Problems(HandlerboxError):
    """An error that lists one or more problems, one per line of its message."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        self.problems: tuple[str, ...] = tuple(problems) or (message,)
        super().__init__(message)


class AppLoadError(_Problems):
    """Raised when an app directory cannot be loaded: it or its manifest is missing or bad,
    server/server.py is missing or unreadable, or a handler the manifest names is not found.
    The message names the file and what is wrong with it."""

    code = "app_load_error"


class ManifestError(AppLoadError):
    """Raised when manifest.json is not valid JSON or breaks the manifest schema; the message
    names the file, and the key path and problem of every finding (one per line)."""

    code = "manifest_error"


class PayloadError(_Problems):
    """Raised when an event payload is not valid: each problem names its field path
    (``payload.region: must be one of ...``); also raised when it is over the size limit."""

    code = "invalid_payload"


class ConfigError(HandlerboxError):
    """Raised when a setting is invalid: a request timeout outside 15, 20, 25 or 30 s, a
    non-positive timeout override, or an engine option out of range."""

    code = "config_error"


class EngineClosed(HandlerboxError):
    """Raised when an app is loaded or an event dispatched on an engine that was closed."""

    code = "engine_closed"


class IsolationError(HandlerboxError):
    """Raised when an isolation layer the operator required cannot be applied on this
    machine, so workers refuse to start without it."""

    code = "isolation_unavailable"


class WorkerError(HandlerboxError):
    """Raised when a worker breaks the protocol: a malformed, oversized or unexpected
    message, or a reply that does not match the request."""

    code = "worker_error"
