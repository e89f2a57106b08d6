"""Asks for far more memory than a worker may have."""


def bomb(payload):
    blob = "a" * (10**10)
    return len(blob)


def quick(payload):
    return {"ok": True}
