"""Prints and raises text that is not valid UTF-8 (a lone surrogate)."""


def odd(payload):
    print("half a pair: \udcff")
    return {"fine": True}


def odd_error(payload):
    raise ValueError("bad \udcff text")
