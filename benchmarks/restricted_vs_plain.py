"""How much slower is a handler under the sandbox than the same code as plain Python?

Compiles one typical 50-line handler twice, plainly and under the policy, and times calls of
each, interleaved in rounds so machine drift hits both alike. Prints the ratio of medians
(goal: 2.0 or less) and writes JSON with --json.

    python -m benchmarks.restricted_vs_plain [--rounds 30] [--calls 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from handlerbox.sandbox import compile_handler
from handlerbox.sandbox.namespace import LogCapture, new_namespace

HANDLER = '''
import json

PRIORITY = {"inbound": 2, "outbound": 1}


def summarise(call):
    parts = []
    for participant in call.get("participants", []):
        if participant.get("type") == "agent":
            parts.append("agent:" + str(participant.get("id")))
        else:
            parts.append(participant.get("type", "unknown"))
    return ",".join(parts)


def on_call_create(payload):
    data = payload["data"]
    call = data["call"]
    iparams = payload.get("iparams", {})
    direction = call.get("direction", "inbound")
    number = call.get("phone_number", "")
    tags = []
    if number.startswith("+1"):
        tags.append("us")
    elif number.startswith("+44"):
        tags.append("uk")
    else:
        tags.append("intl")
    vip = [n.strip() for n in iparams.get("vip_numbers", "").split(",") if n.strip()]
    if number in vip:
        tags.append("vip")
    score = PRIORITY.get(direction, 0)
    counts = {}
    for tag in tags:
        counts[tag] = counts.get(tag, 0) + 1
    score += len(tags)
    total = 0
    for i in range(10):
        total += i * score
    queue = iparams.get("queue", "default").lower()
    summary = summarise(call)
    return {
        "call_id": call["id"],
        "queue": queue if score < 4 else "priority",
        "tags": sorted(tags),
        "counts": counts,
        "score": score,
        "total": total,
        "who": summary,
        "label": "%s-%d" % (direction, score),
        "note": f"{direction} call from {number}",
    }
'''

PAYLOAD: dict[str, Any] = {
    "account_id": "82918", "domain": "sample.freshcaller.com", "event": "onCallCreate",
    "region": "US", "timestamp": 1583839672,
    "data": {"call": {"id": 2174, "phone_number": "+15550100", "direction": "inbound",
                      "participants": [{"type": "customer", "id": 7},
                                       {"type": "agent", "id": 42}]},
             "actor": {"type": "system"}, "associations": {}, "changes": {}},
    "iparams": {"vip_numbers": "+15550100, +15550199", "queue": "Support"},
}


def plain_handler() -> Callable[[Any], Any]:
    namespace: dict[str, Any] = {"__name__": "plain"}
    exec(compile(HANDLER, "plain.py", "exec"), namespace)
    return namespace["on_call_create"]  # type: ignore[no-any-return]


def restricted_handler() -> Callable[[Any], Any]:
    namespace = new_namespace(LogCapture(65536))
    exec(compile_handler(HANDLER, "server.py").code, namespace)
    return namespace["on_call_create"]  # type: ignore[no-any-return]


def time_calls(handler: Callable[[Any], Any], calls: int) -> float:
    """Seconds per call, averaged over `calls` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        handler(PAYLOAD)
    return (time.perf_counter() - start) / calls


def measure(rounds: int, calls: int) -> dict[str, float]:
    plain, restricted = plain_handler(), restricted_handler()
    assert plain(PAYLOAD) == restricted(PAYLOAD), "both compilations must agree"
    plain_times, restricted_times = [], []
    for _ in range(rounds):
        plain_times.append(time_calls(plain, calls))
        restricted_times.append(time_calls(restricted, calls))
    plain_us = statistics.median(plain_times) * 1e6
    restricted_us = statistics.median(restricted_times) * 1e6
    return {"plain_us": plain_us, "restricted_us": restricted_us,
            "ratio": restricted_us / plain_us}


class Case:
    """This question as a case of `python -m benchmarks` (see benchmarks/server.py)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def measure(self, rounds: int, calls: int) -> dict[str, float]:
        return measure(rounds, calls)

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    result = measure(args.rounds, args.calls)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"plain {result['plain_us']:.2f} us  restricted {result['restricted_us']:.2f} us"
              f"  ratio {result['ratio']:.2f} (goal <= 2.0)")


if __name__ == "__main__":
    main()

