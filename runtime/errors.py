"""The runtime's errors: app loading, payloads, configuration, the engine, its workers, and the
internal faults of a dispatch. No untrusted input here.

They extend the one tree rooted at handlerbox.sandbox.errors.HandlerboxError; each class
keeps a stable ``code`` (part of the public contract: the CLI prints it and maps it to an
exit status, the HTTP front door to a status).

    HandlerboxError
    ├── CompileError, HandlerNotFound, HandlerError > ResultError   (sandbox/errors.py)
    ├── AppLoadError                 app_load_error      raised by load_app, validate
    │   └── ManifestError            manifest_error
    ├── PayloadError                 invalid_payload     raised by EventPayload.parse
    │   └── IparamsError             invalid_iparams     an installation's iparams are bad
    ├── ConfigError                  config_error        raised by Engine(), EngineConfig
    ├── InstallationError            installation_error  install, update, uninstall
    │   ├── InstallationExists       installation_exists
    │   ├── InstallationNotFound     installation_not_found
    │   ├── SetupBlocked             setup_blocked       onAppInstall/onAppUninstall said no
    │   └── SetupFailed              setup_failed        onAppInstall failed
    ├── EngineClosed                 engine_closed       raised by dispatch after close()
    ├── IsolationError               isolation_unavailable  raised by Engine() (require=)
    ├── WorkerError                  worker_error        raised by Engine() (no zygote)
    ├── ServiceError                 service_error       (services/base.py) a host call failed
    └── DispatchFault                dispatch_fault      internal: never reaches a caller
        ├── ProtocolError            a worker broke the framing or sent a bad message
        │   └── PeerClosed           EOF on a worker's pipe
        ├── DeadlineReached          no reply before the invocation's deadline
        ├── NotStarted               the worker died before it took the request
        └── Overloaded               no worker came free in time, or a queue was full

Every DispatchFault is turned into an outcome in one place (runtime.outcomes.FAULT_OUTCOMES);
a test checks that none goes unmapped.
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


class IparamsError(PayloadError):
    """Raised when an installation's iparams are not valid for the app's declarations: one
    problem per line, each naming the iparam (``iparams.api_key: is required``); the value of
    a secure iparam is never quoted."""

    code = "invalid_iparams"


class ConfigError(HandlerboxError):
    """Raised when a setting is invalid: a request timeout outside 15, 20, 25 or 30 s, a
    non-positive timeout override, or an engine option out of range."""

    code = "config_error"


class InstallationError(_Problems):
    """Raised when an installation cannot be stored: a field is not valid (each problem names
    it). `status` is the HTTP status the front door answers with."""

    code = "installation_error"
    status = 400


class InstallationExists(InstallationError):
    """Raised by `add` when the app is already installed in the account."""

    code = "installation_exists"
    status = 409


class InstallationNotFound(InstallationError):
    """Raised by `update` and `remove` when the app is not installed in the account."""

    code = "installation_not_found"
    status = 404


class SetupBlocked(InstallationError):
    """Raised when an app's set-up handler (onAppInstall, onAppUninstall) blocks the action;
    the message is the app's own, at most 60 characters."""

    code = "setup_blocked"
    status = 409


class SetupFailed(InstallationError):
    """Raised when onAppInstall fails (handler error, timeout, crash, or an answer that is
    neither allow nor block): the installation is refused; the message says why."""

    code = "setup_failed"
    status = 502


class EngineClosed(HandlerboxError):
    """Raised when an app is loaded or an event dispatched on an engine that was closed."""

    code = "engine_closed"


class IsolationError(HandlerboxError):
    """Raised when an isolation layer the operator required cannot be applied on this
    machine (by Engine()), so workers refuse to start without it."""

    code = "isolation_unavailable"


class WorkerError(HandlerboxError):
    """Raised when the zygote, the template process workers fork from, cannot be started
    (by Engine()); inside a dispatch the same failure is retried, then ends as a `crashed`
    result, never as this exception."""

    code = "worker_error"


class DispatchFault(HandlerboxError):
    """Raised when something goes wrong with a worker or the pool inside a dispatch; the
    engine turns each into an outcome (runtime.outcomes) and never lets one reach the
    caller."""

    code = "dispatch_fault"


class ProtocolError(DispatchFault):
    """The peer broke the framing (a frame over the cap, bad JSON, EOF mid-frame) or sent a
    message that is not what the protocol allows at that point."""


class PeerClosed(ProtocolError):
    """EOF: the peer's end of the pipe is closed (the process exited or was killed)."""


class DeadlineReached(DispatchFault):
    """No complete frame arrived before the invocation's deadline."""


class NotStarted(DispatchFault):
    """The worker was gone before it took the request: the handler never ran, so the
    dispatch may go to another worker."""


class Overloaded(DispatchFault):
    """No worker came free within the wait, or a wait queue was full; the message says
    which."""
