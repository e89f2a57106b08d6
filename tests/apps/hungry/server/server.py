"""Uses a lot of memory briefly (within the limit), so its worker's peak RSS grows."""


def grow(payload):
    blob = "x" * (payload["data"].get("mb", 0) * 1024 * 1024)
    return len(blob)
