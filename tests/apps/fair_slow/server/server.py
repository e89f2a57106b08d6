"""Fairness benchmark app: onCallCreate keeps its worker busy for data.seconds (default 3) of
wall time, spinning (handlers cannot sleep), then returns how many rounds it spun."""

import time


def busy(payload):
    seconds = payload["data"].get("seconds", 3)
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        rounds += 1
    return {"rounds": rounds}
