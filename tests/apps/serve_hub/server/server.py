"""The front door's fixture app: every event kind, set-up answers chosen by the iparams,
server methods that answer, refuse or spin, a host call, and a secure iparam it prints."""

from services import MethodError, db, webhook


def echo(payload):
    print("echo", payload["account_id"], "token", payload["iparams"].get("api_token", "-"))
    return {"account_id": payload["account_id"], "data": payload["data"]}


def fail(payload):
    raise ValueError("bad ticket " + str(payload["data"].get("id")))


def spin(payload):
    total = 0
    for i in range(payload["data"].get("loops", 10**10)):
        total += i
    return total


def on_install(payload):
    channel = payload["iparams"].get("channel")
    if channel == "blocked":
        return {"allow": False, "message": "Channel blocked"}
    if channel == "explode":
        raise RuntimeError("cannot install")
    return {"allow": True}


def after_update(payload):
    print("updated to", payload["iparams"].get("channel"))


def on_uninstall(payload):
    if payload["iparams"].get("channel") == "sticky":
        return {"allow": False, "message": "Still in use"}
    return None


def on_external(payload):
    print("token in logs:", payload["iparams"].get("api_token", "-"))
    return {"got": payload["data"]["body"],
            "kind": payload["data"]["headers"].get("x-kind", "")}


def lookup(payload):
    if payload["data"].get("missing"):
        raise MethodError(404, "no such thing")
    return {"found": payload["data"], "account": payload["account_id"]}


def make_hook(payload):
    return webhook.generate_target_url()


def remember(payload):
    db.set("last", payload["data"])
    return db.get("last")
