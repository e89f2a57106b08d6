"""call_logger: a Freshcaller app that routes new calls, summarises call updates and tracks
agent availability.

Installation parameters (iparams), all optional:
  business_hours     {"utc_offset_minutes": -240, "days": [0, 1, 2, 3, 4],
                      "open": "09:00", "close": "18:00"}    (days: Monday is 0)
  prefix_queues      {"+1": "na_support", "+1415": "bay_area_sales"}: the longest prefix wins
  default_queue      the queue for callers no prefix matches
  after_hours_queue  the queue outside business hours
  vip_numbers        callers that always go to the "vip" queue at high priority
  long_call_seconds  calls billed at least this long are flagged for review (default 900)
"""

from datetime import datetime, timedelta, timezone

CHANNELS = {0: "offline", 1: "browser", 2: "mobile"}
MISSED_STATUSES = ("no-answer", "missed", "voicemail")
ABANDONED_STATUSES = ("abandoned", "canceled")


# -- helpers ---------------------------------------------------------------------------------

def parse_time(text, fallback_epoch):
    """A payload time such as '2024-03-12T14:05:31.000Z', else the event's epoch seconds."""
    if isinstance(text, str) and text:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return datetime.fromtimestamp(fallback_epoch, timezone.utc)


def minutes_of(hhmm):
    """'09:30' -> 570."""
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def in_business_hours(moment, hours):
    """Whether a UTC moment falls inside the configured business hours (none: always open)."""
    if not hours:
        return True
    local = moment + timedelta(minutes=hours.get("utc_offset_minutes", 0))
    if local.weekday() not in hours.get("days", [0, 1, 2, 3, 4]):
        return False
    minute_of_day = local.hour * 60 + local.minute
    opens = minutes_of(hours.get("open", "00:00"))
    closes = minutes_of(hours.get("close", "24:00"))
    return opens <= minute_of_day < closes


def queue_for(number, prefix_queues, default_queue):
    """The queue of the longest prefix of `number`, and that prefix (None if none matched)."""
    for prefix in sorted(prefix_queues, key=len, reverse=True):
        if number.startswith(prefix):
            return prefix_queues[prefix], prefix
    return default_queue, None


def customer_status(call):
    """The call status of the customer's leg of the call, if the payload lists participants."""
    for participant in call.get("participants") or []:
        if participant.get("participant_type") == "Customer":
            return participant.get("call_status")
    return None


def describe(value):
    """A short, log-friendly rendering of a changed value."""
    if value is None:
        return "none"
    if isinstance(value, dict):
        return f"#{value['id']}" if "id" in value else "{...}"
    if isinstance(value, list):
        return f"{len(value)} items"
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- handlers --------------------------------------------------------------------------------

def on_call_create(payload):
    """Route a new call: VIP callers first, then business hours, then the number's prefix."""
    call = payload["data"]["call"]
    settings = payload.get("iparams") or {}
    number = call.get("phone_number") or ""
    direction = call.get("direction", "incoming")
    received = parse_time(call.get("created_time"), payload["timestamp"])
    open_now = in_business_hours(received, settings.get("business_hours"))

    if direction != "incoming":
        queue, priority, reason = None, "normal", "outgoing call: logged, not routed"
    elif number in settings.get("vip_numbers", []):
        queue, priority, reason = "vip", "high", "VIP caller"
    elif not open_now:
        queue = settings.get("after_hours_queue", "voicemail")
        priority, reason = "low", "outside business hours"
    else:
        queue, prefix = queue_for(number, settings.get("prefix_queues", {}),
                                  settings.get("default_queue", "general"))
        priority = "normal"
        reason = f"number prefix {prefix}" if prefix else "no prefix matched"

    print(f"call {call['id']} ({direction}) from {number}: {queue or 'not routed'} [{reason}]")
    return {
        "call_id": call["id"],
        "direction": direction,
        "caller": number,
        "queue": queue,
        "priority": priority,
        "reason": reason,
        "business_hours": open_now,
        "received_at": received.isoformat(),
    }


def on_call_update(payload):
    """Summarise what changed and flag calls that need a follow-up or a review."""
    data = payload["data"]
    call = data["call"]
    settings = payload.get("iparams") or {}
    changes = data.get("changes") or {}

    summary = []
    for field in sorted(changes):
        old, new = changes[field]
        summary.append(f"{field}: {describe(old)} -> {describe(new)}")

    status = customer_status(call)
    duration = call.get("bill_duration") or 0
    flags = []
    if status in MISSED_STATUSES:
        flags.append("missed")
    if status in ABANDONED_STATUSES:
        flags.append("abandoned")
    if duration >= settings.get("long_call_seconds", 900):
        flags.append("long_call")
    if call.get("recording"):
        flags.append("recorded")

    print(f"call {call['id']} updated: {'; '.join(summary) or 'no field changes'}")
    if flags:
        print(f"call {call['id']} flags: {', '.join(flags)}")
    return {
        "call_id": call["id"],
        "status": status,
        "agent_id": call.get("assigned_agent_id"),
        "bill_duration": duration,
        "changes": summary,
        "flags": flags,
        "needs_follow_up": "missed" in flags or "abandoned" in flags,
    }


def on_agent_update(payload):
    """Summarise an agent's availability; flag agents leaving during business hours."""
    data = payload["data"]
    agent = data["agent"]
    settings = payload.get("iparams") or {}
    changes = data.get("changes") or {}

    channel = CHANNELS.get(agent.get("available_on"), "unknown")
    status = agent.get("common_status_name") or "Unknown"
    available = status == "Available" and channel != "offline"
    transition = None
    if "common_status_name" in changes:
        old, new = changes["common_status_name"]
        transition = f"{old} -> {new}"
    moment = parse_time(agent.get("updated_at"), payload["timestamp"])
    coverage_gap = not available and in_business_hours(moment, settings.get("business_hours"))

    print(f"agent {agent['id']} ({agent.get('name')}): {status}, channel {channel}"
          + (f" ({transition})" if transition else ""))
    return {
        "agent_id": agent["id"],
        "name": agent.get("name"),
        "status": status,
        "channel": channel,
        "available": available,
        "transition": transition,
        "changed_fields": sorted(changes),
        "coverage_gap": coverage_gap,
    }


exports = {
    "onCallCreateHandler": on_call_create,
    "onCallUpdateHandler": on_call_update,
    "onAgentUpdateHandler": on_agent_update,
}
