"""The cluster's errors, in the one tree rooted at HandlerboxError; no untrusted input.

    HandlerboxError
    └── ClusterError               cluster_error        Redis unreachable, a bad reply
        ├── CallTimeout            call_timeout         no answer within the caller's timeout
        └── AppNotLoaded           app_not_loaded       the answering host has no such app

A sync call whose host raised one of the engine's errors (SetupBlocked, InstallationExists,
IparamsError, ...) raises that same class, with the same code and problems, at the caller.
"""

from __future__ import annotations

from handlerbox.sandbox.errors import HandlerboxError


class ClusterError(HandlerboxError):
    """Raised by the producer when the cluster cannot take or answer a request: Redis is
    unreachable, or an answer is not what the protocol allows."""

    code = "cluster_error"


class CallTimeout(ClusterError):
    """Raised by a sync call (server method, set-up event) when no answer came within its
    timeout; the call may still run (it is dropped unstarted once older than the timeout)."""

    code = "call_timeout"


class AppNotLoaded(ClusterError):
    """Raised by a sync call when the worker host that took it has not loaded the app."""

    code = "app_not_loaded"
