"""The benchmark's inputs: the onCallCreate payload at each size, and the apps that handle it.

No untrusted input. Sizes are the compact UTF-8 JSON that handlerbox sends to a worker (and
that the floor ping-pongs): "350" is a typical call event, "10k" one with a short transcript,
"256k" the largest payload the platform allows (exactly 256 KiB).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "tests" / "apps"
CALL_APP = APPS / "bench_call_create"
"""The typical handler: reads a few fields of the call and returns a small dict."""
FOREVER_APP = APPS / "bench_forever"
"""onCallCreate never returns; onCallUpdate is the typical handler (for timeout recovery)."""
HANDLER = "onCallCreateHandler"
SLOW_APP = APPS / "fair_slow"
"""onCallCreate keeps its worker busy for data.seconds of wall time (the fairness flood)."""

SIZES: dict[str, int] = {"350": 350, "10k": 10 * 1024, "256k": 256 * 1024}
"""Target sizes in bytes; "350" is approximate, the others are exact."""

CALL_CREATE: dict[str, Any] = {
    "account_id": "82918", "domain": "acme.freshcaller.com", "event": "onCallCreate",
    "region": "US", "timestamp": 1710252331,
    "data": {
        "call": {
            "id": 10384, "direction": "incoming", "phone_number": "+14155550199",
            "participants": [{"type": "Customer", "name": "Dana Whitfield"}],
        },
        "actor": {"type": "system"},
    },
    "iparams": {"default_queue": "support", "vip_numbers": ["+12125550143"]},
}


def compact(value: Any) -> bytes:
    """JSON exactly as handlerbox encodes a payload for its workers."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


def payload(size: str = "350", event: str = "onCallCreate") -> dict[str, Any]:
    """The onCallCreate payload padded with a call transcript to the size's byte count."""
    body = copy.deepcopy(CALL_CREATE)
    body["event"] = event
    target = SIZES[size]
    if size == "350":
        return body
    transcript: list[dict[str, Any]] = []
    body["data"]["transcript"] = transcript
    size_now, turn = len(compact(body)), 0
    while size_now < target - 200:
        speaker = "agent" if turn % 2 else "customer"
        transcript.append({"t": turn * 4, "speaker": speaker,
                           "text": f"turn {turn}: I am calling about order {1000 + turn}."})
        size_now += len(compact(transcript[-1])) + (1 if turn else 0)
        turn += 1
    body["data"]["notes"] = ""
    body["data"]["notes"] = "n" * (target - len(compact(body)))
    assert len(compact(body)) == target, (size, len(compact(body)))
    return body


def payload_bytes(size: str = "350") -> bytes:
    return compact(payload(size))
