"""For the cluster tests: works for a while (CPU, no sleeping), counts its runs in the
key-value store, fails on purpose, answers server methods slowly or at once."""

from services import ServiceError, db


def spin(loops):
    total = 0
    for i in range(loops):
        total += i
    return total


def count_run(counter):
    """One more run counted under `counter` in this installation's store (a redelivered
    event may run twice; its result is stored once)."""
    try:
        db.set(counter, {"n": 0}, if_not_exists=True)
    except ServiceError as error:
        if error.status != 409:
            raise
    return db.update(counter, "increment", {"n": 1})["n"]


def work(payload):
    spin(payload["data"].get("loops", 0))
    runs = count_run("runs")
    return {"key": payload["idempotency_key"], "n": payload["data"].get("n"), "runs": runs}


def fail(payload):
    raise ValueError("failed on purpose")


def install(payload):
    if payload["iparams"].get("mode") == "block":
        return {"allow": False, "message": "blocked by the test"}
    return {"allow": True}


def slowMethod(payload):
    spin(payload["data"].get("loops", 0))
    return {"slow": True}


def countMethod(payload):
    return {"calls": count_run("calls")}


def quickMethod(payload):
    return {"echo": payload["data"], "account": payload["account_id"]}
