"""Burns CPU inside one C call that no Python-level alarm could interrupt."""


def burn(payload):
    return sum(range(10**12))


def quick(payload):
    return {"ok": True}
