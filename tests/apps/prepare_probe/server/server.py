"""Prepare-ahead probe: module-level state and the clock at load (a worker may run the module
body ahead of its invocation: neither may show)."""

import time

LOADED_AT = time.time()
SEEN = []
print("module body ran")


def probe(payload):
    SEEN.append(payload["data"].get("n"))
    return {"loaded_at": LOADED_AT, "seen": SEEN}
