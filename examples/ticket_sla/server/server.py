"""ticket_sla: a Freshdesk app that sets SLA targets on new tickets and checks them on updates.

Installation parameters (iparams), all optional:
  first_response_hours  hours to the first response, per priority name
  resolution_hours      hours to resolution, per priority name
  vip_domains           requester e-mail domains whose tickets are at least High priority
  urgent_keywords       subject words that make a ticket Urgent ("outage", "down")
  escalation_group      where breached or newly urgent tickets are escalated
"""

from datetime import datetime, timedelta, timezone

PRIORITIES = {1: "Low", 2: "Medium", 3: "High", 4: "Urgent"}
STATUSES = {2: "Open", 3: "Pending", 4: "Resolved", 5: "Closed"}
DONE = ("Resolved", "Closed")
DEFAULT_FIRST_RESPONSE = {"Low": 24, "Medium": 8, "High": 2, "Urgent": 1}
DEFAULT_RESOLUTION = {"Low": 72, "Medium": 24, "High": 8, "Urgent": 4}
AT_RISK_SHARE = 0.25


# -- helpers ---------------------------------------------------------------------------------

def parse_time(text):
    """A Freshdesk time such as '2024-03-12T13:01:44Z', as an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def iso(moment):
    """An aware datetime as '2024-03-12T15:01:44Z'."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def hours_for(settings, key, defaults, priority):
    return (settings.get(key) or defaults).get(priority, defaults[priority])


def suggest_priority(ticket, requester, settings):
    """The priority the ticket deserves (never lower than it has) and the reasons why."""
    level = ticket.get("priority", 1)
    reasons = []
    email = (requester or {}).get("email") or ""
    domain = email.rpartition("@")[2].lower()
    if domain and domain in settings.get("vip_domains", []) and level < 3:
        level = 3
        reasons.append(f"VIP customer ({domain})")
    subject = (ticket.get("subject") or "").lower()
    for word in settings.get("urgent_keywords", []):
        if word.lower() in subject and level < 4:
            level = 4
            reasons.append(f"subject mentions {word!r}")
    return level, reasons


def sla_state(created, now, priority, status, settings):
    """Where the ticket stands against its resolution target."""
    hours = hours_for(settings, "resolution_hours", DEFAULT_RESOLUTION, priority)
    due = created + timedelta(hours=hours)
    minutes_left = int((due - now).total_seconds() / 60)
    if status in DONE:
        state = "met" if now <= due else "breached"
    elif now > due:
        state = "breached"
    elif minutes_left < hours * 60 * AT_RISK_SHARE:
        state = "at_risk"
    else:
        state = "on_track"
    return {"resolution_due": iso(due), "state": state, "minutes_left": minutes_left}


# -- handlers --------------------------------------------------------------------------------

def on_ticket_create(payload):
    """Raise the priority when the requester or subject calls for it; set the SLA due times."""
    data = payload["data"]
    ticket = data["ticket"]
    settings = payload.get("iparams") or {}
    created = parse_time(ticket["created_at"])

    level, reasons = suggest_priority(ticket, data.get("requester"), settings)
    priority = PRIORITIES[level]
    first_hours = hours_for(settings, "first_response_hours", DEFAULT_FIRST_RESPONSE, priority)
    resolution_hours = hours_for(settings, "resolution_hours", DEFAULT_RESOLUTION, priority)

    result = {
        "ticket_id": ticket["id"],
        "priority": PRIORITIES[ticket.get("priority", 1)],
        "suggested_priority": priority,
        "reasons": reasons,
        "first_response_due": iso(created + timedelta(hours=first_hours)),
        "resolution_due": iso(created + timedelta(hours=resolution_hours)),
    }
    print(f"ticket {ticket['id']}: {result['priority']} -> {priority}, "
          f"first response by {result['first_response_due']}, "
          f"resolve by {result['resolution_due']}")
    return result


def on_ticket_update(payload):
    """Report status and priority changes, check the SLA, and decide on escalation."""
    data = payload["data"]
    ticket = data["ticket"]
    settings = payload.get("iparams") or {}
    changes = ticket.get("changes") or {}

    status_change = priority_change = None
    if "status" in changes:
        old, new = changes["status"]
        status_change = {"from": STATUSES.get(old, str(old)), "to": STATUSES.get(new, str(new))}
    if "priority" in changes:
        old, new = changes["priority"]
        priority_change = {"from": PRIORITIES.get(old, str(old)),
                           "to": PRIORITIES.get(new, str(new)), "raised": new > old}

    status = STATUSES.get(ticket.get("status"), "Open")
    priority = PRIORITIES.get(ticket.get("priority"), "Low")
    updated = ticket.get("updated_at")
    now = parse_time(updated) if updated else datetime.fromtimestamp(payload["timestamp"],
                                                                       timezone.utc)
    sla = sla_state(parse_time(ticket["created_at"]), now, priority, status, settings)

    escalate_to = None
    newly_urgent = priority_change is not None and priority_change["to"] == "Urgent"
    if (sla["state"] == "breached" and status not in DONE) or newly_urgent:
        escalate_to = settings.get("escalation_group", "Escalations")

    print(f"ticket {ticket['id']}: {status}, {priority}, SLA {sla['state']} "
          f"(due {sla['resolution_due']})")
    if escalate_to:
        print(f"ticket {ticket['id']}: escalating to {escalate_to}")
    return {
        "ticket_id": ticket["id"],
        "status_change": status_change,
        "priority_change": priority_change,
        "sla": sla,
        "escalate_to": escalate_to,
    }


exports = {
    "onTicketCreateHandler": on_ticket_create,
    "onTicketUpdateHandler": on_ticket_update,
}
