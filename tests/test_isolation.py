"""Each OS layer, proved from inside a real worker (through the test-only probe hook) and
inspected from outside through /proc."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from handlerbox.runtime.errors import ConfigError, IsolationError
from handlerbox.runtime.isolation import ACTIVE, LAYERS

from handlerbox import Engine
from tests.conftest import APPS, make_payload

MEMORY_MB = 200


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine(workers=1, memory_limit_mb=MEMORY_MB, allow_probes=True) as probing:
        yield probing


def probe(engine: Engine, code: str) -> Any:
    return engine.probe(textwrap.dedent(code))


ATTEMPTS = {
    "connect-loopback": """
        import socket
        s = socket.socket()
        s.connect(("127.0.0.1", 22))
        result = "connected"
    """,
    "socket-creation": """
        import socket
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        result = "socket created"
    """,
    "fork": """
        import os
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        result = "forked"
    """,
    "thread": """
        import threading
        t = threading.Thread(target=lambda: None)
        t.start()
        result = "thread started"
    """,
    "exec": """
        import os
        os.execv("/bin/true", ["true"])
    """,
    "read-etc-passwd": """
        result = open("/etc/passwd").read()[:10]
    """,
    "list-root": """
        import os
        result = os.listdir("/")
    """,
}


@pytest.mark.parametrize("code", ATTEMPTS.values(), ids=ATTEMPTS.keys())
def test_a_worker_cannot(engine: Engine, code: str) -> None:
    outcome = probe(engine, code)
    assert isinstance(outcome, dict) and "raised" in outcome, f"the worker could: {outcome}"
    assert outcome["raised"] in ("PermissionError", "OSError", "RuntimeError",
                                 "ConnectionRefusedError")


def test_a_worker_cannot_write_any_file(engine: Engine, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    outcome = probe(engine, f"""
        with open({str(target)!r}, "w") as f:
            f.write("x")
        result = "written"
    """)
    assert isinstance(outcome, dict) and outcome.get("raised") == "PermissionError"
    assert not target.exists()


def test_every_layer_but_the_uid_drop_is_active_here(engine: Engine) -> None:
    report = engine.isolation()
    assert set(report) == set(LAYERS)
    assert {name for name, state in report.items() if state != ACTIVE} <= {"uid_drop"}
    if report["uid_drop"] != ACTIVE:
        assert "not readable by nobody" in report["uid_drop"] or "not run as root" in \
            report["uid_drop"]


def test_the_uid_is_dropped_where_the_layer_is_active(engine: Engine) -> None:
    uid = probe(engine, "import os\nresult = [os.getuid(), os.geteuid(), os.getgroups()]")
    if engine.isolation()["uid_drop"] == ACTIVE:
        assert uid == [65534, 65534, []]
    else:
        assert uid[0] == os.getuid()


def test_rlimits_are_as_configured_with_soft_equal_to_hard(engine: Engine) -> None:
    limits = probe(engine, """
        import resource
        result = {name: resource.getrlimit(getattr(resource, name))
                  for name in ("RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_FSIZE", "RLIMIT_NOFILE",
                               "RLIMIT_CPU", "RLIMIT_NPROC")}
    """)
    assert limits["RLIMIT_AS"] == [MEMORY_MB << 20] * 2
    assert limits["RLIMIT_CORE"] == [0, 0] and limits["RLIMIT_FSIZE"] == [0, 0]
    assert limits["RLIMIT_NOFILE"] == [32, 32] and limits["RLIMIT_NPROC"] == [0, 0]
    assert limits["RLIMIT_CPU"] == [600, 600]


def test_a_handler_can_still_import_lazily_loaded_stdlib_modules(engine: Engine) -> None:
    result = engine.dispatch(engine.load_app(APPS / "idna"), make_payload())
    assert result.outcome == "ok" and result.value == "xn--bcher-kva.example"


def test_live_workers_seen_from_proc(engine: Engine) -> None:
    pid = engine.dispatch(engine.load_app(APPS / "echo"), make_payload()).worker_pid
    status = dict(line.split(":\t", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert f"Max address space         {MEMORY_MB << 20}" in " ".join(limits.split("  ")) or \
        str(MEMORY_MB << 20) in [w for line in limits.splitlines()
                                 if line.startswith("Max address space") for w in line.split()]
    fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    assert len(fds) == 5 and fds[:3] == [0, 1, 2]
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"


def test_workers_die_within_a_second_of_their_host(tmp_path: Path) -> None:
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
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
    with Engine(workers=1) as plain:
        report = plain.isolation()
    unavailable = [name for name, state in report.items() if state != ACTIVE]
    if not unavailable:
        pytest.fail("every layer is active: pick a layer this test can make unavailable")
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


def test_host_rlimits_are_untouched() -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    with Engine(workers=1) as engine:
        engine.dispatch(engine.load_app(APPS / "echo"), make_payload())
    assert resource.getrlimit(resource.RLIMIT_AS) == before


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"
