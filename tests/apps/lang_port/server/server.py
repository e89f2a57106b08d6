"""Fixture: a handler ported from an FDK app, written the way its authors write Python:
dataclasses, an IntEnum, match, dunder methods, zoneinfo time-zone conversions and logging.
tests/test_language.py runs it through an Engine, so zoneinfo reads tzdata inside the
worker's Landlock view and under its seccomp filter."""

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from enum import IntEnum
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

NEW_YORK = ZoneInfo("America/New_York")


class Priority(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3


@dataclass
class Ticket:
    subject: str
    priority: Priority = Priority.LOW
    tags: list = field(default_factory=list)
    escalated: bool = False

    def __post_init__(self):
        self.tags = list(dict.fromkeys(self.tags))
        self.escalated = self.priority >= Priority.HIGH

    def __format__(self, spec):
        if spec == "label":
            return f"P{self.priority.value}:{self.subject}"
        return str(self)


def route(ticket):
    match ticket:
        case Ticket(priority=Priority.HIGH, escalated=True):
            return "oncall"
        case Ticket(tags=["billing", *_]):
            return "finance"
        case _:
            return "queue"


def create_ticket(payload):
    data = payload["data"]
    ticket = Ticket(data["subject"], Priority[data["priority"].upper()], data["tags"])
    if ticket.escalated:
        logging.basicConfig(level=logging.INFO)
    destination = route(ticket)
    log.info("routing %s to %s", ticket.subject, destination)
    plain = asdict(ticket)
    plain["priority"] = ticket.priority.value
    return {"ticket": plain, "route": destination, "label": f"{ticket:label}"}


def convert(payload):
    at = datetime.fromisoformat(payload["data"]["at"].replace("Z", "+00:00"))
    ambiguous = datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK)
    local_nine = datetime(2024, 11, 4, 9, 0, tzinfo=NEW_YORK)
    return {
        "new_york": at.astimezone(NEW_YORK).isoformat(),
        "after_spring_forward": (at + timedelta(hours=2)).astimezone(NEW_YORK).isoformat(),
        "fall_back_folds": [ambiguous.tzname(), ambiguous.replace(fold=1).tzname()],
        # timezone.utc: the datetime facade does not offer datetime.UTC
        "utc_of_local_nine": local_nine.astimezone(timezone.utc).isoformat(),  # noqa: UP017
        "tokyo": at.astimezone(ZoneInfo("Asia/Tokyo")).isoformat(),
    }
