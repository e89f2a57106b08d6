"""Soak app (benchmarks/soak): onCallCreate never returns, so under a short timeout override
it ends as `timeout`; onCallUpdate answers at once."""


def spin(payload):
    n = 0
    while True:
        n += 1


def quick(payload):
    return {"seq": payload["data"]["seq"]}
