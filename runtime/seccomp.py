"""A seccomp filter for workers: no sockets, no new processes or threads, no exec, no ptrace.

Stdlib only (ctypes): a classic BPF program built once (in the zygote) and installed in each
worker with one prctl, which costs microseconds. libseccomp would do the same through a C
library and its bindings, which PyPI does not ship; the filter here is a dozen instructions.
A denied call fails with EPERM, so Python raises PermissionError (or RuntimeError for
threads) instead of the worker being killed; a syscall from another ABI kills the process.
"""

from __future__ import annotations

import ctypes
import errno
import platform

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_X32_BIT = 0x40000000

# Names to deny, and their numbers per architecture (from the kernel's syscall tables).
_DENIED = ("socket", "socketpair", "clone", "clone3", "fork", "vfork", "execve", "execveat",
           "ptrace", "process_vm_readv", "process_vm_writev", "unshare", "setns", "mount",
           "bpf", "io_uring_setup", "userfaultfd", "perf_event_open", "keyctl", "add_key",
           "request_key")
_TABLES = {
    "x86_64": (0xC000003E, {
        "socket": 41, "socketpair": 53, "clone": 56, "fork": 57, "vfork": 58, "execve": 59,
        "ptrace": 101, "mount": 165, "add_key": 248, "request_key": 249, "keyctl": 250,
        "unshare": 272, "perf_event_open": 298, "setns": 308, "process_vm_readv": 310,
        "process_vm_writev": 311, "bpf": 321, "execveat": 322, "userfaultfd": 323,
        "io_uring_setup": 425, "clone3": 435}),
    "aarch64": (0xC00000B7, {
        "mount": 40, "unshare": 97, "ptrace": 117, "socket": 198, "socketpair": 199,
        "clone": 220, "execve": 221, "add_key": 217, "request_key": 218, "keyctl": 219,
        "perf_event_open": 241, "setns": 268, "process_vm_readv": 270,
        "process_vm_writev": 271, "bpf": 280, "execveat": 281, "userfaultfd": 282,
        "io_uring_setup": 425, "clone3": 435}),
}


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction))]


class Filter:
    """The compiled filter for this machine's architecture."""

    def __init__(self) -> None:
        machine = platform.machine()
        if machine not in _TABLES:
            raise OSError(f"no syscall table for {machine}")
        arch, numbers = _TABLES[machine]
        code = [
            (_LD_W_ABS, 0, 0, 4),                 # A = seccomp_data.arch
            (_JEQ_K, 1, 0, arch),                 # native ABI: go on
            (_RET_K, 0, 0, _RET_KILL_PROCESS),    # any other ABI: kill
            (_LD_W_ABS, 0, 0, 0),                 # A = seccomp_data.nr
        ]
        if machine == "x86_64":
            code.append((_JGE_K, 0, 1, _X32_BIT))  # x32 calls: kill
            code.append((_RET_K, 0, 0, _RET_KILL_PROCESS))
        for name in _DENIED:
            if name in numbers:
                code.append((_JEQ_K, 0, 1, numbers[name]))
                code.append((_RET_K, 0, 0, _RET_ERRNO | errno.EPERM))
        code.append((_RET_K, 0, 0, _RET_ALLOW))
        self._instructions = (_Instruction * len(code))(*(_Instruction(*c) for c in code))
        self._program = _Program(len(code), self._instructions)
        self._libc = ctypes.CDLL(None, use_errno=True)

    def install(self) -> None:
        """Install in the calling process (needs PR_SET_NO_NEW_PRIVS first)."""
        if self._libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER,
                            ctypes.byref(self._program), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "seccomp filter refused")
