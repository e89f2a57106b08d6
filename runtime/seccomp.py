"""A seccomp allow-list for workers: the syscalls a worker was measured to make, nothing else.

Stdlib only (ctypes): a classic BPF program built once (in the zygote) and installed in each
worker with one prctl, which costs microseconds. libseccomp would do the same through a C
library and its bindings, which PyPI does not ship. Each syscall ends one of three ways:

    allowed   the groups in ALLOWED (a few only with certain arguments, see CHECKED)
    killed    the groups in KILLED: SECCOMP_RET_KILL_PROCESS, the worker dies with SIGSYS
    refused   everything else: EPERM, so Python raises PermissionError and the worker lives

Kill or EPERM: a call is killed when no code a worker runs (the worker loop, the sandbox, the
stdlib parts handlers reach, glibc under them) ever makes it, so making it means handler code
has escaped the Python-level sandbox, and the host should see a crash (SIGSYS) rather than a
handler error; or when it is privileged system administration that a root worker could
otherwise perform. Everything else is refused with EPERM: a new stdlib path that needs an
unlisted call fails as a Python error in one invocation instead of killing the worker.

A syscall from another ABI (i386 through int 0x80, x32, AArch32) kills the process.
`python -m handlerbox.runtime.seccomp` prints the rules as a Markdown table.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Sequence

_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
RET_KILL_PROCESS = 0x80000000
RET_EPERM = RET_ERRNO | errno.EPERM
_LD_W_ABS, _JA, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x05, 0x15, 0x35, 0x06
_X32_BIT = 0x40000000
_OFFSET_NR, _OFFSET_ARCH, _OFFSET_ARGS = 0, 4, 16  # struct seccomp_data

ALLOWED: dict[str, tuple[tuple[str, ...], str]] = {
    # Measured: strace -f over the engine, example, fault and benign suites (see the README).
    "pipes and files": (
        ("read", "write", "close", "lseek", "pread64", "openat", "open", "newfstatat",
         "fstat", "stat", "lstat", "getdents64", "readlink", "readlinkat"),
        "the two pipes to the host; lazily imported modules and data files (tzdata) inside "
        "Landlock's read-only view, which decides where. pread64: the loader reads large ELF "
        "headers with it; open, stat, lstat, fstat, readlink: older glibc and musl (x86_64)"),
    "memory": (
        ("mmap", "munmap", "mremap", "brk", "mprotect", "madvise"),
        "the allocator under RLIMIT_AS (an overrun is an mmap ENOMEM, so a MemoryError); "
        "mprotect: loading an extension module (RELRO); madvise: allocators returning memory"),
    "clocks and usage": (
        ("getrusage", "clock_gettime", "clock_getres", "gettimeofday", "time"),
        "CPU time and peak RSS per invocation; clocks leave the vDSO for CPU-time clocks and "
        "where the clock source cannot be read from user space"),
    "randomness": (("getrandom",), "random (SystemRandom), uuid4, os.urandom"),
    "identity": (
        ("getpid", "gettid", "getuid", "geteuid", "getgid", "getegid", "getgroups",
         "getrlimit"),
        "read-only: the ready reply carries the pid; sysconfig and expanduser read the uid; "
        "glibc's raise() reads the tid; resource.getrlimit"),
    "signals": (
        ("rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "restart_syscall"),
        "Python's signal handlers and glibc's abort() and raise(); returning from a handler; "
        "the kernel restarting an interrupted call"),
    "waiting": (("poll", "ppoll"), "the frame reader waits in poll() on a non-blocking pipe"),
    "exit": (("exit_group", "exit"), "os._exit"),
}
"""Syscalls a worker may make with any arguments, by group, with the reason."""

SELF = -1
"""In CHECKED: the worker's own pid, patched into the program at install."""

CHECKED: dict[str, tuple[tuple[tuple[int, tuple[int, ...], int], ...], int, str]] = {
    # name: ((argument, allowed values, bits compared), ...), action otherwise, reason
    "kill": (((0, (SELF,), 32),), RET_KILL_PROCESS,
             "only to the worker itself: os.kill(os.getpid(), ...) (a crash reports its own "
             "signal); any other pid, 0 or -1 kills the worker"),
    "tkill": (((0, (SELF,), 32),), RET_KILL_PROCESS,
              "only to the worker's one thread, whose tid is its pid; any other kills"),
    "tgkill": (((0, (SELF,), 32),), RET_KILL_PROCESS,
               "only within the worker: glibc's raise() and abort(); any other group kills"),
    "prctl": (((0, (15, 16), 32),), RET_EPERM,
              "PR_SET_NAME and PR_GET_NAME only: setproctitle names the worker for ps"),
    "ioctl": (((1, (0x5401, 0x5450, 0x5451), 32),), RET_EPERM,
              "TCGETS (open() asks whether a file is a terminal), FIONCLEX and FIOCLEX only"),
    "fcntl": (((1, (1, 2, 3, 4), 32),), RET_EPERM,
              "F_GETFD, F_SETFD, F_GETFL, F_SETFL only: no F_SETOWN/F_SETSIG (signals to "
              "other processes), no locks, no leases"),
    "futex": (((1, (128, 129, 137, 138, 384, 393), 32),), RET_EPERM,
              "private wait and wake only (one thread never contends, but glibc and Python "
              "locks may call it): no PI or requeue operations"),
    "prlimit64": (((0, (0,), 32), (2, (0,), 64)), RET_EPERM,
                  "reading the worker's own limits only (pid 0, no new limit): a root "
                  "worker could otherwise raise its hard limits"),
}
"""Syscalls allowed only with certain arguments. A pid or a command is compared on its low 32
bits, which is all the kernel reads of an int argument; a pointer on all 64."""

KILLED: dict[str, tuple[tuple[str, ...], str]] = {
    "processes and threads": (
        ("fork", "vfork", "clone", "clone3"),
        "a worker is one thread; nothing it runs starts a process or a thread"),
    "programs": (("execve", "execveat"), "nothing a worker runs starts a program"),
    "network": (
        ("socket", "socketpair", "connect"),
        "no admitted module opens a socket (uuid1, which may, is not admitted)"),
    "other processes": (
        ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_open",
         "pidfd_getfd", "pidfd_send_signal", "rt_sigqueueinfo", "rt_tgsigqueueinfo"),
        "reading, writing or signalling another process"),
    "kernel attack surface": (
        ("bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
         "io_uring_register", "keyctl", "add_key", "request_key"),
        "interfaces with a history of kernel exploits that a worker never uses"),
    "namespaces and mounts": (
        ("mount", "umount2", "unshare", "setns", "pivot_root", "chroot", "fsopen",
         "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
         "open_by_handle_at"),
        "changing the worker's view of the system (open_by_handle_at bypasses paths)"),
    "the machine": (
        ("init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
         "reboot", "swapon", "swapoff", "settimeofday", "clock_settime", "clock_adjtime",
         "adjtimex", "sethostname", "setdomainname", "iopl", "ioperm", "acct"),
        "system administration: a root worker (no uid drop) holds the capabilities"),
}
"""Syscalls that kill the worker (SECCOMP_RET_KILL_PROCESS), by group, with the reason."""

# Numbers per architecture, from the kernel's tables (x86_64: asm/unistd_64.h; aarch64: the
# asm-generic table arm64 uses, which has no open/stat/fork etc.). tests/test_seccomp.py
# checks both against the installed kernel headers.
_TABLES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (0xC000003E, {
        "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6,
        "poll": 7, "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12,
        "rt_sigaction": 13, "rt_sigprocmask": 14, "rt_sigreturn": 15, "ioctl": 16,
        "pread64": 17, "mremap": 25, "madvise": 28, "getpid": 39, "socket": 41,
        "connect": 42, "socketpair": 53, "clone": 56, "fork": 57, "vfork": 58, "execve": 59,
        "exit": 60, "kill": 62, "fcntl": 72, "readlink": 89, "gettimeofday": 96,
        "getrlimit": 97, "getrusage": 98, "ptrace": 101, "getuid": 102, "getgid": 104,
        "geteuid": 107, "getegid": 108, "getgroups": 115, "rt_sigqueueinfo": 129,
        "pivot_root": 155, "prctl": 157, "adjtimex": 159, "chroot": 161, "acct": 163,
        "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
        "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
        "init_module": 175, "delete_module": 176, "gettid": 186, "tkill": 200, "time": 201,
        "futex": 202, "getdents64": 217, "restart_syscall": 219, "clock_settime": 227,
        "clock_gettime": 228, "clock_getres": 229, "exit_group": 231, "tgkill": 234,
        "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250,
        "openat": 257, "newfstatat": 262, "readlinkat": 267, "ppoll": 271, "unshare": 272,
        "rt_tgsigqueueinfo": 297, "perf_event_open": 298, "prlimit64": 302,
        "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
        "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313,
        "getrandom": 318, "kexec_file_load": 320, "bpf": 321, "execveat": 322,
        "userfaultfd": 323, "pidfd_send_signal": 424, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
        "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_open": 434,
        "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442}),
    "aarch64": (0xC00000B7, {
        "fcntl": 25, "ioctl": 29, "umount2": 39, "mount": 40, "pivot_root": 41,
        "chroot": 51, "openat": 56, "close": 57, "getdents64": 61, "lseek": 62, "read": 63,
        "write": 64, "pread64": 67, "ppoll": 73, "readlinkat": 78, "newfstatat": 79,
        "fstat": 80, "acct": 89, "exit": 93, "exit_group": 94, "unshare": 97, "futex": 98,
        "kexec_load": 104, "init_module": 105, "delete_module": 106, "clock_settime": 112,
        "clock_gettime": 113, "clock_getres": 114, "ptrace": 117, "restart_syscall": 128,
        "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigaction": 134,
        "rt_sigprocmask": 135, "rt_sigqueueinfo": 138, "rt_sigreturn": 139, "reboot": 142,
        "getgroups": 158, "sethostname": 161, "setdomainname": 162, "getrlimit": 163,
        "getrusage": 165, "prctl": 167, "gettimeofday": 169, "settimeofday": 170,
        "adjtimex": 171, "getpid": 172, "getuid": 174, "geteuid": 175, "getgid": 176,
        "getegid": 177, "gettid": 178, "socket": 198, "socketpair": 199, "connect": 203,
        "brk": 214, "munmap": 215, "mremap": 216, "add_key": 217, "request_key": 218,
        "keyctl": 219, "clone": 220, "execve": 221, "mmap": 222, "swapon": 224,
        "swapoff": 225, "mprotect": 226, "madvise": 233, "rt_tgsigqueueinfo": 240,
        "perf_event_open": 241, "prlimit64": 261, "open_by_handle_at": 265,
        "clock_adjtime": 266, "setns": 268, "process_vm_readv": 270,
        "process_vm_writev": 271, "kcmp": 272, "finit_module": 273, "getrandom": 278,
        "bpf": 280, "execveat": 281, "userfaultfd": 282, "kexec_file_load": 294,
        "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426,
        "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_open": 434, "clone3": 435,
        "pidfd_getfd": 438, "mount_setattr": 442}),
}


MACHINES = tuple(_TABLES)
"""platform.machine() values the filter has tables for."""


def audit_arch(machine: str | None = None) -> int:
    """The AUDIT_ARCH_* value the kernel reports for `machine`'s native syscalls."""
    return _TABLES[machine or platform.machine()][0]


def syscall_numbers(machine: str | None = None) -> dict[str, int]:
    """Name -> number for every syscall the rules name, on `machine` (default: this one)."""
    return dict(_TABLES[machine or platform.machine()][1])


def describe(machine: str | None = None) -> list[dict[str, str]]:
    """The rules as rows (group, syscalls, action, why) for documentation; names that do not
    exist on `machine` (default: this one) are left out."""
    numbers = _TABLES[machine or platform.machine()][1]
    rows = []
    for action, table in (("allow", ALLOWED), ("kill", KILLED)):
        for group, (names, why) in table.items():
            present = [n for n in names if n in numbers]
            rows.append({"group": group, "syscalls": ", ".join(present), "action": action,
                         "why": why})
    for name, (_, otherwise, why) in CHECKED.items():
        rows.append({"group": f"{name} (checked)", "syscalls": name,
                     "action": "allow if " + _condition_text(name) + ", else "
                     + ("kill" if otherwise == RET_KILL_PROCESS else "EPERM"), "why": why})
    rows.append({"group": "everything else", "syscalls": "", "action": "EPERM",
                 "why": "refused: Python raises PermissionError and the worker lives"})
    return rows


def _condition_text(name: str) -> str:
    parts = []
    for arg, values, _ in CHECKED[name][0]:
        shown = " or ".join("own pid" if v == SELF else hex(v) if v >= 0x1000 else str(v)
                            for v in values)
        parts.append(f"arg{arg} = {shown}")
    return " and ".join(parts)


def markdown() -> str:
    """describe() as a Markdown table (for the README's security section)."""
    lines = ["| group | syscalls | action | why |", "|---|---|---|---|"]
    lines += [f"| {r['group']} | {r['syscalls']} | {r['action']} | {r['why']} |"
              for r in describe()]
    return "\n".join(lines)


class _Instruction(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction))]


class _Assembler:
    """Classic BPF with symbolic jump targets; conditional jumps must land within 255."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int | str, int | str, int]] = []
        self.labels: dict[str, int] = {}
        self.pid_slots: list[int] = []

    def emit(self, code: int, jt: int | str = 0, jf: int | str = 0, k: int = 0) -> None:
        if k == SELF:
            self.pid_slots.append(len(self.code))
            k = 0
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> list[tuple[int, int, int, int]]:
        out = []
        for pc, (code, jt, jf, k) in enumerate(self.code):
            if code == _JA and isinstance(jt, str):
                out.append((code, 0, 0, self.labels[jt] - pc - 1))
                continue
            offsets = [self.labels[j] - pc - 1 if isinstance(j, str) else j for j in (jt, jf)]
            if not all(0 <= o <= 255 for o in offsets):
                raise OverflowError(f"BPF jump out of range at {pc}: {offsets}")
            out.append((code, offsets[0], offsets[1], k))
        return out


def build(machine: str) -> tuple[list[tuple[int, int, int, int]], list[int]]:
    """The program for `machine` as (code, jt, jf, k) tuples, and the indices of the
    instructions that must hold the worker's pid."""
    arch, numbers = _TABLES[machine]
    asm = _Assembler()
    asm.emit(_LD_W_ABS, k=_OFFSET_ARCH)
    asm.emit(_JEQ_K, 1, 0, arch)                 # native ABI: go on
    asm.emit(_RET_K, k=RET_KILL_PROCESS)         # any other ABI: kill
    asm.emit(_LD_W_ABS, k=_OFFSET_NR)
    if machine == "x86_64":
        asm.emit(_JGE_K, 0, 1, _X32_BIT)         # x32 calls: kill
        asm.emit(_RET_K, k=RET_KILL_PROCESS)
    actions: dict[int, int | str] = {}
    for table, action in ((ALLOWED, RET_ALLOW), (KILLED, RET_KILL_PROCESS)):
        for names, _ in table.values():
            actions.update({numbers[n]: action for n in names if n in numbers})
    actions.update({numbers[n]: f"check {n}" for n in CHECKED if n in numbers})
    _tree(asm, sorted(actions.items()))
    for name in CHECKED:
        if name in numbers:
            _checked_block(asm, name)
    return asm.assemble(), asm.pid_slots


def _tree(asm: _Assembler, entries: Sequence[tuple[int, int | str]]) -> None:
    """A binary search over sorted syscall numbers: a handful of JGEs, then JEQs."""
    if len(entries) <= 4:
        for nr, action in entries:
            asm.emit(_JEQ_K, 0, 1, nr)
            if isinstance(action, str):
                asm.emit(_JA, action)
            else:
                asm.emit(_RET_K, k=action)
        asm.emit(_RET_K, k=RET_EPERM)
        return
    middle = len(entries) // 2
    right = f"nr >= {entries[middle][0]}"
    asm.emit(_JGE_K, right, 0, entries[middle][0])
    _tree(asm, entries[:middle])
    asm.label(right)
    _tree(asm, entries[middle:])


def _checked_block(asm: _Assembler, name: str) -> None:
    conditions, otherwise, _ = CHECKED[name]
    asm.label(f"check {name}")
    fail = f"fail {name}"
    for i, (arg, values, bits) in enumerate(conditions):
        low = _OFFSET_ARGS + 8 * arg
        if bits == 64:
            asm.emit(_LD_W_ABS, k=low + 4)
            asm.emit(_JEQ_K, 0, fail, 0)
        asm.emit(_LD_W_ABS, k=low)
        passed = f"{name} arg {i} ok"
        for value in values[:-1]:
            asm.emit(_JEQ_K, passed, 0, value)
        asm.emit(_JEQ_K, 0, fail, values[-1])
        asm.label(passed)
    asm.emit(_RET_K, k=RET_ALLOW)
    asm.label(fail)
    asm.emit(_RET_K, k=otherwise)


class Filter:
    """The compiled filter for this machine's architecture; build once, install per worker."""

    def __init__(self, machine: str | None = None) -> None:
        machine = machine or platform.machine()
        if machine not in _TABLES:
            raise OSError(f"no syscall table for {machine}")
        code, self._pid_slots = build(machine)
        self._instructions = (_Instruction * len(code))(*(_Instruction(*c) for c in code))
        self._program = _Program(len(code), self._instructions)
        self._libc = ctypes.CDLL(None, use_errno=True)

    def __len__(self) -> int:
        return len(self._instructions)

    def install(self) -> None:
        """Install in the calling process (needs PR_SET_NO_NEW_PRIVS first). The pid checks
        take the calling process's pid, so call it in the worker, after the fork."""
        pid = os.getpid()
        for slot in self._pid_slots:
            self._instructions[slot].k = pid
        if self._libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER,
                            ctypes.byref(self._program), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "seccomp filter refused")


if __name__ == "__main__":
    print(markdown())
