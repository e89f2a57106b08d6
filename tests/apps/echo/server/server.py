"""Echoes the payload, fails on purpose, or works for a while."""


def echo(payload):
    print("echo", payload["account_id"])
    return {"account_id": payload["account_id"], "data": payload["data"]}


def fail(payload):
    raise ValueError("bad call " + str(payload["data"].get("id")))


def slow(payload):
    total = 0
    for i in range(payload["data"].get("loops", 10**6)):
        total += i
    return total
