"""Would leak state between invocations if the module namespace were reused."""

seen = []


def remember(payload):
    seen.append(payload["account_id"])
    return {"seen": seen}
