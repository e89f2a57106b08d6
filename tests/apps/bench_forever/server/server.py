"""Benchmark app for timeout recovery: onCallCreate never returns; onCallUpdate is the typical
handler of bench_call_create, to time normal service after a timeout."""


def spin(payload):
    n = 0
    while True:
        n += 1


def onCallUpdateHandler(payload):
    call = payload["data"]["call"]
    iparams = payload.get("iparams", {})
    number = call.get("phone_number", "")
    vip = number in iparams.get("vip_numbers", [])
    participants = call.get("participants", [])
    caller = participants[0] if participants else {}
    return {
        "call_id": call["id"],
        "queue": "vip" if vip else iparams.get("default_queue", "default"),
        "caller": caller.get("name", "unknown"),
        "direction": call.get("direction", "incoming"),
        "region": payload["region"],
    }
