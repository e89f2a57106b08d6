"""The benchmark suite's machinery runs end to end and reports every question in the agreed shape.

Runs `python -m benchmarks --profile smoke` (tiny counts) once and checks the JSON, the table
and the chart for shape: keys, types, every contender present. Never speed: numbers from a
smoke run mean nothing, and speed belongs to `python -m benchmarks`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from handlerbox.benchmarks import __main__ as cli
from handlerbox.benchmarks import placement, suite
from handlerbox.benchmarks.payloads import SIZES, payload, payload_bytes
from handlerbox.benchmarks.stats import CDF_FRACTIONS

ROOT = Path(__file__).resolve().parent.parent
HAVE_PEBBLE = importlib.util.find_spec("pebble") is not None
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    chart = out.with_name("smoke.png")
    done = subprocess.run(
        [sys.executable, "-m", "handlerbox.benchmarks", "--profile", "smoke", "--no-progress",
         "--out", str(out), "--chart", str(chart)],
        cwd=ROOT, capture_output=True, text=True, timeout=150)
    return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr,
            "json": json.loads(out.read_text()) if out.exists() else None, "chart": chart}


def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def expected(names: list[str] | tuple[str, ...], result: dict[str, Any]) -> set[str]:
    """Contenders that must have numbers: all of them, less those skipped for a missing
    optional package (and then the run must say so)."""
    missing = set(result["skipped"])
    if not HAVE_PEBBLE:
        assert "pebble" in missing
    return {n for n in names if n not in missing}


@pytest.mark.timeout(180)
def test_smoke_run_exits_cleanly_and_writes_json(smoke_run: dict[str, Any]) -> None:
    assert smoke_run["returncode"] == 0, smoke_run["stderr"][-3000:]
    result = smoke_run["json"]
    assert result is not None
    assert result["errors"] == {}
    assert result["schema"] == 1 and result["profile"] == "smoke"
    assert result["placement"]["name"] == "same" and result["workers"] == 2
    assert tuple(result["sections"]) == suite.SECTIONS
    cpu = result["placement"]["host_cpu"]
    for name, facts in result["cases"].items():
        assert facts["affinity"], name
        assert all(cpus == [cpu] for cpus in facts["affinity"].values()), (name, facts)
    assert set(result["cases"]["handlerbox_sync"]["isolation"])
    machine = result["machine"]
    for key in ("cpu_model", "cores", "kernel", "python", "packages"):
        assert machine[key], key
    assert machine["packages"]["handlerbox"]
    assert all(len(result["load_average"][k]) == 3 for k in ("start", "end"))


@pytest.mark.timeout(180)
def test_latency_reports_percentiles_for_every_contender(smoke_run: dict[str, Any]) -> None:
    result = smoke_run["json"]
    latency = result["latency"]
    assert latency["payload_bytes"] == len(payload_bytes("350"))
    contenders = latency["contenders"]
    assert set(contenders) == expected(suite.LATENCY, result)
    for name, stats in contenders.items():
        assert stats["label"] == suite.LABELS[name]
        assert stats["n"] == latency["rounds"] * latency["calls"]
        for key in ("p50_us", "p90_us", "p99_us", "mean_us", "ratio_to_floor"):
            assert number(stats[key]) and stats[key] > 0, (name, key)
        assert stats["p50_us"] <= stats["p90_us"] <= stats["p99_us"]
        assert [q for q, _ in stats["cdf_us"]] == CDF_FRACTIONS
        values = [us for _, us in stats["cdf_us"]]
        assert values == sorted(values)
    assert contenders["floor"]["ratio_to_floor"] == 1.0


@pytest.mark.timeout(180)
def test_throughput_timeout_and_cold_start_cover_every_contender(
        smoke_run: dict[str, Any]) -> None:
    result = smoke_run["json"]
    throughput = result["throughput"]
    assert throughput["in_flight"] == 64
    assert set(throughput["contenders"]) == expected(list(suite.THROUGHPUT), result)
    for stats in throughput["contenders"].values():
        assert number(stats["per_s"]) and stats["per_s"] > 0
        assert stats["errors"] == 0
    timeout = result["timeout"]
    assert timeout["limit_s"] == 0.2
    assert set(timeout["contenders"]) == expected(list(suite.TIMEOUTS), result)
    for stats in timeout["contenders"].values():
        for key in ("late_ms_p50", "late_ms_max", "recovery_ms_p50", "recovery_ms_max",
                    "first_call_ms_p50"):
            assert number(stats[key]), key
        assert stats["all_recovered"] is True
        assert len(stats["trials"]) == suite.PROFILES["smoke"]["timeout"]["trials"]
    cold = result["cold_start"]["contenders"]
    assert set(cold) == set(suite.COLD)
    for stats in cold.values():
        assert number(stats["total_ms_p50"]) and stats["total_ms_p50"] > 0
    assert number(cold["handlerbox_cold"]["engine_ms_p50"])
    assert "spawner_error" not in cold["handlerbox_cold"]["trials"][0], (
        "HandlerboxCold.spawner_trial (benchmarks/coldstart.py) follows the engine's private "
        "spawn/bind path, which changed: update it")
    assert number(cold["handlerbox_cold"]["spawn_ms_p50"])


@pytest.mark.timeout(180)
def test_restricted_sweep_and_many_apps_have_their_fields(smoke_run: dict[str, Any]) -> None:
    result = smoke_run["json"]
    assert all(number(result["restricted"][k]) for k in ("plain_us", "restricted_us", "ratio"))
    sizes = result["sweep"]["sizes"]
    assert list(sizes) == list(SIZES)
    assert [sizes[s]["bytes"] for s in ("10k", "256k")] == [10 * 1024, 256 * 1024]
    for size in sizes.values():
        assert set(size["contenders"]) == set(suite.SWEEP)
        assert number(size["ratio_to_floor"]) and number(size["ratio_to_small_reply_floor"])
    many = result["many_apps"]
    assert many["apps"] == suite.PROFILES["smoke"]["many_apps"]["apps"] and many["budget"] == 4
    assert many["errors"] == 0
    for key in ("p50_us", "p99_us", "ratio_p99_to_floor"):
        assert number(many[key]), key
    memory = many["memory"]
    assert memory["rss_mb"] > 0 and memory["uss_mb"] > 0
    assert memory["processes"]["host"] == 1 and memory["processes"]["zygote"] == 1
    assert memory["processes"]["workers"] >= 1
    assert set(memory["uss_mb_by_role"]) == {"host", "zygote", "workers"}


@pytest.mark.timeout(180)
def test_fairness_and_density_have_their_fields(smoke_run: dict[str, Any]) -> None:
    result = smoke_run["json"]
    fair = result["fairness"]
    assert fair["errors"] == 0 and fair["cap"] == 2 and fair["budget"] == 4
    assert fair["a_running_min"] == 2  # the flood runs as many as the cap allows
    assert fair["a_waiting_min"] >= 1  # and queues the rest
    for key in ("p50_us", "p99_us", "ratio_p99_to_floor"):
        assert number(fair[key]), key
    density = result["density"]
    installations = suite.PROFILES["smoke"]["density"]["installations"]
    assert density["errors"] == 0 and density["workers_per_round"] == installations
    memory = density["memory"]
    assert memory["installations"] == installations
    assert memory["roles"]["workers"]["processes"] >= installations  # warm, plus a spare
    assert memory["roles"]["host"]["processes"] == memory["roles"]["zygote"]["processes"] == 1
    assert memory["pool_idle_workers"] == installations
    assert 0 < memory["uss_mb_per_worker"] < 64
    assert number(density["ratio_p99_to_floor"])


@pytest.mark.timeout(180)
def test_goals_and_tables_are_printed(smoke_run: dict[str, Any]) -> None:
    result, stdout = smoke_run["json"], smoke_run["stdout"]
    goals = result["goals"]
    assert len(goals) == 10
    for goal in goals:
        assert goal["passed"] in (True, False, None) and number(goal["limit"])
    marks = [line for line in stdout.splitlines() if line[:4] in ("PASS", "MISS", "n/a ")]
    assert len(marks) == len(goals)
    for title in ("latency:", "throughput:", "timeout recovery:", "cold start:",
                  "restricted vs plain:", "payload size sweep:", "many installations:",
                  "fairness:", "density:", "placement: same"):
        assert title in stdout, title


@pytest.mark.timeout(180)
@pytest.mark.skipif(not HAVE_MATPLOTLIB, reason="matplotlib (the bench extra) is not installed")
def test_chart_is_a_png(smoke_run: dict[str, Any]) -> None:
    assert smoke_run["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(60)
def test_a_case_whose_package_is_missing_is_skipped_not_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suite, "REQUIRES", {"pebble_timeout": "no_such_package_for_bench"})
    out = tmp_path / "r.json"
    status = cli.main(["--profile", "smoke", "--only", "timeout", "--no-progress",
                       "--out", str(out), "--chart", "none"])
    result = json.loads(out.read_text())
    assert status == 0 and result["errors"] == {}
    assert "no_such_package_for_bench" in result["skipped"]["pebble"]
    assert set(result["timeout"]["contenders"]) == {"handlerbox"}


@pytest.mark.parametrize("argv, json_name, chart_name", [
    ([], "latest.json", "latency.png"),
    (["--quick"], "quick-same.json", "quick-same-latency.png"),
    (["--", "--quick"], "quick-same.json", "quick-same-latency.png"),
    (["--placement", "split"], "full-split.json", "full-split-latency.png"),
])
def test_default_output_paths_keep_the_full_run_chart_apart(
        argv: list[str], json_name: str, chart_name: str) -> None:
    args = cli.parse(argv)
    assert (args.out.name, args.chart.name) == (json_name, chart_name)
    assert args.out.parent == args.chart.parent == ROOT / "benchmarks" / "results"


@pytest.mark.parametrize("argv", [["--only", "nope"], ["--workers", "0"],
                                  ["--placement", "elsewhere"]])
def test_bad_options_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse(argv)
    assert exc.value.code == 2


@pytest.mark.parametrize("name", placement.PLACEMENTS)
def test_every_placement_names_its_cpus(name: str) -> None:
    plan = placement.plan(name)
    assert plan["name"] == name and plan["describe"].startswith(name)


def test_payloads_have_their_sizes_and_are_valid_events() -> None:
    from handlerbox.runtime.payloads import EventPayload

    assert 330 <= len(payload_bytes("350")) <= 370
    for size in SIZES:
        checked = EventPayload.parse(payload(size))
        assert checked.json_bytes() == payload_bytes(size)
    assert len(payload_bytes("256k")) == 256 * 1024
