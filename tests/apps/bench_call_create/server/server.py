"""Benchmark app: a typical onCallCreate handler that reads a few fields and returns a small
dict (the same source runs plainly in the peer pools; see benchmarks/work.py)."""


def on_call_create(payload):
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


exports = {"onCallCreateHandler": on_call_create}
