"""One benchmark case in a process of its own: `python -m benchmarks.server CASE CONFIG_JSON`.

No untrusted input (the suite talks to it). The process pins itself (see placement), starts
its contender, says it is ready, then answers ops until told to close, one JSON object per
line each way:

    suite -> case   {"op": "latency", "calls": 500, "warmup": 20, "size": "350"}
    case -> suite   {"ok": true, "result": ...}  |  {"ok": false, "error": "<traceback>"}

Every case gets a process so that one contender's threads, children and garbage never run
beside another's, and so that placement applies to exactly one contender. Imports stay light
here: multiprocessing's "spawn" and "forkserver" children import this module as their main.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any, TextIO

CASES = {
    "floor": "handlerbox.benchmarks.floor:FloorCase",
    "mp_pool": "handlerbox.benchmarks.peers:MultiprocessingPool",
    "executor": "handlerbox.benchmarks.peers:Executor",
    "pebble": "handlerbox.benchmarks.peers:Pebble",
    "handlerbox_sync": "handlerbox.benchmarks.handlerbox_cases:HandlerboxSync",
    "handlerbox_async": "handlerbox.benchmarks.handlerbox_cases:HandlerboxAsync",
    "handlerbox_timeout": "handlerbox.benchmarks.timeouts:HandlerboxTimeout",
    "pebble_timeout": "handlerbox.benchmarks.timeouts:PebbleTimeout",
    "handlerbox_cold": "handlerbox.benchmarks.coldstart:HandlerboxCold",
    "mp_spawn": "handlerbox.benchmarks.coldstart:MultiprocessingCold",
    "mp_forkserver": "handlerbox.benchmarks.coldstart:MultiprocessingCold",
    "restricted": "handlerbox.benchmarks.restricted_vs_plain:Case",
    "many_apps": "handlerbox.benchmarks.many_apps:ManyApps",
    "fairness": "handlerbox.benchmarks.fairness:Fairness",
    "density": "handlerbox.benchmarks.density:Density",
}
"""Case name -> the class that runs it: it takes the config dict, has close(), its ops as
methods, and optionally describe() (extra facts recorded with the results)."""


def load(name: str) -> Any:
    module, _, cls = CASES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def answer(channel: TextIO, ok: bool, value: Any) -> None:
    channel.write(json.dumps({"ok": ok, "result" if ok else "error": value}) + "\n")
    channel.flush()


def serve(name: str, config: dict[str, Any], requests: TextIO, channel: TextIO) -> int:
    from handlerbox.benchmarks import placement

    plan = config["placement"]
    try:
        placement.before_start(plan)
        case = load(name)(config)
        placement.after_start(plan)
    except BaseException:
        answer(channel, False, traceback.format_exc())
        return 1
    facts: dict[str, Any] = {"pid": os.getpid(), "affinity": placement.affinity_of_tree()}
    try:
        facts.update(case.describe() if hasattr(case, "describe") else {})
    except Exception as exc:  # facts are extras: never a reason to lose the measurements
        facts["describe_error"] = repr(exc)
    answer(channel, True, facts)
    try:
        for line in requests:
            request = json.loads(line)
            op = request.pop("op")
            if op == "close":
                break
            try:
                placement.refresh(plan)
                answer(channel, True, getattr(case, op)(**request))
            except Exception:
                answer(channel, False, traceback.format_exc())
    finally:
        case.close()
    return 0


def main() -> int:
    name, config = sys.argv[1], json.loads(sys.argv[2])
    # Replies go on a private copy of stdout; anything a library prints goes to stderr.
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return serve(name, config, sys.stdin, channel)


if __name__ == "__main__":
    sys.exit(main())
