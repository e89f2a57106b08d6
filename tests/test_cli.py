"""The handlerbox command: output, --json, and exit codes (0 ok, 1 handler failed, 2 bad input)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import APPS, EXAMPLES


def handlerbox(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "handlerbox", *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_run_prints_logs_value_and_report_line() -> None:
    done = handlerbox("run", EXAMPLES / "call_logger", "--event", "onCallCreate")
    assert done.returncode == 0, done.stderr
    assert '"queue": "bay_area_sales"' in done.stdout
    assert "call 10384 (incoming)" in done.stdout
    report = [line for line in done.stderr.splitlines() if line.startswith("REPORT")]
    assert len(report) == 1
    for field in ("duration=", "cpu=", "max_rss=", "limit=20 s"):
        assert field in report[0]


def test_run_json_prints_one_invocation_result() -> None:
    done = handlerbox("run", EXAMPLES / "ticket_sla", "--event", "onTicketUpdate", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["outcome"] == "ok" and result["event"] == "onTicketUpdate"
    assert result["value"]["ticket_id"] == 4790


@pytest.mark.parametrize("args, status, text", [
    (["--event", "onCallCreate", "--timeout", "0.3"], 1, "timeout"),
    (["--event", "onCallUpdate"], 0, ""),
    (["--event", "onCallCreate", "--request-timeout", "17"], 2, "20, 25 or 30"),
    (["--event", "onTicketCreate"], 2, "no handler for onTicketCreate"),
])
def test_run_exit_codes(tmp_path: Path, args: list[str], status: int, text: str) -> None:
    app = _copy_app(APPS / "forever", tmp_path)
    for event in ("onCallCreate", "onCallUpdate", "onTicketCreate"):
        (app / "server" / "test_data" / f"{event}.json").write_text(json.dumps({
            "account_id": "1", "domain": "d.example.com", "event": event, "region": "EU",
            "timestamp": 1, "data": {}}))
    done = handlerbox("run", app, *args)
    assert done.returncode == status, done.stderr
    assert text in done.stdout + done.stderr
    assert "Traceback (most recent call last)" not in done.stderr


def test_run_reports_an_invalid_payload_by_field(tmp_path: Path) -> None:
    payload = tmp_path / "bad.json"
    payload.write_text(json.dumps({"account_id": "1", "domain": "d", "event": "onCallCreate",
                                   "region": "MARS", "timestamp": "yesterday", "data": {}}))
    done = handlerbox("run", EXAMPLES / "call_logger", "--event", "onCallCreate",
                      "--payload", payload)
    assert done.returncode == 2
    assert "payload.region" in done.stderr and "payload.timestamp" in done.stderr


def test_run_on_a_handler_error_exits_1_with_the_handler_traceback(tmp_path: Path) -> None:
    app = _copy_app(APPS / "echo", tmp_path)
    (app / "server" / "test_data" / "onCallUpdate.json").write_text(json.dumps({
        "account_id": "1", "domain": "d.example.com", "event": "onCallUpdate", "region": "US",
        "timestamp": 1, "data": {"id": 5}}))
    done = handlerbox("run", app, "--event", "onCallUpdate")
    assert done.returncode == 1
    assert "ValueError: bad call 5" in done.stderr
    assert 'File "server/server.py", line 10, in fail' in done.stderr


def test_validate_lists_every_problem_at_once(tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    (tmp_path / "manifest.json").write_text(
        '{"events": {"onCallCreate": {"handler": "h"}}, "color": "blue"}')
    (tmp_path / "server" / "server.py").write_text(
        "import threading\nimport os\n\ndef h(p):\n    return p._secret\n")
    done = handlerbox("validate", tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert any("unknown key 'color'" in line for line in lines)
    assert any(line.endswith("Use a scheduled event to run code later.") and ":1:0:" in line
               for line in lines)
    assert any(":2:0: import of os is not allowed" in line for line in lines)
    assert any(":5:11:" in line and "_secret" in line for line in lines)
    as_json = json.loads(handlerbox("validate", tmp_path, "--json").stdout)
    assert as_json["ok"] is False and len(as_json["problems"]) == len(lines)


@pytest.mark.parametrize("example", ["call_logger", "ticket_sla"])
def test_validate_passes_the_examples(example: str) -> None:
    done = handlerbox("validate", EXAMPLES / example)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok")


def test_no_command_prints_help_and_exits_2() -> None:
    done = handlerbox()
    assert done.returncode == 2 and "usage" in done.stdout


def _copy_app(source: Path, tmp_path: Path) -> Path:
    app = tmp_path / source.name
    (app / "server" / "test_data").mkdir(parents=True)
    (app / "manifest.json").write_text((source / "manifest.json").read_text())
    (app / "server" / "server.py").write_text((source / "server" / "server.py").read_text())
    return app


def test_doctor_lists_every_layer_and_fails_on_a_missing_required_one() -> None:
    done = handlerbox("doctor", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["layers"]["seccomp"] == "active" and report["missing"] == []
    assert set(report["worker_start_ms"]) == {"start_ms", "layers_ms"}
    unavailable = [n for n, state in report["layers"].items() if state != "active"]
    if unavailable:
        failed = handlerbox("doctor", "--require", unavailable[0])
        assert failed.returncode == 1 and unavailable[0] in failed.stderr
