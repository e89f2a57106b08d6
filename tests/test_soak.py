"""The soak (benchmarks/soak) in quick mode: 300 requests of mixed traffic with faults over
6 apps from threads and asyncio. Asserts its invariants, never its timings: one result per
dispatch, each class of request ends in its own outcome, no engine process left after close."""

from __future__ import annotations

import json

import pytest

from handlerbox.benchmarks import soak

REQUESTS = 300  # three blocks of 100: the mix exactly


@pytest.fixture(scope="module")
def report() -> dict:
    return soak.run(20.0, apps=6, workers=2, threads=4, async_tasks=1, quick=True,
                    max_requests=REQUESTS)


@pytest.mark.timeout(180)  # a hung dispatch shows up as a failed check, not a test timeout
def test_every_dispatch_gets_exactly_one_result(report: dict) -> None:
    assert report["checks"]["one_result_each"]["ok"], soak.describe(report)
    assert report["requests"] == report["results"] == REQUESTS
    assert not report["raised"] and not report["hung_threads"]


def test_each_class_ends_in_its_outcome(report: dict) -> None:
    classes = report["classes"]
    assert {kind: sum(counts.values()) for kind, counts in classes.items()} == {
        kind: n * REQUESTS // 100 for kind, n in soak.MIX.items()}
    assert report["checks"]["outcomes"]["ok"], soak.describe(report)
    assert classes["normal"] == {"ok": 270}, soak.describe(report)
    assert classes["error"] == {"handler_error": 9}, soak.describe(report)
    assert classes["bomb"] == {"memory_limit": 6}, soak.describe(report)
    # the races the soak tolerates (see its docstring): a kill that misses, a short-deadline
    # dispatch that finds no worker in time
    assert classes["kill"].get("crashed", 0) >= 5 and set(classes["kill"]) <= {"crashed", "ok"}
    assert classes["timeout"].get("timeout", 0) >= 8
    assert set(classes["timeout"]) <= {"timeout", "overloaded"}
    assert report["kills"]["confirmed"] == classes["kill"].get("crashed", 0)
    assert report["checks"]["mix"]["ok"], soak.describe(report)


def test_no_engine_process_outlives_close(report: dict) -> None:
    assert report["checks"]["no_orphans"]["ok"], soak.describe(report)
    assert report["orphans"] == []
    assert report["engine_processes_seen"] >= 2  # the zygote and at least one worker
    assert report["distinct_worker_pids"] >= 1


def test_the_report_is_json_and_readable(report: dict) -> None:
    assert json.loads(json.dumps(report))["requests"] == REQUESTS
    text = soak.describe(report)
    assert "one_result_each" in text and "p99" in text
    assert report["passed"], text
