"""The seccomp allow-list (runtime.seccomp): its tables against the kernel's, its program
against a BPF interpreter, and every refused syscall from inside a real worker (raw syscall()
through ctypes in a probe): killed ones end the worker with SIGSYS, refused ones fail with
EPERM and leave it running, allowed ones (with their arguments) work."""

from __future__ import annotations

import errno
import platform
import re
import shutil
import signal
import struct
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlerbox import Engine
from handlerbox.runtime import seccomp
from tests.test_isolation import Probe, machine_layers, run_probe

MACHINE = platform.machine()
ARCHES = seccomp.MACHINES

# Syscalls in no rule, so refused with EPERM; each with arguments that would succeed (or
# fail with another errno) without the filter, so EPERM proves the filter answered.
UNLISTED = {
    "x86_64": {"dup": 32, "pipe2": 293, "getcwd": 79, "uname": 63, "setuid": 105,
               "sched_yield": 24, "getppid": 110, "sysinfo": 99, "mknodat": 259,
               "memfd_create": 319, "seccomp": 317, "clock_nanosleep": 230,
               "landlock_create_ruleset": 444, "bind": 49, "openat2": 437, "statx": 332,
               "chdir": 80},
    "aarch64": {"dup": 23, "pipe2": 59, "getcwd": 17, "uname": 160, "setuid": 146,
                "sched_yield": 124, "getppid": 173, "sysinfo": 179, "mknodat": 33,
                "memfd_create": 279, "seccomp": 277, "clock_nanosleep": 115,
                "landlock_create_ruleset": 444, "bind": 200, "openat2": 437, "statx": 291,
                "chdir": 49},
}
REFUSED = {  # case: (syscall, arguments as probe source)
    "dup": ("dup", "0"),
    "pipe2": ("pipe2", "buf, 0"),
    "getcwd": ("getcwd", "buf, 256"),
    "uname": ("uname", "buf"),
    "setuid to itself": ("setuid", "os.getuid()"),
    "sched_yield": ("sched_yield", ""),
    "getppid": ("getppid", ""),
    "sysinfo": ("sysinfo", "buf"),
    "mknodat (a fifo)": ("mknodat", "-100, b'/tmp/handlerbox-fifo', 0o10600, 0"),
    "memfd_create": ("memfd_create", "b'x', 0"),
    "seccomp (get action)": ("seccomp", "2, 0, buf"),
    "clock_nanosleep (time.sleep)": ("clock_nanosleep", "1, 0, buf, 0"),
    "landlock_create_ruleset": ("landlock_create_ruleset", "0, 0, 1"),
    "bind": ("bind", "0, 0, 0"),
    "openat2": ("openat2", "-100, b'/', buf, 24"),
    "statx": ("statx", "-100, b'/', 0, 0x7ff, buf"),
    "chdir": ("chdir", "b'/'"),
    "prctl PR_SET_DUMPABLE": ("prctl", "4, 0"),
    "ioctl FIONREAD": ("ioctl", "0, 0x541B, buf"),
    "ioctl TIOCSTI": ("ioctl", "0, 0x5412, buf"),
    "fcntl F_SETOWN": ("fcntl", "0, 8, os.getpid()"),
    "fcntl F_DUPFD_CLOEXEC": ("fcntl", "0, 1030, 0"),
    "futex shared wake": ("futex", "buf, 1, 1, 0, 0, 0"),
    "futex lock PI": ("futex", "buf, 134, 0, 0, 0, 0"),
    "prlimit64 setting a limit": ("prlimit64", "0, 4, buf, 0"),
    "prlimit64 naming a pid": ("prlimit64", "os.getpid(), 9, 0, buf"),
}
ALLOWED_CALLS = {  # case: (syscall, arguments, expected [return value, errno])
    "prctl PR_SET_NAME": ("prctl", "15, b'hb-test'", [0, 0]),
    "prctl PR_GET_NAME": ("prctl", "16, buf", [0, 0]),
    "ioctl TCGETS (stdin is /dev/null)": ("ioctl", "0, 0x5401, buf", [-1, errno.ENOTTY]),
    "ioctl FIOCLEX": ("ioctl", "0, 0x5451, 0", [0, 0]),
    "fcntl F_GETFD": ("fcntl", "0, 1", [0, 0]),  # dup2 cleared close-on-exec
    "futex private wake": ("futex", "buf, 129, 1, 0, 0, 0", [0, 0]),
    "prlimit64 reading its own": ("prlimit64", "0, 9, 0, buf", [0, 0]),
    "kill itself with signal 0": ("kill", "os.getpid(), 0", [0, 0]),
    "tkill itself with signal 0": ("tkill", "os.getpid(), 0", [0, 0]),
    "tgkill itself with signal 0": ("tgkill", "os.getpid(), os.getpid(), 0", [0, 0]),
    "getrandom": ("getrandom", "buf, 16, 0", [16, 0]),
}
KILL_OTHERS = {  # signal 0: harmless even if the filter let it through
    "kill pid 1": ("kill", "1, 0"),
    "kill the zygote": ("kill", "ZYGOTE, 0"),
    "kill the process group (0)": ("kill", "0, 0"),
    "kill every process (-1)": ("kill", "-1, 0"),
    "tkill pid 1": ("tkill", "1, 0"),
    "tgkill pid 1": ("tgkill", "1, 1, 0"),
}

PRELUDE = """
import ctypes, os
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
buf = ctypes.create_string_buffer(4096)
def call(nr, *args):
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(nr),
                        *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return [ret, ctypes.get_errno()]
"""


def needs_seccomp() -> None:
    if MACHINE not in ARCHES:
        pytest.skip(f"no syscall table for {MACHINE}")
    if not machine_layers()["seccomp"]:
        pytest.skip("this machine cannot install a seccomp filter")


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    needs_seccomp()
    with Engine(workers=1, allow_probes=True) as probing:
        assert probing.isolation()["seccomp"] == "active"
        yield probing


def syscall_probe(engine: Engine, name: str, args: str, numbers: dict[str, int]) -> Probe:
    """One raw syscall in a fresh worker; `result` is [return value, errno]. A fork that the
    filter let through would return twice: the child leaves at once."""
    return run_probe(engine, PRELUDE + textwrap.dedent(f"""
        ZYGOTE = {engine._spawner.zygote_pid}
        PARENT = os.getpid()
        result = call({numbers[name]}{", " + args if args else ""})
        if os.getpid() != PARENT:
            os._exit(0)
    """))


# -- the worker, with the filter installed ---------------------------------------------------

KILLED_HERE = sorted(n for names, _ in seccomp.KILLED.values() for n in names
                     if MACHINE in ARCHES and n in seccomp.syscall_numbers(MACHINE))


@pytest.mark.parametrize("name", KILLED_HERE)
def test_a_killed_syscall_ends_the_worker_with_sigsys(engine: Engine, name: str) -> None:
    # all-ones arguments: each call would fail harmlessly if the filter let it through
    outcome = syscall_probe(engine, name, ", ".join(["-1"] * 6), seccomp.syscall_numbers())
    assert outcome.killed_by == signal.SIGSYS, f"{name}: {outcome}"


@pytest.mark.parametrize("case", KILL_OTHERS)
def test_signalling_another_process_ends_the_worker_with_sigsys(engine: Engine,
                                                                case: str) -> None:
    name, args = KILL_OTHERS[case]
    outcome = syscall_probe(engine, name, args, seccomp.syscall_numbers())
    assert outcome.killed_by == signal.SIGSYS, f"{case}: {outcome}"


@pytest.mark.parametrize("case", REFUSED)
def test_a_refused_syscall_fails_with_eperm_and_the_worker_lives(engine: Engine,
                                                                 case: str) -> None:
    name, args = REFUSED[case]
    numbers = {**seccomp.syscall_numbers(), **UNLISTED[MACHINE]}
    outcome = syscall_probe(engine, name, args, numbers)
    assert outcome.status is None, f"{case}: the worker died: {outcome}"
    assert outcome.result == [-1, errno.EPERM], f"{case}: {outcome.result}"


@pytest.mark.parametrize("case", ALLOWED_CALLS)
def test_an_allowed_syscall_works_with_its_arguments(engine: Engine, case: str) -> None:
    name, args, expected = ALLOWED_CALLS[case]
    outcome = syscall_probe(engine, name, args, seccomp.syscall_numbers())
    assert outcome.result == expected, f"{case}: {outcome}"


def test_a_syscall_from_another_abi_ends_the_worker(engine: Engine) -> None:
    if MACHINE != "x86_64":
        pytest.skip("the x32 ABI exists on x86_64 only")
    outcome = run_probe(engine, PRELUDE + "result = call(0x40000000 | 39)")  # x32 getpid
    assert outcome.killed_by == signal.SIGSYS, outcome


def test_python_sees_permission_errors_for_refused_calls(engine: Engine) -> None:
    outcome = run_probe(engine, """
        import os, time
        seen = {}
        for name, attempt in {"dup": lambda: os.dup(0), "getcwd": os.getcwd,
                              "pipe": os.pipe, "sleep": lambda: time.sleep(0.001),
                              "uname": os.uname, "setuid": lambda: os.setuid(os.getuid())
                              }.items():
            try:
                attempt()
                seen[name] = "done"
            except OSError as exc:
                seen[name] = exc.errno
        result = seen
    """)
    assert outcome.result == dict.fromkeys(
        ("dup", "getcwd", "pipe", "sleep", "uname", "setuid"), errno.EPERM), outcome


def test_what_workers_do_still_works_under_the_filter(engine: Engine) -> None:
    outcome = run_probe(engine, """
        import datetime, importlib, os, random, resource, sys, time, uuid, zoneinfo
        from handlerbox.runtime import proctitle
        lazy = next(m for m in ("cmath", "_lsprof", "mmap", "termios", "grp", "_bisect")
                    if m not in sys.modules)
        importlib.import_module(lazy)  # an extension module: open, mmap, mprotect, close
        zoneinfo.reset_tzpath(to=[])   # the tzdata package, inside Landlock's view
        paris = zoneinfo.ZoneInfo("Europe/Paris")
        proctitle.set_title("handlerbox worker app=probe installation=probe/1")
        os.kill(os.getpid(), 0)
        result = {
            "lazy import": lazy in sys.modules,
            "uuid4": len(str(uuid.uuid4())),
            "SystemRandom": 0 <= random.SystemRandom().random() < 1,
            "urandom": len(os.urandom(8)),
            "getrusage": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0,
            "getrlimit": resource.getrlimit(resource.RLIMIT_AS)[0] == resource.getrlimit(
                resource.RLIMIT_AS)[1],
            "process_time": time.process_time() > 0,
            "strptime": datetime.datetime.strptime("2024-01-02", "%Y-%m-%d").day,
            "zoneinfo": datetime.datetime(2024, 7, 1, tzinfo=paris).utcoffset().seconds,
            "timezones": len(zoneinfo.available_timezones()) > 300,
            "listdir": "json" in os.listdir(os.path.dirname(os.__file__)),
            "read": len(open(os.__file__).read(64)),
            "big list": len(list(range(3_000_000))),
            "title": proctitle.available(),
        }
    """)
    assert outcome.result == {
        "lazy import": True, "uuid4": 36, "SystemRandom": True, "urandom": 8,
        "getrusage": True, "getrlimit": True, "process_time": True, "strptime": 2,
        "zoneinfo": 7200, "timezones": True, "listdir": True, "read": 64,
        "big list": 3_000_000, "title": True}, outcome


def test_a_memory_limit_still_surfaces_as_memory_error(engine: Engine) -> None:
    outcome = run_probe(engine, """
        try:
            b"x" * (1 << 40)
            result = "allocated"
        except MemoryError:
            result = "MemoryError"
    """)
    assert outcome.result == "MemoryError"


# -- the program, without a kernel -----------------------------------------------------------

SELF_PID = 4242


def run_bpf(program: list[tuple[int, int, int, int]], arch: int, nr: int,
            args: tuple[int, ...] = (0,) * 6) -> int:
    """A classic-BPF interpreter for the instructions the filter uses."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(a & (2**64 - 1) for a in args))
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x20:    # LD W ABS
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x15:  # JEQ K
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x35:  # JGE K
            pc += 1 + (jt if acc >= k else jf)
        elif code == 0x05:  # JA
            pc += 1 + k
        elif code == 0x06:  # RET K
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


def program_for(machine: str) -> tuple[int, list[tuple[int, int, int, int]]]:
    code, slots = seccomp.build(machine)
    code = [(c, jt, jf, SELF_PID if i in slots else k) for i, (c, jt, jf, k) in enumerate(code)]
    return seccomp.audit_arch(machine), code


def expected_action(name: str | None) -> int:
    for names, _ in seccomp.ALLOWED.values():
        if name in names:
            return seccomp.RET_ALLOW
    for names, _ in seccomp.KILLED.values():
        if name in names:
            return seccomp.RET_KILL_PROCESS
    return seccomp.RET_EPERM


@pytest.mark.parametrize("machine", ARCHES)
def test_the_program_gives_every_syscall_number_its_rule(machine: str) -> None:
    arch, program = program_for(machine)
    by_number = {nr: name for name, nr in seccomp.syscall_numbers(machine).items()}
    assert len(program) < 4096
    for nr in range(1024):
        name = by_number.get(nr)
        if name in seccomp.CHECKED:
            continue  # next test
        assert run_bpf(program, arch, nr) == expected_action(name), (nr, name)
    assert run_bpf(program, arch ^ 0x80000000, 0) == seccomp.RET_KILL_PROCESS  # other ABI
    if machine == "x86_64":
        assert run_bpf(program, arch, 0x40000000 | 39) == seccomp.RET_KILL_PROCESS  # x32


ALLOW, KILL, EPERM = seccomp.RET_ALLOW, seccomp.RET_KILL_PROCESS, seccomp.RET_EPERM
CHECKED_CASES = [
    ("kill", (SELF_PID, 9), ALLOW), ("kill", (SELF_PID | 1 << 32, 0), ALLOW),
    ("kill", (SELF_PID + 1, 0), KILL), ("kill", (0, 0), KILL), ("kill", (-1, 9), KILL),
    ("tkill", (SELF_PID, 6), ALLOW), ("tkill", (1, 0), KILL),
    ("tgkill", (SELF_PID, SELF_PID, 6), ALLOW), ("tgkill", (1, 1, 0), KILL),
    ("prctl", (15, 0), ALLOW), ("prctl", (16, 0), ALLOW), ("prctl", (22, 2), EPERM),
    ("prctl", (4, 0), EPERM),
    ("ioctl", (0, 0x5401), ALLOW), ("ioctl", (0, 0x5412), EPERM),
    ("ioctl", (0, 0x541B), EPERM),
    ("fcntl", (0, 1), ALLOW), ("fcntl", (0, 4), ALLOW), ("fcntl", (0, 8), EPERM),
    ("fcntl", (0, 10), EPERM), ("fcntl", (0, 1030), EPERM),
    ("futex", (0, 128), ALLOW), ("futex", (0, 129), ALLOW), ("futex", (0, 393), ALLOW),
    ("futex", (0, 0), EPERM), ("futex", (0, 1), EPERM), ("futex", (0, 134), EPERM),
    ("futex", (0, 4), EPERM),
    ("prlimit64", (0, 9, 0, 1), ALLOW), ("prlimit64", (0, 9, 0x1000, 0), EPERM),
    ("prlimit64", (0, 9, 1 << 32, 0), EPERM), ("prlimit64", (SELF_PID, 9, 0, 1), EPERM),
]


@pytest.mark.parametrize("machine", ARCHES)
@pytest.mark.parametrize(("name", "args", "action"), CHECKED_CASES)
def test_checked_syscalls_are_allowed_only_with_their_arguments(
        machine: str, name: str, args: tuple[int, ...], action: int) -> None:
    arch, program = program_for(machine)
    padded = (*args, *(0,) * (6 - len(args)))
    assert run_bpf(program, arch, seccomp.syscall_numbers(machine)[name], padded) == action


def test_every_rule_names_real_syscalls_once() -> None:
    named = [n for table in (seccomp.ALLOWED, seccomp.KILLED)
             for names, _ in table.values() for n in names] + list(seccomp.CHECKED)
    assert len(named) == len(set(named))
    known = set(seccomp.syscall_numbers("x86_64")) | set(seccomp.syscall_numbers("aarch64"))
    assert set(named) == known
    for arch in ARCHES:
        assert not set(UNLISTED[arch]) & set(named)


def test_describe_lists_every_rule_for_the_docs() -> None:
    rows = seccomp.describe("x86_64")
    listed = {n for row in rows for n in row["syscalls"].split(", ") if n}
    assert listed == set(seccomp.syscall_numbers("x86_64"))
    assert all(row["why"] for row in rows)
    assert seccomp.markdown().startswith("| group | syscalls | action | why |")
    assert "open" not in seccomp.describe("aarch64")[0]["syscalls"].split(", ")


def header_numbers(machine: str) -> dict[str, int]:
    """__NR_* from the installed kernel headers, through the C preprocessor."""
    if machine == "x86_64":
        source, flags = "#include <asm/unistd_64.h>\n", []
        if not Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h").exists() \
                and not Path("/usr/include/asm/unistd_64.h").exists():
            pytest.skip("x86_64 kernel headers are not installed")
    else:  # arm64 includes the generic table with these switches (arch/arm64/.../unistd.h)
        source = "".join(f"#define __ARCH_WANT_{w}\n" for w in (
            "RENAMEAT", "NEW_STAT", "SET_GET_RLIMIT", "TIME32_SYSCALLS", "SYS_CLONE3"))
        source += "#include <asm-generic/unistd.h>\n"
        flags = ["-D__BITS_PER_LONG=64"]
    if shutil.which("cpp") is None:
        pytest.skip("no C preprocessor to read the kernel headers with")
    done = subprocess.run(["cpp", "-dM", *flags], input=source, capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        pytest.skip(f"kernel headers not usable: {done.stderr.strip()[:200]}")
    macros = dict(re.findall(r"#define (__NR\w+) (.+)", done.stdout))

    def value(text: str) -> int:
        text = text.strip().strip("()")
        return value(macros[text]) if text in macros else int(text, 0)

    found = {}
    for macro, text in macros.items():
        if macro.startswith("__NR_"):
            try:
                found[macro[5:]] = value(text)
            except (KeyError, ValueError):
                pass
    return found


@pytest.mark.parametrize("machine", ARCHES)
def test_syscall_numbers_match_the_kernel_headers(machine: str) -> None:
    headers = header_numbers(machine)
    ours = {**seccomp.syscall_numbers(machine), **UNLISTED[machine]}
    assert {name: headers.get(name) for name in ours} == ours
