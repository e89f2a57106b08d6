"""Soak app (benchmarks/soak): a typical handler, a failing one, a memory bomb, and one that
spins for a while (the soak's injector SIGKILLs its worker from outside while it runs).

Every handler echoes the request's `data.seq`, so the soak can tell that each caller got the
result of its own request."""

import hashlib
import time


def on_call_create(payload):
    data = payload["data"]
    call = data.get("call", {})
    iparams = payload.get("iparams", {})
    number = call.get("phone_number", "")
    participants = call.get("participants", [])
    caller = participants[0] if participants else {}
    digest = hashlib.sha256((payload["account_id"] + ":" + str(data["seq"])).encode())
    print("call", call.get("id"), "for", payload["account_id"])
    return {
        "seq": data["seq"],
        "call_id": call.get("id"),
        "queue": "vip" if number in iparams.get("vip_numbers", []) else "default",
        "caller": caller.get("name", "unknown"),
        "region": payload["region"],
        "digest": digest.hexdigest()[:16],
    }


def on_call_update(payload):
    raise ValueError("soak error " + str(payload["data"]["seq"]))


def on_ticket_create(payload):
    blob = "a" * (10**10)
    return {"seq": payload["data"]["seq"], "size": len(blob)}


def on_call_transfer(payload):
    end = time.monotonic() + payload["data"].get("seconds", 3.0)
    spins = 0
    while time.monotonic() < end:
        spins += 1
    return {"seq": payload["data"]["seq"], "spins": spins}


exports = {
    "onCallCreateHandler": on_call_create,
    "onCallUpdateHandler": on_call_update,
    "onTicketCreateHandler": on_ticket_create,
    "onCallTransferHandler": on_call_transfer,
}
