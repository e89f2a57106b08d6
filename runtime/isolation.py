"""The OS layers around a worker, applied in order before any handler code runs; stdlib only.

    close_fds     every inherited fd but the worker's two pipes (and stdio on /dev/null)
    netns         a network namespace with no interface up (made once, in the zygote;
                  as non-root inside a new user namespace)
    uid_drop      setgroups([]), then nobody's gid and uid, when the host is root and the
                  interpreter is readable by nobody
    pdeathsig     die with the zygote (set after the uid change, which clears it), parent
                  re-checked; the zygote dies with the host
    no_new_privs  PR_SET_NO_NEW_PRIVS
    rlimits       AS, CPU, CORE, FSIZE, NOFILE, NPROC with soft = hard
    landlock      read-only access to the interpreter's files, nothing else
    seccomp       an allow-list of the syscalls a worker needs; sockets, processes,
                  threads, exec, ptrace and their kind kill it; the rest fail with EPERM
                  (runtime.seccomp)

Each layer reports "active" or why it is unavailable; a layer the operator requires makes
the worker refuse to run when it cannot be applied.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import stat
import sys
from collections.abc import Callable
from typing import Any

# proctitle is imported here, so in the zygote before any fork: its C extension links a
# library outside the interpreter's trees, which Landlock hides from workers.
from handlerbox.runtime import landlock, limits, proctitle  # noqa: F401
from handlerbox.runtime.errors import IsolationError
from handlerbox.runtime.seccomp import Filter

LAYERS = ("close_fds", "netns", "uid_drop", "pdeathsig", "no_new_privs", "rlimits",
          "landlock", "seccomp")
ACTIVE = "active"

_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_NOBODY = 65534
_libc = ctypes.CDLL(None, use_errno=True)


class Unavailable(IsolationError):
    """A layer cannot be applied on this machine; the message says why."""


def _check(result: int, what: str) -> None:
    if result != 0:
        raise Unavailable(f"{what} failed: {os.strerror(ctypes.get_errno())}")


def enter_network_namespace() -> str:
    """In the zygote, once: a fresh network namespace that every worker inherits."""
    try:
        if os.geteuid() == 0:
            _check(_libc.unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        else:
            uid, gid = os.geteuid(), os.getegid()
            _check(_libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET),
                   "unshare(CLONE_NEWUSER|CLONE_NEWNET)")
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                               ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
    except (Unavailable, OSError) as exc:
        return f"unavailable: {exc}"
    return ACTIVE


class WorkerLayers:
    """What the zygote knows before forking: the settings, and the compiled filter."""

    def __init__(self, settings: dict[str, Any], netns: str) -> None:
        self.settings = settings
        self.netns = netns
        # The interpreter's own trees; never "/" (sys.path holds the zygote's cwd, "/").
        # handlerbox's own packages too: an editable install maps them from the repository.
        own = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
        own += [os.path.dirname(os.path.abspath(m.__file__ or "")) for m in
                (sys.modules.get("handlerbox.sandbox"), sys.modules.get("handlerbox.runtime"))
                if m is not None]
        self.read_only_paths = sorted({
            os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                          *sys.path, *own)
            if p and os.path.isabs(p) and os.path.realpath(p) != os.sep})
        try:
            self.filter: Filter | None = Filter()
            self.filter_error = ""
        except OSError as exc:
            self.filter, self.filter_error = None, str(exc)

    def apply(self, keep_fds: tuple[int, ...], zygote_pid: int) -> dict[str, str]:
        """In a freshly forked worker: apply every layer in order; report each."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("close_fds", lambda: _close_fds(keep_fds)),
            ("netns", self._netns),
            ("uid_drop", self._uid_drop),
            ("pdeathsig", lambda: _pdeathsig(zygote_pid)),
            ("no_new_privs", lambda: _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
                                            "PR_SET_NO_NEW_PRIVS")),
            ("rlimits", lambda: limits.apply(self.settings["rlimits"])),
            ("landlock", lambda: landlock.restrict_to_read_only(self.read_only_paths)),
            ("seccomp", self._seccomp),
        ]
        report: dict[str, str] = {}
        enabled = self.settings.get("enabled", True)
        for name, step in steps:
            if not enabled and name not in ("close_fds", "pdeathsig", "rlimits"):
                report[name] = "unavailable: isolation is turned off in the engine config"
                continue
            try:
                step()
                report[name] = ACTIVE
            except (Unavailable, OSError, ValueError) as exc:
                report[name] = f"unavailable: {exc}"
        return report

    def _netns(self) -> None:
        if self.netns != ACTIVE:
            raise Unavailable(self.netns.removeprefix("unavailable: "))

    def _uid_drop(self) -> None:
        if os.geteuid() != 0:
            raise Unavailable("the host does not run as root, so there is no uid to drop to")
        unreadable = _unreadable_by_others(sys.executable) or _unreadable_by_others(
            os.path.dirname(os.__file__))
        if unreadable:
            raise Unavailable(f"{unreadable} is not readable by nobody (uid {_NOBODY}), so "
                              "workers keep the host's uid")
        os.setgroups([])
        os.setgid(_NOBODY)
        os.setuid(_NOBODY)

    def _seccomp(self) -> None:
        if self.filter is None:
            raise Unavailable(self.filter_error)
        self.filter.install()


def _close_fds(keep: tuple[int, ...]) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    ordered = sorted({0, 1, 2, *keep})
    for low, high in zip(ordered, [*ordered[1:], resource.getrlimit(
            resource.RLIMIT_NOFILE)[0]], strict=True):
        os.closerange(low + 1, high)


def _pdeathsig(zygote_pid: int) -> None:
    _check(_libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")
    if os.getppid() != zygote_pid:  # the zygote died before the signal was armed
        os._exit(1)


def _unreadable_by_others(path: str) -> str:
    """The first component of `path` that another user cannot traverse or read, or ''."""
    real = os.path.realpath(path)
    parts = real.split(os.sep)
    for i in range(2, len(parts) + 1):
        current = os.sep.join(parts[:i]) or os.sep
        mode = os.stat(current).st_mode
        need = stat.S_IXOTH if stat.S_ISDIR(mode) else stat.S_IROTH
        if not mode & need:
            return current
    return ""
