"""Each OS layer, proved from inside a real worker (through the test-only probe hook) and
inspected from outside through /proc.

Machines differ: Landlock, unprivileged namespaces, root, an interpreter that nobody can read.
`machine_layers()` works out, independently of the engine, which layers this machine can
give a worker; the report must match it exactly, and each attack is expected to meet the
first layer that stops it here (or the test is skipped, naming the missing layers)."""

from __future__ import annotations

import errno
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import psutil
import pytest

from handlerbox import Engine
from handlerbox.runtime import landlock, protocol, seccomp
from handlerbox.runtime.errors import ConfigError, IsolationError
from handlerbox.runtime.isolation import ACTIVE, LAYERS, _unreadable_by_others
from tests.conftest import APPS, make_payload

MEMORY_MB = 200
REPO = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine(workers=1, memory_limit_mb=MEMORY_MB, allow_probes=True) as probing:
        yield probing


@dataclass(frozen=True)
class Probe:
    """What became of a probe: its `result`, or how its worker died (`status` < 0: the
    signal that killed it); `seen` is what the host saw of the worker before it was killed."""

    result: Any = None
    status: int | None = None
    seen: Any = None

    @property
    def killed_by(self) -> int | None:
        return -self.status if self.status is not None and self.status < 0 else None


def run_probe(engine: Engine, code: str, timeout: float = 10.0,
              while_alive: Callable[[int], Any] | None = None) -> Probe:
    """Engine.probe, but a worker that dies is reported with its exit status (seccomp kills
    with SIGSYS) instead of as a protocol error; `while_alive(pid)` looks at the worker from
    the host after it answered, before it is killed."""
    worker = engine._spawner.spawn()
    try:
        protocol.write_frame(worker.request_fd, json.dumps(
            {"op": "probe", "source": textwrap.dedent(code)}).encode())
        try:
            body = protocol.read_frame(worker.reply_fd, worker.reader,
                                       time.monotonic() + timeout)
        except protocol.PeerClosed:
            return Probe(status=worker.exit_status.result(timeout))
        return Probe(result=protocol.decode(body).get("result"),
                     seen=while_alive(worker.pid) if while_alive else None)
    finally:
        worker.kill()


def attempt(body: str) -> str:
    """Probe source that runs `body` and reports an OSError's errno, or any other error."""
    return "try:\n" + textwrap.indent(textwrap.dedent(body), "    ") + textwrap.dedent("""
        except OSError as exc:
            result = {"errno": exc.errno, "raised": type(exc).__name__}
        except BaseException as exc:
            result = {"raised": type(exc).__name__, "message": str(exc)}
        """)


SECCOMP_CHECK = """
import ctypes, struct
class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
allow = ctypes.create_string_buffer(struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000))  # RET ALLOW
libc = ctypes.CDLL(None, use_errno=True)
ok = libc.prctl(38, 1, 0, 0, 0) == 0 and libc.prctl(  # NO_NEW_PRIVS, then SET_SECCOMP
    22, 2, ctypes.byref(Program(1, ctypes.addressof(allow))), 0, 0) == 0
print("ok" if ok else "no")
"""
"""Can this machine install a seccomp filter at all? (An allow-all one, in a subprocess.)"""


@cache
def machine_layers() -> dict[str, bool]:
    """Which layers this machine can give a worker, found without the engine."""
    netns = subprocess.run(
        [sys.executable, "-c", "from handlerbox.runtime.isolation import "
         "enter_network_namespace as e; print(e())"],
        capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    can_filter = subprocess.run([sys.executable, "-c", SECCOMP_CHECK], capture_output=True,
                                text=True, timeout=30).stdout.strip() == "ok"
    readable = not (_unreadable_by_others(sys.executable)
                    or _unreadable_by_others(os.path.dirname(os.__file__)))
    return {
        "close_fds": True, "pdeathsig": True, "no_new_privs": True, "rlimits": True,
        "netns": netns == ACTIVE,
        "uid_drop": os.geteuid() == 0 and readable,
        "landlock": landlock_abi() > 0,
        "seccomp": can_filter and platform.machine() in seccomp.MACHINES,
    }


@cache
def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 without Landlock."""
    try:
        return landlock.abi_version()
    except OSError:
        return 0


def worker_is_root() -> bool:
    """A root worker ignores RLIMIT_NPROC (it holds CAP_SYS_RESOURCE)."""
    return os.geteuid() == 0 and not machine_layers()["uid_drop"]


# What each attack meets: the first layer (or condition) that holds here decides the outcome.
SIGSYS = ("killed", signal.SIGSYS)
Expect = tuple[str, Callable[[], bool], tuple[str, Any]]
SECCOMP: Expect = ("seccomp", lambda: machine_layers()["seccomp"], SIGSYS)
LANDLOCK_EACCES: Expect = ("landlock", lambda: machine_layers()["landlock"],
                           ("errno", errno.EACCES))
NPROC = ("RLIMIT_NPROC for a non-root worker",
         lambda: not worker_is_root())

NETNS_UNREACHABLE: Expect = ("netns", lambda: machine_layers()["netns"],
                             ("errno", errno.ENETUNREACH))

ATTACKS: dict[str, tuple[str, list[Expect]]] = {
    # A refused connection would prove nothing: only seccomp's kill, Landlock's TCP rule
    # (ABI 4+: EACCES) or a namespace with no interface up (ENETUNREACH) counts.
    "connect-loopback-tcp": ("""
        import socket
        socket.socket().connect(("127.0.0.1", 22))
        result = "connected"
    """, [SECCOMP, ("landlock (ABI 4+: TCP connect)", lambda: landlock_abi() >= 4,
                    ("errno", errno.EACCES)), NETNS_UNREACHABLE]),
    "connect-loopback-udp": ("""
        import socket
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(("127.0.0.1", 53))
        result = "connected"
    """, [SECCOMP, NETNS_UNREACHABLE]),
    "socket-creation": ("""
        import socket
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        result = "socket created"
    """, [SECCOMP]),
    "fork": ("""
        import os
        if os.fork() == 0:
            os._exit(0)
        result = "forked"
    """, [SECCOMP, (*NPROC, ("errno", errno.EAGAIN))]),
    "thread": ("""
        import threading
        threading.Thread(target=lambda: None).start()
        result = "thread started"
    """, [SECCOMP, (*NPROC, ("raised", "RuntimeError"))]),
    "exec": ("""
        import os
        os.execv("/bin/true", ["true"])
    """, [SECCOMP, LANDLOCK_EACCES]),
    "read-etc-passwd": ("""
        result = open("/etc/passwd").read()[:10]
    """, [LANDLOCK_EACCES]),
    "list-root": ("""
        import os
        result = os.listdir("/")
    """, [LANDLOCK_EACCES]),
}


def expected_outcome(expects: list[Expect]) -> tuple[str, Any]:
    for _, holds, outcome in expects:
        if holds():
            return outcome
    pytest.skip("no layer that stops this is available here: "
                + ", ".join(name for name, _, _ in expects))


def check(outcome: Probe, expected: tuple[str, Any]) -> None:
    kind, value = expected
    if kind == "killed":
        assert outcome.killed_by == value, f"expected death by signal {value}, got {outcome}"
        return
    assert outcome.status is None, f"the worker died: {outcome}"
    assert isinstance(outcome.result, dict), f"the worker could: {outcome.result}"
    assert outcome.result.get(kind) == value, f"expected {kind}={value}, got {outcome.result}"


@pytest.mark.parametrize("name", ATTACKS)
def test_a_worker_cannot(engine: Engine, name: str) -> None:
    code, expects = ATTACKS[name]
    expected = expected_outcome(expects)
    check(run_probe(engine, attempt(code)), expected)


def test_a_worker_cannot_write_any_file(engine: Engine, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    expected = expected_outcome([LANDLOCK_EACCES, (
        "uid_drop", lambda: machine_layers()["uid_drop"], ("errno", errno.EACCES))])
    outcome = run_probe(engine, attempt(f"""
        with open({str(target)!r}, "w") as f:
            f.write("x")
        result = "written"
    """))
    check(outcome, expected)
    assert not target.exists()


def test_each_layer_is_active_exactly_where_this_machine_allows_it(engine: Engine) -> None:
    report = engine.isolation()
    assert set(report) == set(LAYERS)
    for state in report.values():
        assert state == ACTIVE or (state.startswith("unavailable: ") and len(state) > 14)
    assert {name: state == ACTIVE for name, state in report.items()} == machine_layers()
    if report["uid_drop"] != ACTIVE:
        assert "not readable by nobody" in report["uid_drop"] or "not run as root" in \
            report["uid_drop"]


def test_the_uid_is_dropped_where_the_layer_is_active(engine: Engine) -> None:
    uid = run_probe(engine, "import os\nresult = [os.getuid(), os.geteuid(), os.getgroups()]")
    if engine.isolation()["uid_drop"] == ACTIVE:
        assert uid.result == [65534, 65534, []]
    else:
        assert uid.result[:2] == [os.getuid(), os.geteuid()]


def test_rlimits_are_as_configured_with_soft_equal_to_hard(engine: Engine) -> None:
    names = {"RLIMIT_AS": MEMORY_MB << 20, "RLIMIT_CORE": 0, "RLIMIT_FSIZE": 0,
             "RLIMIT_NOFILE": 32, "RLIMIT_CPU": 600, "RLIMIT_NPROC": 0}
    limits = run_probe(engine, f"""
        import resource
        result = {{name: resource.getrlimit(getattr(resource, name)) for name in {list(names)}}}
    """).result
    for name, configured in names.items():
        hard = resource.getrlimit(getattr(resource, name))[1]  # the worker cannot go above it
        value = configured if hard == resource.RLIM_INFINITY else min(configured, hard)
        assert limits[name] == [value, value], name


def test_a_handler_can_still_import_lazily_loaded_stdlib_modules(engine: Engine) -> None:
    result = engine.dispatch(engine.load_app(APPS / "idna"), make_payload())
    assert result.outcome == "ok" and result.value == "xn--bcher-kva.example"


def test_live_workers_seen_from_proc(engine: Engine) -> None:
    pid = engine.dispatch(engine.load_app(APPS / "echo"), make_payload()).worker_pid
    assert pid is not None
    status = dict(line.split(":\t", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    layers = machine_layers()
    assert status["NoNewPrivs"].strip() == "1"
    if layers["seccomp"]:
        assert status["Seccomp"].strip() == "2"
    if layers["netns"]:
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    address_space = [line.split()[3:5] for line in
                     Path(f"/proc/{pid}/limits").read_text().splitlines()
                     if line.startswith("Max address space")]
    assert address_space == [[str(MEMORY_MB << 20)] * 2]
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    assert len(fds) == 5 and fds[:3] == [0, 1, 2]
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"


def test_a_bound_worker_names_its_app_and_installation_in_ps(engine: Engine) -> None:
    pid = engine.dispatch(engine.load_app(APPS / "echo"), make_payload()).worker_pid
    assert pid is not None
    title = ps_title(pid)
    assert title.startswith("handlerbox worker app=echo installation="), title
    assert "82918" in title  # the account of the installation


def test_the_zygote_and_spare_workers_are_named_in_ps() -> None:
    with Engine(workers=2, spares=1) as fresh:
        zygote = psutil.Process(fresh._spawner.zygote_pid)
        assert ps_title(zygote.pid) == "handlerbox zygote"
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            titles = [ps_title(child.pid) for child in zygote.children()]
            if "handlerbox worker (spare)" in titles:
                return
            time.sleep(0.01)
        raise AssertionError(f"no spare worker among the zygote's children: {titles}")


def test_a_worker_can_set_its_title_after_every_layer(engine: Engine) -> None:
    outcome = run_probe(engine, """
        from handlerbox.runtime import proctitle
        proctitle.set_title("handlerbox worker app=x\\ninstallation=x/1")
        result = proctitle.available()
    """, while_alive=ps_title)
    assert outcome.result is True, f"setproctitle's C extension did not load: {outcome}"
    assert outcome.seen == "handlerbox worker app=x?installation=x/1"  # one line in ps


def test_workers_die_within_a_second_of_their_host(tmp_path: Path) -> None:
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from handlerbox import Engine
        from tests.conftest import APPS, make_payload
        engine = Engine(workers=2)
        app = engine.load_app(APPS / "echo")
        pid = engine.dispatch(app, make_payload()).worker_pid
        print(pid, engine._spawner.zygote_pid, flush=True)
        sys.stdin.read()
    """))
    host = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert host.stdout is not None
    worker_pid, zygote_pid = map(int, host.stdout.readline().split())
    host.kill()
    host.wait()
    killed_at = time.monotonic()
    while time.monotonic() - killed_at < 1.0:
        if not _alive(worker_pid) and not _alive(zygote_pid):
            return
        time.sleep(0.01)
    raise AssertionError("a worker or the zygote outlived its host by a second")


def test_a_required_layer_that_cannot_be_applied_stops_the_engine() -> None:
    unavailable = [name for name, active in machine_layers().items() if not active]
    if not unavailable:
        pytest.skip("every layer is active on this machine, so none can be required in vain "
                    "(the next test makes one unavailable by turning isolation off)")
    with pytest.raises(IsolationError, match=unavailable[0]):
        Engine(workers=1, require=unavailable)


def test_turning_isolation_off_is_reported_and_refused_when_required() -> None:
    with Engine(workers=1, isolation=False) as bare:
        assert bare.isolation()["seccomp"].startswith("unavailable: isolation is turned off")
    with pytest.raises(IsolationError, match="seccomp"):
        Engine(workers=1, isolation=False, require=["seccomp"])


def test_unknown_layer_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown isolation layers"):
        Engine(workers=1, require=["firewall"])


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_doctor_rejects_an_unknown_layer_as_bad_input(as_json: bool) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "handlerbox", "doctor", "--require", "bogus",
         *(["--json"] if as_json else [])],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2
    text = done.stdout if as_json else done.stderr
    if as_json:
        report = json.loads(text)
        assert report["code"] == "bad_input"
        text = report["problems"][0]
    assert "unknown isolation layer bogus" in text and "is not active" not in text
    for name in LAYERS:
        assert name in text


def test_doctor_accepts_a_known_layer_that_is_active() -> None:
    active = [name for name, on in machine_layers().items() if on]
    done = subprocess.run(
        [sys.executable, "-m", "handlerbox", "doctor", "--require", ",".join(active)],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr


def test_host_rlimits_are_untouched() -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    with Engine(workers=1) as engine:
        engine.dispatch(engine.load_app(APPS / "echo"), make_payload())
    assert resource.getrlimit(resource.RLIMIT_AS) == before


def ps_title(pid: int) -> str:
    """The command line as ps shows it (setproctitle pads the argv area with NULs)."""
    return " ".join(psutil.Process(pid).cmdline()).strip()


def _alive(pid: int) -> bool:
    try:  # the command name may hold spaces and parentheses: the state follows the last ")"
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
