"""The events an app may subscribe to: each product's known events, the platform's own, and
did-you-mean for a mistyped name; no untrusted input beyond the name being checked.

A manifest that names an event outside the catalogue is refused with the nearest known name,
unless the subscription says `"custom": true` (platforms add events, and apps may be
invoked with events of their own).
"""

from __future__ import annotations

import difflib

_CRUD = ("Create", "Update", "Delete")

PRODUCT_EVENTS: dict[str, frozenset[str]] = {
    "freshcaller": frozenset({"onCallCreate", "onCallUpdate", "onAgentUpdate"}),
    "freshdesk": frozenset(
        {f"on{thing}{action}" for thing in ("Ticket", "Conversation", "TimeEntry", "Contact",
                                            "Company", "Agent", "Group")
         for action in _CRUD} | {"onAgentAvailabilityUpdate"}),
}
"""Product events from the platform's documentation (PLATFORM.md); "and more" exist, which
is what `custom` is for."""

SETUP_EVENTS = frozenset({"onAppInstall", "afterAppUpdate", "onAppUninstall"})
"""App set-up events: run synchronously when an installation is created, updated, removed."""

SCHEDULED_EVENT = "onScheduledEvent"
EXTERNAL_EVENT = "onExternalEvent"

KNOWN_EVENTS = frozenset().union(*PRODUCT_EVENTS.values(), SETUP_EVENTS,
                                 {SCHEDULED_EVENT, EXTERNAL_EVENT})


def unknown_event(name: str) -> str | None:
    """Why `name` is not a known event (with the nearest known one), or None if it is."""
    if name in KNOWN_EVENTS:
        return None
    nearest = difflib.get_close_matches(name, sorted(KNOWN_EVENTS), n=1, cutoff=0.75)
    hint = f"did you mean {nearest[0]}? " if nearest else ""
    return (f"is not a known event: {hint}Declare an event of your own with "
            '"custom": true')
