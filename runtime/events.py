"""The payload of each event kind, and the meaning of a set-up handler's answer; no untrusted
input except the answers, which are handler values checked here.

    product event      the caller's payload, as is (runtime.payloads)
    set-up event       onAppInstall / afterAppUpdate / onAppUninstall: data {"app", "version"}
    server method      the method's name as `event`; data is the caller's payload
    external event     onExternalEvent: data {"body", "headers"} of the webhook request
    scheduled event    onScheduledEvent: data is the schedule's stored data; a top-level
                       `schedule` {"name", "due", "idempotency_key"} says which occurrence

Every envelope carries the installation's account_id, domain, region and iparams.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from handlerbox.runtime.services.installations import Installation

MAX_SETUP_MESSAGE = 60
"""A set-up handler's block message is at most this many characters (the platform's rule)."""

MAX_METHOD_PAYLOAD = 100 * 1024
MAX_EXTERNAL_BODY = 100 * 1024


def envelope(installation: Installation, event: str, data: Any, timestamp: int | None = None,
             **extra: Any) -> dict[str, Any]:
    """A payload for `installation`: the standard envelope plus any extra top-level keys."""
    return {"account_id": installation.account_id, "domain": installation.domain,
            "event": event, "region": installation.region,
            "timestamp": int(time.time()) if timestamp is None else timestamp, "data": data,
            "iparams": dict(installation.iparams), **extra}


@dataclass(frozen=True)
class SetupAnswer:
    """What a set-up handler said: allow, or block with a message; `malformed` names what
    was wrong when the answer was neither."""

    allow: bool
    message: str = ""
    malformed: str = ""


def setup_answer(value: Any) -> SetupAnswer:
    """`None`, `True` or `{"allow": true}` allow; `{"allow": false, "message": "..."}` (at most
    60 characters) blocks; anything else is malformed."""
    if value is None or value is True or value == {"allow": True}:
        return SetupAnswer(True)
    if type(value) is dict and value.get("allow") is False and set(value) <= {"allow",
                                                                             "message"}:
        message = value.get("message", "")
        if type(message) is not str:
            return SetupAnswer(False, malformed="the block message must be a string")
        if len(message) > MAX_SETUP_MESSAGE:
            return SetupAnswer(False, malformed=f"the block message is {len(message)} "
                               f"characters, over the limit of {MAX_SETUP_MESSAGE}")
        return SetupAnswer(False, message or "blocked by the app")
    return SetupAnswer(False, malformed='the answer must be None, True, {"allow": true} or '
                       '{"allow": false, "message": "..."}')
