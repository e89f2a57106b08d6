"""platform_http: a test app that drives the services, request templates included, from its
payload (tests/test_platform_services.py). The templates' port is rewritten by the tests."""

from services import ServiceError, db, request, schedule, webhook

SERVICES = {"db": db, "request": request, "schedule": schedule, "webhook": webhook}


def run_ops(payload):
    """Each op is [service, operation, kwargs]: its value, or the ServiceError it raised."""
    out = []
    for service, operation, kwargs in payload["data"].get("ops", []):
        call = getattr(SERVICES[service], operation)
        try:
            out.append({"value": call(**kwargs)})
        except ServiceError as error:
            out.append({"status": error.status, "message": error.message})
    return out


def flood(payload):
    """Calls a cheap service until it is refused with 429, then says how far it got; with
    `ignore`, keeps calling past every refusal (until the deadline ends it)."""
    data = payload["data"]
    made = 0
    while made < data.get("limit", 10000):
        made += 1
        try:
            webhook.revoke("no-such-token")
        except ServiceError as error:
            if error.status == 429 and not data.get("ignore"):
                return {"made": made, "status": error.status, "message": error.message}
    return {"made": made}
