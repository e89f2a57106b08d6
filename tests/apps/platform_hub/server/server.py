"""platform_hub: a test app that drives every service from its payload, and answers every
set-up, server-method, external and scheduled event (tests/test_platform_*.py)."""

from datetime import datetime, timedelta, timezone

from services import MethodError, ServiceError, db, request, schedule, webhook

SERVICES = {"db": db, "request": request, "schedule": schedule, "webhook": webhook}


def perform(ops):
    """Each op is [service, operation, kwargs]: its value, or the ServiceError it raised."""
    out = []
    for service, operation, kwargs in ops:
        call = getattr(SERVICES[service], operation)
        try:
            out.append({"value": call(**kwargs)})
        except ServiceError as error:
            out.append({"status": error.status, "message": error.message})
    return out


def run_ops(payload):
    return perform(payload["data"].get("ops", []))


def schedule_soon(payload):
    """One-time schedule `seconds` after the payload's timestamp, written as ISO 8601 with Z."""
    data = payload["data"]
    due = datetime.fromtimestamp(payload["timestamp"], timezone.utc) + timedelta(  # noqa: UP017
        seconds=data.get("seconds", 2))
    when = due.strftime("%Y-%m-%dT%H:%M:%SZ")
    created = schedule.create(data.get("name", "soon"), {"token": data.get("token", "")},
                              schedule_at=when)
    return {"schedule_at": when, "created": created}


def setup_answer(payload, event):
    mode = payload["iparams"].get("mode", "allow")
    db.set("setup:" + event, {"event": event, "version": payload["data"].get("version")})
    if mode in ("setup-data", "data-then-block"):
        url = webhook.generate_target_url()["url"]
        db.set("hook", url)
        schedule.create("later", {"from": event}, schedule_at="2099-01-01T00:00:00Z")
        if mode == "data-then-block":
            return {"allow": False, "message": "Blocked after writing data"}
        return {"allow": True}
    if mode == "block":
        return {"allow": False, "message": "Blocked: pick a channel first"}
    if mode == "fail":
        raise ValueError("set-up exploded on purpose")
    if mode == "fail-leak":
        raise ValueError("cannot authenticate with " + payload["iparams"].get("api_key", ""))
    if mode == "malformed":
        return {"allow": "yes"}
    if mode == "long":
        return {"allow": False, "message": "x" * 61}
    if mode == "none":
        return None
    return {"allow": True}


def on_install(payload):
    return setup_answer(payload, "onAppInstall")


def after_update(payload):
    setup_answer(payload, "afterAppUpdate")
    return {"updated_to": payload["data"].get("version"),
            "channel": payload["iparams"].get("channel")}


def on_uninstall(payload):
    mode = payload["iparams"].get("mode")
    if mode == "keep":
        return {"allow": False, "message": "Still in use"}
    if mode == "fail":
        raise ValueError("uninstall exploded on purpose")
    if mode == "malformed":
        return "maybe"
    return {"allow": True}


def on_external(payload):
    data = payload["data"]
    db.set("last-external", {"body": data["body"]})
    return {"body": data["body"], "headers": data["headers"],
            "account_id": payload["account_id"]}


def on_scheduled(payload):
    return {"schedule": payload["schedule"], "data": payload["data"],
            "account_id": payload["account_id"], "timestamp": payload["timestamp"]}


def echo(payload):
    """The data as the handler sees it, with each top-level value's kind."""
    data = payload["data"]
    kinds = {}
    for key, value in data.items():
        kinds[key] = "float" if isinstance(value, float) else "int" if isinstance(
            value, int) else "other"
    return {"data": data, "kinds": kinds}


def lookup(payload):
    key = payload["data"].get("key")
    if key is None:
        raise MethodError(400, "key is required")
    try:
        return {"key": key, "value": db.get(key)}
    except ServiceError as error:
        if error.status == 404:
            raise MethodError(404, "no such key: " + key) from None
        raise


def show_iparams(payload):
    """Prints, returns and raises the installation's iparams (secure ones included)."""
    iparams = payload["iparams"]
    print("iparams:", iparams)
    print("api_key is", iparams.get("api_key"))
    if payload["data"].get("raise"):
        raise ValueError("cannot use api_key " + str(iparams.get("api_key")))
    return {"iparams": iparams, "text": "key=" + str(iparams.get("api_key"))}
