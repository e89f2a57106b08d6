"""Loops forever in Python, then (on the other event) answers at once."""


def spin(payload):
    n = 0
    while True:
        n += 1


def quick(payload):
    return {"ok": True}
