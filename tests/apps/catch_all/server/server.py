"""Catches every exception it can, forever."""


def stubborn(payload):
    while True:
        try:
            while True:
                pass
        except BaseException:
            pass


def quick(payload):
    return {"ok": True}
