"""Prepare-ahead probe: a module body that calls a service (it cannot while run ahead of its
invocation, so the worker runs it again when the request comes: the call must be made)."""

from services import ServiceError, db

try:
    db.set("module-level", {"ok": True})
    STORED = "ok"
except ServiceError:
    STORED = "refused"


def probe(payload):
    return {"stored": STORED}
