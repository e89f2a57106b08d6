"""Logs through `logging` at several levels, then returns or fails."""

import logging

log = logging.getLogger("calls")


def h(payload):
    log.debug("not shown: below the default level")
    log.warning("call %s is long", payload["data"].get("id"))
    logging.getLogger("calls.audit").error("audit")
    return "done"


def fail(payload):
    log.error("about to fail")
    raise ValueError("nope")
