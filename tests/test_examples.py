"""The example apps: manifests and test_data validate, and each handler returns exactly what
it should when run in-process under the sandbox policy."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from handlerbox import sandbox
from handlerbox.runtime.manifest import Manifest
from handlerbox.runtime.payloads import EventPayload

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def manifest(app: str) -> Manifest:
    return Manifest.parse_json((EXAMPLES / app / "manifest.json").read_bytes())


def sample(app: str, event: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(
        (EXAMPLES / app / "server" / "test_data" / f"{event}.json").read_text("utf-8"))
    return raw


def run(app: str, event: str, payload: dict[str, Any]) -> tuple[Any, str]:
    """Validate the payload, then call the manifest's handler on it as a worker would: on a
    fresh module, with the payload decoded from its compact JSON bytes."""
    source = (EXAMPLES / app / "server" / "server.py").read_text("utf-8")
    compiled = sandbox.compile_handler(source, "server.py")
    wire = json.loads(EventPayload.parse(payload).json_bytes())
    outcome = sandbox.invoke(compiled, manifest(app).events[event].handler, wire)
    return json.loads(outcome.result_json), outcome.logs


EVENTS = [
    ("call_logger", "onCallCreate"),
    ("call_logger", "onCallUpdate"),
    ("call_logger", "onAgentUpdate"),
    ("ticket_sla", "onTicketCreate"),
    ("ticket_sla", "onTicketUpdate"),
]


@pytest.mark.parametrize("app", ["call_logger", "ticket_sla"])
def test_manifest_covers_its_test_data(app: str) -> None:
    events = set(manifest(app).events)
    shipped = {p.stem for p in (EXAMPLES / app / "server" / "test_data").glob("*.json")}
    assert events == shipped == {event for name, event in EVENTS if name == app}


@pytest.mark.parametrize(("app", "event"), EVENTS)
def test_test_data_is_a_valid_payload(app: str, event: str) -> None:
    payload = EventPayload.parse(sample(app, event))
    assert payload.event == event
    assert payload.iparams


# -- call_logger ---------------------------------------------------------------------------

def test_call_create_routes_by_longest_prefix_in_business_hours() -> None:
    value, logs = run("call_logger", "onCallCreate", sample("call_logger", "onCallCreate"))
    assert value == {
        "call_id": 10384,
        "direction": "incoming",
        "caller": "+14155550199",
        "queue": "bay_area_sales",
        "priority": "normal",
        "reason": "number prefix +1415",
        "business_hours": True,
        "received_at": "2024-03-12T14:05:31+00:00",
    }
    assert logs == ("call 10384 (incoming) from +14155550199: bay_area_sales "
                    "[number prefix +1415]\n")


def call_create(**call: Any) -> dict[str, Any]:
    payload = copy.deepcopy(sample("call_logger", "onCallCreate"))
    payload["data"]["call"].update(call)
    return payload


def test_call_create_vip_after_hours_outgoing_and_unmatched() -> None:
    vip, _ = run("call_logger", "onCallCreate", call_create(phone_number="+12125550143"))
    assert (vip["queue"], vip["priority"], vip["reason"]) == ("vip", "high", "VIP caller")

    # 23:30 UTC on Tuesday is 19:30 in UTC-4, after the 18:00 close.
    late, _ = run("call_logger", "onCallCreate",
                  call_create(created_time="2024-03-12T23:30:00.000Z"))
    assert (late["queue"], late["priority"], late["reason"], late["business_hours"]) == (
        "voicemail", "low", "outside business hours", False)

    # Saturday morning is closed too.
    weekend, _ = run("call_logger", "onCallCreate",
                     call_create(created_time="2024-03-16T14:00:00.000Z"))
    assert (weekend["queue"], weekend["business_hours"]) == ("voicemail", False)

    outgoing, logs = run("call_logger", "onCallCreate", call_create(direction="outgoing"))
    assert (outgoing["queue"], outgoing["reason"]) == (None, "outgoing call: logged, not routed")
    assert logs == ("call 10384 (outgoing) from +14155550199: not routed "
                    "[outgoing call: logged, not routed]\n")

    unmatched, _ = run("call_logger", "onCallCreate", call_create(phone_number="+33142685300"))
    assert (unmatched["queue"], unmatched["reason"]) == ("global_support", "no prefix matched")

    uk, _ = run("call_logger", "onCallCreate", call_create(phone_number="+442079460311"))
    assert (uk["queue"], uk["reason"]) == ("uk_support", "number prefix +44")


def test_call_update_summarises_and_flags_a_long_recorded_call() -> None:
    value, logs = run("call_logger", "onCallUpdate", sample("call_logger", "onCallUpdate"))
    assert value == {
        "call_id": 10384,
        "status": "completed",
        "agent_id": 3001,
        "bill_duration": 1023,
        "changes": [
            "bill_duration: none -> 1023",
            "call_notes: none -> Renewal question, wants a quote for 4...",
            "recording: none -> #88120",
        ],
        "flags": ["long_call", "recorded"],
        "needs_follow_up": False,
    }
    assert logs == (
        "call 10384 updated: bill_duration: none -> 1023; call_notes: none -> Renewal "
        "question, wants a quote for 4...; recording: none -> #88120\n"
        "call 10384 flags: long_call, recorded\n")


@pytest.mark.parametrize(("status", "flag"), [("no-answer", "missed"),
                                              ("abandoned", "abandoned")])
def test_call_update_flags_missed_and_abandoned_calls(status: str, flag: str) -> None:
    payload = copy.deepcopy(sample("call_logger", "onCallUpdate"))
    call = payload["data"]["call"]
    call.update(bill_duration=0, recording=None, assigned_agent_id=None)
    call["participants"] = [dict(call["participants"][0], call_status=status)]
    payload["data"]["changes"] = {"bill_duration": [None, 0]}
    value, _ = run("call_logger", "onCallUpdate", payload)
    assert value == {
        "call_id": 10384,
        "status": status,
        "agent_id": None,
        "bill_duration": 0,
        "changes": ["bill_duration: none -> 0"],
        "flags": [flag],
        "needs_follow_up": True,
    }


def test_agent_update_summarises_availability() -> None:
    value, logs = run("call_logger", "onAgentUpdate", sample("call_logger", "onAgentUpdate"))
    assert value == {
        "agent_id": 3001,
        "name": "Priya Raman",
        "status": "Offline",
        "channel": "offline",
        "available": False,
        "transition": "Available -> Offline",
        "changed_fields": ["available_on", "browser_status_id", "browser_status_name",
                           "common_status_id", "common_status_name"],
        "coverage_gap": True,
    }
    assert logs == ("agent 3001 (Priya Raman): Offline, channel offline "
                    "(Available -> Offline)\n")


def test_agent_coming_online_is_no_coverage_gap() -> None:
    payload = copy.deepcopy(sample("call_logger", "onAgentUpdate"))
    payload["data"]["agent"].update(available_on=2, common_status_name="Available")
    payload["data"]["changes"] = {"common_status_name": ["Offline", "Available"]}
    value, _ = run("call_logger", "onAgentUpdate", payload)
    assert (value["available"], value["channel"], value["transition"],
            value["coverage_gap"]) == (True, "mobile", "Offline -> Available", False)


# -- ticket_sla ----------------------------------------------------------------------------

def test_ticket_create_raises_priority_and_sets_due_times() -> None:
    value, logs = run("ticket_sla", "onTicketCreate", sample("ticket_sla", "onTicketCreate"))
    assert value == {
        "ticket_id": 4821,
        "priority": "Medium",
        "suggested_priority": "Urgent",
        "reasons": ["VIP customer (globex.com)", "subject mentions 'down'"],
        "first_response_due": "2024-03-12T14:01:44Z",
        "resolution_due": "2024-03-12T17:01:44Z",
    }
    assert logs == ("ticket 4821: Medium -> Urgent, first response by 2024-03-12T14:01:44Z, "
                    "resolve by 2024-03-12T17:01:44Z\n")


def test_ticket_create_keeps_an_ordinary_ticket_as_it_is() -> None:
    payload = copy.deepcopy(sample("ticket_sla", "onTicketCreate"))
    payload["data"]["ticket"]["subject"] = "How do I export invoices?"
    payload["data"]["requester"]["email"] = "sam@example.org"
    value, _ = run("ticket_sla", "onTicketCreate", payload)
    assert value == {
        "ticket_id": 4821,
        "priority": "Medium",
        "suggested_priority": "Medium",
        "reasons": [],
        "first_response_due": "2024-03-12T21:01:44Z",
        "resolution_due": "2024-03-13T13:01:44Z",
    }


def test_ticket_update_detects_changes_and_breach() -> None:
    value, logs = run("ticket_sla", "onTicketUpdate", sample("ticket_sla", "onTicketUpdate"))
    assert value == {
        "ticket_id": 4790,
        "status_change": {"from": "Open", "to": "Pending"},
        "priority_change": {"from": "Medium", "to": "High", "raised": True},
        "sla": {"resolution_due": "2024-03-11T17:12:40Z", "state": "breached",
                "minutes_left": -1189},
        "escalate_to": "Tier 2 Engineering",
    }
    assert logs == ("ticket 4790: Pending, High, SLA breached (due 2024-03-11T17:12:40Z)\n"
                    "ticket 4790: escalating to Tier 2 Engineering\n")


def ticket_update(changes: dict[str, list[Any]], **ticket: Any) -> dict[str, Any]:
    payload = copy.deepcopy(sample("ticket_sla", "onTicketUpdate"))
    payload["data"]["ticket"].update(ticket, changes=changes)
    return payload


def test_ticket_update_resolved_in_time_meets_the_sla() -> None:
    payload = ticket_update({"status": [3, 4]}, status=4, priority=2,
                            updated_at="2024-03-12T08:00:00Z")
    value, _ = run("ticket_sla", "onTicketUpdate", payload)
    assert value == {
        "ticket_id": 4790,
        "status_change": {"from": "Pending", "to": "Resolved"},
        "priority_change": None,
        "sla": {"resolution_due": "2024-03-12T09:12:40Z", "state": "met", "minutes_left": 72},
        "escalate_to": None,
    }


def test_ticket_update_at_risk_and_newly_urgent() -> None:
    at_risk, _ = run("ticket_sla", "onTicketUpdate",
                     ticket_update({}, status=2, priority=2, updated_at="2024-03-12T05:12:40Z"))
    assert (at_risk["sla"]["state"], at_risk["sla"]["minutes_left"],
            at_risk["escalate_to"]) == ("at_risk", 240, None)

    urgent, _ = run("ticket_sla", "onTicketUpdate",
                    ticket_update({"priority": [3, 4]}, status=2, priority=4,
                                  updated_at="2024-03-11T10:00:00Z"))
    assert urgent["priority_change"] == {"from": "High", "to": "Urgent", "raised": True}
    assert (urgent["sla"]["state"], urgent["escalate_to"]) == ("on_track",
                                                               "Tier 2 Engineering")
