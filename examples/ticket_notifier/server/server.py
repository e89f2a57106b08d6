"""Posts new urgent tickets to a chat channel, once each, and reminds the channel later.

Services: `db` remembers what was posted (so an update never posts a ticket twice),
`request` posts through the declared postToChat template, `schedule` sets a reminder,
`webhook` gives the chat service a URL to answer on.
"""

from services import MethodError, ServiceError, db, request, schedule, webhook

PRIORITY_NAMES = {1: "low", 2: "medium", 3: "high", 4: "urgent"}


def posted_key(ticket_id):
    return "posted:" + str(ticket_id)


def wanted(payload, ticket):
    return str(ticket.get("priority")) in payload["iparams"].get("priorities", ["3", "4"])


def post(payload, ticket, why):
    """Post once: the key is written first (only if absent), so two events racing for the
    same ticket cannot both post; a failed post removes it so a later event retries."""
    try:
        db.set(posted_key(ticket["id"]), {"subject": ticket["subject"], "why": why,
                                          "at": payload["timestamp"]}, if_not_exists=True)
    except ServiceError as error:
        if error.status == 409:
            print(f"ticket {ticket['id']} was posted already")
            return {"posted": False, "reason": "already posted"}
        raise
    text = (f"[{PRIORITY_NAMES.get(ticket.get('priority'), '?')}] #{ticket['id']} "
            f"{ticket['subject']} ({why})")
    try:
        reply = request.invoke("postToChat", body={"text": text})
    except ServiceError as error:
        db.delete(posted_key(ticket["id"]))
        print(f"chat refused the post: {error.status} {error.message}")
        return {"posted": False, "reason": f"chat answered {error.status}"}
    print(f"posted ticket {ticket['id']}: {reply['status']}")
    return {"posted": True, "chat_status": reply["status"]}


def on_ticket_create(payload):
    ticket = payload["data"]["ticket"]
    if not wanted(payload, ticket):
        return {"posted": False, "reason": "priority not followed"}
    return post(payload, ticket, "new")


def on_ticket_update(payload):
    ticket = payload["data"]["ticket"]
    changes = payload["data"].get("changes", {})
    if "priority" in changes and wanted(payload, ticket):
        return post(payload, ticket, "priority raised")
    return {"posted": False, "reason": "no change to post"}


def on_app_install(payload):
    if not payload["iparams"].get("channel", "").strip():
        return {"allow": False, "message": "Choose a chat channel first"}
    url = webhook.generate_target_url()["url"]
    db.set("callback_url", url)
    schedule.create("daily-summary", {"kind": "summary"},
                    repeat={"time_unit": "days", "frequency": 1})
    return {"allow": True}


def on_external_event(payload):
    body = payload["data"]["body"]
    if isinstance(body, dict) and "ack_ticket" in body:
        try:
            db.update(posted_key(body["ack_ticket"]), "set", {"acked_by": body.get("by", "?")})
        except ServiceError as error:
            if error.status == 404:
                return {"acked": False, "reason": "that ticket was never posted"}
            raise
        return {"acked": body["ack_ticket"]}
    return {"ignored": True}


def on_scheduled_event(payload):
    print(f"schedule {payload['schedule']['name']} fired")
    return {"kind": payload["data"].get("kind")}


def notification_status(payload):
    ticket_id = payload["data"].get("ticket_id")
    if ticket_id is None:
        raise MethodError(400, "ticket_id is required")
    try:
        return db.get(posted_key(ticket_id))
    except ServiceError as error:
        if error.status == 404:
            raise MethodError(404, f"ticket {ticket_id} was never posted") from None
        raise


exports = {
    "onTicketCreateHandler": on_ticket_create,
    "onTicketUpdateHandler": on_ticket_update,
    "onAppInstallHandler": on_app_install,
    "onExternalEventHandler": on_external_event,
    "onScheduledEventHandler": on_scheduled_event,
    "notificationStatus": notification_status,
}
