"""Errors and logs as large as a handler can make them."""


def long_message(payload):
    raise ValueError("x" * 1000000)


def recurse(n):
    return recurse(n + 1)


def deep(payload):
    return recurse(0)


def nul_flood(payload):
    for _ in range(100):
        print("\x00" * 1000)
    return "done"
